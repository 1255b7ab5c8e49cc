"""Retention: deleting ended tasks, their attempts and attachments once they are old enough,
on demand (``roadie prune``, ``Roadie.prune``) or by worker maintenance (the ``retention``
setting, off by default). Deletes go in short batches, so claiming never waits long."""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from roadie.errors import ConfigurationError
from roadie.status import FINAL_STATUSES, Status

if TYPE_CHECKING:
    from roadie.app import Roadie

log = logging.getLogger("roadie.retention")

BATCH = 1000
"""Tasks deleted per transaction."""
PAUSE = 1.0
"""After a batch, wait this many times as long as it took (half the time deleting, at most)."""
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(text: str) -> dt.timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or a number of seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration: use a number and a unit, like 30d, 12h, "
                         f"90m, 45s or 2w")
    return dt.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])


def parse_retention(text: str) -> dict[Status, dt.timedelta]:
    """The ``retention`` setting: one duration for every ended status (``30d``), or one per
    status (``successful=7d,failed=30d``; a status left out is kept). Empty: nothing."""
    kept: dict[Status, dt.timedelta] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, duration = part.rpartition("=")
        try:
            age = parse_duration(duration)
            statuses = [Status.parse(name)] if sep else sorted(FINAL_STATUSES)
        except ValueError as exc:
            raise ConfigurationError(f"retention={text!r}: {exc}") from None
        for status in statuses:
            if status not in FINAL_STATUSES:
                raise ConfigurationError(
                    f"retention={text!r}: only ended tasks (successful, failed, cancelled) are "
                    f"deleted, not {status.label} ones")
            kept[status] = age
    return kept


def cutoffs(older_than: dt.timedelta | Mapping[Status, dt.timedelta],
            statuses: Iterable[Status] | None = None) -> dict[Status, dt.datetime]:
    """Per ended status, the end time before which its tasks go."""
    from roadie.store import utcnow

    now = utcnow()
    if isinstance(older_than, dt.timedelta):
        chosen = sorted(FINAL_STATUSES) if statuses is None else [Status.parse(s)
                                                                 for s in statuses]
        ages = dict.fromkeys(chosen, older_than)
    else:
        ages = dict(older_than)
    for status in ages:
        if status not in FINAL_STATUSES:
            raise ValueError(f"only ended tasks (successful, failed, cancelled) can be pruned, "
                             f"not {status.label} ones")
    return {status: now - age for status, age in ages.items()}


def prune(app: Roadie, limits: Mapping[Status, dt.datetime], *,
          max_batches: int | None = None, pause: float = PAUSE) -> int:
    """Delete ended tasks older than their status's cutoff, batch by batch (each its own
    transaction), with their attachment files, and the overview's per-minute rollup older
    than the oldest cutoff (``rollup.retention_cutoff``); returns how many tasks went. After
    each batch it waits ``pause`` times as long as the batch took, so that claims and other
    writes get their turn (SQLite has one writer at a time; a small server, few cores)."""
    deleted = 0
    batches = 0
    took = 0.0
    while max_batches is None or batches < max_batches:
        time.sleep(pause * took)
        started = time.monotonic()
        ids = app.store.prune(limits, BATCH)
        took = time.monotonic() - started
        batches += 1
        for task_id in ids:
            try:
                app.attachment_store.delete_all(task_id)
            except Exception as exc:  # the rows are gone; a stray file is only space
                log.warning("task %s: could not delete its attachments: %s", task_id, exc)
        deleted += len(ids)
        if len(ids) < BATCH:
            break
    from roadie.rollup import retention_cutoff
    from roadie.store import utcnow

    before = retention_cutoff(limits.values(), utcnow())
    if before is not None:  # the overview's rollup goes with the tasks (kept a week at least)
        app.store.prune_rollup(before)
    return deleted

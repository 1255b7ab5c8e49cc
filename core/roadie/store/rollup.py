"""The overview's per-minute rollup (``roadie_minutes``): added to as workers settle, sampled
for the queue's depth by worker maintenance, read by ``Roadie.stats``, pruned with the tasks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from roadie import models

if TYPE_CHECKING:
    from roadie.store.facade import Store

M = models.minutes
T = models.tasks
COUNTED = models.ROLLUP_COUNTS + models.ROLLUP_HISTOGRAMS
TOTAL = "*"  # the executor name of the depth sample's row (all executors together)


def add_rollup(self: Store, rows: Sequence[dict[str, Any]]) -> None:
    """Add ``rows`` (``at``: a minute, ``executor``, and counts of ``ROLLUP_COUNTS`` and
    ``ROLLUP_HISTOGRAMS`` columns, missing ones 0) to the rollup in one transaction; rows in
    (minute, executor) order, so that concurrent writers never deadlock."""
    if not rows:
        return
    values = sorted(({"at": r["at"], "executor": r["executor"],
                      **{c: int(r.get(c, 0)) for c in COUNTED}} for r in rows),
                    key=lambda r: (r["at"], r["executor"]))
    statement = self.insert(M)
    statement = statement.on_conflict_do_update(
        index_elements=["at", "executor"],
        set_={c: M.c[c] + getattr(statement.excluded, c) for c in COUNTED})
    with self.write() as conn:
        conn.execute(statement, values)


def sample_depth(self: Store, minute: dt.datetime) -> bool:
    """Record the queue's depth (waiting and running tasks, all executors) for ``minute``,
    unless another node did already; returns whether this call wrote it."""
    with self.read() as conn:
        if conn.execute(sa.select(M.c.at).where(M.c.at == minute, M.c.executor == TOTAL,
                                                M.c.waiting.is_not(None))).first():
            return False
    waiting = running = 0
    for w, _, r in self.executor_counts().values():
        waiting, running = waiting + w, running + r
    statement = self.insert(M).values(at=minute, executor=TOTAL, waiting=waiting,
                                      running=running)
    statement = statement.on_conflict_do_update(
        index_elements=["at", "executor"],
        set_={"waiting": statement.excluded.waiting, "running": statement.excluded.running},
        where=M.c.waiting.is_(None))
    with self.write() as conn:
        conn.execute(statement)
    return True


def rollup_minutes(self: Store, since: dt.datetime) -> list[tuple[dt.datetime, int, int, int,
                                                                  int]]:
    """Per minute from ``since`` on (with rows only): (minute, started, succeeded, failed,
    cancelled), all executors together."""
    query = (sa.select(M.c.at, *(sa.func.sum(M.c[c]) for c in models.ROLLUP_COUNTS))
             .where(M.c.at >= since, M.c.executor != TOTAL)
             .group_by(M.c.at).order_by(M.c.at))
    with self.read() as conn:
        return [(at, int(s), int(o), int(f), int(c)) for at, s, o, f, c in conn.execute(query)]


def rollup_depth(self: Store, since: dt.datetime) -> list[tuple[dt.datetime, int, int]]:
    """The depth samples from ``since`` on: (minute, waiting, running)."""
    query = (sa.select(M.c.at, M.c.waiting, M.c.running)
             .where(M.c.at >= since, M.c.executor == TOTAL, M.c.waiting.is_not(None))
             .order_by(M.c.at))
    with self.read() as conn:
        return [(at, int(w), int(r or 0)) for at, w, r in conn.execute(query)]


def rollup_executors(self: Store, since: dt.datetime, failed_since: dt.datetime,
                     ) -> dict[str, tuple[int, list[int], list[int]]]:
    """Per executor with rollup rows: (its failed tasks from ``failed_since`` on, its wait
    histogram and its run histogram from ``since`` on)."""
    buckets = models.ROLLUP_BUCKETS
    query = (sa.select(M.c.executor,
                       sa.func.sum(M.c.failed).filter(M.c.at >= failed_since),
                       *(sa.func.sum(M.c[c]).filter(M.c.at >= since)
                         for c in models.ROLLUP_HISTOGRAMS))
             .where(M.c.at >= min(since, failed_since), M.c.executor != TOTAL)
             .group_by(M.c.executor))
    found: dict[str, tuple[int, list[int], list[int]]] = {}
    with self.read() as conn:
        for row in conn.execute(query):
            sums = [int(v or 0) for v in row[2:]]
            found[row[0]] = (int(row[1] or 0), sums[:buckets], sums[buckets:])
    return found


def prune_rollup(self: Store, before: dt.datetime) -> int:
    """Delete the rollup's minutes before ``before``; returns how many rows went."""
    with self.write() as conn:
        return conn.execute(M.delete().where(M.c.at < before)).rowcount or 0

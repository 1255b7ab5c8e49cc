"""The overview's rollup (``roadie_minutes``, and per hour ``roadie_hours``): added to as
workers settle, sampled for the queue's depth by worker maintenance, read by
``Roadie.stats``, pruned with the tasks."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from roadie import models
from roadie.rollup_columns import ROLLUP_BUCKETS

if TYPE_CHECKING:
    from roadie.store.facade import Store

M, H = models.minutes, models.hours
COUNTED = models.ROLLUP_COUNTS + models.ROLLUP_HISTOGRAMS
TOTAL = "*"  # the executor name of the depth sample's row (all executors together)


def _table(hourly: bool) -> sa.Table:
    return H if hourly else M


def add_rollup(self: Store, rows: Sequence[dict[str, Any]]) -> None:
    """Add ``rows`` (``at``: a minute, ``executor``, and counts of ``ROLLUP_COUNTS`` and
    ``ROLLUP_HISTOGRAMS`` columns, missing ones 0) to the minutes and to their hours, in one
    transaction; rows go in key order, so that concurrent writers never deadlock."""
    if not rows:
        return
    with self.write() as conn:
        write_rollup(self, conn, rows)


def write_rollup(self: Store, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """``add_rollup`` in the caller's transaction ``conn``."""
    if not rows:
        return
    minutes = sorted(({"at": r["at"], "executor": r["executor"],
                       **{c: int(r.get(c, 0)) for c in COUNTED}} for r in rows),
                     key=lambda r: (r["at"], r["executor"]))
    hours: dict[tuple[dt.datetime, str], dict[str, Any]] = {}
    for row in minutes:
        hour = row["at"].replace(minute=0, second=0, microsecond=0)
        into = hours.get((hour, row["executor"]))
        if into is None:
            hours[hour, row["executor"]] = {**row, "at": hour}
        else:
            for c in COUNTED:
                into[c] += row[c]
    at = M.c.at.type.dialect_impl(self.engine.dialect).bind_processor(self.engine.dialect)
    for table, values in ((M, minutes), (H, [hours[k] for k in sorted(hours)])):
        conn.exec_driver_sql(_add_sql(table.name, self.engine.dialect.paramstyle), [
            (at(v["at"]) if at else v["at"], v["executor"], *(v[c] for c in COUNTED))
            for v in values])


@functools.lru_cache(maxsize=8)
def _add_sql(table: str, paramstyle: str) -> str:
    """The upsert that adds one row's counts to ``table`` (in the driver's parameter style:
    a flush runs it every second, and SQLAlchemy would build and key a statement of 58 SET
    expressions each time, milliseconds of a worker's CPU)."""
    columns = ("at", "executor", *COUNTED)
    if paramstyle == "qmark":
        marks = ["?"] * len(columns)
    elif paramstyle.startswith("numeric"):
        marks = [f"${i}" if paramstyle == "numeric_dollar" else f":{i}"
                 for i in range(1, len(columns) + 1)]
    else:  # format, pyformat
        marks = ["%s"] * len(columns)
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(marks)}) "
            f"ON CONFLICT (at, executor) DO UPDATE SET "
            + ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in COUNTED))


def sample_depth(self: Store, minute: dt.datetime) -> bool:
    """Record the queue's depth (waiting and running tasks, all executors) for ``minute``
    (and as its hour's latest), unless another node did already; returns whether this call
    wrote it."""
    with self.read_one() as conn:
        if conn.execute(sa.select(M.c.at).where(M.c.at == minute, M.c.executor == TOTAL,
                                                M.c.waiting.is_not(None))).first():
            return False
    waiting = running = 0
    for w, _, r in self.executor_counts().values():
        waiting, running = waiting + w, running + r
    hour = minute.replace(minute=0, second=0, microsecond=0)
    with self.write() as conn:
        for table, at, only_first in ((M, minute, True), (H, hour, False)):
            statement = self.insert(table).values(at=at, executor=TOTAL, waiting=waiting,
                                                  running=running)
            statement = statement.on_conflict_do_update(
                index_elements=["at", "executor"],
                set_={"waiting": statement.excluded.waiting,
                      "running": statement.excluded.running},
                where=table.c.waiting.is_(None) if only_first else None)
            conn.execute(statement)
    return True


def rollup_counts(self: Store, since: dt.datetime, *, hourly: bool = False,
                  ) -> list[tuple[dt.datetime, int, int, int, int]]:
    """Per minute (or hour) from ``since`` on, with rows only: (its start, started,
    succeeded, failed, cancelled), all executors together."""
    R = _table(hourly)
    query = (sa.select(R.c.at, *(sa.func.sum(R.c[c]) for c in models.ROLLUP_COUNTS))
             .where(R.c.at >= since, R.c.executor != TOTAL)
             .group_by(R.c.at).order_by(R.c.at))
    with self.read_one() as conn:
        return [(at, int(s), int(o), int(f), int(c)) for at, s, o, f, c in conn.execute(query)]


def rollup_depth(self: Store, since: dt.datetime, *, hourly: bool = False,
                 ) -> list[tuple[dt.datetime, int, int]]:
    """The depth samples from ``since`` on: (minute or hour, waiting, running)."""
    R = _table(hourly)
    query = (sa.select(R.c.at, R.c.waiting, R.c.running)
             .where(R.c.at >= since, R.c.executor == TOTAL, R.c.waiting.is_not(None))
             .order_by(R.c.at))
    with self.read_one() as conn:
        return [(at, int(w), int(r or 0)) for at, w, r in conn.execute(query)]


def rollup_times(self: Store, since: dt.datetime, *, hourly: bool = False,
                 ) -> dict[str, tuple[list[int], list[int]]]:
    """Per executor with rollup rows from ``since`` on: its wait and run histograms."""
    R = _table(hourly)
    buckets = ROLLUP_BUCKETS
    query = (sa.select(R.c.executor, *(sa.func.sum(R.c[c]) for c in models.ROLLUP_HISTOGRAMS))
             .where(R.c.at >= since, R.c.executor != TOTAL).group_by(R.c.executor))
    with self.read_one() as conn:
        found = {}
        for row in conn.execute(query):
            sums = [int(v or 0) for v in row[1:]]
            found[row[0]] = (sums[:buckets], sums[buckets:])
    return found


def rollup_failed(self: Store, since: dt.datetime) -> dict[str, int]:
    """Per executor: its tasks that failed from ``since`` (a minute) on."""
    query = (sa.select(M.c.executor, sa.func.sum(M.c.failed))
             .where(M.c.at >= since, M.c.executor != TOTAL).group_by(M.c.executor))
    with self.read_one() as conn:
        return {e: int(n or 0) for e, n in conn.execute(query)}


def prune_rollup(self: Store, before: dt.datetime) -> int:
    """Delete the rollup's minutes and hours that began before ``before``; returns how many
    rows went."""
    with self.write() as conn:
        return sum(conn.execute(R.delete().where(R.c.at < before)).rowcount or 0
                   for R in (M, H))

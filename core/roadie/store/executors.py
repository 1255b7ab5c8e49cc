"""Executors as every node sees them: paused or not (``pause_executor``), and the limits their
classes declare (written by each worker as it starts, read by processes without the plugin:
the CLI, the web app, an add from a client)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from roadie import models
from roadie.limits import Limits, Rate
from roadie.status import Status
from roadie.store.channels import CHANNEL_ADDED
from roadie.store.values import RUN_ONCE, utcnow

if TYPE_CHECKING:
    from roadie.store.facade import Store

E = models.executors
T = models.tasks


@dataclass(frozen=True)
class ExecutorRow:
    """An executor's row: paused or not, and its limits as a worker last declared them."""

    name: str
    paused: bool
    paused_at: dt.datetime | None
    paused_by: str | None
    limits: Limits
    isolation: str | None


def _upsert(self: Store, values: list[dict[str, Any]], update: Iterable[str]) -> Any:
    """An insert of executor rows that updates the ``update`` columns of those that exist."""
    statement = self.insert(E).values(values)
    return statement.on_conflict_do_update(
        index_elements=["name"],
        set_={column: getattr(statement.excluded, column) for column in update})


def set_paused(self: Store, name: str, paused: bool, by: str) -> ExecutorRow:
    """Pause or resume executor ``name`` on every node (a row every worker's claim reads).
    Resuming wakes the workers."""
    now = utcnow()
    values = {"name": name, "paused": paused, "paused_at": now if paused else None,
              "paused_by": by if paused else None, "updated_at": now}
    with self.write() as conn:
        conn.execute(_upsert(self, [values], ("paused", "paused_at", "paused_by",
                                              "updated_at")))
        if not paused:
            self.notify(conn, CHANNEL_ADDED, "")
    return self.executor_rows([name])[name]


def paused_executors(self: Store) -> frozenset[str]:
    """The names of the executors paused now (a read of a small table)."""
    with self.read_one() as conn:
        return paused_in(conn)


def declare_limits(self: Store, limits: dict[str, tuple[Limits, str]]) -> None:
    """Record the limits and isolation that executors' classes declare (``name ->
    (limits, isolation)``), for processes that do not have their plugins. Paused states
    stay as they are."""
    if not limits:
        return
    with self.write() as conn:
        write_limits(self, conn, limits)


def write_limits(self: Store, conn: Connection, limits: dict[str, tuple[Limits, str]]
                 ) -> None:
    """``declare_limits`` in the caller's transaction ``conn``."""
    if not limits:
        return
    now = utcnow()
    values = [{"name": name, "paused": False, "max_running": lim.max_running,
               "rate_count": lim.rate.count if lim.rate else None,
               "rate_per": lim.rate.per if lim.rate else None, "isolation": isolation,
               "updated_at": now}
              for name, (lim, isolation) in sorted(limits.items())]
    conn.execute(_upsert(self, values, ("max_running", "rate_count", "rate_per",
                                        "isolation", "updated_at")), execution_options=RUN_ONCE)


def paused_in(conn: Connection) -> frozenset[str]:
    """``paused_executors`` in the caller's transaction ``conn``."""
    return frozenset(conn.execute(sa.select(E.c.name).where(E.c.paused)).scalars())


def executor_rows(self: Store, names: Iterable[str] | None = None) -> dict[str, ExecutorRow]:
    """The executors' rows by name (all of them, or those of ``names`` that have one)."""
    query = sa.select(E)
    if names is not None:
        query = query.where(E.c.name.in_(sorted(set(names))))
    with self.read_one() as conn:
        rows = conn.execute(query).all()
    return {r.name: ExecutorRow(
        r.name, bool(r.paused), r.paused_at, r.paused_by,
        Limits(r.max_running, Rate(r.rate_count, r.rate_per) if r.rate_count else None),
        r.isolation) for r in rows}


def has_tasks_of(self: Store, executor: str) -> bool:
    """Whether any task of ``executor`` is stored (an index probe)."""
    with self.read_one() as conn:
        return conn.execute(sa.select(T.c.id).where(T.c.executor == executor).limit(1)
                            ).first() is not None


def executor_counts(self: Store) -> dict[str, tuple[int, int, int]]:
    """Per executor: its waiting tasks, those of them held back (parked behind their key's
    limit), and its running tasks."""
    waiting = (int(Status.NEW), int(Status.QUEUED))
    held = sa.text(models.PARKED)
    query = (sa.select(T.c.executor,
                       sa.func.count().filter(T.c.status.in_(waiting)),
                       sa.func.count().filter(held),
                       sa.func.count().filter(T.c.status == int(Status.IN_PROGRESS)))
             .where(sa.text(f"roadie_tasks.{models.OPEN_BY_EXECUTOR}"))  # (its index)
             .group_by(T.c.executor))
    with self.read_one() as conn:
        return {e: (int(w), int(h), int(r)) for e, w, h, r in conn.execute(query)}

"""Isolation locks, and what the claim cannot take: tasks parked behind their key, and
delayed tasks not due yet. Neither is in the claim index (``claimable`` is false): a lock's
release makes the next parked task of its key claimable, and the claim loop makes due delayed
tasks claimable every DUE_CHECK_INTERVAL. The future home of concurrency limits and rates.

Of the waiting tasks of one isolation key only the next to run, its head, is claimable; the
others are parked (QUEUED, not claimable) from the moment they are added, so a backlog behind
one key costs the claim nothing. A held lock parks the tasks of its key too. The lock's
release, or the head's end without running (cancelled, deleted), promotes the best parked
task (highest priority, then oldest). A task that turns claimable beside a head (a delayed one
come due, a retry, a race of two adds) is parked by the claim that meets it while its key is
taken.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from roadie import models
from roadie.status import Status
from roadie.store.engine import CHANNEL_ADDED, CHANNEL_CHANGED
from roadie.store.sql import (
    KEY_HEADS,
    PROMOTE_DUE,
    PROMOTE_PARKED,
    RELEASE_LOCKS,
    STRANDED_KEYS,
)

if TYPE_CHECKING:
    from roadie.store.facade import Store

DUE_CHECK_INTERVAL = 0.05  # seconds between two promotions of due delayed tasks (per process)


def take_locks(self: Store, conn: Connection, wanted: Mapping[str, int], node: str,
               now: dt.datetime) -> set[str]:
    """Take the isolation locks ``wanted`` (key -> task id) for ``node``; returns the keys
    taken (a key held already is not)."""
    L = models.locks
    insert: Any
    if self.is_postgres:
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = (
        insert(L)
        .values([
            {"key": key, "task_id": task_id, "node": node, "acquired_at": now}
            for key, task_id in wanted.items()
        ])
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(L.c.key)
    )
    return set(conn.execute(statement).scalars())


def held_keys(self: Store, conn: Connection, keys: Iterable[str]) -> set[str]:
    """The isolation keys among ``keys`` held now. On PostgreSQL their lock rows stay
    share-locked until ``conn`` commits: a release waits, then sees what this
    transaction parked behind them."""
    L = models.locks
    query = sa.select(L.c.key).where(L.c.key.in_(sorted(keys)))
    if self.is_postgres:
        query = query.with_for_update(read=True)
    return set(conn.execute(query).scalars())


def release_locks(self: Store, conn: Connection, task_ids: Sequence[int]) -> None:
    """Release the isolation locks of ``task_ids`` and wake the next task parked behind
    each (a statement of its own: on PostgreSQL it sees every task parked meanwhile)."""
    keys = list(conn.execute(RELEASE_LOCKS, {"ids": list(task_ids)}).scalars())
    if keys:
        self.promote_parked(conn, keys)


def promote_parked(self: Store, conn: Connection, keys: Iterable[str]) -> int:
    """Make the next task parked behind each of ``keys`` (highest priority, then oldest)
    claimable, for keys not held now; returns how many woke."""
    free = set(keys) - self.held_keys(conn, keys)
    woken = 0
    for key in sorted(free):
        task_id = conn.execute(PROMOTE_PARKED, {"key": key}).scalar()
        if task_id is not None:
            woken += 1
            self.notify(conn, CHANNEL_ADDED, str(task_id))
    return woken


def key_heads(self: Store, conn: Connection, keys: Iterable[str], *,
              lock: bool = True) -> dict[str, tuple[int, int]]:
    """The head (task id, priority) of each of ``keys`` that has one: its claimable task.
    With ``lock``, on PostgreSQL, the head rows stay locked until ``conn`` commits, so that a
    worker claims a head only once the tasks this transaction parks behind it are visible to
    the release that wakes them."""
    query = KEY_HEADS.with_for_update() if lock and self.is_postgres else KEY_HEADS
    return {key: (task_id, priority)
            for key, task_id, priority in conn.execute(query, {"keys": sorted(keys)})}


def queue_behind_heads(self: Store, conn: Connection, rows: list[dict[str, Any]],
                       heads: Mapping[str, tuple[int, int]], now: dt.datetime) -> None:
    """Park the new task ``rows`` that are not the next of their isolation key: the best
    runnable one of a key (highest priority, then first) becomes its head unless the key has
    a head as urgent already; a head that gives way to a more urgent task is parked. Rows of
    a held key are parked already; delayed and blocked rows wait as they are."""
    best: dict[str, int] = {}
    for index, row in enumerate(rows):
        key = row["isolation_key"]
        if key is not None and row["claimable"] and (
                key not in best or row["priority"] > rows[best[key]]["priority"]):
            best[key] = index
    demoted: list[int] = []
    for key, index in list(best.items()):
        head = heads.get(key)
        if head is None:
            continue
        if head[1] >= rows[index]["priority"]:
            del best[key]
        else:
            demoted.append(head[0])
    for index, row in enumerate(rows):
        key = row["isolation_key"]
        if key is not None and row["claimable"] and best.get(key) != index:
            row.update(status=int(Status.QUEUED), claimable=False)
    if demoted:
        T = models.tasks
        conn.execute(T.update().where(T.c.id.in_(demoted), sa.text(models.KEY_HEAD))
                     .values(status=int(Status.QUEUED), claimable=False, updated_at=now))
        self.notify(conn, CHANNEL_CHANGED, ",".join(map(str, demoted)))


def queue_head(self: Store, key: str) -> int | None:
    """The task that runs next for isolation key ``key`` (its holder, or else its claimable
    task), or None."""
    with self.read() as conn:
        holder = conn.execute(sa.select(models.locks.c.task_id)
                              .where(models.locks.c.key == key)).scalar()
        if holder is not None:
            return int(holder)
        head = self.key_heads(conn, [key], lock=False).get(key)
    return head[0] if head is not None else None


def due_check_now(self: Store) -> bool:
    """True at most every DUE_CHECK_INTERVAL seconds (per process): time to make due
    delayed tasks claimable."""
    now = time.monotonic()
    if now < self._next_due_check:
        return False
    self._next_due_check = now + DUE_CHECK_INTERVAL
    return True


def promote_due(self: Store, conn: Connection, now: dt.datetime) -> int:
    """Make delayed tasks whose time has come claimable (a range of the due index, up to
    DUE_BATCH at a time); returns how many."""
    ids = list(conn.execute(PROMOTE_DUE, {"now": now}).scalars())
    if ids:
        self.notify(conn, CHANNEL_ADDED, str(ids[-1]))
    return len(ids)


def promote_stranded(self: Store) -> int:
    """Wake the next parked task of every key that no task holds (after a crash, or a
    task that was next for its key ended without running); returns how many woke.
    Walks the distinct parked keys, not the parked tasks."""
    with self.read() as conn:
        keys = list(conn.execute(STRANDED_KEYS).scalars())
    if not keys:
        return 0
    with self.write() as conn:
        return self.promote_parked(conn, keys)


def held_locks(self: Store) -> dict[str, int]:
    """Isolation keys held now, with the task holding each."""
    with self.read() as conn:
        return dict(conn.execute(sa.select(models.locks.c.key, models.locks.c.task_id)).all())


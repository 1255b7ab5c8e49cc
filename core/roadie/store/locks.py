"""Isolation keys and their slots, rate windows, and what the claim cannot take: tasks parked
behind their key, and delayed tasks not due yet. Neither is in the claim index (``claimable``
is false): a slot's release makes the next parked task of its key claimable, and the claim
loop makes due delayed tasks claimable every DUE_CHECK_INTERVAL.

A key has a width, the ``key_limit`` of its tasks: how many of them may be active (running or
claimable) at once. An isolation key without a limit has width 1 (serial); ``max_running = n``
gives n; a key limited only by a rate keeps its claimable tasks few (``limits.RATE_HEADS``).
A running task of a key with a limit holds one of its slots (``roadie_locks``, slots 0..n-1).
Of a key's waiting tasks only as many as its room (width, less held slots and claimable
tasks) are claimable, its heads; the others are parked (QUEUED, not claimable) from the
moment they are added, so a backlog behind a key costs the claim nothing. A slot's release,
or a head's end without running (cancelled, deleted), or the claim of a head that takes no
slot (a key limited by a rate), promotes the best parked tasks (highest priority, then
oldest). A task that turns claimable beside full heads (a delayed one come due, a retry, a
race of two adds) is parked by the claim that meets it while its key is full.

A rate (``roadie.Rate(count, per)``) is a sliding window of ``count`` rows per key
(``roadie_rate_slots``), each the time of a recent start: a start takes a row at least a
period old. A head that finds none stays claimable with its ``run_after`` moved to when the
next row frees: it keeps its place, and the claim skips it until then.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from roadie import models
from roadie.limits import Rate
from roadie.status import Status
from roadie.store.channels import CHANNEL_ADDED, CHANNEL_CHANGED
from roadie.store.rows import utc_time as in_utc_time
from roadie.store.sql import (
    KEY_HEADS,
    PROMOTE_DUE,
    PROMOTE_PARKED,
    PROMOTE_PARKED_PG,
    RELEASE_LOCKS,
    STRANDED_KEYS,
)

if TYPE_CHECKING:
    from roadie.store.facade import Store

DUE_CHECK_INTERVAL = 0.05  # seconds between two promotions of due delayed tasks (per process)
MIN_THROTTLE = dt.timedelta(milliseconds=5)  # the shortest wait for a rate's next start


def take_slots(self: Store, conn: Connection, wanted: Mapping[str, tuple[int, list[int]]],
               node: str, now: dt.datetime) -> set[int]:
    """Take a slot of its isolation key for each of the tasks ``wanted`` (key -> (how many
    slots the key has, task ids)); returns the ids of the tasks that got one. A key whose
    slots are all held gives none; one taken by another worker meanwhile is skipped."""
    L = models.locks
    taken: dict[str, set[int]] = {}
    for key, slot in conn.execute(sa.select(L.c.key, L.c.slot)
                                  .where(L.c.key.in_(sorted(wanted)))):
        taken.setdefault(key, set()).add(slot)
    values = []
    for key, (slots, task_ids) in wanted.items():
        free = (s for s in range(slots) if s not in taken.get(key, ()))
        values += [{"key": key, "slot": slot, "task_id": task_id, "node": node,
                    "acquired_at": now} for slot, task_id in zip(free, task_ids, strict=False)]
    if not values:
        return set()
    # one statement for any number of rows (compiled once: executemany with RETURNING)
    statement = (self.insert(L).on_conflict_do_nothing(index_elements=["key", "slot"])
                 .returning(L.c.task_id))
    return set(conn.execute(statement, values).scalars())


def held_counts(self: Store, conn: Connection, keys: Iterable[str]) -> dict[str, int]:
    """How many slots of each of ``keys`` are held now (keys without one are left out). On
    PostgreSQL their rows stay share-locked until ``conn`` commits: a release waits, then
    sees what this transaction parked behind them."""
    L = models.locks
    query = sa.select(L.c.key).where(L.c.key.in_(sorted(keys)))
    if self.is_postgres:
        query = query.with_for_update(read=True)
    return dict(Counter(conn.execute(query).scalars()))


def release_locks(self: Store, conn: Connection, task_ids: Sequence[int]) -> None:
    """Release the isolation slots of ``task_ids`` and wake the next tasks parked behind
    each key (a statement of its own: on PostgreSQL it sees every task parked meanwhile)."""
    keys = set(conn.execute(RELEASE_LOCKS, {"ids": list(task_ids)}).scalars())
    if keys:
        self.promote_parked(conn, keys)


def promote_parked(self: Store, conn: Connection, keys: Iterable[str]) -> int:
    """Make the next tasks parked behind each of ``keys`` (highest priority, then oldest)
    claimable, as many as the key has room for: its width (``key_limit``, 1 for a serial
    key) less its held slots and its claimable tasks. Returns how many woke."""
    keys = set(keys)
    held = self.held_counts(conn, keys)
    woken = 0
    promote = PROMOTE_PARKED_PG if self.is_postgres else PROMOTE_PARKED
    for key in sorted(keys):
        ids = list(conn.execute(promote, {"key": key, "held": held.get(key, 0)})
                   .scalars())
        if ids:
            woken += len(ids)
            self.notify(conn, CHANNEL_ADDED, str(max(ids)))
    return woken


def key_heads(self: Store, conn: Connection, keys: Iterable[str], *,
              lock: bool = True) -> dict[str, list[tuple[int, int]]]:
    """The heads (task id, priority) of each of ``keys`` that has one, best first: its
    claimable tasks. With ``lock``, on PostgreSQL, the head rows stay locked until ``conn``
    commits, so that a worker claims a head only once the tasks this transaction parks
    behind it are visible to the release that wakes them."""
    query = KEY_HEADS.with_for_update() if lock and self.is_postgres else KEY_HEADS
    heads: dict[str, list[tuple[int, int]]] = {}
    for key, task_id, priority in conn.execute(query, {"keys": sorted(keys)}):
        heads.setdefault(key, []).append((task_id, priority))
    for found in heads.values():
        found.sort(key=lambda head: (-head[1], head[0]))
    return heads


def queue_behind_heads(self: Store, conn: Connection, rows: list[dict[str, Any]],
                       heads: Mapping[str, list[tuple[int, int]]], held: Mapping[str, int],
                       now: dt.datetime) -> None:
    """Park the new task ``rows`` that do not fit beside their isolation key's active tasks:
    a key has room for its width (``key_limit``, 1 when NULL) less its ``held`` slots and
    its ``heads``; the best runnable new rows (highest priority, then first) fill it, and a
    new row more urgent than a waiting head takes that head's place (the head is parked).
    Delayed and blocked rows wait as they are."""
    by_key: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        key = row["isolation_key"]
        if key is not None and row["claimable"]:
            by_key.setdefault(key, []).append(index)
    demoted: list[int] = []
    for key, indexes in by_key.items():
        indexes.sort(key=lambda i: (-rows[i]["priority"], i))
        room = (rows[indexes[0]]["key_limit"] or 1) - held.get(key, 0)
        waiting = list(heads.get(key, ()))  # best first
        room -= len(waiting)
        for index in indexes:
            row = rows[index]
            if room > 0:
                room -= 1
            elif waiting and row["priority"] > waiting[-1][1]:
                demoted.append(waiting.pop()[0])  # the least urgent head gives way
            else:
                row.update(status=int(Status.QUEUED), claimable=False)
    if demoted:
        T = models.tasks
        conn.execute(T.update().where(T.c.id.in_(demoted), sa.text(models.KEY_HEAD))
                     .values(status=int(Status.QUEUED), claimable=False, updated_at=now))
        self.notify(conn, CHANNEL_CHANGED, ",".join(map(str, demoted)))


def take_tokens(self: Store, conn: Connection, key: str, rate: Rate, wanted: int,
                now: dt.datetime) -> tuple[int, dt.datetime | None]:
    """Take up to ``wanted`` starts of ``key``'s ``rate`` at ``now``: rows of its sliding
    window whose start is at least a period old (rows another worker takes meanwhile are
    skipped). Returns how many were taken and, when fewer than wanted, when the next one
    frees."""
    R = models.rate_slots
    if (key, rate.count) not in self._rate_keys:  # the window's rows, made on first use
        have = conn.execute(sa.select(sa.func.count()).select_from(R)
                            .where(R.c.key == key, R.c.slot < rate.count)).scalar() or 0
        if have < rate.count:
            _insert_rate_slots(self, conn, key, rate.count)
        self._rate_keys.add((key, rate.count))
    free = list(conn.execute(
        sa.select(R.c.slot)
        .where(R.c.key == key, R.c.slot < rate.count,
               R.c.taken_at <= now - dt.timedelta(seconds=rate.per))
        .order_by(R.c.taken_at).limit(wanted).with_for_update(skip_locked=True)).scalars())
    if free:  # (a statement of its own: as a subquery, PostgreSQL may run it again per row)
        conn.execute(R.update().where(R.c.key == key, R.c.slot.in_(free)).values(taken_at=now))
    got = len(free)
    if got >= wanted:
        return got, None
    oldest = conn.execute(sa.select(sa.func.min(R.c.taken_at))
                          .where(R.c.key == key, R.c.slot < rate.count)).scalar()
    next_at = (in_utc_time(oldest) + dt.timedelta(seconds=rate.per)
               if oldest is not None else now)
    return got, max(next_at, now + MIN_THROTTLE)


def _insert_rate_slots(self: Store, conn: Connection, key: str, count: int) -> None:
    """The ``count`` rows of ``key``'s sliding window, free (rows it has already stay)."""
    long_ago = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    free = self.insert(models.rate_slots).on_conflict_do_nothing(index_elements=["key", "slot"])
    conn.execute(free,
                 [{"key": key, "slot": s, "taken_at": long_ago} for s in range(count)])


def key_state(self: Store, key: str) -> tuple[list[int], list[int]]:
    """Isolation key ``key`` now: the tasks holding its slots, and its heads (the tasks
    that run next), best first."""
    with self.read() as conn:
        holders = sorted(conn.execute(sa.select(models.locks.c.task_id)
                                      .where(models.locks.c.key == key)).scalars())
        heads = self.key_heads(conn, [key], lock=False).get(key, [])
    return holders, [task_id for task_id, _ in heads]


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


def held_locks(self: Store) -> dict[str, list[int]]:
    """Isolation keys held now, with the tasks holding their slots."""
    held: dict[str, list[int]] = {}
    with self.read() as conn:
        for key, task_id in conn.execute(sa.select(models.locks.c.key, models.locks.c.task_id)
                                         .order_by(models.locks.c.key, models.locks.c.slot)):
            held.setdefault(key, []).append(task_id)
    return held


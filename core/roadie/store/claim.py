"""Claim and settle: the worker's round. In one transaction a worker records how its attempts
ended and takes the next runnable tasks it can run.

On PostgreSQL the common round is one statement (``sql.pg_settle_sql``); when candidates need
an isolation lock, the general claim (``_claim``, the same on both databases) takes over. The
claim locks candidate rows with ``FOR UPDATE SKIP LOCKED`` so workers never wait on each
other; on SQLite the round's ``BEGIN IMMEDIATE`` makes it just as atomic.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from roadie import models
from roadie.errors import DatabaseError
from roadie.limits import Rate
from roadie.records import Decoder, TaskRecord, task_record_of
from roadie.status import FINAL_STATUSES, Status
from roadie.store.channels import CHANNEL_ADDED, CHANNEL_CHANGED
from roadie.store.engine import DATABASE_ERRORS, driver_tuples
from roadie.store.locks import due_check_now, promote_due, take_slots, take_tokens
from roadie.store.rows import (
    STATUS_OF,
    in_utc,
    record_reader,
    sqlite_rows,
    sqlite_time,
    task_record,
)
from roadie.store.sql import (
    CLAIM_UPDATE,
    DONE_CHANGED,
    DUE_BATCH,
    DUE_EXISTS,
    FINISH_FINAL,
    HAS_PLUGINS_PG,
    HAS_PLUGINS_SQLITE,
    MARK_STARTED,
    PG_CANDIDATES,
    ROWS_BY_ID,
    SQLITE_ATTEMPT,
    SQLITE_CANDIDATES,
    SQLITE_CANDIDATES_MANY,
    SQLITE_CANDIDATES_RANGE,
    SQLITE_CLAIM,
    SQLITE_FINISH,
    pg_settle_sql,
)
from roadie.store.values import Claimable, Outcome, Settled, claimable_at, utcnow

if TYPE_CHECKING:
    from roadie.store.facade import Store

T = models.tasks
SQLITE_FINISH_BATCH = 500  # final outcomes per SQLite update statement (10 variables each)
SQLITE_MAX_RANGES = 400  # (executor, tags) pairs claimed range by range on SQLite


def claim(self: Store, node: str, can: Claimable, limit: int) -> list[TaskRecord]:
    """Atomically take up to ``limit`` runnable tasks for ``node`` (see ``settle``)."""
    return self.settle(node, [], can, limit).claimed


def settle(
    self: Store,
    node: str,
    outcomes: Sequence[tuple[Outcome, bool]],
    can: Claimable | None,
    limit: int,
    can_async: Claimable | None = None,
    limit_async: int = 0,
    *,
    ahead: int = 0,
    ahead_async: int = 0,
    started: Sequence[tuple[int, int, dt.datetime]] = (),
    claimed_as: Mapping[int, TaskRecord] | None = None,
    decoder: Decoder | None = None,
) -> Settled:
    """In one transaction: record the ``outcomes`` of ``node``'s finished attempts
    (``(outcome, had an isolation key)``), then claim up to ``limit`` new tasks that
    ``can`` runs (and up to ``limit_async`` that ``can_async`` runs: the async slots).

    An outcome is only written while ``node`` still owns its task (it may have been
    recovered as orphaned meanwhile); the task's isolation lock is released and the
    attempt is logged. The claim takes the highest priority, then oldest, runnable tasks,
    never one another worker holds (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, ``BEGIN
    IMMEDIATE`` on SQLite) nor one whose isolation key is held; a candidate whose key is
    held is parked as QUEUED. Every DUE_CHECK_INTERVAL the round also makes due delayed
    tasks claimable. The last ``ahead`` of the ``limit`` tasks are claimed ahead of a free
    thread (the last ``ahead_async`` of ``limit_async``, of a free async slot): their
    ``started_at`` stays NULL until a later round records it from ``started`` (``(task id,
    attempt, when)``) or from the attempt's outcome.

    ``claimed_as`` holds the finished tasks as claimed (by id): on PostgreSQL the round
    then reads back only the columns that others may have changed since (the rest is
    known). Claimed and finished records get ``decoder``.
    """
    now = utcnow()
    finished: list[TaskRecord] = []
    claimed: list[TaskRecord] = []
    parked = 0
    throttled_until: dt.datetime | None = None
    wanted = [(c, n) if c is not None and n > 0 and c.executors else (None, 0)
              for c, n in ((can, limit), (can_async, limit_async))]
    claims = [(c, n) for c, n in wanted if c is not None]
    if not outcomes and not claims and not started:
        return Settled(finished, claimed)
    promote = bool(claims) and due_check_now(self)
    committed = Settled([], [])  # what a first statement committed already (PostgreSQL)
    released: set[str] = set()  # keys whose slots the first statement released
    if self.is_postgres and all(o.status in FINAL_STATUSES for o, _ in outcomes):
        first_finished, first_claimed, keyed = _pg_settle(
            self, node, [o for o, _ in outcomes], wanted, now, promote, (ahead, ahead_async),
            started, claimed_as, decoder)
        committed = Settled(first_finished, first_claimed)
        released = {t.isolation_key for t in first_finished if t.isolation_key is not None}
        if not keyed and not released:
            self.trees.settled(committed.finished)
            return committed
        # candidates with isolation keys: the general claim, for what is left (after a
        # release only, the next round claims what it woke)
        claims = [(c, n - sum(t.executor in c.executors for t in first_claimed))
                  for c, n in claims if keyed]
        claims = [(c, n) for c, n in claims if n > 0]
        outcomes, started = [], ()
        promote = False
    if (self.is_sqlite and not outcomes and not started
            and not _has_candidates(self, claims, now, promote)):
        # SQLite has one writer at a time and no fair queue for the write lock: idle
        # workers polling with write transactions would starve the callers' writes
        return Settled(finished, claimed)
    try:
        with self.write() as conn:
            if released:  # a released slot wakes the next task of its key (committed: this
                self.promote_parked(conn, released)  # sees every task parked meanwhile)
            if started:
                conn.execute(MARK_STARTED, [
                    {"b_id": i, "b_node": node, "b_attempt": a, "b_at": at}
                    for i, a, at in started])
            if outcomes:
                finished = _finish(self, conn, node, outcomes, now, decoder)
            if promote:
                promote_due(self, conn, now)
            for c, n in claims:
                got, parked_now, until = _claim(self, conn, node, c, n, now,
                                                ahead if c is can else ahead_async, decoder)
                claimed += got
                parked += parked_now
                if until is not None and (throttled_until is None or until < throttled_until):
                    throttled_until = until
    except DatabaseError:
        if not (committed.finished or committed.claimed):
            raise
        self.trees.settled(committed.finished)
        return committed  # the second transaction failed; the first one stands
    self.trees.settled(committed.finished + finished)
    return Settled(committed.finished + finished, committed.claimed + claimed, parked,
                   throttled_until)


def _has_candidates(self: Store, claims: Sequence[tuple[Claimable, int]], now: dt.datetime,
                    promote: bool) -> bool:
    """Whether a claim could find a task, or (``promote``) a delayed task is due (a read:
    it takes no write lock)."""
    with self.read() as conn:
        if promote and conn.execute(DUE_EXISTS, {"now": now}).first():
            return True
        for can, _ in claims:
            if conn.execute(*_candidates(self, can, 1, now)).first() is not None:
                return True
    return False


def _candidates(self: Store, can: Claimable, limit: int,
                now: dt.datetime) -> tuple[Any, dict[str, Any]]:
    """The claim's candidate query for ``can`` and its parameters."""
    params: dict[str, Any] = {"now": now, "limit": limit}
    params.update((f"e{i}", e) for i, e in enumerate(can.executors))
    params.update((f"g{i}", g) for i, g in enumerate(can.tag_keys))
    params.update((f"p{i}", p) for i, p in enumerate(can.plugins))
    return _claim_candidates_sql(self, len(can.executors), len(can.tag_keys),
                                 len(can.plugins)), params


def _claim_candidates_sql(self: Store, executors: int, tags: int, plugins: int) -> Any:
    """The claim's candidates: per (executor, tags) pair, the first claimable tasks of
    that range of the claim index, then the best of them. A claim never walks a task it
    cannot take (delayed and parked tasks are not in the index; other executors' and
    tags' tasks are in other ranges). Bound: ``now``, ``limit``, ``e0..``, ``g0..``,
    ``p0..``."""
    key = (executors, tags, plugins)
    cached = self._candidates_cache.get(key)
    if cached is not None:
        return cached
    plugin_names = ", ".join(f":p{i}" for i in range(plugins)) or "NULL"
    if self.is_postgres:
        ranges = ", ".join(f"(:e{i}, :g{j})" for i in range(executors) for j in range(tags))
        sql = PG_CANDIDATES.format(ranges=ranges, plugins=plugin_names)
    elif executors * tags > SQLITE_MAX_RANGES:  # a compound SELECT this long fails
        sql = SQLITE_CANDIDATES_MANY.format(
            executors=", ".join(f":e{i}" for i in range(executors)),
            tags=", ".join(f":g{j}" for j in range(tags)), plugins=plugin_names)
    else:
        sql = SQLITE_CANDIDATES.format(ranges=" UNION ALL ".join(
            SQLITE_CANDIDATES_RANGE.format(i=i, j=j, plugins=plugin_names)
            for i in range(executors) for j in range(tags)))
    statement = sa.text(sql).bindparams(sa.bindparam("now", type_=models.UTCDateTime))
    self._candidates_cache[key] = statement
    return statement


def _pg_settle(
    self: Store, node: str, final: list[Outcome],
    wanted: Sequence[tuple[Claimable | None, int]], now: dt.datetime, promote: bool,
    ahead: tuple[int, int], started: Sequence[tuple[int, int, dt.datetime]],
    claimed_as: Mapping[int, TaskRecord] | None, decoder: Decoder | None,
) -> tuple[list[TaskRecord], list[TaskRecord], bool]:
    """The common round on PostgreSQL as one statement in its own transaction: record
    final outcomes, claim tasks without isolation keys (thread and async slots), make due
    delayed tasks claimable (with ``promote``). Returns (finished, claimed, whether
    candidates with isolation keys were left for the general claim)."""
    (can, limit), (can_async, limit_async) = wanted  # thread slots, async slots
    either = can or can_async
    record = bool(final or started)
    known = claimed_as is not None and all(o.task_id in claimed_as for o in final)
    params: dict[str, Any] = {"node": node, "now": now}
    if record:
        params.update({
            "outcomes": _COMPACT_JSON.encode([_outcome_json(o) for o in final]),
            "start_ids": [i for i, _, _ in started],
            "start_attempts": [a for _, a, _ in started],
            "start_ats": [at for _, _, at in started],
        })
    if either is not None:
        params.update({
            "executors": list(can.executors) if can is not None else [],
            "tags": list(either.tag_keys),
            "plugins": list(either.plugins),
            "isolated": sorted({e for c, _ in wanted if c is not None for e in c.isolated}),
            "limit": max(limit, 0), "start": max(limit - ahead[0], 0),
            "executors_async": list(can_async.executors) if can_async is not None else [],
            "limit_async": max(limit_async, 0),
            "start_async": max(limit_async - ahead[1], 0),
        })
        # executors with a limit (and no rate) take their keys' slots in this statement
        slotted = {e: n for c, _ in wanted if c is not None for e, n in c.slots.items()
                   if n is not None and e not in c.rates and e in c.executors}
        if slotted:
            params["slot_executors"] = list(slotted)
            params["slot_counts"] = list(slotted.values())
    if promote:
        params["due_limit"] = DUE_BATCH
    sql = pg_settle_sql(record, can is not None, can_async is not None, promote,
                        self._task_columns if known else (),
                        either is not None and "slot_executors" in params)
    try:
        # one statement is its own atomic transaction: no BEGIN/COMMIT round trips
        with self._own_session("settle") as conn:
            keys, rows = driver_tuples(conn, sql, params)
    except DATABASE_ERRORS as exc:
        raise self._database_error(exc) from exc
    finished, claimed, keyed = [], [], False
    outcome_of = {o.task_id: o for o in final}
    record_of = record_reader(keys)
    for values in rows:
        kind = values[0]
        if kind == "done" and known:
            assert claimed_as is not None
            row = in_utc({k: v for k, v in zip(keys, values, strict=True)
                          if k in DONE_CHANGED})
            finished.append(_finished_record(
                claimed_as[row["id"]], outcome_of[row["id"]], row, now, decoder))
        elif kind == "done":
            finished.append(record_of(values, decoder))
        elif kind == "claimed":
            claimed.append(record_of(values, decoder))
        else:
            keyed = True
    order = {o.task_id: i for i, o in enumerate(final)}
    finished.sort(key=lambda t: order[t.id])
    claimed.sort(key=lambda t: (-t.priority, t.id))
    return finished, claimed, keyed


def _finish(self: Store, conn: Connection, node: str, outcomes: Sequence[tuple[Outcome, bool]],
            now: dt.datetime, decoder: Decoder | None = None) -> list[TaskRecord]:
    final = [o for o, _ in outcomes if o.status in FINAL_STATUSES]
    again = [o for o, _ in outcomes if o.status not in FINAL_STATUSES]
    written: list[Any] = []  # rows of final outcomes, as written (SQLite)
    if final and self.is_sqlite:
        now_text = sqlite_time(now)
        for first in range(0, len(final), SQLITE_FINISH_BATCH):
            batch = final[first:first + SQLITE_FINISH_BATCH]
            params: list[Any] = []
            for o in batch:
                params += (o.task_id, int(o.status), o.message, o.result, o.error,
                           o.task_status, o.messages, o.checkpoint,
                           sqlite_time(o.started_at), o.attempt)
            params += (now_text, now_text, node)
            rows_sql = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(batch))
            written += sqlite_rows(conn, SQLITE_FINISH.format(values=rows_sql), params)
    elif final:
        conn.execute(
            FINISH_FINAL,
            [{"b_id": o.task_id, "b_node": node, "b_status": int(o.status),
              "b_message": o.message, "b_result": o.result, "b_error": o.error,
              "b_task_status": o.task_status, "b_messages": o.messages,
              "b_checkpoint": o.checkpoint, "b_now": now, "b_attempt": o.attempt,
              "b_started": o.started_at}
             for o in final],
        )
    for o in again:  # back to wait: a retry or a delay (rare, one by one)
        values: dict[str, Any] = {
            "status": int(o.status), "status_message": o.message, "completed": False,
            "error": o.error, "run_after": o.run_after or now, "node": None,
            "cancel_requested_at": None, "cancel_requested_by": None, "updated_at": now,
            "claimable": claimable_at(int(o.status), o.run_after or now, now),
        }
        for column in ("task_status", "messages", "checkpoint"):
            if getattr(o, column) is not None:
                values[column] = getattr(o, column)
        if o.started_at is not None:
            values["started_at"] = sa.func.coalesce(T.c.started_at, o.started_at)
        if not o.attempt_counts:  # put back uncounted (a delay, a claim never started):
            values["attempts"] = T.c.attempts - 1  # the last error and a cancel request stay
            values.pop("cancel_requested_at"), values.pop("cancel_requested_by")
            if o.error is None:
                values.pop("error")
        if o.status == Status.WAITING:  # parked until its subtasks end (no node, no lock)
            values["fan_in"] = True
            # a cancel requested meanwhile stays: the parent then ends CANCELLED
            values.pop("cancel_requested_at", None), values.pop("cancel_requested_by", None)
        owned = [T.c.id == o.task_id, T.c.node == node,
                 T.c.status == int(Status.IN_PROGRESS)]
        if o.attempt is not None:
            owned.append(T.c.attempts == o.attempt)
        conn.execute(T.update().where(*owned).values(**values))
    if self.is_sqlite:  # the final ones came back from their update
        ids = [o.task_id for o in again]
        selected: Iterable[Any] = written + (sqlite_rows(
            conn, f"SELECT * FROM roadie_tasks WHERE id IN ({', '.join('?' * len(ids))})",
            ids) if ids else [])
    else:
        selected = conn.execute(ROWS_BY_ID,
                                {"ids": [o.task_id for o, _ in outcomes]})
    rows = {
        r["id"]: r for r in (r if isinstance(r, dict) else r._mapping for r in selected)
        if r["updated_at"] == now and (r["node"] == node or r["node"] is None)
    }
    if any(isolated for _, isolated in outcomes):
        self.release_locks(conn, list(rows))
    attempts = [
        {"task_id": o.task_id, "attempt": rows[o.task_id]["attempts"], "node": node,
         "status": int(o.status if o.status in FINAL_STATUSES or o.status == Status.WAITING
                       else Status.FAILED),
         "message": o.message, "error": o.error,
         "started_at": rows[o.task_id]["started_at"], "finished_at": now}
        for o, _ in outcomes if o.task_id in rows and o.attempt_counts
    ]
    if attempts and self.is_sqlite:
        conn.exec_driver_sql(SQLITE_ATTEMPT, [
            (a["task_id"], a["attempt"], a["node"], a["status"], a["message"], a["error"],
             sqlite_time(a["started_at"]), sqlite_time(now)) for a in attempts])
    elif attempts:
        conn.execute(models.attempts.insert(), attempts)
    for o, _ in outcomes:
        if o.task_id in rows:
            self.notify(conn, CHANNEL_CHANGED, str(o.task_id))
            if o.status not in FINAL_STATUSES:
                self.notify(conn, CHANNEL_ADDED, str(o.task_id))
    return [task_record(rows[o.task_id], decoder) for o, _ in outcomes
            if o.task_id in rows]


def _claim(self: Store, conn: Connection, node: str, can: Claimable, limit: int,
           now: dt.datetime, ahead: int = 0, decoder: Decoder | None = None,
           ) -> tuple[list[TaskRecord], int, dt.datetime | None]:
    """Claim up to ``limit`` of what ``can`` runs, taking the slots of isolation keys and
    the starts of rates; returns the tasks claimed, how many candidates were parked (their
    key was full), and when the earliest head held back by its rate may start."""
    statement, params = _candidates(self, can, limit * 2 if can.isolated else limit, now)
    if self.is_sqlite:  # driver SQL: the statement is plain text already
        params["now"] = sqlite_time(now)
        candidates = conn.exec_driver_sql(statement.text, params).all()
    else:
        candidates = conn.execute(statement, params).all()
    if not candidates:
        return [], 0, None
    start = max(limit - ahead, 0)  # the others are claimed ahead: not started yet
    winners: list[int] = []  # tasks without a key
    queued: list[tuple[int, str]] = []  # (task, key): more than its key's slots
    keyed: dict[str, list[int]] = {}  # key -> candidates that want to start
    executor_of: dict[str, str] = {}
    wanted = 0
    for row in candidates:
        if wanted >= limit:
            break
        key = row.isolation_key
        if key is None and row.executor in can.isolated:
            key = can.isolated[row.executor](row)
            if key is not None:  # a row added without its key: it has one from now on
                conn.execute(T.update().where(T.c.id == row.id, T.c.isolation_key.is_(None))
                             .values(isolation_key=key))
        if key is None:
            winners.append(row.id)
            wanted += 1
            continue
        wants = keyed.setdefault(key, [])
        executor_of[key] = row.executor
        slots = can.slots.get(row.executor, 1)
        if slots is None or len(wants) < slots:
            wants.append(row.id)
            wanted += 1
        else:
            queued.append((row.id, key))
    # a rate's tasks start now, never ahead: each start is counted as it is claimed
    budget = start
    for key in keyed:
        if executor_of[key] in can.rates:
            keyed[key] = keyed[key][:max(budget, 0)]  # the rest: candidates next round
            budget -= len(keyed[key])
    slotted = {key: (slots, ids) for key, ids in keyed.items()
               if ids and (slots := can.slots.get(executor_of[key], 1)) is not None}
    got = take_slots(self, conn, slotted, node, now) if slotted else set()
    # a start is stamped once its slot is taken: after the end of the attempt that released
    # the slot, even when that attempt was settled by another process as this round began
    started_at = utcnow() if slotted else now
    throttled_until: dt.datetime | None = None
    for key, ids in keyed.items():
        if key in slotted:
            queued += [(task_id, key) for task_id in ids if task_id not in got]
            ids = [task_id for task_id in ids if task_id in got]
        rate = can.rates.get(executor_of[key])
        if rate is not None and ids:
            taken, next_at = take_tokens(self, conn, key, rate, len(ids), started_at)
            ids, held_back = ids[:taken], ids[taken:]
            if held_back:
                _throttle(self, conn, held_back, rate, next_at)
                if key in slotted:  # give back the slots they took
                    conn.execute(models.locks.delete().where(
                        models.locks.c.task_id.in_(held_back)))
                if next_at is not None and (throttled_until is None
                                            or next_at < throttled_until):
                    throttled_until = next_at
        keyed[key] = ids
    parked = _park_full(self, conn, queued, now, can, executor_of)
    if not winners and not any(keyed.values()):
        return [], parked, throttled_until
    # in the claim's order (priority, then age), a rate's tasks first: they start now
    rated = {task_id for key, ids in keyed.items() if executor_of[key] in can.rates
             for task_id in ids}
    rank = {row.id: i for i, row in enumerate(candidates)}
    winners += (task_id for ids in keyed.values() for task_id in ids)
    winners.sort(key=lambda task_id: (task_id not in rated, rank[task_id]))
    updated: list[Any] = []
    for ids, started in ((winners[:start], started_at), (winners[start:], None)):
        if not ids:
            continue
        if self.is_sqlite:
            updated += sqlite_rows(
                conn, SQLITE_CLAIM.format(ids=", ".join("?" * len(ids))),
                (node, sqlite_time(started), sqlite_time(now), sqlite_time(now), *ids))
        else:
            updated += conn.execute(CLAIM_UPDATE, {
                "ids": ids, "node": node, "now": now, "started": started})
    woken = [key for key, ids in keyed.items() if ids and key not in slotted]
    if woken:  # heads that take no slot left the claimable set: the next ones move up
        self.promote_parked(conn, woken)
    for task_id in winners:
        self.notify(conn, CHANNEL_CHANGED, str(task_id))
    order = {task_id: i for i, task_id in enumerate(winners)}
    return (sorted((task_record(r, decoder) for r in updated), key=lambda t: order[t.id]),
            parked, throttled_until)


def _park_full(self: Store, conn: Connection, queued: list[tuple[int, str]],
               now: dt.datetime, can: Claimable, executor_of: Mapping[str, str]) -> int:
    """Park the candidates ``queued`` whose key is full (its slots all held, counted under a
    share lock that a release waits for: the release then sees what was parked). Those of a
    key with room left (a slot another worker took meanwhile) stay claimable; returns how
    many were parked."""
    if not queued:
        return 0
    held = self.held_counts(conn, {key for _, key in queued})
    by_key: dict[str, list[int]] = {}
    for task_id, key in queued:
        by_key.setdefault(key, []).append(task_id)
    parked = 0
    for key, ids in by_key.items():  # one statement per key, however many it parks
        slots = can.slots.get(executor_of.get(key, ""), 1)
        full = slots is not None and held.get(key, 0) >= slots
        conn.execute(T.update().where(T.c.id.in_(ids)).values(
            status=int(Status.QUEUED), isolation_key=key, updated_at=now,
            claimable=not full))
        self.notify(conn, CHANNEL_CHANGED, ",".join(map(str, ids)))
        parked += len(ids) if full else 0
    return parked


def _throttle(self: Store, conn: Connection, ids: list[int], rate: Rate,
              until: dt.datetime | None) -> None:
    """Hold back heads that found no start left in their key's rate: they stay claimable
    (they keep their place) but wait until ``until``, saying why."""
    values: dict[str, Any] = {"status_message": f"waiting for its rate limit ({rate})"}
    if until is not None:
        values["run_after"] = until
    conn.execute(T.update().where(T.c.id.in_(ids)).values(**values))


def count_pending(self: Store, can: Claimable, before: dt.datetime) -> int:
    """1 if a waiting task that ``can`` runs is due before ``before``, else 0."""
    query = sa.select(T.c.id).where(
        models.WAITING,
        T.c.run_after <= before,
        T.c.executor.in_(list(can.executors)),
        T.c.tags.in_(list(can.tag_keys)),
        HAS_PLUGINS_SQLITE if self.is_sqlite else HAS_PLUGINS_PG,
    ).limit(1)
    with self.read_one() as conn:
        return len(conn.execute(query, {"plugins": list(can.plugins)}).all())


_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


def _outcome_json(o: Outcome) -> dict[str, Any]:
    """An outcome as the settle statement reads it (``json_to_recordset``: a missing key is
    NULL, so only the values it has; bytes in hex)."""
    item: dict[str, Any] = {"id": o.task_id, "status": int(o.status), "message": o.message,
                            "attempt": o.attempt}
    for key, data in (("result", o.result), ("task_status", o.task_status),
                      ("messages", o.messages), ("checkpoint", o.checkpoint)):
        if data is not None:
            item[key] = data.hex()
    if o.error is not None:
        item["error"] = o.error
    if o.started_at is not None:
        item["started"] = o.started_at.isoformat()
    return item


def _finished_record(claimed: TaskRecord, outcome: Outcome, row: dict[str, Any],
                     now: dt.datetime, decoder: Decoder | None) -> TaskRecord:
    """A finished task's record from the task as claimed, its outcome, and the
    ``DONE_CHANGED`` columns of its row (the settle statement set ``finished_at`` and
    ``updated_at`` to ``now``)."""
    fields = dict(claimed.__dict__)
    fields.update({
        "status": STATUS_OF[int(outcome.status)], "status_message": outcome.message,
        "completed": True, "error": outcome.error, "result_bytes": outcome.result,
        "status_bytes": outcome.task_status, "messages_bytes": outcome.messages,
        "checkpoint_bytes": row["checkpoint"], "finished_at": now, "updated_at": now,
        "heartbeat_at": row["heartbeat_at"], "started_at": row["started_at"],
        "cancel_requested_at": row["cancel_requested_at"],
        "cancel_requested_by": row["cancel_requested_by"],
        "isolation_key": row["isolation_key"], "has_dependents": bool(row["has_dependents"]),
        "fan_in": bool(row["fan_in"]), "decoder": decoder,
    })
    return task_record_of(fields)



"""Tasks: add (one, many, in bulk), read, count, cancel, resume and delete them."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from roadie import models
from roadie.errors import InvalidTransition, TaskNotFound
from roadie.records import AttemptRecord, Decoder, NodeRecord, TaskRecord
from roadie.status import Status
from roadie.store.channels import CHANNEL_ADDED, CHANNEL_CANCEL, CHANNEL_CHANGED
from roadie.store.engine import DATABASE_ERRORS, driver_rows
from roadie.store.locks import queue_behind_heads
from roadie.store.rows import added_records, plugins_texts, task_record, utc_time
from roadie.store.sql import PG_INSERT_ONE, PG_RESERVE_IDS
from roadie.store.values import (
    Added,
    Fence,
    NewTask,
    PlainTasks,
    Snapshot,
    claimable_at,
    utcnow,
)

if TYPE_CHECKING:
    from roadie.store.facade import Store
    from roadie.store.grouped import GroupedAdds

T = models.tasks
R = TypeVar("R")
BULK_INSERT_FROM = 20
# one task row in, the row as stored out; one task by its id: each statement made once, as
# building one for each call (and its cache key) cost a fifth or more of a single add's time
_INSERT_RETURNING = T.insert().returning(*T.c)
_SELECT_BY_ID = sa.select(T).where(T.c.id == sa.bindparam("task_id"))
# the binary COPY types of the columns that a new task sets (PostgreSQL); JSON goes as text
_COPY_TYPES = {
    "name": "text", "owner": "text", "task_group": "text", "executor": "text",
    "context": "bytea", "captured": "bytea", "status": "int2", "status_message": "text",
    "completed": "bool", "attempts": "int4", "isolation_key": "text", "priority": "int4",
    "run_after": "timestamptz", "tags": "text", "timeout": "float8",
    "created_at": "timestamptz", "updated_at": "timestamptz", "finished_at": "timestamptz",
    "parent_id": "int8", "fan_in": "bool", "has_dependents": "bool", "claimable": "bool",
    "unique_key": "text", "key_limit": "int4",
}
# what the table gives a column that an insert leaves out (its server default, or NULL): a
# COPY sends such a column only when some row has another value (models.tasks)
_COPY_DEFAULTS = {
    "name": "", "owner": None, "task_group": None, "captured": None, "status_message": "",
    "completed": False, "attempts": 0, "isolation_key": None, "priority": 0, "tags": "",
    "timeout": None, "finished_at": None, "parent_id": None, "fan_in": False,
    "has_dependents": False, "claimable": True, "unique_key": None, "key_limit": None,
}
_SENT = object()


def insert_tasks(self: Store, new_tasks: Sequence[NewTask],
                 decoder: Decoder | None = None, *,
                 parent: Fence | None = None) -> Added:
    """Insert tasks in one transaction and return them as stored, in order. A task that
    does not fit beside its isolation key's active tasks is stored as QUEUED, parked
    (``locks``). A task with a ``unique_key`` that an open task of its executor has (or an
    earlier task of ``new_tasks``) is not inserted: that task comes back in its place (its id
    in ``Added.existing``). With ``parent`` (an attempt's fence) they are subtasks of that
    task: a write of its attempt, refused with TakenOver once the attempt is stale."""
    now = utcnow()
    if len(new_tasks) == 1 and parent is None and inserts_alone(self, new_tasks[0]):
        return Added([_pg_insert_one(self, new_tasks[0], now, decoder)])
    with self.write() as conn:
        if parent is not None:
            self.trees.check_parent(conn, parent)
        found = _open_unique(self, conn, new_tasks, decoder)
        fresh = [t for t in new_tasks if (t.executor, t.unique_key) not in found]
        if len(fresh) < len(new_tasks) or any(t.unique_key for t in fresh):
            fresh = _first_of_each_key(fresh)
        inserted = _insert_rows(self, conn, fresh, decoder, parent, now) if fresh else []
        stored: dict[tuple[str, str | None], TaskRecord] = {
            (t.executor, t.unique_key): r for t, r in zip(fresh, inserted, strict=True)
                  if t.unique_key is not None and r is not None}
        if any(r is None for r in inserted):  # another transaction added it meanwhile
            found.update(_open_unique(self, conn, [t for t, r in zip(fresh, inserted,
                                                                    strict=True)
                                                   if r is None], decoder))
        if inserted:
            ids = [r.id for r in inserted if r is not None]
            self.notify(conn, CHANNEL_ADDED, str(ids[-1]) if ids else "")
    if self.is_postgres and (self._bound is None or not self._bound.in_transaction()):
        self.statistics.added(len(inserted))  # (not in a caller's transaction: not committed)
    if len(fresh) == len(new_tasks) and all(r is not None for r in inserted):
        return Added(inserted)  # type: ignore[arg-type]
    by_identity = {id(t): r for t, r in zip(fresh, inserted, strict=True) if r is not None}
    records = [by_identity.get(id(t)) or stored.get((t.executor, t.unique_key))
               or found[(t.executor, t.unique_key)] for t in new_tasks]
    new_ids = {r.id for r in by_identity.values()}
    return Added(records, existing=frozenset(r.id for r in records if r.id not in new_ids))


def streams(self: Store) -> bool:
    """Whether ``stream_tasks`` may be used: PostgreSQL through psycopg, on the store's own
    connections (not a caller's transaction, where a hook's query would meet the COPY)."""
    return self.is_postgres and self._bound is None and not self.engine.dialect.is_async


# the columns that ``stream_tasks`` sends: those that a task without options sets
_STREAMED = ("executor", "context", "captured", "status", "run_after", "created_at",
             "updated_at")


def stream_tasks(self: Store, count: int, chunks: Iterable[PlainTasks],
                 decoder: Decoder | None = None) -> Added:
    """``insert_tasks`` of ``count`` tasks without options (those of ``(executor, context)``
    items of executors neither isolated nor limited), given a chunk at a time and taken as
    they come: PostgreSQL takes the rows of a chunk, with one binary COPY, while the caller
    makes the next one. All or none are stored; ``streams()`` says when it may be used."""
    now = utcnow()
    records: list[TaskRecord] = []
    with self.write() as conn:
        ids = conn.execute(PG_RESERVE_IDS, {"n": count}).scalar_one()
        with _binary_copy(conn, ["id", "plugins", *_STREAMED],
                          ["int8", "text", *(_COPY_TYPES[c] for c in _STREAMED)]) as send:
            for chunk in chunks:
                n = len(chunk.executors)
                if len(records) + n > count:
                    raise ValueError(f"stream_tasks was given more than {count} tasks")
                chunk_ids = ids[len(records):len(records) + n]
                columns = _plain_columns(chunk, now)
                send([chunk_ids, plugins_texts(columns["plugins"]),
                      *(columns[c] for c in _STREAMED)])
                records += added_records(chunk_ids, columns, decoder)
        if len(records) < count:  # (the unused ids are left out, as a rollback leaves them)
            raise ValueError(f"stream_tasks was given {len(records)} tasks, not {count}")
        if records:
            self.notify(conn, CHANNEL_ADDED, str(records[-1].id))
    self.statistics.added(len(records))
    return Added(records)


def _plain_columns(chunk: PlainTasks, now: dt.datetime) -> dict[str, list[Any]]:
    """``_task_columns`` of tasks without options."""
    n = len(chunk.executors)
    if not len(chunk.plugins) == len(chunk.contexts) == len(chunk.captured) == n:
        raise ValueError("PlainTasks: a list per field, one item per task")
    default = {**_COPY_DEFAULTS, "status": int(Status.NEW), "run_after": now,
               "created_at": now, "updated_at": now}
    columns: dict[str, list[Any]] = {column: [value] * n for column, value in default.items()}
    columns.update(executor=chunk.executors, plugins=chunk.plugins, context=chunk.contexts,
                   captured=chunk.captured)
    return columns


def _open_unique(self: Store, conn: Connection, new_tasks: Sequence[NewTask],
                 decoder: Decoder | None) -> dict[tuple[str, str | None], TaskRecord]:
    """The open tasks (not ended) that have the executor and unique key of some of
    ``new_tasks``, by (executor, unique key)."""
    pairs = {(t.executor, t.unique_key) for t in new_tasks if t.unique_key is not None}
    if not pairs:
        return {}
    found = {}
    for executor in sorted({e for e, _ in pairs}):
        keys = sorted(k for e, k in pairs if e == executor and k is not None)
        query = sa.select(T).where(T.c.executor == executor, T.c.unique_key.in_(keys),
                                   sa.text(models.UNIQUE_OPEN))
        for row in conn.execute(query):
            record = task_record(row, decoder)
            found[(record.executor, record.unique_key)] = record
    return found


def _first_of_each_key(new_tasks: Sequence[NewTask]) -> list[NewTask]:
    """``new_tasks`` without those whose (executor, unique key) an earlier one has."""
    seen: set[tuple[str, str | None]] = set()
    first = []
    for t in new_tasks:
        if t.unique_key is not None:
            if (t.executor, t.unique_key) in seen:
                continue
            seen.add((t.executor, t.unique_key))
        first.append(t)
    return first


def _insert_rows(self: Store, conn: Connection, new_tasks: Sequence[NewTask],
                 decoder: Decoder | None, parent: Fence | None,
                 now: dt.datetime) -> list[TaskRecord | None]:
    """Insert the rows of ``new_tasks`` (in ``conn``'s transaction); None for a task with a
    unique key that another transaction's task took meanwhile."""
    keys = {t.isolation_key for t in new_tasks if t.isolation_key}
    after = any(t.after for t in new_tasks)
    unique = any(t.unique_key for t in new_tasks)
    columns = _task_columns(new_tasks, parent, now)
    added: list[TaskRecord | None]
    if not (keys or after or unique) and len(new_tasks) >= BULK_INSERT_FROM:
        # (the most: plain tasks in bulk, a column at a time from start to end)
        return list(_bulk_insert(self, conn, columns, decoder))
    heads = self.key_heads(conn, keys) if keys else {}
    held = self.held_counts(conn, keys) if keys else {}
    names = list(columns)
    rows = [dict(zip(names, values, strict=True))
            for values in zip(*columns.values(), strict=True)]
    if after:
        self.trees.block_on(conn, new_tasks, rows, now)
    for row in rows:
        row["claimable"] = claimable_at(row["status"], row["run_after"], now)
    if keys:
        queue_behind_heads(self, conn, rows, heads, held, now)
    if unique:
        added = _insert_unique(self, conn, rows, decoder)
    elif len(rows) < BULK_INSERT_FROM:
        added = [task_record(conn.execute(_INSERT_RETURNING, row).one(), decoder)
                 for row in rows]
    else:
        columns = {name: list(map(operator.itemgetter(name), rows)) for name in names}
        added = list(_bulk_insert(self, conn, columns, decoder))
    if after:
        inserted = [(t, r.id) for t, r in zip(new_tasks, added, strict=True) if r is not None]
        self.trees.record_dependencies(conn, [t for t, _ in inserted],
                                       [task_id for _, task_id in inserted])
    if keys and any(r is None for r in added):
        # a key's chosen head may be among those not inserted: wake the next one then
        self.promote_parked(conn, {row["isolation_key"] for row, r in zip(rows, added, strict=True)
                                   if r is None and row["isolation_key"]})
    return added


def _insert_unique(self: Store, conn: Connection, rows: list[dict[str, Any]],
                   decoder: Decoder | None) -> list[TaskRecord | None]:
    """Insert task rows some of which have a unique key (distinct ones); None for a row whose
    key an open task of its executor has. The database decides (a concurrent add waits for
    the other to commit), in one statement for the keyed rows however many they are."""
    keyed = [row for row in rows if row["unique_key"] is not None]
    statement = (self.insert(T).on_conflict_do_nothing(index_elements=["executor", "unique_key"],
                                                  index_where=sa.text(models.UNIQUE_OPEN))
                 .returning(*T.c))
    stored = {(r.executor, r.unique_key): task_record(r, decoder)
              for r in conn.execute(statement, keyed)}
    return [stored.get((row["executor"], row["unique_key"])) if row["unique_key"] is not None
            else task_record(conn.execute(_INSERT_RETURNING, row).one(), decoder)
            for row in rows]


def _pg_insert_one(self: Store, task: NewTask, now: dt.datetime,
                   decoder: Decoder | None) -> TaskRecord:
    """One task without an isolation key, on PostgreSQL: insert and announce it in a
    single autocommit statement (one round trip instead of four), with the tasks that other
    threads add at the same moment (``grouped.ThreadedAdds``)."""
    params = _insert_one_params(task, now)
    try:
        if self._bound is not None:  # in a caller's transaction: alone
            row = driver_rows(self._bound, PG_INSERT_ONE, params)[0]
        else:  # with the rows that other threads add meanwhile
            row = self._threaded_adds.insert(params)
    except DATABASE_ERRORS as exc:
        raise self._database_error(exc) from exc
    row.pop("notified", None)
    return task_record(row, decoder)


def _send_group(self: Store, sql: str, params: Any) -> list[dict[str, Any]]:
    """Run the statement of a group of single adds (``ThreadedAdds``) on the kept session
    for adds."""
    with self._own_session("add") as conn:
        return driver_rows(conn, sql, params)


def inserts_alone(self: Store, task: NewTask) -> bool:
    """Whether ``insert_tasks([task])`` is a single autocommit statement (PostgreSQL, no
    isolation key, dependencies or unique key): what ``insert_one_async`` may take."""
    return (self.is_postgres and not task.isolation_key and not task.after
            and not task.unique_key and task.parent_id is None)


async def insert_one_async(self: Store, adds: GroupedAdds, task: NewTask,
                           decoder: Decoder | None = None) -> TaskRecord:
    """``insert_tasks([task])`` for a task that ``inserts_alone``, on the async client's
    sessions: with the rows that other coroutines of the loop add meanwhile, in one statement
    and one round trip (``GroupedAdds``), awaited."""
    try:
        row = await adds.insert(_insert_one_params(task, utcnow()))
    except DATABASE_ERRORS as exc:  # (telling why may query the schema: off the loop)
        raise await asyncio.to_thread(self._database_error, exc) from exc
    row.pop("notified", None)
    return task_record(row, decoder)


def async_adds(self: Store, size: int) -> GroupedAdds:
    """A new pool of at most ``size`` sessions for one event loop's single adds, grouped as
    they arrive (``GroupedAdds``; PostgreSQL)."""
    from roadie.store.grouped import GroupedAdds

    return GroupedAdds(self.async_sessions(size))


def _insert_one_params(task: NewTask, now: dt.datetime) -> dict[str, Any]:
    """The parameters of ``PG_INSERT_ONE`` for ``task``."""
    return {
        "name": task.name, "owner": task.owner, "task_group": task.group,
        "executor": task.executor, "plugins": json.dumps(dict(task.plugins)),
        "context": task.context, "captured": task.captured, "priority": task.priority,
        "run_after": task.run_after or now, "tags": task.tags,
        "timeout": None if task.timeout is None else float(task.timeout),  # (one type)
        "now": now, "claimable": task.run_after is None or task.run_after <= now,
    }


def _task_columns(new_tasks: Sequence[NewTask], parent: Fence | None,
                  now: dt.datetime) -> dict[str, list[Any]]:
    """The rows of ``new_tasks`` as added now, a list of values per column (status NEW,
    claimable when due; dependencies and isolation keys may change both)."""
    n = len(new_tasks)

    def of(attribute: str) -> list[Any]:
        return list(map(operator.attrgetter(attribute), new_tasks))

    run_after = [t.run_after or now for t in new_tasks]
    return {
        "name": of("name"), "owner": of("owner"), "task_group": of("group"),
        "executor": of("executor"), "plugins": of("plugins"), "context": of("context"),
        "captured": of("captured"), "status": [int(Status.NEW)] * n, "status_message": [""] * n,
        "completed": [False] * n, "attempts": [0] * n, "isolation_key": of("isolation_key"),
        "priority": of("priority"), "run_after": run_after, "tags": of("tags"),
        "timeout": of("timeout"), "created_at": [now] * n, "updated_at": [now] * n,
        "finished_at": [None] * n,
        "parent_id": [parent.task_id] * n if parent is not None else of("parent_id"),
        "fan_in": [False] * n, "has_dependents": [False] * n, "unique_key": of("unique_key"),
        "key_limit": of("key_limit"), "claimable": [when <= now for when in run_after],
    }


def _bulk_insert(self: Store, conn: Connection, columns: dict[str, list[Any]],
                 decoder: Decoder | None) -> list[TaskRecord]:
    """Insert many task rows (``columns``: their values, a list per column) fast and return
    their records: ids are reserved first, then PostgreSQL takes the rows with a binary COPY
    (the records are made while it does) and SQLite with one prepared statement."""
    count = len(columns["executor"])
    if self.is_postgres:
        ids = conn.execute(PG_RESERVE_IDS, {"n": count}).scalar_one()
    else:  # under BEGIN IMMEDIATE nobody else inserts meanwhile
        start = int(conn.execute(sa.select(sa.func.max(T.c.id))).scalar() or 0)
        ids = range(start + 1, start + 1 + count)
    plugins = plugins_texts(columns["plugins"])  # as JSON text, each distinct map dumped once
    if self.is_postgres and not conn.dialect.is_async:
        return _copy_rows(conn, ids, plugins, columns,
                          functools.partial(added_records, ids, columns, decoder))
    names = ["id", *columns]
    values = zip(ids, *columns.values(), strict=True)
    if self.is_postgres:  # an asyncio driver's connection (the async client) takes the maps
        conn.execute(T.insert(), [dict(zip(names, row, strict=True)) for row in values])
    else:  # SQLite keeps JSON as text: the texts go in as they are
        rows = [dict(zip(names, row, strict=True)) for row in values]
        for row, text in zip(rows, plugins, strict=True):
            row["plugins"] = text
        conn.execute(T.insert().values(plugins=sa.bindparam("plugins", type_=sa.Text())), rows)
    return added_records(ids, columns, decoder)


def _copy_rows(conn: Connection, ids: Sequence[int], plugins: list[str],
               table: dict[str, list[Any]], meanwhile: Callable[[], R]) -> R:
    """Rows (``table``: a list of values per column) into roadie_tasks with one binary COPY
    (also on a caller's connection: store/caller.py), made a column at a time
    (``copying.BinaryRows``); a column that every row leaves at what the table gives it
    (``_COPY_DEFAULTS``) is not sent. Returns what ``meanwhile`` returns, called once the
    rows are sent, while the server takes them."""
    names, types, values = ["id", "plugins"], ["int8", "text"], [ids, plugins]
    for column, got in table.items():
        default = _COPY_DEFAULTS.get(column, _SENT)
        if column == "plugins" or (default is not _SENT and got.count(default) == len(got)):
            continue
        names.append(column)
        types.append(_COPY_TYPES[column])
        values.append(got)
    with _binary_copy(conn, names, types) as send:
        send(values)
        return meanwhile()


@contextlib.contextmanager
def _binary_copy(conn: Connection, names: Sequence[str], types: Sequence[str]
                 ) -> Iterator[Callable[[Sequence[Sequence[Any]]], None]]:
    """A binary COPY into roadie_tasks of the columns ``names`` (of PostgreSQL ``types``) on
    ``conn``'s psycopg connection: yields a function that sends rows, given as a list of
    values per column (``copying.BinaryRows``). The COPY ends with the block; an error in it
    fails the COPY (nothing is stored)."""
    from roadie.store.copying import SIGNATURE, TRAILER, BinaryRows  # (psycopg: not on SQLite)

    raw: Any = conn.connection.dbapi_connection  # psycopg's own connection
    rows = BinaryRows(raw, list(types))
    with raw.cursor() as cursor, cursor.copy(
        f"COPY roadie_tasks ({', '.join(names)}) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.write(SIGNATURE)
        yield lambda values: copy.write(rows.data(values))
        copy.write(TRAILER)


def get_task(self: Store, task_id: int, decoder: Decoder | None = None) -> TaskRecord:
    """The task with ``task_id``; raises TaskNotFound."""
    with self.read_one() as conn:
        row = conn.execute(_SELECT_BY_ID, {"task_id": task_id}).first()
    if row is None:
        raise TaskNotFound(task_id)
    return task_record(row, decoder)


def list_tasks(
    self: Store,
    *,
    status: Iterable[Status] | None = None,
    executor: str | None = None,
    owner: str | None = None,
    group: str | None = None,
    name: str | None = None,
    ids: Iterable[int] | None = None,
    schedule: str | None = None,
    limit: int | None = 100,
    offset: int = 0,
    decoder: Decoder | None = None,
    name_contains: str | None = None,
    parent_id: int | None = None,
) -> list[TaskRecord]:
    """Tasks matching every filter given, newest first (``name_contains``: a
    case-insensitive part of the name)."""
    query = sa.select(T).order_by(T.c.id.desc()).offset(offset)
    if name_contains:
        query = query.where(
            sa.func.lower(T.c.name).contains(name_contains.lower(), autoescape=True))
    if limit is not None:
        query = query.limit(limit)
    if status is not None:
        query = query.where(T.c.status.in_([int(s) for s in status]))
    if ids is not None:
        query = query.where(T.c.id.in_(list(ids)))
    for column, value in (
        (T.c.executor, executor), (T.c.owner, owner), (T.c.task_group, group),
        (T.c.name, name), (T.c.schedule, schedule), (T.c.parent_id, parent_id),
    ):
        if value is not None:
            query = query.where(column == value)
    with self.read_one() as conn:
        return [task_record(row, decoder) for row in conn.execute(query)]


def count_tasks(self: Store) -> dict[Status, int]:
    """How many tasks have each status."""
    with self.read_one() as conn:
        rows = conn.execute(sa.select(T.c.status, sa.func.count()).group_by(T.c.status))
        return {Status(s): n for s, n in rows}


def count_tasks_by_executor(self: Store) -> dict[tuple[Status, str], int]:
    """How many tasks each (status, executor) pair has."""
    with self.read_one() as conn:
        rows = conn.execute(sa.select(T.c.status, T.c.executor, sa.func.count())
                            .group_by(T.c.status, T.c.executor))
        return {(Status(s), e): n for s, e, n in rows}


def oldest_due(self: Store, now: dt.datetime) -> dict[str, dt.datetime]:
    """Per executor, since when its longest-waiting due task (NEW or QUEUED, run_after
    passed) has been due."""
    query = (sa.select(T.c.executor, sa.func.min(T.c.run_after))
             .where(T.c.status.in_([int(Status.NEW), int(Status.QUEUED)]),
                    T.c.run_after <= now)
             .group_by(T.c.executor))
    with self.read_one() as conn:
        return {e: utc_time(when) for e, when in conn.execute(query) if when is not None}


def delete_task(self: Store, task_id: int, *, tree: bool = False) -> list[int]:
    """Delete a task that is not running, with its attempts and attachment rows; a task
    with subtasks that have not ended only with ``tree`` (then its whole tree goes).
    Returns the ids deleted."""
    with self.write() as conn:
        ids = self.trees.tree_to_delete(conn, task_id, tree)
        if len(ids) > 1:
            self.trees.delete_rows(conn, ids)
            return ids
        found = conn.execute(
            sa.select(T.c.status, T.c.isolation_key).where(T.c.id == task_id)
            .with_for_update()
        ).first()
        if found is None:
            raise TaskNotFound(task_id)
        status, key = found
        if status == Status.IN_PROGRESS:
            raise InvalidTransition(
                f"task {task_id} is in progress; cancel it (`roadie cancel {task_id}`) and "
                f"delete it once it has ended"
            )
        conn.execute(T.delete().where(T.c.id == task_id))
        conn.execute(models.attempts.delete().where(models.attempts.c.task_id == task_id))
        conn.execute(
            models.attachments.delete().where(models.attachments.c.task_id == task_id)
        )
        self.release_locks(conn, [task_id])
        if key is not None:  # it may have been the next of its key: wake the one after it
            self.promote_parked(conn, [key])
        self.notify(conn, CHANNEL_CHANGED, str(task_id))
    return [task_id]


def cancel_task(self: Store, task_id: int, by: str, message: str) -> TaskRecord:
    """Cancel a waiting task at once, or store a cancel request for a running one."""
    now = utcnow()
    with self.write() as conn:
        row = conn.execute(sa.select(T).where(T.c.id == task_id).with_for_update()).first()
        if row is None:
            raise TaskNotFound(task_id)
        status = Status(row.status)
        if status in (Status.NEW, Status.QUEUED, Status.WAITING):
            conn.execute(
                T.update().where(T.c.id == task_id).values(
                    status=int(Status.CANCELLED), status_message=message, completed=True,
                    cancel_requested_at=now, cancel_requested_by=by, finished_at=now,
                    updated_at=now,
                )
            )
            if row.isolation_key is not None and row.claimable:
                # it may have been the next of its key: wake the one after it
                self.promote_parked(conn, [row.isolation_key])
        elif status == Status.IN_PROGRESS:
            if row.cancel_requested_at is None:
                conn.execute(
                    T.update().where(T.c.id == task_id).values(
                        cancel_requested_at=now, cancel_requested_by=by, updated_at=now
                    )
                )
            self.notify(conn, CHANNEL_CANCEL, f"{task_id}:{row.node or ''}")
        else:
            raise InvalidTransition(
                f"task {task_id} has already ended ({status.label}); nothing to cancel"
            )
        self.notify(conn, CHANNEL_CHANGED, str(task_id))
        row = conn.execute(sa.select(T).where(T.c.id == task_id)).one()
    record = task_record(row, None)
    if record.status == Status.CANCELLED:
        self.trees.settled([record])
    return record


def resume_task(self: Store, task_id: int) -> None:
    """Put a FAILED or CANCELLED task back to NEW (same row, same context). A parent
    whose fan-in ran goes back to WAITING instead: ``subtasks_done`` runs again once its
    subtasks have ended (at once if they all have); ``execute`` does not run again."""
    now = utcnow()
    with self.write() as conn:
        row = conn.execute(
            sa.select(T.c.status, T.c.fan_in, T.c.executor, T.c.unique_key)
            .where(T.c.id == task_id).with_for_update()
        ).first()
        if row is None:
            raise TaskNotFound(task_id)
        status = Status(row.status)
        if status not in (Status.FAILED, Status.CANCELLED):
            raise InvalidTransition(
                f"task {task_id} is {status.label}; only failed or cancelled tasks can be "
                f"resumed"
            )
        if row.unique_key is not None:
            other = conn.execute(sa.select(T.c.id).where(
                T.c.executor == row.executor, T.c.unique_key == row.unique_key,
                sa.text(models.UNIQUE_OPEN))).scalar()
            if other is not None:
                raise InvalidTransition(
                    f"task {task_id} has unique key {row.unique_key!r}, which task {other} "
                    f"of {row.executor} has now and has not ended; resume task {task_id} "
                    f"once it has, or cancel task {other} first")
        fan_in = bool(row.fan_in)
        conn.execute(
            T.update().where(T.c.id == task_id).values(
                status=int(Status.WAITING if fan_in else Status.NEW), completed=False,
                status_message="resumed", cancel_requested_at=None,
                cancel_requested_by=None, finished_at=None, run_after=now, node=None,
                error=None, updated_at=now, claimable=True,
            )
        )
        self.notify(conn, CHANNEL_ADDED, str(task_id))
        self.notify(conn, CHANNEL_CHANGED, str(task_id))
    if fan_in:
        self.trees.settled([self.get_task(task_id)])


def append_error(self: Store, task_id: int, text: str) -> None:
    """Add a line to a task's error notes (for example a failing plugin hook)."""
    with self.write() as conn:
        current = conn.execute(sa.select(T.c.error).where(T.c.id == task_id)).scalar()
        joined = f"{current}\n{text}" if current else text
        conn.execute(T.update().where(T.c.id == task_id).values(error=joined))


def attempts_of(self: Store, task_id: int) -> list[AttemptRecord]:
    """The finished attempts of a task, oldest first."""
    A = models.attempts
    with self.read_one() as conn:
        rows = conn.execute(sa.select(A).where(A.c.task_id == task_id).order_by(A.c.id))
        return [
            AttemptRecord(r.task_id, r.attempt, r.node, Status(r.status), r.message,
                          r.error, r.started_at, r.finished_at)
            for r in rows
        ]


def attempts_of_tasks(self: Store, task_ids: Sequence[int]) -> dict[int, list[AttemptRecord]]:
    """The finished attempts of each of ``task_ids``, oldest first (one query per 500 tasks;
    a task with none is left out)."""
    A = models.attempts
    found: dict[int, list[AttemptRecord]] = {}
    with self.read() as conn:
        for start in range(0, len(task_ids), 500):
            rows = conn.execute(sa.select(A).where(A.c.task_id.in_(
                list(task_ids[start:start + 500]))).order_by(A.c.id))
            for r in rows:
                found.setdefault(r.task_id, []).append(AttemptRecord(
                    r.task_id, r.attempt, r.node, Status(r.status), r.message, r.error,
                    r.started_at, r.finished_at))
    return found


def snapshot(self: Store) -> Snapshot:
    """Every task, the attempt log's line count per task, every node and the held locks,
    read in one transaction that sees one moment (REPEATABLE READ on PostgreSQL; a SQLite
    read transaction always does), for checks of consistency."""
    A, N, L = models.attempts, models.nodes, models.locks
    with self.engine.connect() as conn:
        if self.is_postgres:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        try:
            with conn.begin():
                now = utcnow()
                tasks = [task_record(r, None) for r in conn.execute(sa.select(T))]
                counts: dict[int, int] = dict(conn.execute(
                    sa.select(A.c.task_id, sa.func.count()).group_by(A.c.task_id)).all())
                nodes = [NodeRecord(r.id, r.name, r.host, r.pid, r.concurrency,
                                    r.plugins or {}, r.executors or {},
                                    frozenset(r.tags or ()), r.started_at, r.heartbeat_at,
                                    r.stopped_at) for r in conn.execute(sa.select(N))]
                locks = {key if slot == 0 else f"{key} (slot {slot})": task_id
                         for key, slot, task_id in conn.execute(
                             sa.select(L.c.key, L.c.slot, L.c.task_id))}
        except DATABASE_ERRORS as exc:
            raise self._database_error(exc) from exc
    return Snapshot(now, tasks, counts, nodes, locks)


"""Every database operation of roadie. The app, the worker and the CLI never build queries.
(The queries of schedules are in ``schedulestore``, reached as ``Store.schedules``.)

One code path serves SQLite and PostgreSQL. On PostgreSQL the claim locks candidate rows with
``FOR UPDATE SKIP LOCKED`` so workers never wait on each other, and changes are announced with
NOTIFY. On SQLite every writing transaction starts with ``BEGIN IMMEDIATE`` (one writer at a
time, readers never blocked thanks to WAL), which makes the claim just as atomic.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import itertools
import json
import operator
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, Row

from roadie import models
from roadie.errors import (
    DatabaseError,
    InvalidTransition,
    SchemaOutdatedError,
    TakenOver,
    TaskNotFound,
)
from roadie.notifications import Hub, PgListener, hub_for
from roadie.records import (
    AttachmentInfo,
    AttemptRecord,
    Decoder,
    NodeRecord,
    TaskRecord,
    task_record_of,
)
from roadie.status import FINAL_STATUSES, Status

if TYPE_CHECKING:
    from roadie.schedulestore import ScheduleStore
    from roadie.treestore import TreeStore

T = models.tasks
CHANNEL_ADDED = "roadie_task_added"
CHANNEL_CHANGED = "roadie_task_changed"
CHANNEL_CANCEL = "roadie_task_cancel"
CHANNEL_SCHEDULES = "roadie_schedules_changed"
MAX_TAGS_PER_NODE = 10
SQLITE_FINISH_BATCH = 500  # final outcomes per SQLite update statement (10 variables each)
SQLITE_MAX_RANGES = 400  # (executor, tags) pairs claimed range by range on SQLite
DUE_CHECK_INTERVAL = 0.05  # seconds between two promotions of due delayed tasks (per process)
DUE_BATCH = 1000  # delayed tasks made claimable per promotion, at most
# the columns whose statistics the claim and the sweeps are planned with (an ANALYZE of these
# takes about half the time of all; autovacuum analyzes the rest later)
_PLANNED_COLUMNS = ("status", "claimable", "executor", "tags", "priority", "run_after",
                    "isolation_key", "node", "parent_id")
ANALYZE_AFTER = 1000  # tasks added (here, since the last look) before statistics are looked at
BULK_INSERT_FROM = 20
# the binary COPY types of the columns that a new task sets (PostgreSQL); JSON goes as text
_COPY_TYPES = {
    "name": "text", "owner": "text", "task_group": "text", "executor": "text",
    "context": "bytea", "captured": "bytea", "status": "int2", "status_message": "text",
    "completed": "bool", "attempts": "int4", "isolation_key": "text", "priority": "int4",
    "run_after": "timestamptz", "tags": "text", "timeout": "float8",
    "created_at": "timestamptz", "updated_at": "timestamptz", "finished_at": "timestamptz",
    "parent_id": "int8", "fan_in": "bool", "has_dependents": "bool", "claimable": "bool",
}
_PER_CONNECTION = ("trees", "schedules")  # not shared by ``Store.bound`` views


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.timezone.utc)


def tags_key(tags: Iterable[str]) -> str:
    """How a set of tags is stored: sorted and comma-joined ('' for none)."""
    cleaned = sorted({t.strip() for t in tags if t.strip()})
    for tag in cleaned:
        if "," in tag:
            raise ValueError(f"tag {tag!r} may not contain a comma")
    return ",".join(cleaned)


def claimable_at(status: int, run_after: dt.datetime, now: dt.datetime) -> bool:
    """Whether a task written now with ``status`` and ``run_after`` goes to the claim index:
    not one QUEUED behind a held lock, nor one delayed into the future."""
    return status != int(Status.QUEUED) and run_after <= now


def tag_subsets(tags: Iterable[str]) -> list[str]:
    """Every stored tags value a node with ``tags`` may run (all subsets, as keys)."""
    items = sorted(set(tags))
    if len(items) > MAX_TAGS_PER_NODE:
        raise ValueError(f"a node may have at most {MAX_TAGS_PER_NODE} tags")
    return [
        ",".join(combo) for size in range(len(items) + 1)
        for combo in itertools.combinations(items, size)
    ]


@dataclass(frozen=True)
class NewTask:
    """A task to insert (made by the app from ``add_task`` arguments)."""

    executor: str
    plugins: Mapping[str, str]
    context: bytes
    name: str = ""
    owner: str | None = None
    group: str | None = None
    captured: bytes | None = None
    isolation_key: str | None = None
    priority: int = 0
    run_after: dt.datetime | None = None
    tags: str = ""
    timeout: float | None = None
    parent_id: int | None = None  # a subtask of this task
    after: tuple[int, ...] = ()  # runs once these tasks have succeeded


@dataclass(frozen=True)
class Claimable:
    """What a worker can run: its executors (with their isolation) and tags."""

    executors: Sequence[str]
    isolated: Mapping[str, Any]  # executor -> callable(row) -> key, for executors that isolate
    plugins: Mapping[str, str]
    tag_keys: Sequence[str]


@dataclass(frozen=True)
class Settled:
    """What one ``settle`` transaction did: the attempts it recorded, the tasks it claimed,
    and how many candidates it parked instead (their isolation key was taken): a round that
    parked some may find runnable tasks behind them at once."""

    finished: list[TaskRecord]
    claimed: list[TaskRecord]
    parked: int = 0


@dataclass(frozen=True)
class Snapshot:
    """The state of the database at one moment (``Store.snapshot``)."""

    at: dt.datetime
    tasks: list[TaskRecord]
    attempt_log_counts: dict[int, int]  # task id -> lines in the attempt log
    nodes: list[NodeRecord]
    locks: dict[str, int]  # isolation key -> task id


@dataclass(frozen=True)
class Fence:
    """The token of one attempt: the task, the node running it and its attempt number.

    Every write an attempt makes carries it, and the database refuses the write (``WHERE node
    = :node AND attempts = :attempt AND status = IN_PROGRESS``) once the task was taken over:
    requeued or failed by crash recovery, and perhaps claimed again since. Attempt numbers only
    grow, so a stale attempt can never match again.
    """

    task_id: int
    node: str
    attempt: int


@dataclass(frozen=True)
class Outcome:
    """How one attempt of a task ended, as the worker writes it."""

    task_id: int
    status: Status
    message: str
    result: bytes | None = None
    error: str | None = None
    task_status: bytes | None = None
    messages: bytes | None = None
    checkpoint: bytes | None = None
    run_after: dt.datetime | None = None  # for a task put back to NEW (retry, delay)
    attempt_counts: bool = True
    attempt: int | None = None  # the attempt's fencing token (None: any attempt of the node)
    started_at: dt.datetime | None = None  # when it started, if claimed ahead and not recorded


class Store:
    """The database: connection, schema, and every query roadie makes."""

    _bound: Connection | None = None  # see ``bound``

    def __init__(self, url: str, *, echo: bool = False,
                 synchronous_commit: str = "on", idle_timeout: float | None = None) -> None:
        self.url = url
        self.engine = _make_engine(url, echo=echo, synchronous_commit=synchronous_commit,
                                   idle_timeout=idle_timeout)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        if self.is_postgres:
            models.add_postgresql_options()
        self.hub = hub_for(self.safe_url)
        # Planners would rather walk the executor index than the claim index (and then sort
        # every waiting task); comparing an expression of the column keeps them off it.
        self._executor_column: Any = sa.literal_column("(roadie_tasks.executor || '')")
        self._candidates_cache: dict[tuple[int, int, int], Any] = {}
        self._next_due_check = 0.0  # time.monotonic() of the next promotion of due tasks
        self._listener: PgListener | None = None
        self._listener_lock = threading.Lock()
        self._sessions: dict[str, Connection] = {}  # see _own_session
        self._session_locks = {name: threading.Lock() for name in ("settle", "add")}
        self._unanalyzed = 0  # tasks added since the statistics were last looked at
        self._analyzed_rows = 0  # the task table's rows then (see _keep_statistics)

    def listen(self) -> Hub:
        """The hub where this database's changes are announced (starts the PostgreSQL
        listener on first use)."""
        if self.is_postgres:
            with self._listener_lock:
                if self._listener is None:
                    conninfo = self.engine.url.set(drivername="postgresql").render_as_string(
                        hide_password=False
                    )
                    self._listener = PgListener(
                        conninfo, [CHANNEL_ADDED, CHANNEL_CHANGED, CHANNEL_CANCEL,
                                   CHANNEL_SCHEDULES], self.hub
                    )
                    self._listener.start()
        return self.hub

    @property
    def safe_url(self) -> str:
        """The URL without its password."""
        return self.engine.url.render_as_string(hide_password=True)

    @functools.cached_property
    def trees(self) -> TreeStore:
        """The queries of task trees: subtasks, fan-in, dependencies (``roadie.treestore``)."""
        from roadie.treestore import TreeStore

        return TreeStore(self)

    @functools.cached_property
    def schedules(self) -> ScheduleStore:
        """The queries of schedules (``roadie.schedulestore``)."""
        from roadie.schedulestore import ScheduleStore

        return ScheduleStore(self)

    def bound(self, conn: Connection) -> Store:
        """This store running every statement on ``conn`` instead of its own pool: how the
        async client (``roadie.AsyncRoadie``) runs the same queries on an async driver's
        connection, lent to synchronous code through SQLAlchemy's greenlet bridge
        (``AsyncConnection.run_sync``). A transaction opened inside another joins it."""
        view = object.__new__(type(self))
        view.__dict__.update({k: v for k, v in self.__dict__.items()
                              if k not in _PER_CONNECTION})
        view._bound = conn
        return view

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """A connection from the pool, or the one this store is bound to."""
        if self._bound is not None:
            yield self._bound
            return
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _own_session(self, name: str) -> Iterator[Connection]:
        """PostgreSQL: an autocommit session kept for one hot statement (``name``: the
        claim loop's settle round, a single add), where it is planned once (a generic plan)
        instead of every time, and taken without the pool's checkout, checkin and isolation
        changes: for these statements that overhead cost more than running them. JIT is off
        there: the generic plan's row estimates would have it compiled, for 100+ ms. Times
        come back in UTC and JSON as text. The session never returns to the pool (other
        statements keep custom plans); a failed one is dropped. A second thread asking at
        the same time gets a pooled connection."""
        lock = self._session_locks[name]
        if self._bound is not None or not lock.acquire(blocking=False):
            with self._autocommit() as conn:
                yield conn
            return
        try:
            session = self._sessions.get(name)
            if session is None:
                conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                try:
                    conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
                    conn.exec_driver_sql("SET jit = off")
                    # times in UTC already (no conversion per row), JSON left as text (the
                    # same few plugins maps, parsed once: _plugins_map)
                    conn.exec_driver_sql("SET TIME ZONE 'UTC'")
                    from psycopg.types.string import TextLoader

                    driver: Any = conn.connection.driver_connection
                    driver.adapters.register_loader("json", TextLoader)
                except BaseException:
                    conn.invalidate()
                    raise
                self._sessions[name] = session = conn
            try:
                yield session
            except BaseException:
                self._drop_session(name)
                raise
        finally:
            lock.release()

    def _drop_session(self, name: str) -> None:
        """Close an own session for good (its settings must not reach the pool)."""
        conn = self._sessions.pop(name, None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()
            with contextlib.suppress(Exception):
                conn.close()

    @contextmanager
    def _autocommit(self) -> Iterator[Connection]:
        """A connection where each statement is its own transaction (no BEGIN/COMMIT round
        trips); a bound store's connection inside a transaction just runs it there."""
        if self._bound is None:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                yield c
            return
        conn = self._bound
        if conn.in_transaction():
            yield conn
            return
        conn.execution_options(isolation_level="AUTOCOMMIT")
        try:
            yield conn
        finally:
            if conn.in_transaction():  # SQLAlchemy's own marker; the database committed
                conn.commit()
            conn.execution_options(isolation_level=conn.default_isolation_level)

    def dispose(self) -> None:
        """Stop listening and close every pooled connection."""
        with self._listener_lock:
            if self._listener is not None:
                self._listener.stop()
                self._listener = None
        for name, lock in self._session_locks.items():
            with lock:
                self._drop_session(name)
        self.engine.dispose()

    # -- transactions --------------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A writing transaction (``BEGIN IMMEDIATE`` on SQLite). Notifications queued with
        ``notify`` are sent with the commit."""
        if self._bound is not None and self._bound.in_transaction():
            yield self._bound  # joins the transaction around it
            return
        pending: dict[str, list[str]] = {}
        try:
            with self._connection() as conn:
                conn = conn.execution_options(roadie_write=True)
                conn.info["roadie_pending"] = pending
                try:
                    with conn.begin():
                        yield conn
                        if pending and self.is_postgres:
                            self._send_notifications(conn, pending)
                finally:
                    conn.info.pop("roadie_pending", None)
        except sa.exc.OperationalError as exc:
            raise self._database_error(exc) from exc
        if pending and not self.is_postgres:  # committed: tell this process's listeners
            for channel, payloads in pending.items():
                self.hub.publish(channel, _join_payloads(payloads))

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A reading transaction."""
        if self._bound is not None and self._bound.in_transaction():
            yield self._bound  # joins the transaction around it
            return
        try:
            with self._connection() as conn:
                if self._bound is not None:
                    conn.execution_options(roadie_write=False)
                with conn.begin():
                    yield conn
        except sa.exc.OperationalError as exc:
            raise self._database_error(exc) from exc

    def _database_error(self, exc: sa.exc.OperationalError) -> DatabaseError:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        if "no such table" in reason or ("relation" in reason and "does not exist" in reason):
            return SchemaOutdatedError(
                f"database {self.safe_url} has no roadie schema; run `roadie db upgrade`"
            )
        return DatabaseError(f"cannot use database {self.safe_url}: {reason}")

    def notify(self, conn: Connection, channel: str, payload: str) -> None:
        """Announce a change once the transaction commits. On PostgreSQL NOTIFY reaches every
        process; on SQLite only this process's hub hears it, and other processes poll.
        Payloads of one channel are joined with commas (``*`` when too long)."""
        conn.info["roadie_pending"].setdefault(channel, []).append(payload)

    def _send_notifications(self, conn: Connection, pending: dict[str, list[str]]) -> None:
        calls = [sa.func.pg_notify(channel, _join_payloads(payloads))
                 for channel, payloads in pending.items()]
        conn.execute(sa.select(*calls))

    # -- schema --------------------------------------------------------------------------

    def _alembic_config(self, conn: Connection) -> Any:
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        config.attributes["connection"] = conn
        return config

    def schema_revision(self) -> tuple[str | None, str]:
        """(the database's revision or None, the code's head revision, ``models.SCHEMA_HEAD``).
        Read with one query, so that a process whose schema is current never imports
        Alembic (it costs a worker about 12 MB)."""
        with self.read() as conn:
            if not sa.inspect(conn).has_table(models.VERSION_TABLE):
                return None, models.SCHEMA_HEAD
            current = conn.execute(
                sa.text(f"SELECT version_num FROM {models.VERSION_TABLE}")
            ).scalar()
        return current, models.SCHEMA_HEAD

    def upgrade(self) -> None:
        """Create or upgrade the schema to the code's revision (Alembic)."""
        from alembic import command

        with self.write() as conn:
            command.upgrade(self._alembic_config(conn), "head")

    def check_schema(self, *, auto_upgrade: bool) -> None:
        """Raise a clear error if the schema is missing or older than the code
        (or upgrade it, with ``auto_upgrade``)."""
        try:
            current, head = self.schema_revision()
        except DatabaseError:
            raise
        except sa.exc.SQLAlchemyError as exc:
            raise DatabaseError(f"cannot use database {self.safe_url}: {exc}") from exc
        if current == head:
            return
        if auto_upgrade:
            self.upgrade()
            return
        if current is None:
            raise SchemaOutdatedError(
                f"database {self.safe_url} has no roadie schema; run `roadie db upgrade`"
            )
        raise SchemaOutdatedError(
            f"database {self.safe_url} has roadie schema {current}, older than {head}; "
            f"run `roadie db upgrade`"
        )

    # -- tasks ---------------------------------------------------------------------------

    def insert_tasks(self, new_tasks: Sequence[NewTask],
                     decoder: Decoder | None = None, *,
                     parent: Fence | None = None) -> list[TaskRecord]:
        """Insert tasks in one transaction and return them as stored, in order. A task whose
        isolation key is held is stored as QUEUED. With ``parent`` (an attempt's fence) they
        are subtasks of that task: a write of its attempt, refused with TakenOver once the
        attempt is stale."""
        now = utcnow()
        if (self.is_postgres and len(new_tasks) == 1 and not new_tasks[0].isolation_key
                and parent is None and not new_tasks[0].after):
            return [self._pg_insert_one(new_tasks[0], now, decoder)]
        with self.write() as conn:
            if parent is not None:
                self.trees.check_parent(conn, parent)
            keys = {t.isolation_key for t in new_tasks if t.isolation_key}
            heads = self.key_heads(conn, keys) if keys else {}
            held = self.held_keys(conn, keys) if keys else set()
            rows: list[dict[str, Any]] = [
                {
                    "name": t.name,
                    "owner": t.owner,
                    "task_group": t.group,
                    "executor": t.executor,
                    "plugins": t.plugins,
                    "context": t.context,
                    "captured": t.captured,
                    "status": int(Status.QUEUED if t.isolation_key in held else Status.NEW),
                    "status_message": "",
                    "completed": False,
                    "attempts": 0,
                    "isolation_key": t.isolation_key,
                    "priority": t.priority,
                    "run_after": t.run_after or now,
                    "tags": t.tags,
                    "timeout": t.timeout,
                    "created_at": now,
                    "updated_at": now,
                    "finished_at": None,
                    "parent_id": parent.task_id if parent is not None else t.parent_id,
                    "fan_in": False,
                    "has_dependents": False,
                }
                for t in new_tasks
            ]
            if any(t.after for t in new_tasks):
                self.trees.block_on(conn, new_tasks, rows, now)
            for row in rows:
                row["claimable"] = claimable_at(row["status"], row["run_after"], now)
            if keys:
                self._queue_behind_heads(conn, rows, heads, now)
            if len(rows) < BULK_INSERT_FROM:
                stored = [conn.execute(T.insert().returning(*T.c), row).one()._mapping
                          for row in rows]
                ids = [row["id"] for row in stored]
                added = [_task_record(row, decoder) for row in stored]
            else:
                ids = self._bulk_insert(conn, rows)
                added = [_added_record(task_id, row, decoder)
                         for task_id, row in zip(ids, rows, strict=True)]
            if any(t.after for t in new_tasks):
                self.trees.record_dependencies(conn, new_tasks, ids)
            self.notify(conn, CHANNEL_ADDED, str(ids[-1]) if ids else "")
        if self.is_postgres:
            self._keep_statistics(len(added))
        return added

    def _keep_statistics(self, added: int) -> None:
        """Refresh the planner's statistics of the task table once the tasks added here since
        the last look are as many as it held then (so they are never more than half behind):
        a burst leaves them behind until autovacuum catches up, and without them the claim
        sorts every waiting task. Growing a table to n tasks analyzes it about log2(n) times,
        not once per call."""
        self._unanalyzed += added
        if self._unanalyzed < max(ANALYZE_AFTER, self._analyzed_rows):
            return
        with self._autocommit() as conn:
            rows = max(0, int(conn.execute(sa.text(
                "SELECT reltuples FROM pg_class WHERE oid = 'roadie_tasks'::regclass"
            )).scalar() or 0))
            if self._unanalyzed >= rows:  # (autovacuum may have analyzed it meanwhile)
                conn.execute(sa.text(f"ANALYZE roadie_tasks ({', '.join(_PLANNED_COLUMNS)})"))
                rows += self._unanalyzed
        self._analyzed_rows, self._unanalyzed = rows, 0

    def _pg_insert_one(self, task: NewTask, now: dt.datetime,
                       decoder: Decoder | None) -> TaskRecord:
        """One task without an isolation key, on PostgreSQL: insert and announce it in a
        single autocommit statement (one round trip instead of four)."""
        params = {
            "name": task.name, "owner": task.owner, "task_group": task.group,
            "executor": task.executor, "plugins": json.dumps(dict(task.plugins)),
            "context": task.context, "captured": task.captured, "priority": task.priority,
            "run_after": task.run_after or now, "tags": task.tags, "timeout": task.timeout,
            "now": now, "claimable": task.run_after is None or task.run_after <= now,
        }
        try:
            with self._own_session("add") as conn:
                row = _driver_rows(conn, _PG_INSERT_ONE_SQL, params)[0]
        except sa.exc.OperationalError as exc:
            raise self._database_error(exc) from exc
        row.pop("notified", None)
        return _task_record(row, decoder)

    def _bulk_insert(self, conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
        """Insert many task rows (each with the same columns) fast and return their ids: ids
        are reserved first, then PostgreSQL takes the rows with a binary COPY and SQLite
        with one prepared statement."""
        count = len(rows)
        if self.is_postgres:
            # the sequence looked up once (OFFSET 0 keeps the planner from inlining the
            # lookup into every row: 3-4 times slower)
            ids = conn.execute(sa.text(
                "SELECT nextval(s.seq) FROM (SELECT pg_get_serial_sequence('roadie_tasks', "
                "'id')::regclass AS seq OFFSET 0) AS s, generate_series(1, :n)"),
                {"n": count}).scalars().all()
        else:  # under BEGIN IMMEDIATE nobody else inserts meanwhile
            start = int(conn.execute(sa.select(sa.func.max(T.c.id))).scalar() or 0)
            ids = range(start + 1, start + 1 + count)
        plugins = _plugins_texts(rows)  # as JSON text, each distinct map dumped once
        if self.is_postgres and self._bound is None:
            # plugins goes first; the other columns as the rows hold them
            columns = [c for c in rows[0] if c != "plugins"]
            values_of = operator.itemgetter(*columns)
            raw: Any = conn.connection.dbapi_connection  # psycopg's own connection
            with raw.cursor() as cursor, cursor.copy(
                f"COPY roadie_tasks (id, plugins, {', '.join(columns)}) FROM STDIN "
                "(FORMAT BINARY)"
            ) as copy:
                copy.set_types(["int8", "text", *(_COPY_TYPES[c] for c in columns)])
                for task_id, text, row in zip(ids, plugins, rows, strict=True):
                    copy.write_row((task_id, text, *values_of(row)))
        elif self.is_postgres:  # a bound view (the async client): its driver takes the maps
            conn.execute(T.insert(), [{**row, "id": task_id}
                                      for task_id, row in zip(ids, rows, strict=True)])
        else:  # SQLite keeps JSON as text: the texts go in as they are
            conn.execute(T.insert().values(plugins=sa.bindparam("plugins", type_=sa.Text())),
                         [{**row, "id": task_id, "plugins": text}
                          for task_id, text, row in zip(ids, plugins, rows, strict=True)])
        return list(ids)

    def get_task(self, task_id: int, decoder: Decoder | None = None) -> TaskRecord:
        """The task with ``task_id``; raises TaskNotFound."""
        with self.read() as conn:
            row = conn.execute(sa.select(T).where(T.c.id == task_id)).first()
        if row is None:
            raise TaskNotFound(task_id)
        return _task_record(row, decoder)

    def list_tasks(
        self,
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
        with self.read() as conn:
            return [_task_record(row, decoder) for row in conn.execute(query)]

    def count_tasks(self) -> dict[Status, int]:
        """How many tasks have each status."""
        with self.read() as conn:
            rows = conn.execute(sa.select(T.c.status, sa.func.count()).group_by(T.c.status))
            return {Status(s): n for s, n in rows}

    def count_tasks_by_executor(self) -> dict[tuple[Status, str], int]:
        """How many tasks each (status, executor) pair has."""
        with self.read() as conn:
            rows = conn.execute(sa.select(T.c.status, T.c.executor, sa.func.count())
                                .group_by(T.c.status, T.c.executor))
            return {(Status(s), e): n for s, e, n in rows}

    def oldest_due(self, now: dt.datetime) -> dict[str, dt.datetime]:
        """Per executor, since when its longest-waiting due task (NEW or QUEUED, run_after
        passed) has been due."""
        query = (sa.select(T.c.executor, sa.func.min(T.c.run_after))
                 .where(T.c.status.in_([int(Status.NEW), int(Status.QUEUED)]),
                        T.c.run_after <= now)
                 .group_by(T.c.executor))
        with self.read() as conn:
            return {e: _utc(when) for e, when in conn.execute(query) if when is not None}

    def delete_task(self, task_id: int, *, tree: bool = False) -> list[int]:
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

    def prune(self, cutoffs: Mapping[Status, dt.datetime], limit: int) -> list[int]:
        """Delete up to ``limit`` ended tasks (with their attempts, attachment rows and
        dependency edges) that ended with a status of ``cutoffs`` before its time, oldest
        first, in one short transaction; returns their ids. Never a task that has not
        ended, nor one whose subtasks or dependents still wait for it."""
        from roadie.treestore import _open_child_of

        D = models.dependencies
        dependent = T.alias("dependent")
        waited_on = sa.exists().where(D.c.after_id == T.c.id, dependent.c.id == D.c.task_id,
                                      dependent.c.status.in_([0, 4, 6]))
        ids: list[int] = []
        with self.write() as conn:
            for status, before in sorted(cutoffs.items()):
                if status not in FINAL_STATUSES:
                    raise ValueError(f"only ended tasks can be pruned, not {status.label} ones")
                if len(ids) >= limit:
                    break
                query = (sa.select(T.c.id)
                         .where(sa.text(models.ENDED), T.c.status == int(status),
                                T.c.finished_at < before, ~_open_child_of(T.c.id), ~waited_on)
                         .order_by(T.c.finished_at).limit(limit - len(ids)))
                if self.is_postgres:  # workers pruning at once take different rows
                    query = query.with_for_update(of=T, skip_locked=True)
                ids += conn.execute(query).scalars().all()
            if ids:
                self.trees.delete_rows(conn, ids)
                conn.execute(D.delete().where(D.c.after_id.in_(ids)))
        return ids

    def cancel_task(self, task_id: int, by: str, message: str) -> TaskRecord:
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
        record = _task_record(row, None)
        if record.status == Status.CANCELLED:
            self.trees.settled([record])
        return record

    def resume_task(self, task_id: int) -> None:
        """Put a FAILED or CANCELLED task back to NEW (same row, same context). A parent
        whose fan-in ran goes back to WAITING instead: ``subtasks_done`` runs again once its
        subtasks have ended (at once if they all have); ``execute`` does not run again."""
        now = utcnow()
        with self.write() as conn:
            row = conn.execute(
                sa.select(T.c.status, T.c.fan_in).where(T.c.id == task_id).with_for_update()
            ).first()
            if row is None:
                raise TaskNotFound(task_id)
            status = Status(row.status)
            if status not in (Status.FAILED, Status.CANCELLED):
                raise InvalidTransition(
                    f"task {task_id} is {status.label}; only failed or cancelled tasks can be "
                    f"resumed"
                )
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

    # -- claiming and finishing ----------------------------------------------------------

    def claim(self, node: str, can: Claimable, limit: int) -> list[TaskRecord]:
        """Atomically take up to ``limit`` runnable tasks for ``node`` (see ``settle``)."""
        return self.settle(node, [], can, limit).claimed

    def settle(
        self,
        node: str,
        outcomes: Sequence[tuple[Outcome, bool]],
        can: Claimable | None,
        limit: int,
        can_async: Claimable | None = None,
        limit_async: int = 0,
        *,
        ahead: int = 0,
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
        thread: their ``started_at`` stays NULL until a later round records it from
        ``started`` (``(task id, attempt, when)``) or from the attempt's outcome.

        ``claimed_as`` holds the finished tasks as claimed (by id): on PostgreSQL the round
        then reads back only the columns that others may have changed since (the rest is
        known). Claimed and finished records get ``decoder``.
        """
        now = utcnow()
        finished: list[TaskRecord] = []
        claimed: list[TaskRecord] = []
        parked = 0
        wanted = [(c, n) if c is not None and n > 0 and c.executors else (None, 0)
                  for c, n in ((can, limit), (can_async, limit_async))]
        claims = [(c, n) for c, n in wanted if c is not None]
        if not outcomes and not claims and not started:
            return Settled(finished, claimed)
        promote = bool(claims) and self._due_check_now()
        committed = Settled([], [])  # what a first statement committed already (PostgreSQL)
        if self.is_postgres and all(o.status in FINAL_STATUSES and not isolated
                                    for o, isolated in outcomes):
            # (a released lock wakes the next task of its key in a statement of its own)
            first_finished, first_claimed, keyed = self._pg_settle(
                node, [o for o, _ in outcomes], wanted, now, promote, ahead, started,
                claimed_as, decoder)
            committed = Settled(first_finished, first_claimed)
            if not keyed:
                self.trees.settled(committed.finished)
                return committed
            # candidates with isolation keys: the general claim, for what is left
            claims = [(c, n - sum(t.executor in c.executors for t in first_claimed))
                      for c, n in claims]
            claims = [(c, n) for c, n in claims if n > 0]
            outcomes, started = [], ()
            promote = False
        if (self.is_sqlite and not outcomes and not started
                and not self._has_candidates(claims, now, promote)):
            # SQLite has one writer at a time and no fair queue for the write lock: idle
            # workers polling with write transactions would starve the callers' writes
            return Settled(finished, claimed)
        try:
            with self.write() as conn:
                if started:
                    conn.execute(self._mark_started_sql, [
                        {"b_id": i, "b_node": node, "b_attempt": a, "b_at": at}
                        for i, a, at in started])
                if outcomes:
                    finished = self._finish(conn, node, outcomes, now, decoder)
                if promote:
                    self._promote_due(conn, now)
                for c, n in claims:
                    got, parked_now = self._claim(conn, node, c, n, now,
                                                  ahead if c is can else 0, decoder)
                    claimed += got
                    parked += parked_now
        except DatabaseError:
            if not (committed.finished or committed.claimed):
                raise
            self.trees.settled(committed.finished)
            return committed  # the second transaction failed; the first one stands
        self.trees.settled(committed.finished + finished)
        return Settled(committed.finished + finished, committed.claimed + claimed, parked)

    def _has_candidates(self, claims: Sequence[tuple[Claimable, int]], now: dt.datetime,
                        promote: bool) -> bool:
        """Whether a claim could find a task, or (``promote``) a delayed task is due (a read:
        it takes no write lock)."""
        with self.read() as conn:
            if promote and conn.execute(self._due_exists_sql, {"now": now}).first():
                return True
            for can, _ in claims:
                if conn.execute(*self._candidates(can, 1, now)).first() is not None:
                    return True
        return False

    @functools.cached_property
    def _due_exists_sql(self) -> Any:
        when = sa.bindparam("now", type_=models.UTCDateTime)
        return sa.select(T.c.id).where(sa.text(models.DUE), T.c.run_after <= when).limit(1)

    # The hot path (settle) runs prebuilt statements: building SQLAlchemy expressions anew
    # for every round costs more than the database work itself.

    @functools.cached_property
    def _finish_final_sql(self) -> Any:
        owned = (T.c.id == sa.bindparam("b_id"), T.c.node == sa.bindparam("b_node"),
                 T.c.status == int(Status.IN_PROGRESS),
                 T.c.attempts == sa.func.coalesce(sa.bindparam("b_attempt", type_=sa.Integer),
                                                  T.c.attempts))
        return T.update().where(*owned).values(
            status=sa.bindparam("b_status"), status_message=sa.bindparam("b_message"),
            completed=True, result=sa.bindparam("b_result"), error=sa.bindparam("b_error"),
            task_status=sa.bindparam("b_task_status"), messages=sa.bindparam("b_messages"),
            checkpoint=sa.func.coalesce(sa.bindparam("b_checkpoint", type_=sa.LargeBinary),
                                        T.c.checkpoint),
            started_at=sa.func.coalesce(T.c.started_at,
                                        sa.bindparam("b_started", type_=models.UTCDateTime)),
            finished_at=sa.bindparam("b_now", type_=models.UTCDateTime),
            updated_at=sa.bindparam("b_now", type_=models.UTCDateTime),
        )

    @functools.cached_property
    def _rows_by_id_sql(self) -> Any:
        return sa.select(T).where(T.c.id.in_(sa.bindparam("ids", expanding=True)))

    @functools.cached_property
    def _release_locks_sql(self) -> Any:
        return models.locks.delete().where(
            models.locks.c.task_id.in_(sa.bindparam("ids", expanding=True))
        ).returning(models.locks.c.key)

    def _candidates(self, can: Claimable, limit: int,
                    now: dt.datetime) -> tuple[Any, dict[str, Any]]:
        """The claim's candidate query for ``can`` and its parameters."""
        params: dict[str, Any] = {"now": now, "limit": limit}
        params.update((f"e{i}", e) for i, e in enumerate(can.executors))
        params.update((f"g{i}", g) for i, g in enumerate(can.tag_keys))
        params.update((f"p{i}", p) for i, p in enumerate(can.plugins))
        return self._claim_candidates_sql(len(can.executors), len(can.tag_keys),
                                          len(can.plugins)), params

    def _claim_candidates_sql(self, executors: int, tags: int, plugins: int) -> Any:
        """The claim's candidates: per (executor, tags) pair, the first claimable tasks of
        that range of the claim index, then the best of them. A claim never walks a task it
        cannot take (delayed and parked tasks are not in the index; other executors' and
        tags' tasks are in other ranges). Bound: ``now``, ``limit``, ``e0..``, ``g0..``,
        ``p0..``."""
        key = (executors, tags, plugins)
        cached = self._candidates_cache.get(key)
        if cached is not None:
            return cached
        columns = "id, executor, isolation_key, plugins, name, owner, task_group, priority"
        plugin_names = ", ".join(f":p{i}" for i in range(plugins)) or "NULL"
        if self.is_postgres:
            has_plugins = (f"NOT EXISTS (SELECT 1 FROM json_object_keys(t.plugins) AS p(key) "
                           f"WHERE p.key NOT IN ({plugin_names}))")
            ranges = ", ".join(f"(:e{i}, :g{j})" for i in range(executors)
                               for j in range(tags))
            sql = f"""
                SELECT c.* FROM (VALUES {ranges}) AS r(executor, tags)
                CROSS JOIN LATERAL (
                    SELECT {', '.join('t.' + c for c in columns.split(', '))}
                    FROM roadie_tasks AS t
                    WHERE {_CLAIMABLE_T} AND t.executor = r.executor AND t.tags = r.tags
                      AND t.run_after <= :now AND {has_plugins}
                    ORDER BY t.priority DESC, t.id LIMIT :limit
                    FOR UPDATE OF t SKIP LOCKED
                ) AS c
                ORDER BY c.priority DESC, c.id LIMIT :limit"""
        elif executors * tags > SQLITE_MAX_RANGES:  # a compound SELECT this long fails
            has_plugins = (f"NOT EXISTS (SELECT 1 FROM json_each(roadie_tasks.plugins) AS p "
                           f"WHERE p.key NOT IN ({plugin_names}))")
            sql = (f"SELECT {columns} FROM roadie_tasks WHERE {models.CLAIMABLE} "
                   f"AND executor IN ({', '.join(f':e{i}' for i in range(executors))}) "
                   f"AND tags IN ({', '.join(f':g{j}' for j in range(tags))}) "
                   f"AND run_after <= :now AND {has_plugins} "
                   f"ORDER BY priority DESC, id LIMIT :limit")
        else:
            has_plugins = (f"NOT EXISTS (SELECT 1 FROM json_each(roadie_tasks.plugins) AS p "
                           f"WHERE p.key NOT IN ({plugin_names}))")
            ranges = " UNION ALL ".join(
                f"SELECT * FROM (SELECT {columns} FROM roadie_tasks "
                f"WHERE {models.CLAIMABLE} AND executor = :e{i} AND tags = :g{j} "
                f"AND run_after <= :now AND {has_plugins} "
                f"ORDER BY priority DESC, id LIMIT :limit)"
                for i in range(executors) for j in range(tags))
            sql = f"SELECT * FROM ({ranges}) ORDER BY priority DESC, id LIMIT :limit"
        statement = sa.text(sql).bindparams(sa.bindparam("now", type_=models.UTCDateTime))
        self._candidates_cache[key] = statement
        return statement

    @functools.cached_property
    def _has_plugins_clause(self) -> Any:
        """True for a task whose plugins are all among ``:plugins`` (the node's)."""
        keys = ("json_each(roadie_tasks.plugins) AS p" if self.is_sqlite
                else "json_object_keys(roadie_tasks.plugins) AS p(key)")
        return sa.text(
            f"NOT EXISTS (SELECT 1 FROM {keys} WHERE p.key NOT IN :plugins)"
        ).bindparams(sa.bindparam("plugins", expanding=True))

    @functools.cached_property
    def _task_columns(self) -> tuple[str, ...]:
        """The task table's columns in the database's order (a table that migrations
        grew has its new columns last, whatever the model's order)."""
        with self.read() as conn:
            return tuple(conn.execute(sa.text(
                "SELECT attname FROM pg_attribute WHERE attrelid = 'roadie_tasks'::regclass "
                "AND attnum > 0 AND NOT attisdropped ORDER BY attnum")).scalars())

    @functools.cached_property
    def _claim_update_sql(self) -> Any:
        now = sa.bindparam("now", type_=models.UTCDateTime)
        return (
            T.update()
            .where(T.c.id.in_(sa.bindparam("ids", expanding=True)))
            .values(status=int(Status.IN_PROGRESS), node=sa.bindparam("node"),
                    started_at=sa.bindparam("started", type_=models.UTCDateTime),
                    heartbeat_at=now, attempts=T.c.attempts + 1, updated_at=now,
                    status_message="")
            .returning(*T.c)
        )

    # On PostgreSQL the common round is one statement (_pg_settle_sql); when candidates need
    # an isolation lock, the general claim (_claim, the same on both databases) takes over.

    def _pg_settle(
        self, node: str, final: list[Outcome], wanted: Sequence[tuple[Claimable | None, int]],
        now: dt.datetime, promote: bool, ahead: int,
        started: Sequence[tuple[int, int, dt.datetime]],
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
                "limit": max(limit, 0), "start": max(limit - ahead, 0),
                "executors_async": list(can_async.executors) if can_async is not None else [],
                "limit_async": max(limit_async, 0),
            })
        if promote:
            params["due_limit"] = DUE_BATCH
        sql = _pg_settle_sql(record, can is not None, can_async is not None, promote,
                             self._task_columns if known else ())
        try:
            # one statement is its own atomic transaction: no BEGIN/COMMIT round trips
            with self._own_session("settle") as conn:
                keys, rows = _driver_tuples(conn, sql, params)
        except sa.exc.OperationalError as exc:
            raise self._database_error(exc) from exc
        finished, claimed, keyed = [], [], False
        outcome_of = {o.task_id: o for o in final}
        record_of = _record_reader(keys)
        for values in rows:
            kind = values[0]
            if kind == "done" and known:
                assert claimed_as is not None
                row = _in_utc({k: v for k, v in zip(keys, values, strict=True)
                               if k in _DONE_CHANGED})
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

    def _finish(self, conn: Connection, node: str, outcomes: Sequence[tuple[Outcome, bool]],
                now: dt.datetime, decoder: Decoder | None = None) -> list[TaskRecord]:
        final = [o for o, _ in outcomes if o.status in FINAL_STATUSES]
        again = [o for o, _ in outcomes if o.status not in FINAL_STATUSES]
        written: list[Any] = []  # rows of final outcomes, as written (SQLite)
        if final and self.is_sqlite:
            now_text = _sqlite_time(now)
            for first in range(0, len(final), SQLITE_FINISH_BATCH):
                batch = final[first:first + SQLITE_FINISH_BATCH]
                params: list[Any] = []
                for o in batch:
                    params += (o.task_id, int(o.status), o.message, o.result, o.error,
                               o.task_status, o.messages, o.checkpoint,
                               _sqlite_time(o.started_at), o.attempt)
                params += (now_text, now_text, node)
                rows_sql = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(batch))
                written += _sqlite_rows(conn, _SQLITE_FINISH_SQL.format(values=rows_sql), params)
        elif final:
            conn.execute(
                self._finish_final_sql,
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
            selected: Iterable[Any] = written + (_sqlite_rows(
                conn, f"SELECT * FROM roadie_tasks WHERE id IN ({', '.join('?' * len(ids))})",
                ids) if ids else [])
        else:
            selected = conn.execute(self._rows_by_id_sql,
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
            conn.exec_driver_sql(_SQLITE_ATTEMPT_SQL, [
                (a["task_id"], a["attempt"], a["node"], a["status"], a["message"], a["error"],
                 _sqlite_time(a["started_at"]), _sqlite_time(now)) for a in attempts])
        elif attempts:
            conn.execute(models.attempts.insert(), attempts)
        for o, _ in outcomes:
            if o.task_id in rows:
                self.notify(conn, CHANNEL_CHANGED, str(o.task_id))
                if o.status not in FINAL_STATUSES:
                    self.notify(conn, CHANNEL_ADDED, str(o.task_id))
        return [_task_record(rows[o.task_id], decoder) for o, _ in outcomes
                if o.task_id in rows]

    def _claim(self, conn: Connection, node: str, can: Claimable, limit: int,
               now: dt.datetime, ahead: int = 0, decoder: Decoder | None = None,
               ) -> tuple[list[TaskRecord], int]:
        """Claim up to ``limit`` of what ``can`` runs, taking isolation locks; returns the
        tasks claimed and how many candidates were parked (their key was taken)."""
        statement, params = self._candidates(can, limit * 2 if can.isolated else limit, now)
        if self.is_sqlite:  # driver SQL: the statement is plain text already
            params["now"] = _sqlite_time(now)
            candidates = conn.exec_driver_sql(statement.text, params).all()
        else:
            candidates = conn.execute(statement, params).all()
        if not candidates:
            return [], 0
        winners: list[int] = []
        queued: list[tuple[int, str]] = []
        wanted_keys: dict[str, int] = {}
        for row in candidates:
            if len(winners) + len(wanted_keys) >= limit:
                break
            key = row.isolation_key
            if key is None and row.executor in can.isolated:
                key = can.isolated[row.executor](row)
            if key is None:
                winners.append(row.id)
            elif key in wanted_keys:
                queued.append((row.id, key))
            else:
                wanted_keys[key] = row.id
        if wanted_keys:
            got = self._take_locks(conn, wanted_keys, node, now)
            for key, task_id in wanted_keys.items():
                if key in got:
                    winners.append(task_id)
                else:
                    queued.append((task_id, key))
                conn.execute(
                    T.update().where(T.c.id == task_id, T.c.isolation_key.is_(None))
                    .values(isolation_key=key)
                )
        # a task whose key is held is parked (not claimable) until the lock's release wakes
        # it; the lock row stays share-locked until this commits, so that the release
        # (which deletes it) sees the parked task
        held = self.held_keys(conn, {key for _, key in queued}) if queued else set()
        by_key: dict[str, list[int]] = {}
        for task_id, key in queued:
            by_key.setdefault(key, []).append(task_id)
        for key, ids in by_key.items():  # one statement per key, however many it parks
            conn.execute(T.update().where(T.c.id.in_(ids)).values(
                status=int(Status.QUEUED), isolation_key=key, updated_at=now,
                claimable=key not in held))
            self.notify(conn, CHANNEL_CHANGED, ",".join(map(str, ids)))
        if not winners:
            return [], len(queued)
        start = max(limit - ahead, 0)  # the others are claimed ahead: not started yet
        updated: list[Any] = []
        for ids, started in ((winners[:start], now), (winners[start:], None)):
            if not ids:
                continue
            if self.is_sqlite:
                updated += _sqlite_rows(
                    conn, _SQLITE_CLAIM_SQL.format(ids=", ".join("?" * len(ids))),
                    (node, _sqlite_time(started), _sqlite_time(now), _sqlite_time(now), *ids))
            else:
                updated += conn.execute(self._claim_update_sql, {
                    "ids": ids, "node": node, "now": now, "started": started})
        for task_id in winners:
            self.notify(conn, CHANNEL_CHANGED, str(task_id))
        order = {task_id: i for i, task_id in enumerate(winners)}
        return (sorted((_task_record(r, decoder) for r in updated), key=lambda t: order[t.id]),
                len(queued))

    def _take_locks(
        self, conn: Connection, wanted: Mapping[str, int], node: str, now: dt.datetime
    ) -> set[str]:
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

    # -- what the claim cannot take: delayed tasks, tasks parked behind a lock ---------------
    #
    # Of the waiting tasks of one isolation key only the next to run, its head, is claimable;
    # the others are parked (QUEUED, not claimable) from the moment they are added, so a
    # backlog behind one key costs the claim nothing. A held lock parks the tasks of its key
    # too. The lock's release, or the head's end without running (cancelled, deleted),
    # promotes the best parked task (highest priority, then oldest). A task that turns
    # claimable beside a head (a delayed one come due, a retry, a race of two adds) is parked
    # by the claim that meets it while its key is taken.

    def key_heads(self, conn: Connection, keys: Iterable[str], *,
                  lock: bool = True) -> dict[str, tuple[int, int]]:
        """The head (task id, priority) of each of ``keys`` that has one: its claimable task.
        With ``lock``, on PostgreSQL, the head rows stay locked until ``conn`` commits, so
        that a worker claims a head only once the tasks this transaction parks behind it are
        visible to the release that wakes them."""
        query = (sa.select(T.c.isolation_key, T.c.id, T.c.priority)
                 .where(T.c.isolation_key.in_(sorted(keys)), sa.text(models.KEY_HEAD))
                 .order_by(T.c.priority, T.c.id.desc()))
        if lock and self.is_postgres:
            query = query.with_for_update()
        return {key: (task_id, priority) for key, task_id, priority in conn.execute(query)}

    def _queue_behind_heads(self, conn: Connection, rows: list[dict[str, Any]],
                            heads: Mapping[str, tuple[int, int]], now: dt.datetime) -> None:
        """Park the new task ``rows`` that are not the next of their isolation key: the best
        runnable one of a key (highest priority, then first) becomes its head unless the key
        has a head as urgent already; a head that gives way to a more urgent task is parked.
        Rows of a held key are parked already; delayed and blocked rows wait as they are."""
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
            conn.execute(T.update().where(T.c.id.in_(demoted), sa.text(models.KEY_HEAD))
                         .values(status=int(Status.QUEUED), claimable=False, updated_at=now))
            self.notify(conn, CHANNEL_CHANGED, ",".join(map(str, demoted)))

    def queue_head(self, key: str) -> int | None:
        """The task that runs next for isolation key ``key`` (its holder, or else its claimable
        task), or None."""
        with self.read() as conn:
            holder = conn.execute(sa.select(models.locks.c.task_id)
                                  .where(models.locks.c.key == key)).scalar()
            if holder is not None:
                return int(holder)
            head = self.key_heads(conn, [key], lock=False).get(key)
        return head[0] if head is not None else None

    def held_keys(self, conn: Connection, keys: Iterable[str]) -> set[str]:
        """The isolation keys among ``keys`` held now. On PostgreSQL their lock rows stay
        share-locked until ``conn`` commits: a release waits, then sees what this
        transaction parked behind them."""
        L = models.locks
        query = sa.select(L.c.key).where(L.c.key.in_(sorted(keys)))
        if self.is_postgres:
            query = query.with_for_update(read=True)
        return set(conn.execute(query).scalars())

    def release_locks(self, conn: Connection, task_ids: Sequence[int]) -> None:
        """Release the isolation locks of ``task_ids`` and wake the next task parked behind
        each (a statement of its own: on PostgreSQL it sees every task parked meanwhile)."""
        keys = list(conn.execute(self._release_locks_sql, {"ids": list(task_ids)}).scalars())
        if keys:
            self.promote_parked(conn, keys)

    def promote_parked(self, conn: Connection, keys: Iterable[str]) -> int:
        """Make the next task parked behind each of ``keys`` (highest priority, then oldest)
        claimable, for keys not held now; returns how many woke."""
        free = set(keys) - self.held_keys(conn, keys)
        woken = 0
        for key in sorted(free):
            task_id = conn.execute(self._promote_parked_sql, {"key": key}).scalar()
            if task_id is not None:
                woken += 1
                self.notify(conn, CHANNEL_ADDED, str(task_id))
        return woken

    @functools.cached_property
    def _promote_parked_sql(self) -> Any:
        parked = (sa.select(T.c.id).where(T.c.isolation_key == sa.bindparam("key"),
                                          sa.text(models.PARKED))
                  .order_by(T.c.priority.desc(), T.c.id).limit(1).scalar_subquery())
        head = T.alias("head")
        has_head = (sa.select(head.c.id).where(
            head.c.isolation_key == sa.bindparam("key"),
            sa.text("head.claimable AND head.status IN (0, 4) "
                    "AND head.isolation_key IS NOT NULL")).exists())  # models.KEY_HEAD
        return (T.update().where(T.c.id == parked, ~has_head).values(claimable=True)
                .returning(T.c.id))

    def _due_check_now(self) -> bool:
        """True at most every DUE_CHECK_INTERVAL seconds (per process): time to make due
        delayed tasks claimable."""
        now = time.monotonic()
        if now < self._next_due_check:
            return False
        self._next_due_check = now + DUE_CHECK_INTERVAL
        return True

    def _promote_due(self, conn: Connection, now: dt.datetime) -> int:
        """Make delayed tasks whose time has come claimable (a range of the due index, up to
        DUE_BATCH at a time); returns how many."""
        ids = list(conn.execute(self._promote_due_sql, {"now": now}).scalars())
        if ids:
            self.notify(conn, CHANNEL_ADDED, str(ids[-1]))
        return len(ids)

    @functools.cached_property
    def _promote_due_sql(self) -> Any:
        when = sa.bindparam("now", type_=models.UTCDateTime)
        due = (sa.select(T.c.id).where(sa.text(models.DUE), T.c.run_after <= when)
               .order_by(T.c.run_after).limit(DUE_BATCH))
        if self.is_postgres:
            due = due.with_for_update(skip_locked=True)
        return (T.update().where(T.c.id.in_(due), sa.text(models.DUE))
                .values(claimable=True).returning(T.c.id))

    def promote_stranded(self) -> int:
        """Wake the next parked task of every key that no task holds (after a crash, or a
        task that was next for its key ended without running); returns how many woke.
        Walks the distinct parked keys, not the parked tasks."""
        sql = sa.text(f"""
            WITH RECURSIVE k(key) AS (
                SELECT (SELECT min(isolation_key) FROM roadie_tasks WHERE {models.PARKED})
                UNION ALL
                SELECT (SELECT min(isolation_key) FROM roadie_tasks
                        WHERE {models.PARKED} AND isolation_key > k.key)
                FROM k WHERE k.key IS NOT NULL
            )
            SELECT key FROM k WHERE key IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM roadie_locks AS l WHERE l.key = k.key)""")
        with self.read() as conn:
            keys = list(conn.execute(sql).scalars())
        if not keys:
            return 0
        with self.write() as conn:
            return self.promote_parked(conn, keys)

    @functools.cached_property
    def _mark_started_sql(self) -> Any:
        return T.update().where(
            T.c.id == sa.bindparam("b_id"), T.c.node == sa.bindparam("b_node"),
            T.c.status == int(Status.IN_PROGRESS), T.c.attempts == sa.bindparam("b_attempt"),
            T.c.started_at.is_(None),
        ).values(started_at=sa.bindparam("b_at", type_=models.UTCDateTime))

    def save_progress(
        self, node: str, updates: Mapping[int, tuple[bytes | None, bytes | None, bytes | None]],
        attempts: Mapping[int, int] | None = None,
    ) -> tuple[set[int], set[int]]:
        """Write the live status, recent messages and checkpoint of running tasks (each only
        while ``node`` runs its attempt ``attempts[task_id]``, its fencing token); return the
        ids among them that have a cancel request, and those whose write was refused (taken
        over). One batched statement, in id order, and one read, whatever the number of
        tasks."""
        if not updates:
            return set(), set()
        now = utcnow()
        ids = sorted(updates)
        fences = attempts or {}
        with self.write() as conn:
            conn.execute(self._save_progress_sql, [
                {"b_id": task_id, "b_node": node, "b_now": now, "b_status": updates[task_id][0],
                 "b_messages": updates[task_id][1], "b_checkpoint": updates[task_id][2],
                 "b_attempt": fences.get(task_id)}
                for task_id in ids])
            rows = conn.execute(
                sa.select(T.c.id, T.c.attempts, T.c.cancel_requested_at).where(
                    T.c.id.in_(ids), T.c.node == node, T.c.status == int(Status.IN_PROGRESS))
            ).all()
            owned = {r.id: r.cancel_requested_at for r in rows
                     if fences.get(r.id) in (None, r.attempts)}
            for task_id in ids:
                self.notify(conn, CHANNEL_CHANGED, str(task_id))
        cancelled = {task_id for task_id, asked in owned.items() if asked is not None}
        return cancelled, set(ids) - set(owned)

    @functools.cached_property
    def _save_progress_sql(self) -> Any:
        def kept(name: str, column: Any) -> Any:  # None: keep what is stored
            return sa.func.coalesce(sa.bindparam(name, type_=sa.LargeBinary), column)

        now = sa.bindparam("b_now", type_=models.UTCDateTime)
        return T.update().where(
            T.c.id == sa.bindparam("b_id"), T.c.node == sa.bindparam("b_node"),
            T.c.status == int(Status.IN_PROGRESS),
            # the attempt's fencing token, when the worker gives one
            T.c.attempts == sa.func.coalesce(sa.bindparam("b_attempt", type_=sa.Integer),
                                             T.c.attempts),
        ).values(heartbeat_at=now, updated_at=now,
                 task_status=kept("b_status", T.c.task_status),
                 messages=kept("b_messages", T.c.messages),
                 checkpoint=kept("b_checkpoint", T.c.checkpoint))

    def count_pending(self, can: Claimable, before: dt.datetime) -> int:
        """1 if a waiting task that ``can`` runs is due before ``before``, else 0."""
        query = sa.select(T.c.id).where(
            models.WAITING,
            T.c.run_after <= before,
            T.c.executor.in_(list(can.executors)),
            T.c.tags.in_(list(can.tag_keys)),
            self._has_plugins_clause,
        ).limit(1)
        with self.read() as conn:
            return len(conn.execute(query, {"plugins": list(can.plugins)}).all())

    def append_error(self, task_id: int, text: str) -> None:
        """Add a line to a task's error notes (for example a failing plugin hook)."""
        with self.write() as conn:
            current = conn.execute(sa.select(T.c.error).where(T.c.id == task_id)).scalar()
            joined = f"{current}\n{text}" if current else text
            conn.execute(T.update().where(T.c.id == task_id).values(error=joined))

    def cancel_requests(self, node: str) -> set[int]:
        """The ids of this node's running tasks that have a cancel request."""
        with self.read() as conn:
            return set(
                conn.execute(
                    sa.select(T.c.id).where(  # the partial index of running tasks, not
                        # the node's index (which holds every task the node ever ran)
                        T.c.node == node, models.IS_RUNNING,
                        T.c.cancel_requested_at.is_not(None),
                    )
                ).scalars()
            )

    def attempts_of(self, task_id: int) -> list[AttemptRecord]:
        """The finished attempts of a task, oldest first."""
        A = models.attempts
        with self.read() as conn:
            rows = conn.execute(sa.select(A).where(A.c.task_id == task_id).order_by(A.c.id))
            return [
                AttemptRecord(r.task_id, r.attempt, r.node, Status(r.status), r.message,
                              r.error, r.started_at, r.finished_at)
                for r in rows
            ]

    def snapshot(self) -> Snapshot:
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
                    tasks = [_task_record(r, None) for r in conn.execute(sa.select(T))]
                    counts: dict[int, int] = dict(conn.execute(
                        sa.select(A.c.task_id, sa.func.count()).group_by(A.c.task_id)).all())
                    nodes = [NodeRecord(r.id, r.name, r.host, r.pid, r.concurrency,
                                        r.plugins or {}, r.executors or {},
                                        frozenset(r.tags or ()), r.started_at, r.heartbeat_at,
                                        r.stopped_at) for r in conn.execute(sa.select(N))]
                    locks = dict(conn.execute(sa.select(L.c.key, L.c.task_id)).all())
            except sa.exc.OperationalError as exc:
                raise self._database_error(exc) from exc
        return Snapshot(now, tasks, counts, nodes, locks)

    def held_locks(self) -> dict[str, int]:
        """Isolation keys held now, with the task holding each."""
        with self.read() as conn:
            return dict(conn.execute(sa.select(models.locks.c.key, models.locks.c.task_id)).all())

    # -- nodes ---------------------------------------------------------------------------

    def register_node(self, node: NodeRecord) -> None:
        """Insert (or refresh) a worker node row."""
        N = models.nodes
        values = {
            "id": node.id, "name": node.name, "host": node.host, "pid": node.pid,
            "concurrency": node.concurrency, "plugins": dict(node.plugins),
            "executors": dict(node.executors), "tags": sorted(node.tags),
            "started_at": node.started_at, "heartbeat_at": node.heartbeat_at,
            "stopped_at": None,
        }
        with self.write() as conn:
            conn.execute(N.delete().where(N.c.id == node.id))
            conn.execute(N.insert().values(**values))

    def heartbeat(self, node: str, running: Iterable[int] | Mapping[int, int] = ()) -> set[int]:
        """Prove ``node`` and its running tasks alive; return the ids among ``running`` that
        it no longer owns (taken over as orphans while it could not heartbeat). ``running``
        may map each task id to its attempt (fencing token): a task that runs again, in a
        newer attempt, is no longer this attempt's either."""
        now = utcnow()
        with self.write() as conn:
            conn.execute(models.nodes.update().where(models.nodes.c.id == node)
                         .values(heartbeat_at=now))
            mine = (T.c.node == node, T.c.status == int(Status.IN_PROGRESS))
            owned: dict[int, int] = dict(conn.execute(
                sa.select(T.c.id, T.c.attempts).where(*mine)).all())
            # rows another transaction of this worker holds (an outcome, a progress write) are
            # skipped, not waited for: locking them in another order could deadlock
            free = sa.select(T.c.id).where(*mine).with_for_update(skip_locked=True)
            conn.execute(T.update().where(T.c.id.in_(free.scalar_subquery()))
                         .values(heartbeat_at=now))
        if isinstance(running, Mapping):
            return {i for i, attempt in running.items() if owned.get(i) != attempt}
        return set(running) - set(owned)

    def stop_node(self, node: str) -> None:
        """Mark a node stopped."""
        with self.write() as conn:
            conn.execute(models.nodes.update().where(models.nodes.c.id == node)
                         .values(stopped_at=utcnow()))

    def list_nodes(self, *, include_stopped: bool = False) -> list[NodeRecord]:
        """Registered nodes, newest first."""
        N = models.nodes
        query = sa.select(N).order_by(N.c.started_at.desc())
        if not include_stopped:
            query = query.where(N.c.stopped_at.is_(None))
        with self.read() as conn:
            return [
                NodeRecord(r.id, r.name, r.host, r.pid, r.concurrency, r.plugins or {},
                           r.executors or {}, frozenset(r.tags or ()), r.started_at,
                           r.heartbeat_at, r.stopped_at)
                for r in conn.execute(query)
            ]

    def orphaned_tasks(self, grace: float) -> list[TaskRecord]:
        """IN_PROGRESS tasks whose node stopped heartbeating ``grace`` seconds ago or more
        (or is gone, or stopped)."""
        now = utcnow()
        N = models.nodes
        stale = now - dt.timedelta(seconds=grace)
        alive = sa.exists().where(
            N.c.id == T.c.node, N.c.heartbeat_at >= stale, N.c.stopped_at.is_(None)
        )
        query = sa.select(T).where(models.IS_RUNNING, ~alive)  # the running tasks' index
        with self.read() as conn:
            return [_task_record(r, None) for r in conn.execute(query)]

    def take_over_orphan(
        self, task: TaskRecord, status: Status, message: str, *, keep_checkpoint: bool = True,
        grace: float | None = None,
    ) -> bool:
        """End (FAILED) or requeue (NEW) a dead node's task and release its lock, unless
        someone else did first. A task it had claimed ahead and never started goes back
        uncounted (no attempt)."""
        started = task.started_at is not None
        now = utcnow()
        final = status in FINAL_STATUSES
        values: dict[str, Any] = {
            "status": int(status), "status_message": message, "completed": final,
            "updated_at": now, "node": None if not final else task.node,
        }
        if final:
            values["finished_at"] = now
        else:
            values["run_after"] = now
            values["claimable"] = True
            values["cancel_requested_at"] = None
            values["cancel_requested_by"] = None
        if not started:
            values["attempts"] = T.c.attempts - 1
        if not keep_checkpoint:
            values["checkpoint"] = None
        with self.write() as conn:
            owned = [T.c.id == task.id, T.c.status == int(Status.IN_PROGRESS),
                     T.c.node == task.node, T.c.attempts == task.attempts]
            if grace is not None:  # only while its node is still dead (it may have come back)
                N = models.nodes
                owned.append(~sa.exists().where(
                    N.c.id == T.c.node, N.c.stopped_at.is_(None),
                    N.c.heartbeat_at >= now - dt.timedelta(seconds=grace)))
            done = conn.execute(T.update().where(*owned).values(**values)).rowcount
            if not done:
                return False
            self.release_locks(conn, [task.id])
            if started:
                conn.execute(
                    models.attempts.insert().values(
                        task_id=task.id, attempt=task.attempts, node=task.node,
                        status=int(Status.FAILED), message=message, error=None,
                        started_at=task.started_at, finished_at=now,
                    )
                )
            self.notify(conn, CHANNEL_CHANGED, str(task.id))
            if not final:
                self.notify(conn, CHANNEL_ADDED, str(task.id))
        if final:
            self.trees.settled([self.get_task(task.id)])
        return True

    # -- attachments ---------------------------------------------------------------------

    def add_attachment(self, info: AttachmentInfo, fence: Fence | None = None) -> None:
        """Record (or replace) an attachment row; with ``fence``, a write of that attempt
        (refused with TakenOver once it is stale)."""
        A = models.attachments
        with self.write() as conn:
            if fence is not None:
                self.check_fence(conn, fence)
            elif conn.execute(sa.select(T.c.id).where(T.c.id == info.task_id)).first() is None:
                raise TaskNotFound(info.task_id)
            conn.execute(A.delete().where(A.c.task_id == info.task_id, A.c.name == info.name))
            conn.execute(A.insert().values(
                task_id=info.task_id, name=info.name, size=info.size, checksum=info.checksum,
                media_type=info.media_type, created_at=info.created_at,
            ))

    def check_fence(self, conn: Connection | None, fence: Fence) -> None:
        """Raise TakenOver unless ``fence``'s attempt still runs its task (in ``conn``'s
        transaction, locking the row until it ends; or on its own)."""
        if conn is None:
            with self.read() as own:
                self.check_fence(own, fence)
            return
        row = conn.execute(sa.select(T.c.status, T.c.node, T.c.attempts)
                           .where(T.c.id == fence.task_id).with_for_update()).first()
        if row is None:
            raise TaskNotFound(fence.task_id)
        if (row.status, row.node, row.attempts) != (int(Status.IN_PROGRESS), fence.node,
                                                    fence.attempt):
            now = (f"attempt {row.attempts} on node {row.node}" if row.node
                   else f"attempt {row.attempts}")
            raise TakenOver(
                f"task {fence.task_id}: attempt {fence.attempt} on node {fence.node} was taken "
                f"over (the task is {Status(row.status).label}, {now}); this attempt's writes "
                f"are refused and it stops")

    def list_attachments(self, task_id: int) -> list[AttachmentInfo]:
        """The attachments of a task, by name."""
        A = models.attachments
        with self.read() as conn:
            rows = conn.execute(sa.select(A).where(A.c.task_id == task_id).order_by(A.c.name))
            return [AttachmentInfo(r.task_id, r.name, r.size, r.checksum, r.media_type,
                                   r.created_at) for r in rows]


_TIME_COLUMNS = tuple(c.name for c in T.c if isinstance(c.type, models.UTCDateTime))
_UTC = dt.timezone.utc


def _utc(when: dt.datetime) -> dt.datetime:
    """An aggregate's time (no column type applied) in UTC."""
    if isinstance(when, str):
        when = dt.datetime.fromisoformat(when)
    return when.replace(tzinfo=dt.timezone.utc) if when.tzinfo is None else when.astimezone(
        dt.timezone.utc)


# The worker's hot statements on SQLite in driver SQL: the same writes as their SQLAlchemy
# forms (_finish_final_sql, _claim_update_sql, models.attempts), without compiling and type
# processing on every round; a change to what an end or a claim writes changes both. Times are
# stored as SQLAlchemy stores them there: naive UTC, "YYYY-MM-DD HH:MM:SS.ffffff".
_SQLITE_FINISH_SQL = (  # final outcomes, with their rows as written
    "WITH v(id, status, message, result, error, task_status, messages, checkpoint, started, "
    "attempt) AS (VALUES {values}) "
    "UPDATE roadie_tasks SET status = v.status, status_message = v.message, completed = 1, "
    "result = v.result, error = v.error, task_status = v.task_status, messages = v.messages, "
    "checkpoint = coalesce(v.checkpoint, roadie_tasks.checkpoint), "
    "started_at = coalesce(roadie_tasks.started_at, v.started), finished_at = ?, "
    "updated_at = ? FROM v WHERE roadie_tasks.id = v.id AND roadie_tasks.node = ? "
    "AND roadie_tasks.status = 1 "
    "AND roadie_tasks.attempts = coalesce(v.attempt, roadie_tasks.attempts) RETURNING *")
_SQLITE_ATTEMPT_SQL = (
    "INSERT INTO roadie_attempts (task_id, attempt, node, status, message, error, started_at, "
    "finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
_SQLITE_CLAIM_SQL = (
    "UPDATE roadie_tasks SET status = 1, node = ?, started_at = ?, heartbeat_at = ?, "
    "attempts = attempts + 1, updated_at = ?, status_message = '' WHERE id IN ({ids}) "
    "RETURNING *")


def _sqlite_time(when: dt.datetime | None) -> str | None:
    """A time as SQLAlchemy stores it in SQLite."""
    if when is None:
        return None
    return when.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds")


def _driver_rows(conn: Connection, sql: str, params: Any) -> list[dict[str, Any]]:
    """Run ``sql`` on the driver's connection under ``conn``'s transaction and return its
    rows as dicts (see ``_driver_tuples``)."""
    keys, rows = _driver_tuples(conn, sql, params)
    return [dict(zip(keys, values, strict=True)) for values in rows]


def _driver_tuples(conn: Connection, sql: str, params: Any
                   ) -> tuple[tuple[str, ...], list[Sequence[Any]]]:
    """Run ``sql`` on the driver's connection under ``conn``'s transaction and return its
    column names and rows: no result metadata is built for every statement, as SQLAlchemy
    does for each of the worker's rounds (unless SQL is echoed or listened to: then
    SQLAlchemy runs it). A driver error is raised as SQLAlchemy wraps it."""
    if conn.engine.echo or conn.dispatch.before_cursor_execute or \
            conn.dispatch.after_cursor_execute:  # someone watches the SQL: SQLAlchemy tells
        result = conn.exec_driver_sql(sql, params if isinstance(params, dict) else tuple(params))
        if not result.returns_rows:
            return (), []
        return tuple(result.keys()), [tuple(r) for r in result]
    # the DB-API connection: the driver's own, or SQLAlchemy's adapter of an asyncio driver
    # (a store bound to an async connection: roadie.aio_client)
    driver: Any = conn.connection.dbapi_connection
    errors = driver.Error if hasattr(driver, "Error") else Exception  # sqlite3 / psycopg
    cursor = driver.cursor()
    try:
        cursor.execute(sql, params)
        pgresult: Any = getattr(cursor, "pgresult", None)
        if pgresult is not None:  # psycopg: names from its result (description builds objects)
            keys = tuple(pgresult.fname(i).decode() for i in range(pgresult.nfields))
            if not keys:
                return (), []
        elif cursor.description is None:
            return (), []
        else:
            keys = tuple(d[0] for d in cursor.description)
        return keys, cursor.fetchall()
    except errors as exc:
        raise sa.exc.DBAPIError.instance(sql, params, exc, errors) from exc
    finally:
        cursor.close()


def _sqlite_rows(conn: Connection, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    """Task rows read by driver SQL on SQLite, with their times as aware UTC datetimes."""
    rows = _driver_rows(conn, sql, params)
    for row in rows:
        for column in _TIME_COLUMNS:
            text = row.get(column)
            if text is not None:
                row[column] = dt.datetime.fromisoformat(text + "+00:00")
    return rows


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


def _in_utc(row: dict[str, Any]) -> dict[str, Any]:
    """A task row read by driver SQL (no SQLAlchemy types), with its times in UTC."""
    for column in _TIME_COLUMNS:
        when = row.get(column)
        if when is not None and when.tzinfo is not _UTC:
            row[column] = when.astimezone(_UTC)
    return row


# TaskRecord fields and the task columns they come from, for records read by driver SQL
_RECORD_SOURCES = (
    ("id", "id"), ("name", "name"), ("owner", "owner"), ("group", "task_group"),
    ("executor", "executor"), ("plugins", "plugins"), ("status", "status"),
    ("status_message", "status_message"), ("completed", "completed"),
    ("attempts", "attempts"), ("isolation_key", "isolation_key"), ("priority", "priority"),
    ("run_after", "run_after"), ("tags", "tags"), ("timeout", "timeout"), ("node", "node"),
    ("heartbeat_at", "heartbeat_at"), ("cancel_requested_at", "cancel_requested_at"),
    ("cancel_requested_by", "cancel_requested_by"), ("error", "error"),
    ("created_at", "created_at"), ("started_at", "started_at"),
    ("finished_at", "finished_at"), ("updated_at", "updated_at"),
    ("context_bytes", "context"), ("result_bytes", "result"),
    ("checkpoint_bytes", "checkpoint"), ("status_bytes", "task_status"),
    ("messages_bytes", "messages"), ("captured_bytes", "captured"),
    ("schedule", "schedule"), ("scheduled_for", "scheduled_for"),
    ("parent_id", "parent_id"), ("fan_in", "fan_in"), ("has_dependents", "has_dependents"),
)
_RECORD_FIELDS = tuple(name for name, _ in _RECORD_SOURCES)
_RECORD_TIMES = tuple(name for name, column in _RECORD_SOURCES if column in _TIME_COLUMNS)


def _record_of_fields(fields: dict[str, Any], decoder: Decoder | None) -> TaskRecord:
    """A TaskRecord from its fields as the columns hold them (``_RECORD_SOURCES``): the
    status as a Status, the plugins map from its JSON text, tags as a set, flags as bools,
    times in UTC. The one place that turns a task row into a record."""
    plugins = fields["plugins"]
    if isinstance(plugins, str):  # some drivers (and the own sessions) hand JSON as text
        fields["plugins"] = dict(_plugins_map(plugins))
    elif plugins is None:
        fields["plugins"] = {}
    fields["status"] = _STATUS_OF[fields["status"]]
    fields["status_message"] = fields["status_message"] or ""
    fields["tags"] = _tag_set(fields["tags"])
    fields["completed"] = bool(fields["completed"])
    fields["fan_in"] = bool(fields["fan_in"])
    fields["has_dependents"] = bool(fields["has_dependents"])
    for name in _RECORD_TIMES:
        when = fields[name]
        if when is not None and when.tzinfo is not _UTC:
            fields[name] = when.astimezone(_UTC)
    fields["decoder"] = decoder
    return task_record_of(fields)


@functools.lru_cache(maxsize=64)
def _record_reader(keys: tuple[str, ...]) -> Callable[[Sequence[Any], Decoder | None],
                                                      TaskRecord]:
    """How to make a TaskRecord from a driver row with the columns ``keys``: one dict from
    the row's values (not a row dict, then a record dict, as ``_task_record`` makes)."""
    pick = operator.itemgetter(*(keys.index(column) for _, column in _RECORD_SOURCES))

    def record_of(values: Sequence[Any], decoder: Decoder | None) -> TaskRecord:
        return _record_of_fields(dict(zip(_RECORD_FIELDS, pick(values), strict=True)),
                                 decoder)

    return record_of

_CLAIMABLE_T = "t.claimable AND t.status IN (0, 4)"  # models.CLAIMABLE, of the alias t

def _pg_claim_branch(executors: str, limit: str, start: str) -> str:
    """One branch of the PostgreSQL claim: up to ``%(limit)s`` claimable tasks of the
    executors in ``%(executors)s`` (one index range per executor and tag set); the first
    ``%(start)s`` of them start now, the others are claimed ahead (``started_at`` NULL)."""
    return f"""    (SELECT k.id, k.isolation_key, k.executor,
            row_number() OVER (ORDER BY k.priority DESC, k.id) <= %({start})s AS start_now
     FROM unnest(%({executors})s::text[]) AS e(executor)
     CROSS JOIN unnest(%(tags)s::text[]) AS g(tags)
     CROSS JOIN LATERAL (
         SELECT t.id, t.isolation_key, t.executor, t.priority FROM roadie_tasks AS t
         WHERE t.claimable AND t.status IN (0, 4) AND t.executor = e.executor
           AND t.tags = g.tags AND t.run_after <= %(now)s
           AND NOT EXISTS (SELECT 1 FROM json_object_keys(t.plugins) AS p(key)
                           WHERE p.key <> ALL(%(plugins)s::text[]))
         ORDER BY t.priority DESC, t.id
         LIMIT %({limit})s
         FOR UPDATE OF t SKIP LOCKED
     ) AS k
     ORDER BY k.priority DESC, k.id
     LIMIT %({limit})s)"""


# Making due delayed tasks claimable: only in a round every DUE_CHECK_INTERVAL, which runs with
# a custom plan (a generic plan of this UPDATE walked every delayed task's index entry).
_PG_DUE_CTE = """due AS (
    -- = ANY(ARRAY(...)): the due ids first, then each by primary key, in any plan (as
    -- IN (...), the settle session's generic plan hashes every delayed task each time)
    UPDATE roadie_tasks SET claimable = true
    WHERE id = ANY(ARRAY(SELECT id FROM roadie_tasks
                         WHERE NOT claimable AND status = 0 AND run_after <= %(now)s
                         ORDER BY run_after LIMIT %(due_limit)s FOR UPDATE SKIP LOCKED))
      AND NOT claimable AND status = 0
    RETURNING id
),
"""
_PG_WOKEN_JOIN = """LEFT JOIN (
    SELECT pg_notify('roadie_task_added', max(id)::text) AS sent FROM due HAVING count(*) > 0
) AS woken ON true
"""

# The parts of one worker round on PostgreSQL (_pg_settle_sql): record final outcomes (task
# rows, attempt log, lock release) and the starts of tasks claimed ahead; make due delayed tasks
# claimable; claim waiting tasks that have no isolation key; announce the changes.
_PG_RECORD_CTES = """
v AS (
    -- the outcomes as one JSON text (bytes in hex): far less work for the client than ten
    -- arrays of as many values
    SELECT o.id, o.status, o.message, decode(o.result, 'hex') AS result, o.error,
           decode(o.task_status, 'hex') AS task_status, decode(o.messages, 'hex') AS messages,
           decode(o.checkpoint, 'hex') AS checkpoint, o.attempt, o.started
    FROM json_to_recordset(%(outcomes)s::json) AS o(
        id bigint, status smallint, message text, result text, error text, task_status text,
        messages text, checkpoint text, attempt int, started timestamptz)
),
began AS (
    UPDATE roadie_tasks AS t SET started_at = s.at
    FROM unnest(%(start_ids)s::bigint[], %(start_attempts)s::int[],
                %(start_ats)s::timestamptz[]) AS s(id, attempt, at)
    WHERE t.id = s.id AND (t.node || '') = %(node)s AND t.status = 1
      AND t.attempts = s.attempt AND t.started_at IS NULL
),
done AS (
    UPDATE roadie_tasks AS t
    SET status = v.status, status_message = v.message, completed = true, result = v.result,
        error = v.error, task_status = v.task_status, messages = v.messages,
        checkpoint = coalesce(v.checkpoint, t.checkpoint), finished_at = %(now)s,
        started_at = coalesce(t.started_at, v.started),
        updated_at = %(now)s
    FROM v WHERE t.id = v.id AND (t.node || '') = %(node)s AND t.status = 1
    -- (node || ''): found by id, never by walking the node index (a node's ended tasks too)
      AND t.attempts = coalesce(v.attempt, t.attempts)
    RETURNING t.*
),
logged AS (
    INSERT INTO roadie_attempts
        (task_id, attempt, node, status, message, error, started_at, finished_at)
    SELECT id, attempts, %(node)s, status, status_message, error, started_at, %(now)s FROM done
),
released AS (
    DELETE FROM roadie_locks WHERE task_id IN (SELECT id FROM done)
),
"""

_PG_CLAIM_CTE = """
u AS (
    UPDATE roadie_tasks AS t
    SET status = 1, node = %(node)s, heartbeat_at = %(now)s,
        started_at = CASE WHEN c.start_now THEN %(now)s::timestamptz END,
        attempts = t.attempts + 1, updated_at = %(now)s, status_message = ''
    FROM c
    WHERE t.id = c.id AND c.isolation_key IS NULL AND c.executor <> ALL(%(isolated)s::text[])
    RETURNING t.*
),
"""


# What a finished task's row may hold that its worker does not know: what others write
# while it runs (heartbeats, cancel requests, dependents, checkpoints) and the start a
# round recorded. The rest of the finished record is the task as claimed plus its outcome.
_DONE_CHANGED = ("id", "heartbeat_at", "cancel_requested_at", "cancel_requested_by",
                 "checkpoint", "started_at", "isolation_key", "has_dependents", "fan_in")


def _finished_record(claimed: TaskRecord, outcome: Outcome, row: dict[str, Any],
                     now: dt.datetime, decoder: Decoder | None) -> TaskRecord:
    """A finished task's record from the task as claimed, its outcome, and the
    ``_DONE_CHANGED`` columns of its row (the settle statement set ``finished_at`` and
    ``updated_at`` to ``now``)."""
    fields = dict(claimed.__dict__)
    fields.update({
        "status": _STATUS_OF[int(outcome.status)], "status_message": outcome.message,
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


@functools.cache
def _pg_settle_sql(record: bool, claim_sync: bool, claim_async: bool, due: bool,
                   known: tuple[str, ...] = ()) -> str:
    """The settle statement with only the parts this round needs (a part with nothing to do
    still costs its share of every execution): ``record`` outcomes and starts, claim for
    threads, claim for async executors, make due delayed tasks claimable. With ``known``
    (the table's columns in the database's order: the branches of the result's UNION line
    up by position), finished tasks come back with only their ``_DONE_CHANGED`` columns.
    One line."""
    branches = ([_pg_claim_branch("executors", "limit", "start")] if claim_sync else []) + (
        [_pg_claim_branch("executors_async", "limit_async", "limit_async")]
        if claim_async else [])
    claim = bool(branches)
    ctes = (_PG_RECORD_CTES if record else "") + (_PG_DUE_CTE if due else "")
    if claim:
        ctes += "c AS (\n" + "\n    UNION ALL\n".join(branches) + "\n),\n" + _PG_CLAIM_CTE
    changed = (["SELECT id FROM done"] if record else []) + (
        ["SELECT id FROM u"] if claim else [])
    done_columns = ", ".join(c if c in _DONE_CHANGED else f"NULL AS {c}"
                             for c in known) if known else "done.*"
    rows = ([f"SELECT 'done' AS kind, {done_columns} FROM done"] if record else []) + ([
        "SELECT 'claimed' AS kind, u.* FROM u",
        # one candidate that needs an isolation lock is all the caller needs to know of
        # (it then runs the general claim): found by primary key, not by a join
        "SELECT 'keyed' AS kind, t.* FROM roadie_tasks AS t "
        "WHERE t.id = (SELECT min(id) FROM c WHERE c.id NOT IN (SELECT id FROM u))",
    ] if claim else [])
    assert rows, "a settle statement records or claims"
    sql = f"""WITH {ctes}changed AS ({" UNION ALL ".join(changed)}),
rows AS ({" UNION ALL ".join(rows)})
SELECT rows.* FROM rows
LEFT JOIN (
    SELECT pg_notify('roadie_task_changed', string_agg(id::text, ',')) AS sent
    FROM changed HAVING count(*) > 0
) AS notified ON true
{_PG_WOKEN_JOIN if due else ""}"""
    # parameters in binary: psycopg dumps the arrays of a round in a third of the time
    return re.sub(r"%\((\w+)\)s", r"%(\1)b", _one_line(sql))


def _one_line(sql: str) -> str:
    """``sql`` without its comments and runs of white space: psycopg caches how it converts a
    query only for texts under 4,096 bytes, and converts a longer one on every execution."""
    lines = (line.split("--", 1)[0] for line in sql.splitlines())
    return " ".join(" ".join(lines).split())


_PG_INSERT_ONE_SQL = """
WITH ins AS (
    INSERT INTO roadie_tasks
        (name, owner, task_group, executor, plugins, context, captured, status, status_message,
         completed, attempts, isolation_key, priority, run_after, tags, timeout, created_at,
         updated_at, claimable)
    VALUES
        (%(name)s, %(owner)s, %(task_group)s, %(executor)s, %(plugins)s::json, %(context)s,
         %(captured)s, 0, '', false, 0, NULL, %(priority)s, %(run_after)s, %(tags)s,
         %(timeout)s, %(now)s, %(now)s, %(claimable)s)
    RETURNING *
)
SELECT ins.*, pg_notify('roadie_task_added', ins.id::text)::text AS notified FROM ins
"""


def _join_payloads(payloads: list[str]) -> str:
    joined = ",".join(dict.fromkeys(payloads))
    return joined if len(joined) < 7900 else "*"


def split_payload(payload: str) -> list[str]:
    """The items of a notification payload (``["*"]`` means "anything may have changed")."""
    return [p for p in payload.split(",") if p]


_STATUS_OF = {int(status): status for status in Status}


@functools.lru_cache(maxsize=1024)
def _plugins_map(text: str) -> dict[str, str]:
    """A task's plugins map from its JSON text (cached: tasks share a few; copy the result)."""
    plugins: dict[str, str] = json.loads(text)
    return plugins


@functools.lru_cache(maxsize=1024)
def _tag_set(text: str | None) -> frozenset[str]:
    return frozenset(t for t in (text or "").split(",") if t)


def _plugins_texts(rows: list[dict[str, Any]]) -> list[str]:
    """The plugins map of each row as JSON text (the maps of a batch are mostly equal)."""
    texts: dict[tuple[tuple[str, str], ...], str] = {}
    found = []
    for row in rows:
        plugins = row["plugins"]
        key = tuple(plugins.items())
        text = texts.get(key)
        if text is None:
            text = texts[key] = json.dumps(plugins)
        found.append(text)
    return found


def _added_record(task_id: int, row: dict[str, Any], decoder: Decoder | None) -> TaskRecord:
    """The TaskRecord of a task just inserted from ``row`` (``_bulk_insert``): the columns
    the row leaves out are NULL."""
    fields = {name: row.get(column) for name, column in _RECORD_SOURCES}
    fields["id"] = task_id
    return _record_of_fields(fields, decoder)


def _task_record(row: Any, decoder: Decoder | None) -> TaskRecord:
    """A TaskRecord from a result row or a mapping of column names (a column it lacks,
    such as those added by later migrations in an old query, is NULL)."""
    m = row._mapping if isinstance(row, Row) else row
    return _record_of_fields({name: m.get(column) for name, column in _RECORD_SOURCES},
                             decoder)


def _normal_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _make_engine(url: str, *, echo: bool, synchronous_commit: str = "on",
                 idle_timeout: float | None = None) -> Engine:
    url = _normal_url(url)
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, echo=echo, connect_args={"timeout": 30,
                                                                "check_same_thread": False})
        path = engine.url.database
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        _sqlite_events(engine)
        return engine
    try:
        return sa.create_engine(url, echo=echo, pool_size=10, max_overflow=20,
                                pool_recycle=1800,
                                connect_args=_pg_options(synchronous_commit, idle_timeout))
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
        raise DatabaseError(f"cannot use database URL {url!r}: {exc}") from exc


def make_async_engine(url: str, *, synchronous_commit: str = "on") -> Any:
    """An ``AsyncEngine`` on the same database as ``Store(url)``: psycopg's asyncio side on
    PostgreSQL, aiosqlite on SQLite (with the same pragmas and ``BEGIN IMMEDIATE``)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    url = _normal_url(url)
    try:
        if url.startswith("sqlite"):
            parsed = sa.make_url(url)
            if parsed.drivername not in ("sqlite", "sqlite+aiosqlite"):
                raise DatabaseError(f"the async client needs aiosqlite on SQLite, not "
                                    f"{parsed.drivername!r} ({parsed.render_as_string()})")
            try:
                import aiosqlite  # noqa: F401
            except ImportError:
                raise DatabaseError("the async client needs aiosqlite on SQLite: "
                                    "pip install aiosqlite") from None
            engine = create_async_engine(parsed.set(drivername="sqlite+aiosqlite"),
                                         connect_args={"timeout": 30})
            _sqlite_events(engine.sync_engine)
            return engine
        return create_async_engine(url, pool_size=10, max_overflow=20, pool_recycle=1800,
                                   connect_args=_pg_options(synchronous_commit))
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, sa.exc.InvalidRequestError) as exc:
        raise DatabaseError(f"cannot use database URL {url!r} asynchronously: {exc}") from exc


def _sqlite_events(engine: Engine) -> None:
    """WAL, a busy timeout, and roadie's own BEGIN (IMMEDIATE for writing transactions)."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # roadie issues BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("roadie_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _pg_options(synchronous_commit: str, idle_timeout: float | None = None) -> dict[str, Any]:
    if synchronous_commit not in ("on", "off", "local", "remote_write", "remote_apply"):
        raise DatabaseError(
            f"postgres_synchronous_commit={synchronous_commit!r}: use on, off, local, "
            f"remote_write or remote_apply")
    settings = [] if synchronous_commit == "on" else [f"-c synchronous_commit={synchronous_commit}"]
    if idle_timeout:
        # a process paused inside a transaction (SIGSTOP, a frozen VM) would hold its row locks
        # for as long as the pause, and the recovery of its tasks would wait on them: the
        # server ends such a session instead
        settings.append(f"-c idle_in_transaction_session_timeout={int(idle_timeout * 1000)}")
    return {"options": " ".join(settings)} if settings else {}

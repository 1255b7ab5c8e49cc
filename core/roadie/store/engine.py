"""The store's database: its engine and connections, the sessions kept for hot statements,
transactions (``write``, ``read``), change notifications, and the schema's revision.

One code path serves SQLite and PostgreSQL. On PostgreSQL changes are announced with NOTIFY,
and the claim loop's hot statements run in sessions of their own (``_own_session``). On SQLite
every writing transaction starts with ``BEGIN IMMEDIATE`` (one writer at a time, readers never
blocked thanks to WAL).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from roadie import models
from roadie.errors import (
    ConfigurationError,
    DatabaseError,
    SchemaMismatchError,
    SchemaNewerError,
    SchemaOutdatedError,
)
from roadie.notifications import Hub, PgListener, hub_for
from roadie.store.channels import (
    CHANNEL_ADDED,
    CHANNEL_CANCEL,
    CHANNEL_CHANGED,
    CHANNEL_SCHEDULES,
)

# the driver's errors that ``write``, ``read`` and the hot statements turn into DatabaseError
# (``_database_error``): the database is down or unreachable, or refused a statement (perhaps
# because its schema changed under this process: a column gone, a prepared plan whose result
# type changed); an InternalError without SQLSTATE is psycopg's when a pooler answers
# strangely (a server gone)
DATABASE_ERRORS = (sa.exc.OperationalError, sa.exc.InternalError, sa.exc.ProgrammingError,
                   sa.exc.NotSupportedError)
_PER_CONNECTION = ("trees", "schedules")  # not shared by ``Store.bound`` views
_D = TypeVar("_D", bound="Database")


class Database:
    """The connection side of the store (``Store`` adds every query to it)."""

    _bound: Connection | None = None  # see ``bound``

    def __init__(self, url: str, *, echo: bool = False,
                 synchronous_commit: str = "on", idle_timeout: float | None = None,
                 pooler: str = "none", listen_url: str = "") -> None:
        if pooler not in POOLERS:
            raise ConfigurationError(
                f"pooler={pooler!r}: use 'none' (a direct connection or a session pooler) or "
                "'transaction' (PgBouncer, Supavisor or pgcat in transaction mode)")
        self.url = url
        self.pooler = pooler
        self.synchronous_commit = synchronous_commit
        self.engine = _make_engine(url, echo=echo, synchronous_commit=synchronous_commit,
                                   idle_timeout=idle_timeout, pooler=pooler)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        models.add_dialect_options(self.engine.dialect.name)
        self.listen_url = _listen_url(listen_url) if listen_url else ""
        self.hub = hub_for(self.safe_url)
        self._listener: PgListener | None = None
        self._listener_lock = threading.Lock()
        self._sessions: dict[str, Connection] = {}  # see _own_session
        self._session_locks = {name: threading.Lock() for name in ("settle", "add")}
        self._lent_engines: dict[tuple[str, bool], Any] = {}  # caller.py: callers' connections
        self._identity: tuple[Any, ...] | None = None  # caller.py: which database this is

    @property
    def can_listen(self) -> bool:
        """Whether other processes' changes reach ``listen()``'s hub (LISTEN works): SQLite
        (this process only) or PostgreSQL unless behind a transaction pooler without a
        ``listen_url``; otherwise workers find changes by polling."""
        return not self.is_postgres or self.pooler != "transaction" or bool(self.listen_url)

    def listen(self, *, wait: bool = True) -> Hub:
        """The hub where this database's changes are announced (starts the PostgreSQL
        listener on first use: on ``listen_url`` if set; not at all behind a transaction
        pooler without one, where LISTEN cannot work). Returns once LISTEN is in place;
        without ``wait`` at once (``wait_listening`` then)."""
        if self.is_postgres and self.can_listen:
            with self._listener_lock:
                if self._listener is None:
                    conninfo = self.listen_url or _conninfo(self.engine)
                    self._listener = PgListener(
                        conninfo, [CHANNEL_ADDED, CHANNEL_CHANGED, CHANNEL_CANCEL,
                                   CHANNEL_SCHEDULES], self.hub
                    )
                    self._listener.start(timeout=10.0 if wait else 0.0)
                elif wait:
                    self._listener.wait_ready()
        return self.hub

    def wait_listening(self) -> None:
        """Return once the listener started by ``listen(wait=False)`` is in place."""
        listener = self._listener
        if listener is not None:
            listener.wait_ready()

    def async_sessions(self, size: int) -> AsyncSessions:
        """A new pool of autocommit sessions on psycopg's asyncio side (PostgreSQL), for one
        event loop of the async client (``AsyncSessions``)."""
        return AsyncSessions(_conninfo(self.engine), size=size,
                             synchronous_commit=self.synchronous_commit, pooler=self.pooler)

    @property
    def safe_url(self) -> str:
        """The URL without its password."""
        return self.engine.url.render_as_string(hide_password=True)

    def bound(self: _D, conn: Connection) -> _D:
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
        if self._bound is not None or self.pooler == "transaction" \
                or not lock.acquire(blocking=False):  # (a pooler keeps no session settings)
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
            if "roadie_pending" in self._bound.info:
                yield self._bound  # joins the transaction around it, which sends them
            else:
                with self._caller_write() as conn:
                    yield conn
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
        except DATABASE_ERRORS as exc:
            raise self._database_error(exc) from exc
        if pending and (not self.is_postgres or not self.can_listen):
            # committed: tell this process's listeners (the others poll)
            for channel, payloads in pending.items():
                self.hub.publish(channel, _join_payloads(payloads))

    @contextmanager
    def _caller_write(self) -> Iterator[Connection]:
        """A write inside the caller's transaction (``caller.joined``): nothing commits here.
        On PostgreSQL its NOTIFY goes with the caller's commit (NOTIFY is transactional); on
        SQLite, where nothing tells roadie of the commit, workers find the task at their
        next poll (``sqlite_poll_interval``)."""
        conn = self._bound
        assert conn is not None
        pending: dict[str, list[str]] = {}
        conn.info["roadie_pending"] = pending
        try:
            yield conn
            if pending and self.is_postgres:
                self._send_notifications(conn, pending)
        except DATABASE_ERRORS as exc:
            raise self._database_error(exc) from exc
        finally:
            conn.info.pop("roadie_pending", None)

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
        except DATABASE_ERRORS as exc:
            raise self._database_error(exc) from exc

    @contextmanager
    def read_one(self) -> Iterator[Connection]:
        """A connection for a read of one statement, which is its own transaction: no
        BEGIN and COMMIT round trips. Inside a bound connection's transaction, it joins it,
        and that transaction's errors reach its owner as they are (as with ``read``)."""
        if self._bound is not None and self._bound.in_transaction():
            yield self._bound
            return
        try:
            with self._autocommit() as conn:
                yield conn
        except DATABASE_ERRORS as exc:
            raise self._database_error(exc) from exc

    def _database_error(self, exc: sa.exc.DBAPIError) -> DatabaseError:
        """The roadie error for a failed statement: the database is unreachable, or its
        schema is not this code's (checked then, with one query), or it refused the
        statement."""
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        if _unreachable(exc):
            return DatabaseError(f"cannot use database {self.safe_url}: {reason}")
        # a migration may have changed the table under this process: read its columns anew
        self.__dict__.pop("_task_columns", None)
        mismatch = self._revision_error()
        if mismatch is not None:
            return mismatch
        if "no such table" in reason or ("relation" in reason and "does not exist" in reason):
            return self._no_schema()
        error = DatabaseError(f"database {self.safe_url} refused a statement of roadie: {reason}"
                              " (a bug of roadie or of the schema: please report it)")
        error.unreachable = False
        return error

    def insert(self, table: sa.Table) -> Any:
        """An INSERT into ``table`` in this database's dialect: one that takes
        ``on_conflict_do_nothing`` and ``on_conflict_do_update``."""
        if self.is_postgres:
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        return insert(table)

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
        config.set_main_option("script_location",
                               str(Path(__file__).parent.parent / "migrations"))
        config.attributes["connection"] = conn
        return config

    def schema_revision(self) -> tuple[str | None, str]:
        """(the database's revision or None, the code's head revision, ``models.SCHEMA_HEAD``).
        Read with one query, so that a process whose schema is current never imports
        Alembic (it costs a worker about 12 MB)."""
        with self.read() as conn:
            return _read_revision(conn), models.SCHEMA_HEAD

    def schema_error(self, revision: str | None) -> SchemaMismatchError | None:
        """The error for this database at schema ``revision`` (None: no roadie schema), or
        None when it is the code's: older (``roadie db upgrade``), or newer or unknown here
        (upgrade roadie). Alembic is loaded only to tell those apart."""
        head = models.SCHEMA_HEAD
        if revision == head:
            return None
        if revision is None:
            return self._no_schema()
        mine = f"this roadie's {head} (roadie {_roadie_version()})"
        if revision in _known_revisions():
            return SchemaOutdatedError(
                f"database {self.safe_url} has roadie schema {revision}, older than {mine}: "
                f"run `roadie db upgrade`", revision=revision, head=head)
        return SchemaNewerError(
            f"database {self.safe_url} has roadie schema {revision}, newer than {mine}: "
            f"upgrade roadie on this machine (a newer roadie upgraded the database)",
            revision=revision, head=head)

    def _no_schema(self) -> SchemaOutdatedError:
        return SchemaOutdatedError(
            f"database {self.safe_url} has no roadie schema; run `roadie db upgrade`",
            head=models.SCHEMA_HEAD)

    def check_revision(self) -> None:
        """Raise ``SchemaMismatchError`` unless the database is still at the code's revision:
        one short query, which a worker makes at each heartbeat, so that a worker whose
        database was upgraded (or downgraded) under it stops with a clear error."""
        with self.read() as conn:
            revision = conn.execute(sa.text(_SELECT_REVISION)).scalar()
        error = self.schema_error(revision)
        if error is not None:
            raise error

    def _revision_error(self) -> SchemaMismatchError | None:
        """After a refused statement: the schema error if the database has a roadie schema
        at another revision than the code's (read on a connection of its own; None when
        that fails too)."""
        try:
            with self.engine.connect() as conn:
                revision = _read_revision(conn)
        except Exception:
            return None
        return None if revision is None else self.schema_error(revision)

    def upgrade(self) -> None:
        """Create or upgrade the schema to the code's revision (Alembic). A database that a
        newer roadie upgraded is refused with ``SchemaNewerError``, not downgraded."""
        from alembic import command

        with self.write() as conn:
            error = self.schema_error(_read_revision(conn))
            if isinstance(error, SchemaNewerError):
                raise error
            command.upgrade(self._alembic_config(conn), "head")

    def check_schema(self, *, auto_upgrade: bool) -> None:
        """Raise a clear error if the schema is missing, older or newer than the code
        (or upgrade an older one, with ``auto_upgrade``)."""
        try:
            current, _ = self.schema_revision()
        except DatabaseError:
            raise
        except sa.exc.SQLAlchemyError as exc:
            raise DatabaseError(f"cannot use database {self.safe_url}: {exc}") from exc
        error = self.schema_error(current)
        if error is None:
            return
        if auto_upgrade and not isinstance(error, SchemaNewerError):
            self.upgrade()
            return
        raise error

    @functools.cached_property
    def _task_columns(self) -> tuple[str, ...]:
        """The task table's columns in the database's order (a table that migrations
        grew has its new columns last, whatever the model's order)."""
        with self.read_one() as conn:
            return tuple(conn.execute(sa.text(
                "SELECT attname FROM pg_attribute WHERE attrelid = 'roadie_tasks'::regclass "
                "AND attnum > 0 AND NOT attisdropped ORDER BY attnum")).scalars())


_SELECT_REVISION = f"SELECT version_num FROM {models.VERSION_TABLE}"


def _read_revision(conn: Connection) -> str | None:
    """The schema revision Alembic recorded in the database (None: no roadie schema)."""
    if not sa.inspect(conn).has_table(models.VERSION_TABLE):
        return None
    revision: str | None = conn.execute(sa.text(_SELECT_REVISION)).scalar()
    return revision


@functools.cache
def _known_revisions() -> frozenset[str]:
    """Every schema revision of this roadie's migrations."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent.parent / "migrations"))
    return frozenset(script.revision for script in
                     ScriptDirectory.from_config(config).walk_revisions())


def _roadie_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("roadie")
    except PackageNotFoundError:
        return "of unknown version"


def driver_rows(conn: Connection, sql: str, params: Any) -> list[dict[str, Any]]:
    """Run ``sql`` on the driver's connection under ``conn``'s transaction and return its
    rows as dicts (see ``driver_tuples``)."""
    keys, rows = driver_tuples(conn, sql, params)
    return [dict(zip(keys, values, strict=True)) for values in rows]


def driver_tuples(conn: Connection, sql: str, params: Any
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


# SQLite's errors of the database itself rather than of one statement (a busy database is
# waited for: it passes)
_SQLITE_UNREACHABLE = ("unable to open", "disk i/o", "locked", "busy", "readonly",
                       "malformed", "not a database", "full")


def _unreachable(exc: sa.exc.DBAPIError) -> bool:
    """Whether an OperationalError means the database cannot be used now (down, disconnected,
    locked, its file unreadable), not that it refused one statement (SQLite's "too many SQL
    variables")."""
    if exc.connection_invalidated or exc.orig is None:
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate is not None:  # PostgreSQL: connection (08), shutdown (57P), resources (53)
        return sqlstate.startswith(("08", "57P", "53"))
    if type(exc.orig).__module__.startswith("psycopg"):
        return True  # no SQLSTATE: the client side of a connection failed
    reason = str(exc.orig).lower()
    return any(word in reason for word in _SQLITE_UNREACHABLE)


def _join_payloads(payloads: list[str]) -> str:
    joined = ",".join(dict.fromkeys(payloads))
    return joined if len(joined) < 7900 else "*"


def _normal_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


POOLERS = ("none", "transaction")


def _listen_url(url: str) -> str:
    """``listen_url`` as libpq conninfo (a ``postgresql://`` URL, with or without a driver)."""
    try:
        parsed = sa.make_url(_normal_url(url))
    except sa.exc.ArgumentError as exc:
        raise ConfigurationError(f"listen_url {url!r} is not a database URL: {exc}") from None
    if parsed.get_backend_name() != "postgresql":
        raise ConfigurationError(
            f"listen_url {parsed.render_as_string()!r} must be a PostgreSQL URL (a direct "
            "connection to the server, not through the pooler)")
    return _conninfo(sa.create_engine(parsed.set(drivername="postgresql+psycopg")))


def _conninfo(engine: Engine) -> str:
    """libpq's connection string for ``engine``'s URL, as psycopg gets it from SQLAlchemy: a
    multi-host URL (``?host=a:5432&host=b:5432&target_session_attrs=read-write``) keeps
    every host."""
    from psycopg.conninfo import make_conninfo

    _, arguments = engine.dialect.create_connect_args(engine.url)
    return make_conninfo("", **{k: v for k, v in arguments.items() if isinstance(v, (str, int))})


def _make_engine(url: str, *, echo: bool, synchronous_commit: str = "on",
                 idle_timeout: float | None = None, pooler: str = "none") -> Engine:
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
                                connect_args=_pg_options(synchronous_commit, idle_timeout,
                                                         pooler))
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
        raise DatabaseError(f"cannot use database URL {url!r}: {exc}") from exc


def make_async_engine(url: str, *, synchronous_commit: str = "on",
                      pooler: str = "none") -> Any:
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
                                   connect_args=_pg_options(synchronous_commit,
                                                            pooler=pooler))
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, sa.exc.InvalidRequestError) as exc:
        raise DatabaseError(f"cannot use database URL {url!r} asynchronously: {exc}") from exc


class AsyncSessions:
    """PostgreSQL: one event loop's pool of autocommit sessions on psycopg's asyncio side, for
    the async client's hot statement (single adds, grouped by ``grouped.GroupedAdds``: one
    round trip, no greenlet bridge, no pool reset). At most ``size`` connections
    (``aio_pool_size``), opened as callers wait for one and closed after ten idle minutes; set
    up as ``Database._own_session``'s (a generic plan, no JIT, times in UTC, JSON as text),
    except behind a transaction pooler.
    ``close()`` closes them."""

    def __init__(self, conninfo: str, *, size: int, synchronous_commit: str = "on",
                 pooler: str = "none") -> None:
        from psycopg_pool import AsyncConnectionPool

        if size < 1:
            raise ConfigurationError(f"aio_pool_size={size}: use 1 or more connections")
        self.pooler = pooler
        kwargs = {**_pg_options(synchronous_commit, pooler=pooler), "autocommit": True}
        self.pool = AsyncConnectionPool(conninfo, min_size=0, max_size=size,
                                        kwargs=kwargs, configure=self._configure, open=False,
                                        max_idle=600, name="roadie-aio")
        self._opened = False
        self._keys: dict[tuple[str, int], tuple[str, ...]] = {}  # column names, by statement

    async def _configure(self, conn: Any) -> None:
        from psycopg.types.string import TextLoader

        if self.pooler != "transaction":  # (a pooler keeps no session settings)
            await conn.execute("SET plan_cache_mode = force_generic_plan; SET jit = off; "
                               "SET TIME ZONE 'UTC'")
        conn.adapters.register_loader("json", TextLoader)
        conn.adapters.register_loader("jsonb", TextLoader)

    async def rows(self, sql: str, params: Any) -> list[dict[str, Any]]:
        """Run ``sql`` in a session of the pool (its own transaction) and return its rows as
        dicts; a driver error is raised as SQLAlchemy wraps it (for ``_database_error``)."""
        import psycopg

        if not self._opened:
            await self.pool.open(wait=False)
            self._opened = True
        try:
            async with self.pool.connection() as conn:
                cursor = await conn.execute(sql, params)
                result = cursor.pgresult
                width = result.nfields if result is not None else 0
                keys = self._keys.get((sql, width))
                if keys is None and result is not None:  # (names without psycopg's Columns)
                    keys = self._keys[sql, width] = tuple(
                        (result.fname(i) or b"").decode() for i in range(width))
                return [dict(zip(keys or (), values, strict=True))
                        for values in await cursor.fetchall()]
        except psycopg.Error as exc:
            raise sa.exc.DBAPIError.instance(sql, params, exc, psycopg.Error) from exc

    async def close(self) -> None:
        """Close the sessions (a later call opens new ones)."""
        if self._opened:
            self._opened = False
            await self.pool.close()


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


def _pg_options(synchronous_commit: str, idle_timeout: float | None = None,
                pooler: str = "none") -> dict[str, Any]:
    """psycopg's connection arguments: the server settings of roadie's sessions. Behind a
    transaction pooler there are no sessions: no startup options (PgBouncer refuses them), and
    no prepared statements (psycopg prepares a statement it has run five times, on one server
    connection, and the pooler hands the next transaction to another)."""
    if synchronous_commit not in ("on", "off", "local", "remote_write", "remote_apply"):
        raise DatabaseError(
            f"postgres_synchronous_commit={synchronous_commit!r}: use on, off, local, "
            f"remote_write or remote_apply")
    if pooler == "transaction":
        if synchronous_commit != "on":
            raise ConfigurationError(
                f"postgres_synchronous_commit={synchronous_commit!r} is a session setting, and "
                "behind a transaction pooler there is none: set it on roadie's role instead "
                f"(ALTER ROLE ... SET synchronous_commit = {synchronous_commit})")
        return {"prepare_threshold": None}
    settings = [] if synchronous_commit == "on" else [f"-c synchronous_commit={synchronous_commit}"]
    if idle_timeout:
        # a process paused inside a transaction (SIGSTOP, a frozen VM) would hold its row locks
        # for as long as the pause, and the recovery of its tasks would wait on them: the
        # server ends such a session instead
        settings.append(f"-c idle_in_transaction_session_timeout={int(idle_timeout * 1000)}")
    return {"options": " ".join(settings)} if settings else {}


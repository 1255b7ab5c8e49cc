"""The caller's transaction: tasks added on the application's connection, inside its
transaction (``add_task(..., connection=conn)``).

``joined`` turns what the application holds (a SQLAlchemy ``Connection`` or ``Session``, a
psycopg ``Connection``, a ``sqlite3.Connection``) into a SQLAlchemy connection in that
transaction. It checks that the connection is on the store's database and that a
transaction is open (or opens on the first statement), and yields the store bound to it
(``Database.bound``). Every statement of the add runs there and nothing commits: the caller's
commit makes the task visible, a rollback leaves no trace. ``joined_async`` gives the
``AsyncConnection`` for an ``AsyncConnection``, an ``AsyncSession`` or a psycopg
``AsyncConnection``, whose synchronous side then goes through ``joined``.

A DB-API connection is lent to SQLAlchemy through a stand-in (``Lent``) whose commit,
rollback and close do nothing, since the transaction and the connection stay the caller's.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from roadie.errors import TransactionError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from roadie.store.engine import Database

ACCEPTED = "a SQLAlchemy Connection or Session, a psycopg Connection or a sqlite3 Connection"
ACCEPTED_ASYNC = ("a SQLAlchemy AsyncConnection or AsyncSession, or a psycopg "
                  "AsyncConnection")
_D = TypeVar("_D", bound="Database")

_lent: contextvars.ContextVar[Any] = contextvars.ContextVar("roadie_lent_connection")
# (database, schema, port, server start) or ("sqlite", file) of the connections seen, by
# their driver connection: checked once per connection, not once per add
_identities: weakref.WeakKeyDictionary[Any, tuple[Any, ...]] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def joined(store: _D, connection: Any) -> Iterator[_D]:
    """``store`` with every statement on ``connection``, inside the caller's transaction
    (raises ``TransactionError`` if it cannot be)."""
    with _as_connection(store, connection) as conn:
        if not conn.in_transaction():
            conn.begin()  # the caller's to commit (it ran a begin event, if any)
        _check_transaction(conn)
        _check_database(store, conn)
        yield store.bound(conn)


@contextlib.asynccontextmanager
async def joined_async(store: Database, connection: Any) -> AsyncIterator[AsyncConnection]:
    """The ``AsyncConnection`` of ``connection`` (an ``AsyncConnection``, an ``AsyncSession``
    or a psycopg ``AsyncConnection``): run ``joined`` on its synchronous side."""
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    if isinstance(connection, AsyncConnection):
        yield connection
        return
    if isinstance(connection, AsyncSession):
        yield await connection.connection()
        return
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(connection, psycopg.AsyncConnection):
        token = _lent.set(connection)
        try:
            async with _lent_engine(store, "postgresql", asynchronous=True).connect() as conn:
                yield conn
        finally:
            _lent.reset(token)
        return
    raise TransactionError(
        f"connection= of the async client takes {ACCEPTED_ASYNC}, not "
        f"{type(connection).__module__}.{type(connection).__name__}")


@contextlib.contextmanager
def _as_connection(store: Database, connection: Any) -> Iterator[Connection]:
    if isinstance(connection, Connection):
        yield connection
        return
    orm = sys.modules.get("sqlalchemy.orm")
    if orm is not None and isinstance(connection, orm.Session):
        yield connection.connection()
        return
    kind = _dbapi_kind(connection)
    if kind is None:
        if type(connection).__name__.startswith("Async"):
            raise TransactionError(
                f"connection= is an asynchronous {type(connection).__name__}: add with "
                "`await app.aio.add_task(..., connection=...)`")
        raise TransactionError(
            f"connection= takes {ACCEPTED}, not "
            f"{type(connection).__module__}.{type(connection).__name__}")
    token = _lent.set(connection)
    try:
        with _lent_engine(store, kind, asynchronous=False).connect() as conn:
            yield conn
    finally:
        _lent.reset(token)


def _dbapi_kind(connection: Any) -> str | None:
    """"postgresql" for a psycopg (sync) connection, "sqlite" for a sqlite3 one."""
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(connection, psycopg.Connection):
        return "postgresql"
    sqlite3 = sys.modules.get("sqlite3")
    if sqlite3 is not None and isinstance(connection, sqlite3.Connection):
        return "sqlite"
    return None


class Lent:
    """A caller's DB-API connection as SQLAlchemy sees it: everything passes through but
    commit, rollback and close (the caller's to call), and notice handlers (SQLAlchemy
    would add one for every add). psycopg cursors give tuples whatever the caller's row
    factory."""

    __slots__ = ("raw",)

    def __init__(self, raw: Any) -> None:
        object.__setattr__(self, "raw", raw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.raw, name, value)

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        if "psycopg" in sys.modules and "row_factory" not in kwargs \
                and hasattr(self.raw, "adapters"):
            from psycopg.rows import tuple_row

            kwargs["row_factory"] = tuple_row
        return self.raw.cursor(*args, **kwargs)

    def commit(self) -> None:
        """The caller commits."""

    def rollback(self) -> None:
        """The caller rolls back."""

    def close(self) -> None:
        """The caller closes."""

    def add_notice_handler(self, _handler: Any) -> None:
        """Not added to the caller's connection."""


class LentAsync(Lent):
    """``Lent`` for an asyncio driver connection (awaited commit, rollback and close)."""

    __slots__ = ()

    async def commit(self) -> None:  # type: ignore[override]
        """The caller commits."""

    async def rollback(self) -> None:  # type: ignore[override]
        """The caller rolls back."""

    async def close(self) -> None:  # type: ignore[override]
        """The caller closes."""


def _lent_engine(store: Database, kind: str, *, asynchronous: bool) -> Any:
    """The store's engine (one per dialect) whose connections are the lent ones: no pool,
    and a dialect set up once."""
    key = (kind, asynchronous)
    engine = store._lent_engines.get(key)
    if engine is not None:
        return engine
    options: dict[str, Any] = {"poolclass": sa.pool.NullPool}
    if kind == "postgresql":
        url = "postgresql+psycopg://"
        options["use_native_hstore"] = False
    else:
        url = "sqlite://"
        # a connection may convert DATETIME columns itself (Django's: detect_types), so
        # the dialect leaves times to roadie's column type (models.UTCDateTime)
        options["native_datetime"] = True
    if asynchronous:
        from sqlalchemy.ext.asyncio import create_async_engine

        async def lend_async() -> Any:
            return LentAsync(_lent.get())

        engine = create_async_engine(url, async_creator=lend_async, **options)
    else:
        engine = sa.create_engine(url, creator=lambda: Lent(_lent.get()), **options)
    store._lent_engines[key] = engine
    return engine


def _driver(conn: Connection) -> Any:
    """The caller's own driver connection under ``conn``."""
    driver = conn.connection.driver_connection
    return driver.raw if isinstance(driver, Lent) else driver


def _check_transaction(conn: Connection) -> None:
    """Refuse a connection whose statements would each commit on their own."""
    driver = _driver(conn)
    if conn.dialect.name == "sqlite":
        autocommit = getattr(driver, "autocommit", None) is True or driver.isolation_level is None
        open_now = bool(driver.in_transaction)
    else:
        autocommit = bool(driver.autocommit)
        open_now = driver.info.transaction_status != 0  # psycopg's TransactionStatus.IDLE
    if autocommit and not open_now:
        raise TransactionError(
            "connection= is in autocommit mode with no transaction open: each statement would "
            "commit on its own, and the task could not be rolled back with your work. Open a "
            "transaction first (conn.begin(), psycopg's `with conn.transaction():`, Django's "
            "transaction.atomic()), or add the task without connection=")


def _check_database(store: Database, conn: Connection) -> None:
    """Refuse a connection to another database than the store's."""
    if conn.dialect.name != store.engine.dialect.name or \
            _identity(conn) != store_identity(store):
        raise TransactionError(
            f"connection= is connected to another database than the app's "
            f"({store.safe_url}): its workers would never see the task. Pass a connection "
            "to the app's database, or add the task without connection=")


def connection_identity(conn: Connection) -> tuple[Any, ...]:
    """What tells one database from another: its server, name and schema (PostgreSQL), its
    file (SQLite)."""
    if conn.dialect.name == "postgresql":
        return tuple(conn.execute(sa.text(
            "SELECT current_database(), current_schema(), current_setting('port'), "
            "pg_postmaster_start_time()")).one())
    rows = conn.exec_driver_sql("PRAGMA database_list").all()
    path = next((row[2] for row in rows if row[1] == "main"), "")
    return ("sqlite", os.path.realpath(path) if path else ":memory:")


def store_identity(store: Database) -> tuple[Any, ...]:
    """The store's database, as ``connection_identity`` tells it (asked once)."""
    if store._identity is None:
        with store.read() as conn:
            store._identity = connection_identity(conn)
    return store._identity


def _identity(conn: Connection) -> tuple[Any, ...]:
    driver = _driver(conn)
    with contextlib.suppress(KeyError, TypeError):  # TypeError: sqlite3's cannot be weak
        return _identities[driver]
    found = connection_identity(conn)
    with contextlib.suppress(TypeError):
        _identities[driver] = found
    return found

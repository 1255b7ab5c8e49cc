"""Transactional adds: ``add_task(..., connection=conn)`` writes the task inside the caller's
transaction (SQLAlchemy connections and sessions, psycopg and sqlite3 connections, and their
async counterparts), on both databases."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import roadie
import sqlalchemy as sa
from roadie import Status
from roadie.testing import BackgroundWorker, make_app, wait_final, wait_for
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from tests import executors
from tests.conftest import register_test_executors


@pytest.fixture
def engine(app: roadie.Roadie) -> Iterator[sa.Engine]:
    """The application's own engine on the app's database (not roadie's)."""
    own = sa.create_engine(app.url)
    yield own
    own.dispose()


def raw_connection(app: roadie.Roadie) -> psycopg.Connection | sqlite3.Connection:
    """A DB-API connection of the app's database, as an app that skips SQLAlchemy has."""
    url = sa.make_url(app.url)
    if url.get_backend_name() == "postgresql":
        return psycopg.connect(url.set(drivername="postgresql").render_as_string(False))
    assert url.database
    return sqlite3.connect(url.database)


def table_counts(app: roadie.Roadie) -> dict[str, int]:
    """The rows of every roadie table that an add can write."""
    tables = ("roadie_tasks", "roadie_locks", "roadie_attempts", "roadie_dependencies",
              "roadie_schedules")
    with app.store.read() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
                for t in tables}


# -- commit and rollback ------------------------------------------------------------------

def test_a_task_added_in_a_transaction_runs_once_it_commits(
        app: roadie.Roadie, engine: sa.Engine) -> None:
    worker = BackgroundWorker(app, concurrency=2).start()
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))  # the caller's own work, in the same transaction
            task = app.add_task("tests:tracked", {"seconds": 0}, connection=conn)
            assert task.status is Status.NEW
            with pytest.raises(roadie.TaskNotFound):  # nobody else sees it yet
                app.get_task(task.id)
            conn.commit()
        assert wait_final(app, task.id).status is Status.SUCCESSFUL
    finally:
        worker.stop()


def test_a_rollback_leaves_no_task_no_lock_and_no_dependency(
        app: roadie.Roadie, engine: sa.Engine) -> None:
    before = table_counts(app)
    with engine.connect() as conn:
        first = app.add_task("tests:serial", {}, connection=conn)
        app.add_task("tests:serial", {}, connection=conn)  # parked behind the first
        app.add_task("tests:tracked", {}, after=[first.id], connection=conn)
        app.add_tasks([("tests:limited", {}), ("tests:limited", {})], connection=conn)
        app.add_task("tests:tracked", {}, unique_key="only-one", connection=conn)
        conn.rollback()
    assert table_counts(app) == before
    assert app.list_tasks() == []
    # the unique key is free again
    assert app.add_task("tests:tracked", {}, unique_key="only-one").id


def test_a_session_takes_the_task_with_its_own_rows(
        app: roadie.Roadie, engine: sa.Engine) -> None:
    with Session(engine) as session:
        tasks = app.add_tasks([("tests:tracked", {}), ("tests:tracked", {})],
                              connection=session)
        session.rollback()
    assert app.list_tasks() == []
    with Session(engine) as session, session.begin():
        tasks = app.add_tasks([("tests:tracked", {}), ("tests:tracked", {})],
                              connection=session)
    assert sorted(t.id for t in app.list_tasks()) == sorted(t.id for t in tasks)


def test_a_dbapi_connection_takes_the_task(app: roadie.Roadie) -> None:
    raw = raw_connection(app)
    try:
        app.add_task("tests:tracked", {}, connection=raw)
        raw.rollback()
        assert app.list_tasks() == []
        task = app.add_task("tests:tracked", {}, name="raw", connection=raw)
        raw.commit()
        assert app.get_task(task.id).name == "raw"
    finally:
        raw.close()


def test_a_sqlite_connection_that_converts_times_itself_is_fine(tmp_path: Path) -> None:
    """Django opens SQLite with detect_types, so DATETIME columns come back converted."""
    app = make_app(f"sqlite:///{tmp_path / 'roadie.db'}", tmp_path / "data")
    sqlite3.register_converter("datetime", lambda text: dt.datetime.fromisoformat(text.decode()))
    raw = sqlite3.connect(tmp_path / "roadie.db", detect_types=sqlite3.PARSE_DECLTYPES)
    try:
        task = app.add_task("roadie-examples:noop", {}, delay=60, connection=raw)
        raw.commit()
    finally:
        raw.close()
        sqlite3.converters.pop("DATETIME", None)
        app.close()
    stored = app.get_task(task.id)
    assert stored.created_at == task.created_at and stored.run_after == task.run_after
    assert task.run_after.tzinfo is dt.timezone.utc


# -- what a caller's transaction can hold -------------------------------------------------

def test_dependencies_unique_keys_and_subtasks_work_inside_the_transaction(
        app: roadie.Roadie, engine: sa.Engine) -> None:
    with engine.begin() as conn:
        parent = app.add_task("tests:fanout", {"parts": 3}, connection=conn)
        after = app.add_task("tests:tracked", {}, after=[parent.id], connection=conn)
        keyed = app.add_task("tests:tracked", {"seconds": 0.5}, unique_key="k",
                             connection=conn)
        again = app.add_task("tests:tracked", {}, unique_key="k", connection=conn)
        assert again.id == keyed.id
    worker = BackgroundWorker(app, concurrency=4).start()
    try:
        assert wait_final(app, parent.id).result == 3  # 0 + 1 + 2 from its subtasks
        assert wait_final(app, after.id).status is Status.SUCCESSFUL
        assert wait_final(app, keyed.id).status is Status.SUCCESSFUL
    finally:
        worker.stop()
    assert len(app.list_tasks(parent_id=parent.id)) == 3


def test_a_schedule_added_in_a_transaction_follows_it(
        app: roadie.Roadie, engine: sa.Engine) -> None:
    with engine.connect() as conn:
        app.add_schedule("nightly", "tests:tracked", cron="0 3 * * *", connection=conn)
        conn.rollback()
    assert app.list_schedules() == []
    with engine.begin() as conn:
        app.add_schedule("nightly", "tests:tracked", cron="0 3 * * *", connection=conn)
    assert [s.name for s in app.list_schedules()] == ["nightly"]


def test_many_threads_each_in_their_own_transaction_half_rolled_back(
        app: roadie.Roadie, engine: sa.Engine) -> None:
    executors.RUNS.clear()
    kept: list[int] = []
    dropped: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        try:
            for i in range(5):
                with engine.connect() as conn:
                    task = app.add_task("tests:tracked", {"seconds": 0}, name=f"{n}-{i}",
                                        connection=conn)
                    if (n + i) % 2:
                        conn.rollback()
                        with lock:
                            dropped.append(task.id)
                    else:
                        conn.commit()
                        with lock:
                            kept.append(task.id)
        except BaseException as exc:  # reported below
            errors.append(exc)

    worker = BackgroundWorker(app, concurrency=4).start()
    try:
        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        for task_id in kept:
            assert wait_final(app, task_id).status is Status.SUCCESSFUL
    finally:
        worker.stop()
    assert len(kept) == len(dropped) == 20
    assert sorted(t.id for t in app.list_tasks(limit=None)) == sorted(kept)
    assert sorted(run[0] for run in executors.RUNS) == sorted(kept)


@pytest.mark.parametrize("first_commits", [True, False])
def test_a_unique_key_in_two_concurrent_transactions(
        app: roadie.Roadie, engine: sa.Engine, first_commits: bool) -> None:
    second: list[roadie.TaskRecord] = []
    with engine.connect() as conn:
        first = app.add_task("tests:tracked", {}, name="first", unique_key="report",
                             connection=conn)

        def add_again() -> None:
            with engine.begin() as other:
                second.append(app.add_task("tests:tracked", {}, name="second",
                                           unique_key="report", connection=other))

        thread = threading.Thread(target=add_again)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive(), "the second add waits for the first transaction"
        if first_commits:
            conn.commit()
        else:
            conn.rollback()
    thread.join(30)
    assert not thread.is_alive() and len(second) == 1
    open_tasks = app.list_tasks()
    assert len(open_tasks) == 1
    assert second[0].id == open_tasks[0].id
    assert open_tasks[0].name == ("first" if first_commits else "second")
    if first_commits:
        assert second[0].id == first.id


def test_the_wake_up_goes_with_the_commit(app: roadie.Roadie, engine: sa.Engine,
                                          tmp_path: Path) -> None:
    """On PostgreSQL a worker that would poll only every minute starts the task once the
    caller commits (the NOTIFY sent in the transaction); on SQLite it finds it at its next
    poll."""
    slow = make_app(app.url, tmp_path / "slow", postgres_poll_interval=60)
    register_test_executors(slow)
    worker = BackgroundWorker(slow, concurrency=1).start()
    try:
        wait_for(lambda: app.list_nodes(), message="the worker to start")
        task = app.add_task("tests:tracked", {"seconds": 0})  # the worker is idle after it
        assert wait_final(app, task.id, timeout=10).status is Status.SUCCESSFUL
        with engine.connect() as conn:
            task = app.add_task("tests:tracked", {"seconds": 0}, connection=conn)
            conn.commit()
        assert wait_final(app, task.id, timeout=10).status is Status.SUCCESSFUL
    finally:
        worker.stop()
        slow.close()


# -- refused ------------------------------------------------------------------------------

def test_a_connection_to_another_database_is_refused(
        app: roadie.Roadie, db_url: str, tmp_path: object) -> None:
    if db_url.startswith("sqlite"):
        other = sa.create_engine(f"sqlite:///{tmp_path}/other.db")
    else:
        other = sa.create_engine(db_url.rsplit("/", 1)[0] + "/postgres")
    try:
        with other.connect() as conn, pytest.raises(roadie.TransactionError,
                                                    match="another database"):
            app.add_task("tests:tracked", {}, connection=conn)
    finally:
        other.dispose()
    assert app.list_tasks() == []


def test_an_autocommit_connection_is_refused(app: roadie.Roadie, engine: sa.Engine) -> None:
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        with pytest.raises(roadie.TransactionError, match="autocommit"):
            app.add_task("tests:tracked", {}, connection=conn)
    raw = raw_connection(app)
    try:
        if isinstance(raw, sqlite3.Connection):
            raw.isolation_level = None
        else:
            raw.autocommit = True
        with pytest.raises(roadie.TransactionError, match="autocommit"):
            app.add_task("tests:tracked", {}, connection=raw)
    finally:
        raw.close()
    assert app.list_tasks() == []


def test_something_else_is_refused_naming_what_is_accepted(app: roadie.Roadie) -> None:
    with pytest.raises(roadie.TransactionError, match="SQLAlchemy Connection or Session"):
        app.add_task("tests:tracked", {}, connection="postgresql://elsewhere")


# -- the async client ---------------------------------------------------------------------

def test_the_async_client_adds_in_async_transactions(app: roadie.Roadie, db_url: str) -> None:
    async def scenario() -> list[int]:
        url = sa.make_url(db_url)
        if url.get_backend_name() == "sqlite":
            url = url.set(drivername="sqlite+aiosqlite")
        engine = create_async_engine(url)
        kept = []
        try:
            async with engine.connect() as conn:
                await app.aio.add_task("tests:tracked", {}, connection=conn)
                await conn.rollback()
            async with engine.connect() as conn:
                task = await app.aio.add_task("tests:tracked", {}, connection=conn)
                await conn.commit()
                kept.append(task.id)
            async with AsyncSession(engine) as session:
                tasks = await app.aio.add_tasks([("tests:tracked", {})] * 2,
                                                connection=session)
                await session.commit()
                kept += [t.id for t in tasks]
            if url.get_backend_name() == "postgresql":
                raw = await psycopg.AsyncConnection.connect(
                    url.set(drivername="postgresql").render_as_string(False))
                try:
                    await app.aio.add_task("tests:tracked", {}, connection=raw)
                    await raw.rollback()
                    task = await app.aio.add_task("tests:tracked", {}, connection=raw)
                    await raw.commit()
                    kept.append(task.id)
                finally:
                    await raw.close()
        finally:
            await engine.dispose()
        with pytest.raises(roadie.TransactionError, match="AsyncConnection"):
            await app.aio.add_task("tests:tracked", {}, connection=object())
        return kept

    kept = asyncio.run(scenario())
    assert sorted(t.id for t in app.list_tasks()) == sorted(kept)


def test_an_async_connection_given_to_the_sync_call_says_what_to_do(
        app: roadie.Roadie, db_url: str) -> None:
    async def scenario() -> None:
        url = sa.make_url(db_url)
        if url.get_backend_name() == "sqlite":
            url = url.set(drivername="sqlite+aiosqlite")
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                with pytest.raises(roadie.TransactionError, match=r"app\.aio\.add_task"):
                    app.add_task("tests:tracked", {}, connection=conn)
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_a_large_batch_in_a_transaction_goes_in_whole_or_not_at_all(app: roadie.Roadie) -> None:
    """The bulk path (COPY on PostgreSQL) on the caller's connection, SQLAlchemy's or psycopg's."""
    raw = raw_connection(app)
    try:
        app.add_tasks([("tests:tracked", {"n": i}) for i in range(300)], connection=raw)
        raw.rollback()
        assert app.list_tasks() == []
        added = app.add_tasks([("tests:tracked", {"n": i}) for i in range(300)],
                              connection=raw)
        raw.commit()
    finally:
        raw.close()
    assert [t.context["n"] for t in added] == list(range(300))
    assert sorted(t.id for t in app.list_tasks(limit=None)) == sorted(t.id for t in added)

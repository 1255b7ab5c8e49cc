"""``roadie.AsyncRoadie``: the awaitable client API, for asyncio apps (FastAPI, Starlette,
Django's async views), on an async database driver.

It runs the very code of ``roadie.Roadie`` (checks, encoding, the ``roadie_capture_context`` and
``roadie_task_added`` hooks, the store's queries) on a connection of an async driver: psycopg's
asyncio side on PostgreSQL, aiosqlite on SQLite. SQLAlchemy's greenlet bridge
(``AsyncConnection.run_sync``) lends that connection to the synchronous code, so wherever a query
waits on the database the event loop runs other coroutines. No query is written twice and no
thread is taken per call. The hooks run on the loop, in the caller's context (its context
variables, so a trace started by the request reaches the task). Single adds on PostgreSQL skip
the bridge: the rows that a loop's coroutines add at once go in together, in one statement
(``roadie.store.grouped``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from roadie.app import Roadie
from roadie.app.watching import TaskWatch
from roadie.plugins import split_executor_name
from roadie.records import TaskRecord
from roadie.store import CHANNEL_CHANGED, make_async_engine

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from roadie.records import AttemptRecord
    from roadie.store import Store
    from roadie.store.grouped import GroupedAdds

T = TypeVar("T")


class AsyncRoadie:
    """Awaitable counterparts of ``Roadie``'s client calls, on an async database driver.

    ``app.aio`` is the one of an existing app; ``AsyncRoadie(url, **options)`` makes its own
    ``Roadie(url, **options)`` (reachable as ``.app``). Use it from one event loop or several
    (each loop gets its own connection pool); ``await close()`` when done, or
    ``async with AsyncRoadie(url) as tasks: ...``.
    """

    def __init__(self, app: Roadie | str | None = None, **options: Any) -> None:
        if isinstance(app, Roadie):
            if options:
                raise TypeError("AsyncRoadie(app) takes no options: the app has its own; "
                                "pass a URL to make a new app with options")
            self.app = app
        else:
            self.app = Roadie(app, **options)
        self._engines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncEngine] = (
            weakref.WeakKeyDictionary())
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupedAdds] = (
            weakref.WeakKeyDictionary())
        self._lock = threading.Lock()
        self._ready = False

    async def __aenter__(self) -> AsyncRoadie:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- plumbing ------------------------------------------------------------------------

    async def call(self, fn: Callable[[Roadie], T]) -> T:
        """``fn(app)`` with every query of it on the async driver: any other call of the app
        (``await tasks.call(lambda app: app.waiting_reason(task))``). Code in ``fn`` that
        blocks without querying the database (files, sleeps) still blocks the loop."""
        store = await self._store()
        engine = self._engine()
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda sync: fn(self.app._on_store(store.bound(sync))))
        except sa.exc.OperationalError as exc:  # connecting failed
            raise store._database_error(exc) from exc

    async def _store(self) -> Store:
        """The app's store; the first call connects, checks the schema and loads the plugins
        in a thread (once), so that the loop never waits on them."""
        if not self._ready:
            def warm_up() -> None:
                self.app.plugins.load()
                _ = self.app.store

            await asyncio.to_thread(warm_up)
            self._ready = True
        return self.app.store

    def _engine(self) -> AsyncEngine:
        loop = asyncio.get_running_loop()
        with self._lock:
            engine = self._engines.get(loop)
            if engine is None:
                engine = make_async_engine(
                    self.app.url, synchronous_commit=self.app.settings.postgres_synchronous_commit,
                    pooler=self.app.settings.pooler)
                self._engines[loop] = engine
            return engine

    def _adds(self, store: Store) -> GroupedAdds:
        """This event loop's single adds, grouped, on its pool of sessions (PostgreSQL)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            adds = self._pools.get(loop)
            if adds is None:
                adds = store.async_adds(self.app.settings.aio_pool_size)
                self._pools[loop] = adds
            return adds

    async def close(self) -> None:
        """Close this event loop's connections (the app's own pool stays open)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            engine = self._engines.pop(loop, None)
            adds = self._pools.pop(loop, None)
        if adds is not None:  # (the adds handed in go in first)
            await adds.close()
        if engine is not None:
            await engine.dispose()

    def forget(self) -> None:
        """Drop every loop's pool without awaiting (``Roadie.close`` calls this)."""
        with self._lock:
            engines = list(self._engines.values())
            self._engines.clear()
            self._pools.clear()
        for engine in engines:
            engine.sync_engine.dispose(close=False)

    # -- adding --------------------------------------------------------------------------

    async def add_task(self, executor: str, context: Mapping[str, Any] | None = None, *,
                       connection: Any = None, **options: Any) -> TaskRecord:
        """Store a new task (``Roadie.add_task``'s arguments: ``name``, ``owner``, ``group``,
        ``priority``, ``run_after``, ``delay``, ``tags``, ``timeout``, ``after``,
        ``unique_key``: an open task of the executor with that key is returned instead).
        With ``connection`` (a SQLAlchemy ``AsyncConnection`` or ``AsyncSession``, or a
        psycopg ``AsyncConnection``, on the app's database) it is written inside that
        connection's transaction: workers see it once the caller commits."""
        if connection is not None:
            return await self.in_transaction(
                connection, lambda app: app.add_task(executor, context, **options))
        store = await self._store()
        if store.is_postgres and self._installed(executor) and not options.get("after") \
                and options.get("unique_key") is None:
            # checks, encoding and hooks on the loop (they query nothing for an executor
            # installed here); the insert on this loop's own sessions, in one round trip
            app = self.app
            spec = app._new_task(executor, context, {}, **options)
            if not store.inserts_alone(spec):  # an isolation key: the general path
                return await self.call(lambda view: view._add_new(spec))
            task = await store.insert_one_async(self._adds(store), spec,
                                                app.decode_for_task)
            app._task_added(task)
            return task
        return await self.call(lambda app: app.add_task(executor, context, **options))

    def _installed(self, executor: str) -> bool:
        """Whether ``executor`` is installed in this process (then adding it reads nothing
        from the database before the insert)."""
        try:
            dist, entry = split_executor_name(executor)
        except ValueError:
            return False
        return self.app.plugins.has_executor(f"{dist}:{entry}")

    async def add_tasks(
        self, tasks: Sequence[Mapping[str, Any] | tuple[str, Mapping[str, Any] | None]], *,
        connection: Any = None,
    ) -> list[TaskRecord]:
        """Add many tasks in one transaction (``Roadie.add_tasks``; ``connection`` as for
        ``add_task``)."""
        items = list(tasks)
        if connection is not None:
            return await self.in_transaction(connection, lambda app: list(app.add_tasks(items)))
        return await self.call(lambda app: list(app.add_tasks(items)))

    async def in_transaction(self, connection: Any, fn: Callable[[Roadie], T]) -> T:
        """``fn(app)`` with every query of it inside the caller's transaction on
        ``connection`` (``add_task``'s ``connection``): nothing commits, the caller does."""
        store = await self._store()
        if store._identity is None:
            await asyncio.to_thread(store.identity)  # asked once, off the loop
        async with store.joined_async(connection) as conn:
            return await conn.run_sync(lambda sync: _joined_call(self.app, store, sync, fn))

    # -- reading -------------------------------------------------------------------------

    async def get_task(self, task_id: int) -> TaskRecord:
        """The task with ``task_id`` (raises ``roadie.TaskNotFound``)."""
        return await self.call(lambda app: app.get_task(task_id))

    async def get_task_status(self, task_id: int) -> dict[str, Any]:
        """The live status attributes of a task (``Roadie.get_task_status``)."""
        return await self.call(lambda app: app.get_task_status(task_id))

    async def list_tasks(self, **filters: Any) -> list[TaskRecord]:
        """Tasks matching ``Roadie.list_tasks``'s filters, newest first."""
        return await self.call(lambda app: app.list_tasks(**filters))

    async def attempts(self, task_id: int) -> list[AttemptRecord]:
        """The finished attempts of a task."""
        return await self.call(lambda app: app.attempts(task_id))

    # -- changing ------------------------------------------------------------------------

    async def cancel_task(self, task_id: int, *, by: str = "api") -> TaskRecord:
        """Cancel a task (``Roadie.cancel_task``)."""
        return await self.call(lambda app: app.cancel_task(task_id, by=by))

    async def resume_task(self, task_id: int) -> TaskRecord:
        """Run a FAILED or CANCELLED task again (``Roadie.resume_task``)."""
        return await self.call(lambda app: app.resume_task(task_id))

    async def delete_task(self, task_id: int, *, tree: bool = False) -> None:
        """Delete a task that is not running (``Roadie.delete_task``)."""
        await self.call(lambda app: app.delete_task(task_id, tree=tree))

    # -- watching ------------------------------------------------------------------------

    async def watch(
        self,
        ids: Iterable[int] | None = None,
        *,
        interval: float = 0.2,
        timeout: float | None = None,
        until_done: bool = True,
        **filters: Any,
    ) -> AsyncIterator[TaskRecord]:
        """Yield each task (by ``ids``, or by ``list_tasks`` filters) every time it changes,
        as ``Roadie.watch`` does: ``async for task in tasks.watch([t.id]): ...``. On
        PostgreSQL a change wakes it at once (the app's one LISTEN connection); otherwise it
        looks every ``interval`` seconds."""
        watch = TaskWatch(ids, filters, until_done=until_done, timeout=timeout)
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def on_change(channel: str, _payload: str) -> None:
            if channel == CHANNEL_CHANGED and not loop.is_closed():
                loop.call_soon_threadsafe(changed.set)

        await self._store()
        hub = await asyncio.to_thread(self.app.store.listen)  # starts the listener once
        token = hub.subscribe(on_change)
        try:
            while True:
                changed.clear()
                tasks, changes = await self.call(
                    lambda app: _look(app, watch, interval))
                for task in changes:
                    yield task
                wait = watch.wait(tasks, interval)
                if wait is None:
                    return
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), wait)
        finally:
            hub.unsubscribe(token)


def _joined_call(app: Roadie, store: Store, conn: sa.Connection,
                 fn: Callable[[Roadie], T]) -> T:
    with store.joined(conn) as view:
        return fn(app._on_store(view))


def _look(app: Roadie, watch: TaskWatch, interval: float
          ) -> tuple[list[TaskRecord], list[TaskRecord]]:
    """One look of a watch: the watched tasks, and those that changed."""
    tasks = watch.fetch(app)
    return tasks, watch.changes(app, tasks, interval)

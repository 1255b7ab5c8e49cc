"""The async client (``app.aio``, ``roadie.AsyncRoadie``): every client call awaited, on an
async driver, with the same hooks as the synchronous calls, never blocking the event loop."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import roadie
import sqlalchemy as sa
from roadie import Status
from roadie.testing import BackgroundWorker, make_app

from tests.conftest import register_test_executors

T = TypeVar("T")


def run(coroutine_function: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on a new event loop, as ``asyncio.run`` does."""

    async def main() -> T:
        return await coroutine_function()

    return asyncio.run(main())


def test_every_client_call_has_an_awaitable_counterpart(app: roadie.Roadie) -> None:
    async def scenario() -> None:
        tasks = app.aio
        one = await tasks.add_task("roadie-examples:count", {"n": 2}, name="one", owner="ann",
                                   group="g1", priority=3)
        assert one.status is Status.NEW and one.name == "one" and one.priority == 3
        many = await tasks.add_tasks([("roadie-examples:count", {"n": 1}),
                                      {"executor": "roadie-examples:echo", "context": {"x": 1},
                                       "owner": "bob"}])
        assert [t.executor for t in many] == ["roadie-examples:count", "roadie-examples:echo"]
        assert (await tasks.get_task(one.id)).context == {"n": 2}
        assert await tasks.get_task_status(one.id) == {}
        listed = await tasks.list_tasks(status="new", limit=None)
        assert [t.id for t in listed] == [many[1].id, many[0].id, one.id]
        assert [t.id for t in await tasks.list_tasks(owner="bob")] == [many[1].id]

        cancelled = await tasks.cancel_task(one.id, by="me")
        assert cancelled.status is Status.CANCELLED
        assert cancelled.status_message.startswith("cancelled by me at ")
        resumed = await tasks.resume_task(one.id)
        assert resumed.status is Status.NEW

        with pytest.raises(roadie.TaskNotFound):
            await tasks.get_task(10_000)
        with pytest.raises(roadie.UnknownExecutor):
            await tasks.add_task("roadie-examples:nope", {})
        with pytest.raises(roadie.InvalidTransition):
            await tasks.resume_task(many[0].id)

        await tasks.delete_task(many[1].id)
        with pytest.raises(roadie.TaskNotFound):
            await tasks.get_task(many[1].id)
        await tasks.close()

    run(scenario)
    assert app.get_task(1).status is Status.NEW  # the sync API sees what the async one wrote


def test_watch_is_an_async_iterator_that_ends_with_the_tasks(app: roadie.Roadie) -> None:
    async def scenario() -> list[tuple[int, Status]]:
        tasks = app.aio
        first = await tasks.add_task("roadie-examples:count", {"n": 3})
        second = await tasks.add_task("roadie-examples:echo", {})
        watching = tasks.watch([first.id, second.id], interval=0.05, timeout=60)
        task = await watching.__anext__()  # before a worker runs: as added
        seen: list[tuple[int, Status]] = [(task.id, task.status)]
        with BackgroundWorker(app, concurrency=2):
            async for task in watching:
                seen.append((task.id, task.status))
        await tasks.close()
        return seen

    seen = run(scenario)
    assert seen[0][1] is Status.NEW
    assert {task_id for task_id, status in seen if status is Status.SUCCESSFUL} == {1, 2}
    assert app.get_task(1).status is Status.SUCCESSFUL


def test_a_timed_out_watch_ends(app: roadie.Roadie) -> None:
    async def scenario() -> list[roadie.TaskRecord]:
        await app.aio.add_task("roadie-examples:count", {"n": 1}, owner="nobody-runs-it")
        seen = [t async for t in app.aio.watch(owner="nobody-runs-it", timeout=0.3)]
        await app.aio.close()
        return seen

    seen = run(scenario)
    assert [t.status for t in seen] == [Status.NEW]


REQUEST: contextvars.ContextVar[str | None] = contextvars.ContextVar("request", default=None)


class RequestId:
    """Captures the caller's request id (a context variable) into every task it adds."""

    def __init__(self) -> None:
        self.added: list[int] = []

    @roadie.hookimpl
    def roadie_capture_context(self, executor: str, context: dict[str, Any]) -> dict[str, Any]:
        return {"request": REQUEST.get()}

    @roadie.hookimpl
    def roadie_task_added(self, app: roadie.Roadie, task: roadie.TaskRecord) -> None:
        self.added.append(task.id)



def test_an_async_batch_goes_through_the_bulk_insert(app: roadie.Roadie) -> None:
    async def scenario() -> list[roadie.TaskRecord]:
        batch = await app.aio.add_tasks([("roadie-examples:echo", {"i": i}) for i in range(30)])
        await app.aio.close()
        return batch

    batch = run(scenario)
    assert [app.get_task(t.id) for t in batch] == batch
    assert [t.context["i"] for t in batch] == list(range(30))

def test_async_adds_run_the_same_hooks_in_the_callers_context(app: roadie.Roadie) -> None:
    plugin = RequestId()
    app.plugins.register(plugin, name="request-id")

    async def add(request: str) -> roadie.TaskRecord:
        REQUEST.set(request)  # each asyncio task has its own context
        return await app.aio.add_task("roadie-examples:echo", {})

    async def scenario() -> list[roadie.TaskRecord]:
        added = await asyncio.gather(*(add(f"req-{i}") for i in range(5)))
        batch = await app.aio.add_tasks([("roadie-examples:echo", {})] * 3)
        await app.aio.close()
        return [*added, *batch]

    REQUEST.set("batch")
    added = run(scenario)
    assert [app.get_task(t.id).captured["request"] for t in added] == [
        "req-0", "req-1", "req-2", "req-3", "req-4", "batch", "batch", "batch"]
    assert sorted(plugin.added) == sorted(t.id for t in added)


def _hold_write_lock(app: roadie.Roadie, task_id: int, locked: threading.Event,
                     release: threading.Event) -> None:
    """Lock the task's row (PostgreSQL) or the database (SQLite) until ``release``."""
    engine = sa.create_engine(app.url)
    try:
        with engine.connect() as conn:
            if app.store.is_sqlite:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.begin()
            conn.execute(sa.text("SELECT id FROM roadie_tasks WHERE id = :id FOR UPDATE")
                         if app.store.is_postgres else
                         sa.text("UPDATE roadie_tasks SET name = name WHERE id = :id"),
                         {"id": task_id})
            locked.set()
            release.wait(30)
            conn.rollback()
    finally:
        engine.dispose()


def test_a_call_waiting_on_the_database_leaves_the_loop_free(app: roadie.Roadie) -> None:
    task = app.add_task("roadie-examples:count", {"n": 1})
    locked, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(app, task.id, locked, release))

    async def scenario() -> tuple[bool, int, roadie.TaskRecord]:
        await app.aio.get_task(task.id)  # connected and warmed up
        holder.start()
        assert await asyncio.to_thread(locked.wait, 20)
        call = asyncio.ensure_future(app.aio.cancel_task(task.id, by="me"))
        ticks = 0
        for _ in range(5):  # the loop keeps running while the cancel waits for the lock
            await asyncio.sleep(0.02)
            ticks += 1
        pending = not call.done()
        release.set()
        done = await call
        await app.aio.close()
        return pending, ticks, done

    try:
        pending, ticks, done = run(scenario)
    finally:
        release.set()
        holder.join()
    assert pending and ticks == 5
    assert done.status is Status.CANCELLED


def test_async_roadie_makes_its_own_app(db_url: str, tmp_path: Path) -> None:
    make_app(db_url, tmp_path / "data").close()  # the schema

    async def scenario() -> tuple[int, Status]:
        async with roadie.AsyncRoadie(db_url, data_dir=tmp_path / "data") as tasks:
            added = await tasks.add_task("roadie-examples:echo", {"hello": "world"})
            again = await tasks.get_task(added.id)
        tasks.app.close()
        return added.id, again.status

    task_id, status = run(scenario)
    assert status is Status.NEW
    with pytest.raises(TypeError, match="takes no options"):
        roadie.AsyncRoadie(make_app(db_url, tmp_path / "data"), data_dir=tmp_path)
    assert task_id >= 1


def test_one_app_serves_two_event_loops(app: roadie.Roadie) -> None:
    first = run(lambda: app.aio.add_task("roadie-examples:echo", {}))
    second = run(lambda: app.aio.add_task("roadie-examples:echo", {}))
    assert second.id == first.id + 1
    app.close()  # drops the pools of loops that are gone


def test_concurrent_async_adds_share_a_bounded_pool(db_url: str, tmp_path: Path) -> None:
    app = make_app(db_url, tmp_path / "data", aio_pool_size=2)
    register_test_executors(app)
    plugin = RequestId()
    app.plugins.register(plugin, name="request-id")

    async def add(i: int) -> roadie.TaskRecord:
        REQUEST.set(f"req-{i}")
        return await app.aio.add_task("roadie-examples:echo", {"i": i}, priority=i % 3)

    async def scenario() -> tuple[list[roadie.TaskRecord], roadie.TaskRecord]:
        added = await asyncio.gather(*(add(i) for i in range(40)))
        await app.aio.close()
        again = await app.aio.add_task("roadie-examples:echo", {})  # opens anew
        await app.aio.close()
        return added, again

    try:
        added, again = run(scenario)
        assert len({t.id for t in added}) == 40 and again.id not in {t.id for t in added}
        for i, task in enumerate(added):
            stored = app.get_task(task.id)
            assert (stored.context, stored.priority, stored.status) == ({"i": i}, i % 3,
                                                                        Status.NEW)
            assert stored.captured["request"] == f"req-{i}" and stored == task
        assert sorted(plugin.added) == sorted([*(t.id for t in added), again.id])
    finally:
        app.close()


def test_the_async_pool_size_is_checked(db_url: str, tmp_path: Path) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("the pool of single adds is PostgreSQL's")
    app = make_app(db_url, tmp_path / "data", aio_pool_size=0)
    try:
        with pytest.raises(roadie.ConfigurationError, match="aio_pool_size"):
            run(lambda: app.aio.add_task("roadie-examples:echo", {}))
    finally:
        app.close()


class AddedHook:
    """Keeps what ``roadie_task_added`` is called with, and the caller's request then."""

    def __init__(self) -> None:
        self.calls: list[tuple[roadie.Roadie, roadie.TaskRecord, str | None]] = []

    @roadie.hookimpl
    def roadie_task_added(self, app: roadie.Roadie, task: roadie.TaskRecord) -> None:
        self.calls.append((app, task, REQUEST.get()))


def test_many_concurrent_async_adds_each_get_their_own_task(app: roadie.Roadie) -> None:
    hook = AddedHook()
    app.plugins.register(hook, name="added-hook")
    options: list[dict[str, Any]] = [
        {}, {"name": "named", "owner": "ann", "group": "g"}, {"priority": 5, "tags": ["a"]},
        {"delay": 60}, {"timeout": 2.5}, {"timeout": 3, "owner": "bob"}]

    async def add(i: int) -> roadie.TaskRecord:
        REQUEST.set(f"req-{i}")
        return await app.aio.add_task("roadie-examples:echo", {"i": i},
                                      **options[i % len(options)])

    async def scenario() -> list[roadie.TaskRecord]:
        added = await asyncio.gather(*(add(i) for i in range(150)))
        await app.aio.close()
        return added

    added = run(scenario)
    assert len({t.id for t in added}) == 150
    for i, task in enumerate(added):
        assert task.context == {"i": i} and app.get_task(task.id) == task
    assert [t.name for t in added[1::6]] == ["named"] * 25
    assert {t.priority for t in added[2::6]} == {5} and {t.timeout for t in added[4::6]} == {2.5}
    assert {(t.timeout, t.owner) for t in added[5::6]} == {(3, "bob")}
    # the hook once per task, in its caller's context, with the record the caller got
    assert sorted((t.id, request) for a, t, request in hook.calls
                  if isinstance(a, roadie.Roadie)) == sorted(
        (t.id, f"req-{i}") for i, t in enumerate(added))
    assert all(t == app.get_task(t.id) for _, t, _ in hook.calls)


def test_a_failing_add_among_concurrent_ones_fails_only_itself(app: roadie.Roadie) -> None:
    hook = AddedHook()
    app.plugins.register(hook, name="added-hook")
    bad = {7: {"context": {"x": object()}}}  # not encodable: refused before any query
    if app.store.is_postgres:  # longer than the column: refused by the server
        bad.update({3: {"name": "n" * 300}, 20: {"name": "n" * 300}})

    async def add(i: int) -> roadie.TaskRecord:
        kwargs = bad.get(i, {})
        return await app.aio.add_task("roadie-examples:echo", kwargs.get("context", {"i": i}),
                                      name=kwargs.get("name", f"t{i}"))

    async def scenario() -> list[roadie.TaskRecord | BaseException]:
        added = await asyncio.gather(*(add(i) for i in range(40)), return_exceptions=True)
        await app.aio.close()
        return added

    added = run(scenario)
    assert sorted(i for i, t in enumerate(added) if isinstance(t, BaseException)) == sorted(bad)
    assert isinstance(added[7], roadie.ContextEncodeError)
    good = [(i, t) for i, t in enumerate(added) if isinstance(t, roadie.TaskRecord)]
    assert all(t.context == {"i": i} and t.name == f"t{i}" and app.get_task(t.id) == t
               for i, t in good)
    assert sorted(t.id for _, t, _ in hook.calls) == sorted(t.id for _, t in good)
    assert len(app.list_tasks(limit=None)) == len(good)


def test_a_lone_async_add(app: roadie.Roadie) -> None:
    hook = AddedHook()
    app.plugins.register(hook, name="added-hook")

    async def scenario() -> roadie.TaskRecord:
        REQUEST.set("lone")
        task = await app.aio.add_task("roadie-examples:echo", {"x": 1}, priority=2)
        await app.aio.close()
        return task

    task = run(scenario)
    assert app.get_task(task.id) == task and task.priority == 2 and task.context == {"x": 1}
    assert [(t, request) for _, t, request in hook.calls] == [(task, "lone")]


def test_close_lets_pending_adds_finish(app: roadie.Roadie) -> None:
    async def scenario() -> tuple[list[roadie.TaskRecord], roadie.TaskRecord]:
        await app.aio.add_task("roadie-examples:echo", {})  # connected
        pending = [asyncio.ensure_future(app.aio.add_task("roadie-examples:echo", {"i": i}))
                   for i in range(30)]
        await asyncio.sleep(0)  # they are handed in (some sent, the others waiting)
        await app.aio.close()
        added = await asyncio.gather(*pending)
        again = await app.aio.add_task("roadie-examples:echo", {"again": True})  # opens anew
        await app.aio.close()
        return added, again

    added, again = run(scenario)
    assert [app.get_task(t.id).context for t in added] == [{"i": i} for i in range(30)]
    assert app.get_task(again.id).context == {"again": True}

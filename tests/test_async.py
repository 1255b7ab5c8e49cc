"""Async executors: many at once on one event-loop thread, cancelled and timed out at any
await, mixed with thread executors, with the same hooks, retries and live state."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import gc
import threading
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import roadie
from roadie import Status
from roadie.testing import BackgroundWorker, HookRecorder, run_task, wait_final, wait_for

from tests import executors
from tests.processes import start_worker, stop


def in_progress(app: roadie.Roadie, task_id: int) -> roadie.TaskRecord | None:
    task = app.get_task(task_id)
    return task if task.status is Status.IN_PROGRESS else None


def test_twenty_async_tasks_run_together_on_a_two_thread_worker(app: roadie.Roadie) -> None:
    with executors.RUNS_LOCK:
        executors.RUNS.clear()
    tasks = app.add_tasks([{"executor": "tests:asleep", "context": {"seconds": 0.5}}
                           for _ in range(20)])
    stats = app.run_worker(concurrency=2, until_idle=True)
    assert stats.by_status == {"successful": 20}
    ids = {t.id for t in tasks}
    runs = [r for r in executors.RUNS if r[0] in ids]
    assert len(runs) == 20
    # every task started before any ended: all 20 waited at the same time
    assert max(start for _, start, _ in runs) < min(end for _, _, end in runs)


def test_async_slots_bound_how_many_run_at_once(app: roadie.Roadie) -> None:
    with executors.RUNS_LOCK:
        executors.RUNS.clear()
    tasks = app.add_tasks([{"executor": "tests:asleep", "context": {"seconds": 0.2}}
                           for _ in range(6)])
    app.run_worker(concurrency=1, until_idle=True, async_concurrency=2)
    runs = sorted(r for r in executors.RUNS if r[0] in {t.id for t in tasks})
    assert len(runs) == 6
    for _, start, _ in runs:  # at no start were more than two running
        assert sum(1 for _, s, e in runs if s <= start < e) <= 2


def test_an_async_task_is_cancelled_and_timed_out_at_its_await(app: roadie.Roadie) -> None:
    cancelled = app.add_task("tests:asleep", {"seconds": 3600})
    by_executor = app.add_task("tests:atimed", {"seconds": 3600})
    by_task = app.add_task("tests:asleep", {"seconds": 3600}, timeout=0.3)
    with BackgroundWorker(app, concurrency=1):
        wait_for(lambda: in_progress(app, cancelled.id), message="the task to start")
        app.cancel_task(cancelled.id, by="me")
        done = wait_final(app, cancelled.id)
        assert done.status is Status.CANCELLED
        assert done.status_message.startswith("cancelled by me at ")
        for task in (by_executor, by_task):
            ended = wait_final(app, task.id)
            assert ended.status is Status.FAILED
            assert ended.status_message == "timed out after 0.3 s"


@pytest.mark.slow
def test_an_async_task_is_cancelled_from_another_process(app: roadie.Roadie,
                                                         tmp_path: Path) -> None:
    waiting = app.add_task("roadie-examples:wait", {"seconds": 3600})
    timed = app.add_task("roadie-examples:wait", {"seconds": 3600}, timeout=0.5)
    process = start_worker(app.url, tmp_path / "data", "--concurrency", "1",
                           "--async-concurrency", "10", log=tmp_path / "w.log")
    try:
        wait_for(lambda: in_progress(app, waiting.id), message="the task to start")
        app.cancel_task(waiting.id, by="operator")
        done = wait_final(app, waiting.id)
        assert done.status is Status.CANCELLED
        assert "cancelled by operator" in done.status_message
        ended = wait_final(app, timed.id)
        assert ended.status is Status.FAILED
        assert ended.status_message == "timed out after 0.5 s"
    finally:
        assert stop(process) == 0


def test_sync_and_async_tasks_on_one_worker(app: roadie.Roadie) -> None:
    sync = app.add_tasks([{"executor": "tests:tracked", "context": {"seconds": 0.05}}
                          for _ in range(4)])
    aio = app.add_tasks([{"executor": "tests:asleep", "context": {"seconds": 0.1}}
                         for _ in range(10)])
    work = app.add_task("tests:awork", {})
    flaky = app.add_task("tests:awork", {"flaky": True})
    failing = app.add_task("tests:awork", {"fail": True})
    stats = app.run_worker(concurrency=2, until_idle=True)
    assert stats.finished == 4 + 10 + 3 + 1  # the flaky one ran twice
    for task in [*sync, *aio]:
        assert app.get_task(task.id).status is Status.SUCCESSFUL

    done = app.get_task(work.id)
    assert done.status is Status.SUCCESSFUL
    assert done.status_message == f"current={work.id}"  # current_task() inside a coroutine
    assert done.task_status["done"] == 3 and done.task_status["total"] == 3
    assert done.checkpoint == {"step": 3}
    assert [a.name for a in app.list_attachments(work.id)] == ["notes.txt"]

    retried = app.get_task(flaky.id)
    assert retried.status is Status.SUCCESSFUL and retried.attempts == 2
    failed = app.get_task(failing.id)
    assert failed.status is Status.FAILED
    assert failed.status_message == "async handler: bad input"  # async handle_exception


def test_async_attempts_meet_the_same_hooks_as_sync_ones(
        roadie_app: roadie.Roadie, roadie_recorder: HookRecorder) -> None:
    from tests.conftest import register_test_executors

    register_test_executors(roadie_app)
    sync = run_task(roadie_app, "tests:translated", {}).task
    aio = run_task(roadie_app, "tests:awork", {}).task
    assert sync.status is Status.SUCCESSFUL and aio.status is Status.SUCCESSFUL
    expected = ["roadie_task_added", "roadie_before_task", "roadie_restore_context",
                "roadie_execute_task"]
    assert roadie_recorder.names(sync.id)[:4] == expected
    assert roadie_recorder.names(aio.id)[:4] == expected
    assert roadie_recorder.names(aio.id).count("roadie_status_message") == 3
    assert roadie_recorder.names(aio.id)[-1] == "roadie_task_finished"


LOCALE: contextvars.ContextVar[str] = contextvars.ContextVar("test_locale", default="none")
CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("test_caller", default="none")


class _RestoreLocale:
    @roadie.hookimpl
    def roadie_restore_context(self, task: roadie.RunningTask, captured: dict[str, Any]
                               ) -> contextlib.AbstractContextManager[None]:
        @contextlib.contextmanager
        def restored() -> Iterator[None]:
            token = LOCALE.set(str(task.context.get("locale")))
            try:
                yield
            finally:
                LOCALE.reset(token)
        return restored()


class _SeesLocale(roadie.Executor):
    async def execute(self, task: roadie.RunningTask) -> roadie.Result:
        before = LOCALE.get()
        await asyncio.sleep(0)
        return roadie.Result.success(f"{before} {LOCALE.get()} {CALLER.get()}")


def test_an_async_execute_sees_the_context_its_hooks_restored(app: roadie.Roadie) -> None:
    """What a restore hook sets is seen across the executor's awaits, as in a thread; what
    the code that runs the worker set is not (an attempt starts in an empty context)."""
    app.plugins.register(_RestoreLocale(), name="restore-locale")
    app.plugins.register_executor("tests:sees-locale", _SeesLocale)
    tasks = app.add_tasks([("tests:sees-locale", {"locale": "fr"}),
                           ("tests:sees-locale", {"locale": "de"})])
    token = CALLER.set("the worker's caller")
    try:
        stats = app.run_worker(concurrency=1, until_idle=True)
    finally:
        CALLER.reset(token)
    assert stats.by_status == {"successful": 2}
    assert [app.get_task(t.id).status_message for t in tasks] == ["fr fr none", "de de none"]


def test_async_children_attachments_and_subtasks_are_awaited(app: roadie.Roadie) -> None:
    task = app.add_task("tests:achildren", {"items": 6})
    app.run_worker(concurrency=1, until_idle=True)
    done = app.get_task(task.id)
    assert done.status is Status.SUCCESSFUL, done.status_message
    assert done.status_message == "[0, 2, 4, 6, 8, 10] [0, 3, 6] subtask=child"
    assert done.task_status["children"] == {"runnable": 0, "closed": 10, "failed": 0}
    assert [a.name for a in app.list_attachments(task.id)] == ["sum.txt"]
    assert [t.name for t in app.list_tasks(parent_id=task.id)] == ["child"]


def test_awaited_children_leave_the_loop_to_other_tasks(app: roadie.Roadie) -> None:
    # the children wait for a signal that only another task on the same loop sends: a map
    # that blocked the loop would never see it
    waiting = app.add_task("tests:achildren", {"items": 4, "wait_for": f"go-{app.url}"})
    signal = app.add_task("tests:asignal", {"name": f"go-{app.url}"})
    with BackgroundWorker(app, concurrency=1):
        assert wait_final(app, signal.id).status is Status.SUCCESSFUL
        done = wait_final(app, waiting.id)
    assert done.status is Status.SUCCESSFUL, done.status_message


def test_a_failing_coroutine_child_fails_the_task_naming_it(app: roadie.Roadie) -> None:
    task = app.add_task("tests:achildren", {"items": 5, "fail_at": 3})
    app.run_worker(concurrency=1, until_idle=True)
    done = app.get_task(task.id)
    assert done.status is Status.FAILED
    assert done.status_message == "child task 'double[3]' failed: ValueError: child 3 fails"


def test_cancelling_an_async_parent_cancels_its_coroutine_children(app: roadie.Roadie) -> None:
    task = app.add_task("tests:achildren", {"items": 6, "seconds": 3600})
    with BackgroundWorker(app, concurrency=1):
        wait_for(lambda: (app.get_task_status(task.id).get("children") or {}).get("runnable"),
                 message="the children to start")
        app.cancel_task(task.id, by="me")
        done = wait_final(app, task.id)
    assert done.status is Status.CANCELLED
    assert done.status_message.startswith("cancelled by me at ")


class _Remember:
    """Keeps a weak reference to each task that starts."""

    def __init__(self) -> None:
        self.tasks: list[weakref.ref[roadie.RunningTask]] = []

    @roadie.hookimpl
    def roadie_before_task(self, task: roadie.RunningTask) -> None:
        self.tasks.append(weakref.ref(task))


def test_a_finished_attempt_leaves_no_reference_cycle(app: roadie.Roadie) -> None:
    """Thread and async attempts are freed as they are settled, not by the garbage collector
    (which would stop the event loop for a full collection every thousand tasks or so)."""
    remember = _Remember()
    app.plugins.register(remember, name="remember")
    app.add_tasks([("tests:asleep", {"seconds": 0}), ("tests:sleep", {"seconds": 0}),
                   ("roadie-examples:wait", {"seconds": 0})])
    gc.collect()
    gc.disable()
    try:
        stats = app.run_worker(concurrency=1, until_idle=True)
        assert stats.by_status == {"successful": 3}
        assert len(remember.tasks) == 3
        assert [ref() for ref in remember.tasks] == [None, None, None]
    finally:
        gc.enable()


def test_a_stopped_loop_drops_no_coroutine_unawaited() -> None:
    """An attempt started on the loop's last turn (as a worker stops) is cancelled and closed
    with the loop: it never runs, and Python warns of no coroutine left unawaited."""
    from roadie.aio_runner import AsyncRunner

    runner = AsyncRunner(slots=2)
    runner.start()
    held, gate = threading.Event(), threading.Event()
    ran: list[int] = []

    def hold() -> None:
        held.set()
        gate.wait()

    runner.loop.call_soon_threadsafe(hold)  # the loop's turn, held while the next one is queued
    assert held.wait(10)
    runner.submit_many([(SimpleNamespace(on_cancel=None), functools.partial(ran.append, index))
                        for index in range(2)])  # their start and the stop: the next turn
    runner.loop.call_soon_threadsafe(runner.loop.stop)
    gate.set()
    runner._thread.join(10)
    assert not runner._thread.is_alive()
    assert ran == []
    assert all(attempt.done() for attempt in runner._pending)  # cancelled, and ended
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del runner
        gc.collect()
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []

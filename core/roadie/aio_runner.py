"""Async executors: a worker's event-loop thread and the bridge that lets one attempt, written
as ordinary synchronous lifecycle code (hooks, wrappers, retries), await an executor's
coroutine without blocking the loop.

Each async attempt runs the same ``run_attempt`` as a thread does, but inside a greenlet on the
loop thread, driven by one asyncio task. Where the attempt needs a coroutine's value (``await
executor.execute(task)``, an async ``handle_exception``), the greenlet hands the coroutine to
that task, which awaits it and resumes the greenlet with its result, so hundreds of attempts
wait at once on one thread. The greenlet and what it awaits share the task's context, empty at
the start as a worker thread's. A cancel request or a timeout cancels the executor's coroutine
at its current ``await``.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from roadie.aio_greenlet import AttemptGreenlet
    from roadie.executor import Executor
    from roadie.running import RunningTask
    from roadie.store import Claimable

log = logging.getLogger("roadie.aio")

T = TypeVar("T")
END_PENDING = 5.0  # seconds a stopped loop gives the coroutines still on it to unwind, at most


def is_async_executor(executor_class: type[Executor]) -> bool:
    """Whether an executor class defines ``async def execute``."""
    return inspect.iscoroutinefunction(getattr(executor_class, "execute", None))


def split_claimable(claimable: Claimable, async_names: Iterable[str]
                    ) -> tuple[Claimable | None, Claimable | None]:
    """The claimable executors split in (thread executors, async executors); None for an
    empty side."""
    wanted = set(async_names)
    sync = [e for e in claimable.executors if e not in wanted]
    aio = [e for e in claimable.executors if e in wanted]
    return (replace(claimable, executors=sync) if sync else None,
            replace(claimable, executors=aio) if aio else None)


# greenlet (roadie.aio_greenlet) is imported by the first async attempt, so that a worker
# running none, idle or not, never loads it (with libstdc++, about 1 MB; its import takes a
# few milliseconds of that first attempt); until then no code runs in one
_bridge: ModuleType | None = None


def _load_bridge() -> ModuleType:
    global _bridge
    import roadie.aio_greenlet

    _bridge = roadie.aio_greenlet
    return _bridge


def _current_attempt() -> AttemptGreenlet | None:
    bridge = _bridge
    return None if bridge is None else bridge.current_attempt()


def in_async_attempt() -> bool:
    """Whether this code runs inside an async attempt (on a worker's event loop)."""
    return _current_attempt() is not None


def await_value(awaitable: Awaitable[T], *, cancellable: bool = False) -> T:
    """The value of ``awaitable``, from synchronous code: inside an async attempt the loop
    awaits it (the loop keeps running other tasks); elsewhere it runs on a private loop."""
    current = _current_attempt()
    if current is None:
        async def wrap() -> T:
            return await awaitable
        return asyncio.run(wrap())
    assert _bridge is not None  # (an attempt runs: the bridge is loaded)
    value: T = _bridge.await_in_attempt(current, awaitable, cancellable)
    return value


def resolve(value: Any) -> Any:
    """``value``, awaited first when it is awaitable (for hooks an executor may write as
    ``async def``, like ``handle_exception``)."""
    return await_value(value) if inspect.isawaitable(value) else value


class AsyncRunner:
    """A worker's event-loop thread: runs async attempts, at most ``slots`` at once (the
    worker's ``async_concurrency``). Attempts submitted beyond that (claimed ahead of a free
    slot) wait here, in order, and each starts on the loop as soon as an attempt ends, without
    waiting for the worker's next round."""

    def __init__(self, name: str = "roadie-async", slots: int | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._pending: set[asyncio.Future[Any]] = set()
        self.slots = slots  # None: no bound here (the caller bounds what it submits)
        # attempts waiting for a slot (appended by the worker's thread, taken on the loop: a
        # deque's append and popleft need no lock)
        self._waiting: collections.deque[tuple[dict[str, AttemptGreenlet],
                                               Callable[[], None]]] = collections.deque()

    def start(self) -> None:
        """Start the loop thread."""
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self._end_pending()
            self.loop.close()

    def _end_pending(self) -> None:
        """Once the loop has stopped: start nothing more, cancel what is still on it (attempts
        a hard stop abandoned, or one started as the loop stopped) and let them unwind, for at
        most END_PENDING seconds, so that no coroutine is dropped unawaited."""
        self._waiting.clear()
        pending = asyncio.all_tasks(self.loop)
        if not pending:
            return
        for task in pending:
            task.cancel()
        self.loop.run_until_complete(asyncio.wait(pending, timeout=END_PENDING))

    def submit(self, task: RunningTask, run: Callable[[], None]) -> None:
        """Run ``run()`` (one attempt of ``task``, reporting its own end) on the loop; a cancel
        request of ``task`` cancels the coroutine it awaits."""
        self.submit_many([(task, run)])

    def submit_many(self, attempts: Iterable[tuple[RunningTask, Callable[[], None]]]) -> None:
        """``submit`` for a claim's worth of attempts: one wake-up of the loop for all; those
        beyond the free slots start as attempts end."""
        added = False
        for task, run in attempts:
            holder: dict[str, AttemptGreenlet] = {}
            task.on_cancel = functools.partial(self._cancel_soon, holder)
            self._waiting.append((holder, run))
            added = True
        if added:
            self.loop.call_soon_threadsafe(self._fill)

    def after_queued(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the loop once the attempts submitted before have started (run
        to their first ``await``) or wait for a slot: the loop's turn after the one that
        starts them."""
        self.loop.call_soon_threadsafe(self.loop.call_soon, callback)

    def _fill(self) -> None:
        """Start waiting attempts while slots are free (on the loop)."""
        waiting, pending, slots = self._waiting, self._pending, self.slots
        while waiting and (slots is None or len(pending) < slots):
            holder, run = waiting.popleft()
            self._start(holder, run)

    def _cancel_soon(self, holder: dict[str, AttemptGreenlet]) -> None:
        self.loop.call_soon_threadsafe(_cancel_current, holder)

    def _start(self, holder: dict[str, AttemptGreenlet], run: Callable[[], None]) -> None:
        bridge = _bridge or _load_bridge()
        glet = holder["glet"] = bridge.AttemptGreenlet(run)
        # in an empty context, as a worker's thread runs its attempts
        future = contextvars.Context().run(self.loop.create_task, self._attempt(glet))
        self._pending.add(future)

    async def _attempt(self, glet: AttemptGreenlet) -> None:
        """Run one attempt's greenlet; once it ended, start the next waiting one."""
        assert _bridge is not None
        try:
            await _bridge.run_in_greenlet(glet)
        finally:
            self._pending.discard(asyncio.current_task())
            if self._waiting:
                self._fill()

    def run(self, coroutine: Awaitable[T], timeout: float = 10.0) -> T:
        """Run ``coroutine`` on the loop from another thread and return its value."""
        async def wrap() -> T:
            return await coroutine

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop (after the worker settled its attempts) and wait for its thread."""
        if not self._thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)


def _cancel_current(holder: dict[str, AttemptGreenlet]) -> None:
    glet = holder.get("glet")
    if glet is not None and glet.current is not None and glet.cancellable:
        glet.current.cancel()


def await_executor(task: RunningTask, awaitable: Awaitable[T]) -> T:
    """Await an async executor's ``execute``; a cancel request or a timeout ends it at its
    current ``await`` with ``roadie.Cancelled``."""
    if task.cancelled:
        if inspect.iscoroutine(awaitable):
            awaitable.close()  # never started
        raise task.cancellation()
    try:
        return await_value(awaitable, cancellable=True)
    except asyncio.CancelledError:
        if task.cancelled:
            raise task.cancellation() from None
        raise

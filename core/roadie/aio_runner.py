"""Async executors: a worker's event-loop thread and the bridge that lets one attempt, written
as ordinary synchronous lifecycle code (hooks, wrappers, retries), await an executor's
coroutine without blocking the loop.

Each async attempt runs the same ``run_attempt`` as a thread does, but inside a greenlet on the
loop thread. Where the attempt needs a coroutine's value (``await executor.execute(task)``, an
async ``handle_exception``), the greenlet hands the coroutine to the loop and is resumed with
its result, so hundreds of attempts wait at once on one thread. A cancel request or a timeout
cancels the executor's coroutine at its current ``await``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import greenlet

if TYPE_CHECKING:
    from roadie.executor import Executor
    from roadie.running import RunningTask
    from roadie.store import Claimable

log = logging.getLogger("roadie.aio")

T = TypeVar("T")


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


@dataclass
class _Await:
    """What an attempt's greenlet asks the loop to await for it."""

    awaitable: Awaitable[Any]
    context: contextvars.Context
    cancellable: bool


class _AttemptGreenlet(greenlet.greenlet):
    """The greenlet of one async attempt; knows the future it currently waits on."""

    current: asyncio.Future[Any] | None = None
    cancellable: bool = False


def in_async_attempt() -> bool:
    """Whether this code runs inside an async attempt (on a worker's event loop)."""
    return isinstance(greenlet.getcurrent(), _AttemptGreenlet)


def await_value(awaitable: Awaitable[T], *, cancellable: bool = False) -> T:
    """The value of ``awaitable``, from synchronous code: inside an async attempt the loop
    awaits it (the loop keeps running other tasks); elsewhere it runs on a private loop."""
    current = greenlet.getcurrent()
    if not isinstance(current, _AttemptGreenlet):
        async def wrap() -> T:
            return await awaitable
        return asyncio.run(wrap())
    request = _Await(awaitable, contextvars.copy_context(), cancellable)
    return current.parent.switch(request)


def resolve(value: Any) -> Any:
    """``value``, awaited first when it is awaitable (for hooks an executor may write as
    ``async def``, like ``handle_exception``)."""
    return await_value(value) if inspect.isawaitable(value) else value


async def run_in_greenlet(fn: Callable[[], T]) -> T:
    """Run ``fn()`` in a greenlet of this loop, awaiting what it asks for (``await_value``)."""
    glet = _AttemptGreenlet(fn)
    value = glet.switch()
    while not glet.dead:
        request: _Await = value
        future = request.context.run(asyncio.ensure_future, request.awaitable)
        glet.current, glet.cancellable = future, request.cancellable
        try:
            result = await future
        except BaseException as exc:
            glet.current = None
            value = glet.throw(exc)
        else:
            glet.current = None
            value = glet.switch(result)
    return value


class AsyncRunner:
    """A worker's event-loop thread: runs async attempts, at most the worker's
    ``async_concurrency`` at once (the worker claims no more than that)."""

    def __init__(self, name: str = "roadie-async") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._pending: set[asyncio.Future[Any]] = set()

    def start(self) -> None:
        """Start the loop thread."""
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def submit(self, task: RunningTask, run: Callable[[], None]) -> None:
        """Run ``run()`` (one attempt of ``task``, reporting its own end) on the loop; a cancel
        request of ``task`` cancels the coroutine it awaits."""
        self.submit_many([(task, run)])

    def submit_many(self, attempts: Iterable[tuple[RunningTask, Callable[[], None]]]) -> None:
        """``submit`` for a claim's worth of attempts: one wake-up of the loop for all."""
        starts: list[Callable[[], None]] = []
        for task, run in attempts:
            holder: dict[str, _AttemptGreenlet] = {}
            task.on_cancel = functools.partial(self._cancel_soon, holder)
            starts.append(functools.partial(self._start, holder, run))
        if starts:
            self.loop.call_soon_threadsafe(_run_all, starts)

    def _cancel_soon(self, holder: dict[str, _AttemptGreenlet]) -> None:
        self.loop.call_soon_threadsafe(_cancel_current, holder)

    def _start(self, holder: dict[str, _AttemptGreenlet], run: Callable[[], None]) -> None:
        def remembered() -> None:
            holder["glet"] = greenlet.getcurrent()
            run()

        future = asyncio.ensure_future(run_in_greenlet(remembered))
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

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


def _run_all(calls: list[Callable[[], None]]) -> None:
    for call in calls:
        call()


def _cancel_current(holder: dict[str, _AttemptGreenlet]) -> None:
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

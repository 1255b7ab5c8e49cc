"""Lightweight child tasks: transient, in-process pieces of a running task (never stored).

A child is RUNNABLE until its callable returns or raises, then CLOSED. The parent task does not
finish until every child is CLOSED; cancelling the parent cancels the children at their next
safe point, and a child that has not started yet is closed without running.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import enum
import itertools
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from roadie.aio_runner import await_value, in_async_attempt
from roadie.errors import Cancelled

if TYPE_CHECKING:
    from roadie.running import RunningTask


class ChildState(enum.Enum):
    """The states of a lightweight task."""

    RUNNABLE = "runnable"
    CLOSED = "closed"


class LightweightTask:
    """A handle on one child: its name, its state, its result."""

    def __init__(self, name: str, future: concurrent.futures.Future[Any]) -> None:
        self.name = name
        self._future = future

    @property
    def state(self) -> ChildState:
        """RUNNABLE until the callable has returned or raised, then CLOSED."""
        return ChildState.CLOSED if self._future.done() else ChildState.RUNNABLE

    def result(self, timeout: float | None = None) -> Any:
        """The callable's return value; re-raises its exception."""
        return self._future.result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The callable's exception, or None."""
        return self._future.exception(timeout)

    @property
    def failed(self) -> bool:
        """CLOSED with an exception."""
        return self._future.done() and self._future.exception() is not None

    def __repr__(self) -> str:
        return f"<LightweightTask {self.name!r} {self.state.value}>"


class Children:
    """The lightweight children of one running task, on a pool of ``width`` threads."""

    def __init__(self, parent: RunningTask, width: int = 4) -> None:
        self.parent = parent
        self.width = width
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_width = 0
        self._pools: list[concurrent.futures.ThreadPoolExecutor] = []
        self._children: list[LightweightTask] = []
        self._lock = threading.Lock()
        self._progress_lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._closed = 0
        self._failed = 0
        self._coroutines: set[asyncio.Task[Any]] = set()  # coroutine children, to cancel

    def _executor(self, width: int) -> concurrent.futures.ThreadPoolExecutor:
        """A pool with at least ``width`` threads (a wider ``map`` gets a wider pool; the
        narrower one finishes what it was given)."""
        with self._lock:
            if self._pool is None or self._pool_width < width:
                if self._pool is not None:
                    self._pool.shutdown(wait=False)  # its queued children still run
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    width, thread_name_prefix=f"roadie-task-{self.parent.id}-child"
                )
                self._pool_width = width
                self._pools.append(self._pool)
            return self._pool

    def spawn(self, fn: Callable[..., Any], *args: Any, name: str | None = None,
              **kwargs: Any) -> LightweightTask:
        """Start ``fn(*args, **kwargs)`` as a child; it sees ``current_task()`` as its parent."""
        return self._spawn(fn, args, kwargs, name=name, width=self.width)

    def _spawn(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], *,
               name: str | None, width: int) -> LightweightTask:
        self.parent.raise_if_cancelled()
        child_name = name or f"{getattr(fn, '__name__', 'child')}-{next(self._numbers)}"
        context = contextvars.copy_context()

        def run() -> Any:
            self.parent.raise_if_cancelled()  # a child that had not started is closed at once
            return context.run(fn, *args, **kwargs)

        future = self._executor(width).submit(run)
        return self._register(child_name, future)

    def _register(self, name: str, future: concurrent.futures.Future[Any]) -> LightweightTask:
        """Count a new child (thread or coroutine) as RUNNABLE until ``future`` is done."""
        child = LightweightTask(name, future)
        with self._lock:
            self._children.append(child)
            self._publish_counts()
        future.add_done_callback(self._on_closed)
        return child

    def _on_closed(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._closed += 1
            if future.cancelled():
                self._failed += 1
            else:
                error = future.exception()
                if error is not None and not isinstance(error, Cancelled):
                    self._failed += 1
            self._publish_counts()

    def counts(self) -> dict[str, int]:
        """How many children are runnable, closed, and failed (closed with an exception other
        than the parent's cancellation)."""
        with self._lock:
            return self._counts()

    def _counts(self) -> dict[str, int]:
        total = len(self._children)
        return {"runnable": total - self._closed, "closed": self._closed, "failed": self._failed}

    def _publish_counts(self) -> None:
        # called with self._lock held, so that the counts published last are the newest
        self.parent.status.set("children", self._counts())
        self.parent._sink.mark_dirty(self.parent)

    def _map_width(self, width: int | None) -> int:
        """The children ``map`` runs at once: ``width``, or the pool's (at least 1)."""
        width = width or self.width
        if width < 1:
            raise ValueError(f"map width must be at least 1, not {width}")
        return width

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], *, width: int | None = None,
            progress: bool = True) -> list[Any]:
        """Run ``fn`` over ``items`` as children, at most ``width`` at once; results in order.

        Waits for all of them; raises the first failure (by position) once all are CLOSED.
        """
        items = list(items)
        total = len(items)
        width = self._map_width(width)
        limit = threading.BoundedSemaphore(width)
        done = itertools.count(1)
        children: list[LightweightTask] = []
        label = getattr(fn, "__name__", "map")

        def report(finished: int) -> None:
            self.parent.status.apply_progress_fields({"done": finished, "total": total})
            self.parent._sink.mark_dirty(self.parent)

        def one(item: Any) -> Any:
            try:
                return fn(item)
            finally:
                limit.release()
                if progress:
                    with self._progress_lock:  # so that "done" never goes backwards
                        report(next(done))

        if progress:
            with self._progress_lock:
                report(0)
        try:
            for index, item in enumerate(items):
                while not limit.acquire(timeout=0.1):
                    self.parent.raise_if_cancelled()
                children.append(self._spawn(one, (item,), {}, name=f"{label}[{index}]",
                                            width=width))
        finally:
            concurrent.futures.wait([c._future for c in children])
        return [child.result() for child in children]

    def spawn_coroutine(self, fn: Callable[..., Any], *args: Any, name: str | None = None,
                        **kwargs: Any) -> LightweightTask:
        """Start the coroutine ``fn(*args, **kwargs)`` as a child on the running event loop
        (an async executor's); a cancel of the parent cancels it at its current ``await``."""
        self.parent.raise_if_cancelled()
        loop = asyncio.get_running_loop()
        child_name = name or f"{getattr(fn, '__name__', 'child')}-{next(self._numbers)}"
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        coroutine = loop.create_task(fn(*args, **kwargs))  # sees current_task() too

        def closed(done: asyncio.Task[Any]) -> None:
            self._coroutines.discard(done)
            if done.cancelled():
                future.set_exception(self.parent.cancellation() if self.parent.cancelled
                                     else Cancelled(f"child {child_name!r} was cancelled"))
            elif done.exception() is not None:
                future.set_exception(done.exception())
            else:
                future.set_result(done.result())

        self._coroutines.add(coroutine)
        coroutine.add_done_callback(closed)
        return self._register(child_name, future)

    def cancel_coroutines(self) -> None:
        """Cancel the coroutine children (the parent was cancelled); thread-safe."""
        for coroutine in list(self._coroutines):
            coroutine.get_loop().call_soon_threadsafe(coroutine.cancel)

    async def map_async(self, fn: Callable[[Any], Any], items: Iterable[Any], *,
                        width: int | None = None, progress: bool = True) -> list[Any]:
        """``map`` for async executors, without blocking the event loop: a coroutine
        function runs as coroutine children on the loop, a plain one on threads."""
        if not asyncio.iscoroutinefunction(fn):
            return await asyncio.to_thread(self.map, fn, items, width=width, progress=progress)
        items = list(items)
        total = len(items)
        width = self._map_width(width)
        limit = asyncio.Semaphore(width)
        finished = itertools.count(1)
        label = getattr(fn, "__name__", "map")

        def report(count: int) -> None:
            self.parent.status.apply_progress_fields({"done": count, "total": total})
            self.parent._sink.mark_dirty(self.parent)

        async def one(item: Any) -> Any:
            try:
                return await fn(item)
            finally:
                limit.release()
                if progress:
                    report(next(finished))

        if progress:
            report(0)
        children: list[LightweightTask] = []
        try:
            for index, item in enumerate(items):
                await limit.acquire()
                children.append(self.spawn_coroutine(one, item, name=f"{label}[{index}]"))
        finally:
            if children:
                await _all_closed([c._future for c in children])
        return [child.result() for child in children]

    def wait_all(self) -> list[LightweightTask]:
        """Block until every child is CLOSED; return the failed ones (not counting children
        closed by a cancellation of the parent)."""
        while True:
            with self._lock:
                pending = [c._future for c in self._children if not c._future.done()]
            if not pending:
                break
            if in_async_attempt():  # on the event loop: await them, the loop runs on
                await_value(_all_closed(pending))
            else:
                concurrent.futures.wait(pending)
        with self._lock:
            pools = list(self._pools)
        for pool in pools:
            pool.shutdown(wait=True)
        with self._lock:
            return [
                c for c in self._children
                if c.failed and not isinstance(c.exception(), Cancelled)
            ]

    def cut_short(self) -> list[LightweightTask]:
        """The children closed by a cancellation of the parent (``roadie.Cancelled``): those
        that stopped at a safe point and those that never started."""
        with self._lock:
            children = list(self._children)
        return [c for c in children if c.failed and isinstance(c.exception(), Cancelled)]

    def child_of(self, error: BaseException) -> LightweightTask | None:
        """The failed child whose exception is ``error`` or caused it (``raise ... from``), or
        None: lets the parent's failure message name the child whose exception ``execute``
        let through (``map`` re-raises the first failure)."""
        chain: list[BaseException] = []
        seen: BaseException | None = error
        while seen is not None and not any(seen is e for e in chain):
            chain.append(seen)
            seen = seen.__cause__ or seen.__context__
        with self._lock:
            children = list(self._children)
        for child in children:
            if child.failed:
                raised = child.exception()
                if any(raised is e for e in chain) and not isinstance(raised, Cancelled):
                    return child
        return None

    def __len__(self) -> int:
        return len(self._children)


async def _all_closed(futures: list[concurrent.futures.Future[Any]]) -> None:
    """Wait on the event loop until every future is done (their outcomes are read later)."""
    wrapped = [asyncio.wrap_future(f) for f in futures]
    await asyncio.wait(wrapped)
    for future in wrapped:  # read here too, or asyncio reports them as never retrieved
        if not future.cancelled():
            future.exception()

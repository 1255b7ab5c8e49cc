"""The running task: what ``Executor.execute`` receives, and ``roadie.current_task()``."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar

from roadie.errors import Cancelled, TakenOver
from roadie.hookcalls import call_hook
from roadie.records import TaskRecord
from roadie.status import Status
from roadie.store import Fence, utcnow
from roadie.taskstatus import TaskStatus

if TYPE_CHECKING:
    from pathlib import Path

    from roadie.app import Roadie
    from roadie.executor import Executor
    from roadie.lightweight import Children, LightweightTask
    from roadie.records import AttachmentInfo

T = TypeVar("T")
_current: contextvars.ContextVar[RunningTask | None] = contextvars.ContextVar(
    "roadie_current_task", default=None
)


def current_task() -> RunningTask | None:
    """The task running in this thread (or its lightweight children), or None outside one."""
    return _current.get()


class ProgressSink(Protocol):
    """Where a running task announces that its status, messages or checkpoint changed."""

    def mark_dirty(self, task: RunningTask) -> None:
        """Schedule a throttled write of the task's live state."""

    def refused(self, task: RunningTask, what: str) -> None:
        """A write of the task's attempt (``what``) was refused: it was taken over."""


class RunningTask:
    """A task while a worker runs it: its decoded context, its live status, its safe points.

    Everything here is safe to call from the task's lightweight children too.
    """

    def __init__(
        self,
        app: Roadie,
        record: TaskRecord,
        *,
        sink: ProgressSink,
        max_messages: int = 50,
        child_width: int = 4,
    ) -> None:
        self.app = app
        self.record = record
        self.executor: Executor | None = None
        self.context: dict[str, Any] = {}
        self.status = TaskStatus()
        self.messages: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=max_messages
        )
        self._sink = sink
        self.started: float | None = None  # set when a thread starts it (timeouts count from it)
        self.ended = False
        self._cancel_message = ""
        self._timed_out = False
        self._checkpoint: bytes | None = None
        self._checkpoint_version = 0
        self._child_width = child_width
        self.on_cancel: Callable[[], None] | None = None  # set by the async runner
        self.taken_over = False  # a write was refused: another node took the task over
        # set while a host runs the task: (status, messages) as the host encoded them
        self.encoded_live_state: tuple[bytes | None, bytes | None] | None = None

    # -- identity ------------------------------------------------------------------------

    @property
    def id(self) -> int:
        """The task id."""
        return self.record.id

    @property
    def name(self) -> str:
        """The task name."""
        return self.record.name

    @property
    def owner(self) -> str | None:
        """The task owner."""
        return self.record.owner

    @property
    def group(self) -> str | None:
        """The task group."""
        return self.record.group

    @property
    def attempt(self) -> int:
        """The attempt number, 1 for the first run."""
        return self.record.attempts

    @property
    def fence(self) -> Fence:
        """This attempt's fencing token: every write it makes carries it, and the database
        refuses the write once the task was taken over (see ``roadie.store.Fence``)."""
        return Fence(self.record.id, self.record.node or "", self.record.attempts)

    # (made on first use and kept, without functools.cached_property, which takes a lock
    # shared by every instance on each first use: a worker makes thousands a second)
    @property
    def plugins(self) -> list[str]:
        """The plugin distributions in this task's import context."""
        names: list[str] | None = self.__dict__.get("_plugins")
        if names is None:
            names = self.__dict__["_plugins"] = self.record.plugin_names
        return names

    @property
    def _status_hook(self) -> Callable[..., Any]:
        hook: Callable[..., Any] | None = self.__dict__.get("_status_hook_caller")
        if hook is None:
            hook = self.__dict__["_status_hook_caller"] = self.app.plugins.task_hook(
                "roadie_status_message", self.plugins)
        return hook

    @property
    def captured(self) -> dict[str, Any]:
        """The caller state captured when the task was added (see ``roadie_capture_context``)."""
        return self.record.captured

    @property
    def last_checkpoint(self) -> dict[str, Any] | None:
        """The last checkpoint saved by an earlier attempt of this task, or None. It survives
        crashes under crash policy RESUME, retries and ``resume_task``; crash policy RETRY
        starts over without it."""
        return self.record.checkpoint

    # -- status --------------------------------------------------------------------------

    def send_status(self, message: Mapping[str, Any]) -> None:
        """Send a status message (a map): the translator turns it into status attributes.

        Cheap and non-blocking: writes are coalesced and throttled. A safe point for
        cancellation.
        """
        self.raise_if_cancelled()
        self._send(dict(message))

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Report generic progress: ``done`` of ``total`` (no translator needed)."""
        self.raise_if_cancelled()
        update: dict[str, Any] = {"done": done}
        if total is not None:
            update["total"] = total
        if message is not None:
            update["message"] = message
        self._send(update)

    def _send(self, message: dict[str, Any]) -> None:
        """``send_status`` of a map of its own (not the caller's, which it may keep)."""
        app = self.app
        app.registry.check(message, what=f"status message of task {self.id}")
        call_hook(app, "roadie_status_message", self._status_hook, task=self, message=message,
                  status=self.status)
        self.messages.append({"at": utcnow(), **message})
        self._sink.mark_dirty(self)

    def checkpoint(self, state: Mapping[str, Any]) -> None:
        """Persist a small map from which a later attempt can resume (``last_checkpoint``)."""
        self.raise_if_cancelled()
        data = self.app.registry.encode(dict(state), what=f"checkpoint of task {self.id}")
        self._checkpoint = data
        self._checkpoint_version += 1
        self._sink.mark_dirty(self)

    def pending_checkpoint(self) -> tuple[int, bytes | None]:
        """(version, bytes) of the newest checkpoint (for the worker's writer)."""
        return self._checkpoint_version, self._checkpoint

    # -- cancellation --------------------------------------------------------------------

    @property
    def _cancel(self) -> threading.Event:
        """Set when a cancel is requested. Made on first need (most tasks never need one;
        the claim loop makes thousands of RunningTasks a second); ``setdefault`` keeps the
        first one made when two threads ask at once."""
        event: threading.Event | None = self.__dict__.get("_cancel_event")
        if event is None:
            event = self.__dict__.setdefault("_cancel_event", threading.Event())
        return event

    @property
    def cancelled(self) -> bool:
        """Whether a cancel was requested (poll this in a loop that has no other safe point)."""
        event: threading.Event | None = self.__dict__.get("_cancel_event")
        return event is not None and event.is_set()

    def raise_if_cancelled(self) -> None:
        """A safe point: raise ``roadie.Cancelled`` if a cancel was requested."""
        if self.cancelled:
            raise self.cancellation()

    def cancellation(self) -> Cancelled:
        """The ``Cancelled`` exception a safe point raises (once a cancel was requested)."""
        return Cancelled(self._cancel_message, timed_out=self._timed_out)

    def request_cancel(self, message: str, *, timed_out: bool = False) -> None:
        """Ask the task to stop at its next safe point (used by the worker)."""
        if not self._cancel.is_set():
            self._cancel_message = message
            self._timed_out = timed_out
            self._cancel.set()
            if self.on_cancel is not None:  # an async attempt: cancel its current await
                self.on_cancel()
            children: Children | None = self.__dict__.get("_children")
            if children is not None:  # (one made from now on refuses to spawn: cancelled)
                children.cancel_coroutines()

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds, waking early if a cancel is requested."""
        return self._cancel.wait(timeout)

    # -- lightweight children ------------------------------------------------------------

    @property
    def children(self) -> Children:
        """This task's lightweight children. Made on first use: most tasks have none, and
        the children refer back to their task, a reference cycle that only the garbage
        collector would free (a worker makes thousands of tasks a second)."""
        children: Children | None = self.__dict__.get("_children")
        if children is None:
            from roadie.lightweight import Children  # on first use: most tasks have none

            children = self.__dict__.setdefault("_children",
                                                Children(self, width=self._child_width))
        return children

    def _made_children(self) -> Children | None:
        """The lightweight children if they were made, else None (without making them)."""
        children: Children | None = self.__dict__.get("_children")
        return children

    def wait_children(self) -> list[LightweightTask]:
        """Wait for every lightweight child to close; the failed ones (``Children.wait_all``),
        none without making the children."""
        children = self._made_children()
        return [] if children is None else children.wait_all()

    def spawn(self, fn: Callable[..., Any], *args: Any, name: str | None = None,
              **kwargs: Any) -> LightweightTask:
        """Run ``fn(*args, **kwargs)`` as a transient child on this task's pool."""
        return self.children.spawn(fn, *args, name=name, **kwargs)

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], *, width: int | None = None,
            progress: bool = True) -> list[Any]:
        """Run ``fn`` on each item as children, at most ``width`` at once; return results in
        order. With ``progress`` the task's generic progress follows the children."""
        return self.children.map(fn, items, width=width, progress=progress)

    # -- subtasks (persistent children, any node runs them) --------------------------------

    def add_subtask(self, executor: str, context: Mapping[str, Any] | None = None,
                    **options: Any) -> TaskRecord:
        """Add a persistent subtask (``add_task``'s arguments); returns it as stored. Return
        ``roadie.Result.wait_for_subtasks()`` to wait for the subtasks without a thread."""
        from roadie.trees import add_subtask

        return add_subtask(self, executor, context, **options)

    def add_subtasks(self, items: Iterable[Mapping[str, Any]]) -> list[int]:
        """Add many subtasks (each item holds ``add_task``'s arguments), in bounded batches;
        returns their ids."""
        from roadie.trees import add_subtasks

        return add_subtasks(self, items)

    # -- attachments ---------------------------------------------------------------------

    def attach(self, name: str, data: bytes | str | Path | IO[bytes], *,
               media_type: str | None = None) -> AttachmentInfo:
        """Keep a file with this task (bytes, a path, or a binary file object)."""
        return self.guarded("attachment", lambda: self.app.add_attachment(
            self.id, name, data, media_type=media_type, fence=self.fence))

    def guarded(self, what: str, write: Callable[[], T]) -> T:
        """Run a write of this attempt; if it is refused (the task was taken over), tell the
        worker, which counts it and stops the attempt, and re-raise."""
        try:
            return write()
        except TakenOver:
            self.taken_over = True
            self._sink.refused(self, what)
            raise

    @functools.cached_property
    def aio(self) -> AsyncTaskCalls:
        """Awaitable counterparts of this task's blocking calls, for async executors:
        ``await task.aio.map(...)``, ``task.aio.spawn(...)``, ``await task.aio.attach(...)``,
        ``await task.aio.add_subtask(...)``."""
        return AsyncTaskCalls(self)

    def __repr__(self) -> str:
        return f"<RunningTask {self.id} {self.record.executor} {Status.IN_PROGRESS.label}>"


class AsyncTaskCalls:
    """``task.aio``: what an async executor calls instead of the blocking ``task.map``,
    ``spawn``, ``attach`` and ``add_subtask``, so that the worker's event loop keeps running
    the other tasks. (``progress``, ``send_status`` and ``checkpoint`` never block.)"""

    def __init__(self, task: RunningTask) -> None:
        self._task = task

    def spawn(self, fn: Callable[..., Any], *args: Any, name: str | None = None,
              **kwargs: Any) -> LightweightTask:
        """Start a child: a coroutine function runs on the event loop, a plain function on
        the task's thread pool (as ``task.spawn``). The attempt ends once every child has."""
        if asyncio.iscoroutinefunction(fn):
            return self._task.children.spawn_coroutine(fn, *args, name=name, **kwargs)
        return self._task.spawn(fn, *args, name=name, **kwargs)

    async def map(self, fn: Callable[[Any], Any], items: Iterable[Any], *,
                  width: int | None = None, progress: bool = True) -> list[Any]:
        """``task.map`` awaited: ``fn`` on each item as children, at most ``width`` at once
        (coroutines on the loop, plain functions on threads); results in order."""
        return await self._task.children.map_async(fn, items, width=width, progress=progress)

    async def attach(self, name: str, data: bytes | str | Path | IO[bytes], *,
                     media_type: str | None = None) -> AttachmentInfo:
        """``task.attach`` in a thread: the file is written and recorded while the loop runs."""
        return await asyncio.to_thread(self._task.attach, name, data, media_type=media_type)

    async def add_subtask(self, executor: str, context: Mapping[str, Any] | None = None,
                          **options: Any) -> TaskRecord:
        """``task.add_subtask`` on the async driver (``app.aio``)."""
        from roadie.trees import add_subtask

        task = self._task
        return await task.app.aio.call(
            lambda app: add_subtask(task, executor, context, app=app, **options))

    async def add_subtasks(self, items: Iterable[Mapping[str, Any]]) -> list[int]:
        """``task.add_subtasks`` on the async driver (``app.aio``)."""
        from roadie.trees import add_subtasks

        task, listed = self._task, list(items)
        return await task.app.aio.call(lambda app: add_subtasks(task, listed, app=app))

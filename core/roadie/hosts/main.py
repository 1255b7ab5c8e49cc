"""The host process: runs executors for one worker, one task at a time, and dies with it.

Started as ``python -m roadie.hosts.main FD`` by the worker's host pool with one end of a
socket pair. It loads the plugins of its own Python environment, so a task's context, status,
checkpoint and result are encoded and decoded here with the plugin's own types. An attempt runs
through the same ``run_attempt`` as in a worker (task-scoped hooks included); only the global
hooks stay in the worker. The host exits when its worker closes the socket or dies
(``PR_SET_PDEATHSIG`` on Linux), and stops its task when it has heard nothing from the worker
for longer than the lease.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import io
import itertools
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any

from roadie.aio_runner import AsyncRunner
from roadie.app import Roadie
from roadie.executor import Executor, Isolation
from roadie.hosts.protocol import Channel, ChannelClosed, new_task_to_frame, record_from_frame
from roadie.records import AttachmentInfo, TaskRecord
from roadie.result import Result
from roadie.running import RunningTask
from roadie.status import Status
from roadie.store import Fence, NewTask, Outcome

EXIT_LEASE_LOST = 75  # the task did not stop after the lease ran out


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        return


class HostRoadie(Roadie):
    """The app as a host sees it: this environment's plugins and types; attachments go to the
    worker, which stores them (a host never opens the database)."""

    def __init__(self, channel: HostChannel | None) -> None:
        super().__init__("sqlite://", entry_points=True)
        self.plugins.envs_dir = None  # a host runs the plugins of its own environment only
        self._channel = channel  # None in a template: each forked host sets its own

    @property
    def channel(self) -> HostChannel:
        """The connection to this host's worker."""
        assert self._channel is not None, "a template host has no worker"
        return self._channel

    def add_attachment(self, task_id: int, name: str, data: bytes | str | Path | IO[bytes], *,
                       media_type: str | None = None, fence: Fence | None = None
                       ) -> AttachmentInfo:
        """Send the file to the worker, which keeps it with the task (as a write of the
        attempt it runs: the worker applies the fence)."""
        if isinstance(data, str):
            payload = data.encode()
        elif isinstance(data, Path):
            payload = data.read_bytes()
        elif isinstance(data, (bytes, bytearray, memoryview)):
            payload = bytes(data)
        elif isinstance(data, io.IOBase) or hasattr(data, "read"):
            payload = data.read()
        else:
            raise TypeError(f"cannot attach a {type(data).__name__}")
        info = self.channel.call("attach", task_id=task_id, name=name, data=payload,
                                  media_type=media_type)
        return info_from_frame(info)

    def _insert_subtasks(self, parent: RunningTask, specs: Sequence[NewTask]
                         ) -> list[TaskRecord]:
        """Send subtasks (encoded here, with this environment's types) to the worker, which
        stores them and fires ``roadie_task_added``."""
        rows = self.channel.call("add_subtasks", task_id=parent.id,
                                  tasks=[new_task_to_frame(spec) for spec in specs])
        return [dataclasses.replace(record_from_frame(row), decoder=self.decode_for_task)
                for row in rows]

    def _subtask_page(self, parent_id: int, after: int, limit: int,
                      offset: int = 0) -> list[TaskRecord]:
        """A page of subtasks, read by the worker (for ``subtasks_done`` in a host)."""
        rows = self.channel.call("subtasks", task_id=parent_id, after=after, limit=limit,
                                  offset=offset)
        return [dataclasses.replace(record_from_frame(row), decoder=self.decode_for_task)
                for row in rows]

    def _subtask_count(self, parent_id: int) -> int:
        """How many subtasks the task has, counted by the worker."""
        return int(self.channel.call("subtask_count", task_id=parent_id))

    def _resolve_executor(
        self, qualified: str
    ) -> tuple[type[Executor] | None, dict[str, str], Isolation]:
        """An executor of this environment, or (for a subtask) one the worker knows."""
        if self.plugins.has_executor(qualified):
            return super()._resolve_executor(qualified)
        versions, isolation = self.channel.call("resolve", executor=qualified)
        return None, dict(versions), Isolation(isolation)


def info_from_frame(frame: dict[str, Any]) -> AttachmentInfo:
    """An AttachmentInfo sent as a frame."""
    import datetime as dt

    return AttachmentInfo(task_id=frame["task_id"], name=frame["name"], size=frame["size"],
                          checksum=frame["checksum"], media_type=frame["media_type"],
                          created_at=dt.datetime.fromisoformat(frame["created_at"]))


def worker_error(type_name: str | None, message: str) -> Exception:
    """The error the worker sent for a call: the roadie error of that name when there is one
    (so ``except roadie.DependencyError`` works in a host too), else a RoadieError."""
    from roadie import errors

    kind = getattr(errors, type_name or "", None)
    if kind is errors.Cancelled:  # a safe point in the worker (subtasks of a cancelled task)
        return errors.Cancelled(message)
    if isinstance(kind, type) and issubclass(kind, errors.RoadieError):
        try:
            return kind(message)
        except Exception:
            pass
    return errors.RoadieError(message)


class HostChannel(Channel):
    """The host's end: calls to the worker wait for their reply."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self._calls: dict[int, Future[Any]] = {}
        self._ids = itertools.count(1)

    def call(self, call: str, **arguments: Any) -> Any:
        """Ask the worker to do ``call`` and wait for its answer."""
        call_id = next(self._ids)
        future: Future[Any] = Future()
        self._calls[call_id] = future
        self.send({"op": "call", "id": call_id, "name": call, "args": arguments})
        return future.result()

    def resolve(self, frame: dict[str, Any]) -> None:
        """Deliver a ``reply`` frame to its waiting call."""
        future = self._calls.pop(frame["id"], None)
        if future is None:
            return
        if frame.get("ok"):
            future.set_result(frame.get("value"))
        else:
            future.set_exception(worker_error(frame.get("error_type"),
                                              frame.get("error") or "the worker refused"))


class _Sink:
    """Marks the running task's live state for the next ``live`` frame."""

    def __init__(self) -> None:
        self.dirty = threading.Event()

    def mark_dirty(self, task: RunningTask) -> None:
        self.dirty.set()

    def refused(self, task: RunningTask, what: str) -> None:
        """Never here: the worker checks the fence of the writes a host asks for."""


class Host:
    """Serve one worker over ``channel`` until it goes away."""

    def __init__(self, channel: HostChannel, app: HostRoadie | None = None) -> None:
        self.channel = channel
        if app is None:
            app = HostRoadie(channel)
            app.plugins.load()
        else:  # made and loaded by a template host before it forked this one
            app._channel = channel
        self.app = app
        self.task: RunningTask | None = None
        self.sink = _Sink()
        self._reader = threading.Lock()  # held by the thread that reads the socket
        self._aio: AsyncRunner | None = None  # started by the first async executor
        self.lease = self.app.settings.heartbeat_grace
        self.grace = self.app.settings.cancel_grace
        self.last_word = time.monotonic()
        self._lease_stop: float | None = None

    def serve(self) -> None:
        """Serve until the worker goes away: two threads take turns (see ``_turns``)."""
        self.channel.send({"op": "ready", "pid": os.getpid(), "python": sys.executable})
        threading.Thread(target=self._turns, name="roadie-host", daemon=True).start()
        self._turns()

    def _turns(self) -> None:
        """One thread reads the socket (frames in, live state out, the lease) while the other
        runs a task. The reader that receives a task hands reading over to the other thread
        and runs the task itself: no thread switch lies on the path of a task."""
        while True:
            with self._reader:
                task = self._read_until_run()
            self._run(task)

    def _read_until_run(self) -> RunningTask:
        tick = self.app.settings.status_interval
        while True:
            try:
                frame = self.channel.recv(tick)
            except ChannelClosed:
                os._exit(0)  # the worker is gone: nothing here may outlive it
            now = time.monotonic()
            if frame is not None:
                self.last_word = now
                op = frame.get("op")
                if op == "run":
                    return self._start(frame)
                if op == "cancel" and self.task is not None:
                    self.task.request_cancel(frame["message"], timed_out=frame["timed_out"])
                elif op == "reply":
                    self.channel.resolve(frame)
                elif op == "exit":
                    os._exit(0)
            if self.task is not None and self.sink.dirty.is_set():
                self._send_live()
            if self.task is not None and now - self.last_word > self.lease:
                if self._lease_stop is None:
                    self._lease_stop = now + self.grace
                    self.task.request_cancel(
                        f"its host heard nothing from its worker for {self.lease:g} s")
                elif now > self._lease_stop:
                    os._exit(EXIT_LEASE_LOST)
            elif self.task is None:
                self._lease_stop = None

    def _start(self, frame: dict[str, Any]) -> RunningTask:
        record = record_from_frame(frame["task"])
        app = self.app
        record = dataclasses.replace(record, decoder=app.decode_for_task)
        target = frame.get("target")
        if target and not app.plugins.has_executor(record.executor):
            self._register_target(record.executor, target)
        task = RunningTask(app, record, sink=self.sink,
                           max_messages=app.settings.max_status_messages,
                           child_width=app.settings.child_width)
        task.started = time.monotonic()
        self.task = task
        return task

    def _attempt(self, task: RunningTask) -> tuple[Outcome, Result | None, BaseException | None]:
        """``run_attempt``; an async executor's runs on the host's event loop, where a cancel
        ends it at its current ``await`` as in a worker."""
        from roadie.aio_runner import AsyncRunner, is_async_executor
        from roadie.errors import RoadieError
        from roadie.lifecycle import run_attempt

        try:
            is_async = is_async_executor(self.app.plugins.load_executor(task.record.executor))
        except RoadieError:
            is_async = False  # run_attempt reports it
        if not is_async:
            return run_attempt(self.app, task)
        if self._aio is None:
            self._aio = AsyncRunner("roadie-host-async")
            self._aio.start()
        box: dict[str, Any] = {}
        ended = threading.Event()

        def attempt() -> None:
            try:
                box["value"] = run_attempt(self.app, task)
            except BaseException as exc:
                box["error"] = exc
            finally:
                ended.set()

        self._aio.submit(task, attempt)
        ended.wait()
        if "error" in box:
            raise box["error"]
        value: tuple[Outcome, Result | None, BaseException | None] = box["value"]
        return value

    def _register_target(self, qualified: str, target: str) -> None:
        import importlib

        module_name, _, attribute = target.partition(":")
        try:
            loaded: Any = importlib.import_module(module_name)
            for part in attribute.split("."):
                loaded = getattr(loaded, part)
        except Exception:
            return  # run_attempt reports the unknown executor with the usual message
        self.app.plugins.register_executor(qualified, loaded)

    def _live_frame(self, task: RunningTask) -> dict[str, Any]:
        status_bytes: bytes | None
        try:
            status_bytes = self.app.registry.encode(task.status.snapshot(), what="task status")
        except Exception:
            status_bytes = None
        messages = list(task.messages)
        message_bytes: bytes | None = None
        while True:
            try:
                message_bytes = self.app.registry.encode(messages, what="status messages")
                break
            except Exception:
                if not messages:
                    break
                messages = messages[len(messages) // 2 + 1:]
        version, checkpoint = task.pending_checkpoint()
        return {"status": status_bytes, "messages": message_bytes, "version": version,
                "checkpoint": checkpoint}

    def _send_live(self) -> None:
        task = self.task
        if task is None:
            return
        self.sink.dirty.clear()
        self.channel.send({"op": "live", "id": task.id, **self._live_frame(task)})

    def _run(self, task: RunningTask) -> None:
        try:
            outcome, result, error = self._attempt(task)
        except BaseException as exc:  # roadie's own bug: still answer
            outcome = Outcome(task.id, Status.FAILED, f"roadie internal error in host: {exc!r}")
            result, error = None, exc
        task.ended = True
        frame = {
            "op": "done", **self._live_frame(task),
            "outcome": {
                "status": int(outcome.status), "message": outcome.message,
                "result": outcome.result, "error": outcome.error,
                "run_after": outcome.run_after.isoformat() if outcome.run_after else None,
                "attempt_counts": outcome.attempt_counts,
            },
            "has_result": result is not None,
            "error_type": type(error).__name__ if error is not None else None,
        }
        self.task = None
        self.sink.dirty.clear()
        try:
            self.channel.send(frame)
        except OSError:
            os._exit(0)


class Template:
    """A template host: roadie and the plugins imported and loaded once, then a host forked
    per request of the worker, with that host's socket (sent over the control socket).

    The fork is a host's cold start. A forked host is what a started one would be: its own
    session, killed when the template dies (which dies with its worker), the same plugins and
    settings (the template's environment is the one a started host would get). The template
    reaps its hosts and tells the worker how each ended; it kills one when the worker asks
    (so a pid is never signalled after it was reaped). It never runs a task and never starts
    a thread: forking a process with threads is unsafe.
    """

    def __init__(self, control: socket.socket) -> None:
        self.control = Channel(control)
        self.app = HostRoadie(None)
        self.app.plugins.load()
        self.children: set[int] = set()
        self._wake_r, self._wake_w = os.pipe()

    def serve(self) -> None:
        """Fork hosts until the worker closes the control socket or says "exit"."""
        import gc
        import select

        forkable = threading.active_count() == 1  # a plugin that starts a thread: no forks
        self.control.send({"op": "ready", "pid": os.getpid(), "fork": forkable})
        if not forkable:
            os._exit(0)
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        gc.freeze()  # the imported objects stay in shared pages of the forked hosts
        fds: list[int] = []
        while True:
            select.select([self.control.sock.fileno(), self._wake_r], [], [])
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 512)
            self._reap()
            while True:
                try:
                    frame = self.control.recv(0, fds)
                except ChannelClosed:
                    os._exit(0)  # the worker is gone: the hosts die with us
                if frame is None:
                    break
                op = frame.get("op")
                if op == "fork" and fds:
                    self._fork(fds.pop(0))
                elif op == "kill" and frame.get("pid") in self.children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(frame["pid"], signal.SIGKILL)
                elif op == "exit":
                    os._exit(0)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.control.send({"op": "exited", "pid": pid,
                               "code": os.waitstatus_to_exitcode(status)})

    def _fork(self, fd: int) -> None:
        pid = os.fork()
        if pid == 0:
            self._become_host(fd)  # never returns
        os.close(fd)
        self.children.add(pid)
        self.control.send({"op": "forked", "pid": pid})

    def _become_host(self, fd: int) -> None:
        """In the forked child: drop the template's parts and serve the worker on ``fd``."""
        code = 1
        try:
            template = os.getppid()
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.close(self._wake_r)
            os.close(self._wake_w)
            self.control.sock.close()
            os.setsid()  # a session of its own, as a started host
            die_with_parent()  # the template, which dies with the worker
            if os.getppid() != template:
                os._exit(0)
            Host(HostChannel(socket.socket(fileno=fd)), self.app).serve()
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)


def main(argv: list[str] | None = None) -> None:
    """Serve the worker on the socket whose descriptor is the first argument (with
    ``--template FD``: fork hosts for the worker on that control socket)."""
    args = sys.argv[1:] if argv is None else argv
    die_with_parent()
    if os.getppid() == 1:  # the worker died before we could ask to die with it
        os._exit(0)
    if args[0] == "--template":
        Template(socket.socket(fileno=int(args[1]))).serve()
        return
    sock = socket.socket(fileno=int(args[0]))
    Host(HostChannel(sock)).serve()


if __name__ == "__main__":
    main()

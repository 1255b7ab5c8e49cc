"""The worker's side of host processes: a pool of warm hosts, and one attempt run in a host.

A worker thread that hands a task to a host stays with it until the attempt ends: it relays
the host's live state to the worker's writer, stores attachments the host sends, forwards
cancel requests, pings the host (its lease), and enforces what only a process boundary can
enforce: a hard timeout, a hard cancel after ``cancel_grace``, and ``max_host_memory_mb``.
A host that dies costs only its task, which goes through the executor's crash policy.

Every host is started by one long-lived thread of the pool, the *starter*. On Linux a host asks
to be killed when its parent dies (``PR_SET_PDEATHSIG``), and Linux means the *thread* that
forked it: a host forked by a thread that later ends would be killed with that thread. The
starter lives as long as the pool, and also replaces recycled and dead hosts in the background,
so the next task finds a warm one. Hosts run in their own session: a terminal's Ctrl-C reaches
the worker only, which then stops its hosts in order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from roadie.errors import RoadieError
from roadie.executor import CrashPolicy, Executor, Isolation
from roadie.hosts.protocol import Channel, ChannelClosed, new_task_from_frame, record_to_frame
from roadie.hosts.template import CAN_FORK, ForkedProcess, HostError, Template, describe_exit
from roadie.result import Result
from roadie.status import FINAL_STATUSES, Status
from roadie.store import Outcome, utcnow

if TYPE_CHECKING:
    from roadie.app import Roadie
    from roadie.running import ProgressSink, RunningTask

log = logging.getLogger("roadie.hosts")

class HostTaskError(RoadieError):
    """The error an executor raised in its host (its type name and trace are in the task)."""


def env_of(executor_class: type[Executor]) -> str | None:
    """The environment whose hosts run ``executor_class`` (None: the worker's own)."""
    return getattr(executor_class, "roadie_env", None)


@dataclass
class _Kill:
    """Why the worker killed a host, if it did."""

    reason: str  # "timeout", "cancel", "memory", "taken over"
    detail: str = ""


class HostProcess:
    """One host process and its socket.

    Made in two steps: the constructor forks the process (on the pool's starter thread, see the
    module docstring), ``wait_ready`` waits for its "ready" frame (on any thread).
    """

    def __init__(self, env: str | None, python: str, environ: dict[str, str],
                 template: Template | None = None) -> None:
        self.env = env
        self.python = python
        self.tasks_run = 0
        self._started = time.perf_counter()
        self.start_ms = 0.0
        self._ready: bool | None = None  # None: not waited for yet
        self._ready_lock = threading.Lock()
        parent, child = socket.socketpair()
        self.proc: subprocess.Popen[bytes] | ForkedProcess
        try:
            if template is not None:
                self.proc = template.fork(child.fileno())
            else:
                self.proc = subprocess.Popen(
                    [python, "-m", "roadie.hosts.main", str(child.fileno())],
                    pass_fds=(child.fileno(),), env=environ, stdin=subprocess.DEVNULL,
                    start_new_session=True,  # a terminal's Ctrl-C is for the worker, not us
                )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self.pid = self.proc.pid
        self.channel = Channel(parent)

    def wait_ready(self, timeout: float) -> None:
        """Wait for the host's "ready" frame (once); raise HostError if it does not come."""
        with self._ready_lock:
            if self._ready is None:
                try:
                    frame = self.channel.recv(timeout)
                except (ChannelClosed, OSError):
                    frame = None
                self._ready = frame is not None and frame.get("op") == "ready"
                self.start_ms = (time.perf_counter() - self._started) * 1000
            if self._ready:
                return
        self.kill()
        where = f"environment {self.env!r}" if self.env else "the worker's environment"
        raise HostError(
            f"a host process in {where} ({self.python}) did not start: "
            f"{describe_exit(self.proc.poll())} (its error is in the worker's log)"
        )

    @property
    def ready(self) -> bool:
        """Whether it said "ready" (``wait_ready`` succeeded)."""
        return bool(self._ready)

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc.poll() is None

    def rss_mb(self) -> float:
        """Resident memory in MB (0 when unknown)."""
        try:
            pages = int(Path(f"/proc/{self.pid}/statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            return 0.0
        return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.channel.close()

    def ask_to_exit(self) -> None:
        """Send the "exit" frame (the host ends after it; ``close`` reaps it)."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.channel.send({"op": "exit"})

    def close(self) -> None:
        """Ask it to exit; kill it if it does not."""
        if self.proc.poll() is None:
            self.ask_to_exit()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(2)
        self.kill()


class _Starter:
    """The pool's one long-lived thread that forks hosts, replaces them and reaps old ones."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = \
            queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], Any]) -> Future[Any]:
        """Run ``job`` on the starter thread (started on first use); its future."""
        future: Future[Any] = Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name="roadie-hosts",
                                                daemon=True)
                self._thread.start()
            self._jobs.put((job, future))
        return future

    def _main(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            job, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:
                future.set_exception(exc)

    def stop(self) -> None:
        """End the thread once the jobs before this call are done."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._jobs.put(None)
        if thread is not threading.current_thread():
            thread.join(30)


class HostPool:
    """The warm hosts of one worker, per environment; hands attempts to them."""

    def __init__(self, app: Roadie, sink: ProgressSink, *, all_executors: bool = False) -> None:
        self.app = app
        self.settings = app.settings
        self.sink = sink
        self.all_executors = all_executors
        self._idle: list[HostProcess] = []
        self._busy: set[HostProcess] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._starter = _Starter()
        self._templates: dict[str | None, Template] = {}  # made and used on the starter
        self.started: list[float] = []  # cold start times in ms
        self.template_ms: list[float] = []  # start times of template hosts in ms

    # -- routing ---------------------------------------------------------------------------

    def wants(self, task: RunningTask) -> bool:
        """Whether ``task`` runs in a host (an env executor, ``out_of_process``, or all)."""
        try:
            executor_class = self.app.plugins.load_executor(task.record.executor)
        except RoadieError:
            return False  # the in-process path reports the error
        return (self.all_executors or bool(getattr(executor_class, "out_of_process", False))
                or env_of(executor_class) is not None)

    # -- processes -------------------------------------------------------------------------

    def _environ(self, env: str | None) -> dict[str, str]:
        environ = dict(os.environ)
        if env is None:  # the worker's own environment: see exactly what the worker sees
            environ["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        else:
            environ.pop("PYTHONPATH", None)
            environ.pop("PYTHONHOME", None)
        for f in dataclasses.fields(self.settings):
            environ[f"ROADIE_{f.name.upper()}"] = str(getattr(self.settings, f.name))
        return environ

    def _python(self, env: str | None) -> str:
        if env is None:
            return sys.executable
        from roadie.envs.layout import python_of

        return str(python_of(self.settings.envs_path(), env))

    def _spawn(self, env: str | None) -> HostProcess:
        """Fork a host of ``env`` (always on the starter thread; see the module docstring):
        from the environment's template host, started first if need be, or (where a process
        cannot fork, or the template cannot) as a new Python process."""
        python, environ = self._python(env), self._environ(env)
        template = self._template(env, python, environ) if CAN_FORK else None
        return HostProcess(env, python, environ, template)

    def _template(self, env: str | None, python: str, environ: dict[str, str]
                  ) -> Template | None:
        """The template host of ``env`` that can fork, or None (on the starter thread)."""
        template = self._templates.get(env)
        if template is not None and not template.forkable:
            return None
        if template is None or not template.alive():
            template = Template(env, python, environ)
            self._templates[env] = template
            template.wait_ready(self.settings.host_start_timeout)
            self.template_ms.append(template.start_ms)
        return template if template.forkable else None

    def start_templates(self, executor_classes: Iterable[type[Executor]]) -> None:
        """Start, in the background (on the starter), the template host of each environment
        whose hosts run some of ``executor_classes``, so the first task of each finds it
        started. One per environment: a template that runs is kept."""
        if not CAN_FORK:
            return
        for env in sorted({env_of(c) for c in executor_classes}, key=lambda e: e or ""):
            self._starter.submit(functools.partial(self._start_template, env))

    def _start_template(self, env: str | None) -> None:
        """On the starter: the template host of ``env``, unless the pool closed meanwhile."""
        with self._lock:
            if self._closed:
                return
        try:
            self._template(env, self._python(env), self._environ(env))
        except Exception as exc:  # the first task of ``env`` tries again and reports it
            where = f"environment {env!r}" if env else "the worker's environment"
            log.warning("could not start the template host of %s: %s", where, exc)

    def _take_idle(self, env: str | None) -> HostProcess | None:
        """A warm host of ``env`` moved to busy, or None (the lock is held)."""
        for host in [h for h in self._idle if h.env == env]:
            self._idle.remove(host)
            if host.alive():
                self._busy.add(host)
                return host
            self._starter.submit(host.kill)
        return None

    def acquire(self, env: str | None) -> HostProcess:
        """A warm host of ``env``, or a new one (forked by the starter thread)."""
        with self._lock:
            if self._closed:
                raise HostError("the worker is stopping")
            host = self._take_idle(env)
        if host is None:
            host = self._starter.submit(lambda: self._new_busy(env)).result()
        cold = not host.ready
        try:
            host.wait_ready(self.settings.host_start_timeout)
        except HostError:
            with self._lock:
                self._busy.discard(host)
            raise
        if cold:
            self.started.append(host.start_ms)
        return host

    def _new_busy(self, env: str | None) -> HostProcess:
        """On the starter: a replacement that became warm meanwhile, or a new host; busy."""
        with self._lock:
            if self._closed:
                raise HostError("the worker is stopping")
            host = self._take_idle(env)
        if host is None:
            host = self._spawn(env)
            with self._lock:
                self._busy.add(host)
            if self._closed:  # close() ran while we forked
                host.kill()
                raise HostError("the worker is stopping")
        return host

    def _replace(self, env: str | None) -> None:
        """On the starter: a new warm host of ``env`` for the next task (background)."""
        with self._lock:
            if self._closed:
                return
        try:
            host = self._spawn(env)
            host.wait_ready(self.settings.host_start_timeout)
        except (HostError, OSError) as exc:
            log.warning("could not start a replacement host: %s", exc)
            return
        self.started.append(host.start_ms)
        with self._lock:
            if not self._closed:
                self._idle.append(host)
                return
        host.close()

    def release(self, host: HostProcess) -> None:
        """Back to the warm hosts, unless it has run enough tasks or grown too big (then a
        new one replaces it in the background)."""
        host.tasks_run += 1
        limit = self.settings.max_host_memory_mb
        recycle = (host.tasks_run >= self.settings.max_tasks_per_host
                   or (limit > 0 and host.rss_mb() > limit) or not host.alive())
        with self._lock:
            self._busy.discard(host)
            if not recycle and not self._closed:
                self._idle.append(host)
                return
            closed = self._closed
        if closed:
            host.close()
            return
        host.ask_to_exit()
        self._starter.submit(lambda: self._replace(host.env))
        self._starter.submit(host.close)  # reaped after the replacement started

    def discard(self, host: HostProcess) -> None:
        """Forget a dead (or killed) host; a new one replaces it in the background."""
        with self._lock:
            self._busy.discard(host)
            closed = self._closed
        host.kill()
        if not closed:
            self._starter.submit(lambda: self._replace(host.env))

    def retire_idle(self) -> None:
        """Stop the warm hosts (their environment changed); busy ones finish first."""
        with self._lock:
            idle, self._idle = self._idle, []
        for host in idle:
            host.close()
        with self._lock:
            if self._closed:  # close() stops the templates
                return
        self._starter.submit(self._retire_templates)

    def _retire_templates(self) -> None:
        """On the starter: the next hosts come from new templates, with the new code."""
        templates, self._templates = list(self._templates.values()), {}
        for template in templates:
            template.retire()

    def close(self) -> None:
        """Stop every host (busy ones are killed) and the starter thread."""
        with self._lock:
            self._closed = True
            idle, busy = list(self._idle), list(self._busy)
            self._idle.clear()
            self._busy.clear()
        for host in busy:
            host.kill()
        for host in idle:
            host.ask_to_exit()
        for host in idle:
            host.close()
        self._starter.submit(self._close_templates)
        self._starter.stop()
        with self._lock:  # hosts a last job of the starter made
            late = [*self._idle, *self._busy]
            self._idle.clear()
            self._busy.clear()
        for host in late:
            host.kill()

    def _close_templates(self) -> None:
        templates, self._templates = list(self._templates.values()), {}
        for template in templates:
            template.close()

    def host_pids(self) -> list[int]:
        """The process ids of the hosts (for tests and benchmarks)."""
        with self._lock:
            return [h.pid for h in [*self._idle, *self._busy]]

    # -- one attempt -----------------------------------------------------------------------

    def run_attempt(
        self, task: RunningTask
    ) -> tuple[Outcome, Result | None, BaseException | None]:
        """Run one attempt of ``task`` in a host and say how it ended."""
        record = task.record
        executor_class = self.app.plugins.load_executor(record.executor)
        if task.cancelled:
            stopped = task.cancellation()
            status = Status.FAILED if stopped.timed_out else Status.CANCELLED
            return Outcome(task.id, status, stopped.message), None, stopped
        env = env_of(executor_class)
        try:
            host = self.acquire(env)
        except (HostError, OSError) as exc:
            message = f"cannot run executor {record.executor!r} in a host: {exc}"
            return Outcome(task.id, Status.FAILED, message), None, exc
        target = None if env else f"{executor_class.__module__}:{executor_class.__qualname__}"
        try:
            host.channel.send({"op": "run", "task": record_to_frame(record), "target": target})
        except OSError:
            return self._died(task, host, executor_class, None)
        return self._follow(task, host, executor_class)

    def _follow(self, task: RunningTask, host: HostProcess, executor_class: type[Executor]
                ) -> tuple[Outcome, Result | None, BaseException | None]:
        settings = self.settings
        limit = task.record.timeout if task.record.timeout is not None else \
            executor_class.timeout
        memory_limit = settings.max_host_memory_mb
        tick = max(0.01, min(0.1, settings.status_interval))
        ping_every = max(0.05, min(1.0, settings.heartbeat_grace / 4))
        next_memory = time.monotonic()
        next_ping = next_memory + ping_every  # the run frame itself renews the lease
        kill_at: float | None = None
        killed: _Kill | None = None
        while True:
            try:
                frame = host.channel.recv(tick)
            except ChannelClosed:
                return self._died(task, host, executor_class, killed)
            if frame is not None:
                op = frame.get("op")
                if op == "live":
                    if frame.get("id") == task.id:  # not a late frame of the host's last task
                        self._apply_live(task, frame)
                elif op == "call":
                    self._answer(host, task, frame)
                elif op == "done":  # written with the outcome: no separate progress write
                    self._apply_live(task, frame, mark_dirty=False)
                    self.release(host)
                    return self._finished(task, frame)
            now = time.monotonic()
            if (limit is not None and not task.cancelled and task.started is not None
                    and now - task.started >= limit):
                task.request_cancel(f"timed out after {limit:g} s", timed_out=True)
            try:
                if task.cancelled and kill_at is None:
                    stopped = task.cancellation()
                    host.channel.send({"op": "cancel", "message": stopped.message,
                                       "timed_out": stopped.timed_out})
                    kill_at = now + settings.cancel_grace
                if now >= next_ping:
                    next_ping = now + ping_every
                    host.channel.send({"op": "ping"})
            except OSError:
                continue  # the next recv sees the closed socket
            if killed is None and task.taken_over:  # a stale attempt: stop it at once
                killed = _Kill("taken over")
                log.warning("task %s attempt %s was taken over by another node: killing its "
                            "host process %s", task.id, task.attempt, host.pid)
                host.proc.kill()
            if killed is None and kill_at is not None and now >= kill_at:
                killed = _Kill("timeout" if task.cancellation().timed_out else "cancel")
                host.proc.kill()
            if killed is None and memory_limit > 0 and now >= next_memory:
                next_memory = now + 0.2
                used = host.rss_mb()
                if used > memory_limit:
                    killed = _Kill("memory", f"{used:.0f} MB")
                    host.proc.kill()

    def _apply_live(self, task: RunningTask, frame: dict[str, Any], *,
                    mark_dirty: bool = True) -> None:
        task.encoded_live_state = (frame.get("status"), frame.get("messages"))
        if frame.get("checkpoint") is not None:
            task._checkpoint = frame["checkpoint"]
            task._checkpoint_version = int(frame.get("version") or 0)
        if mark_dirty:
            self.sink.mark_dirty(task)

    def _answer(self, host: HostProcess, task: RunningTask, frame: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"op": "reply", "id": frame.get("id")}
        name, args = frame.get("name"), frame.get("args") or {}
        try:
            value: Any
            if name == "attach":
                info = task.attach(args["name"], args["data"],
                                   media_type=args.get("media_type"))
                value = dataclasses.asdict(info)
                value["created_at"] = info.created_at.isoformat()
            elif name == "add_subtasks":
                specs = [new_task_from_frame(spec) for spec in args["tasks"]]
                value = [record_to_frame(r) for r in self.app._insert_subtasks(task, specs)]
            elif name in ("subtasks", "subtask_count"):
                if args["task_id"] != task.id:
                    raise RoadieError(f"task {task.id} can only read its own subtasks")
                if name == "subtask_count":
                    value = self.app._subtask_count(task.id)
                else:
                    value = [record_to_frame(r) for r in self.app._subtask_page(
                        task.id, int(args["after"]), int(args["limit"]),
                        int(args.get("offset") or 0))]
            elif name == "resolve":
                _, versions, isolation = self.app._resolve_executor(args["executor"])
                if isolation is Isolation.CUSTOM:
                    raise RoadieError(
                        f"executor {args['executor']!r} computes its isolation key in code: "
                        f"add its tasks from a process where its plugin is installed")
                value = [versions, isolation.value]
            else:
                raise RoadieError(f"unknown call {name!r}")
            reply.update(ok=True, value=value)
        except Exception as exc:
            reply.update(ok=False, error=str(exc) or type(exc).__name__,
                         error_type=type(exc).__name__)
        with contextlib.suppress(OSError):
            host.channel.send(reply)

    def _finished(self, task: RunningTask, frame: dict[str, Any]
                  ) -> tuple[Outcome, Result | None, BaseException | None]:
        data = frame["outcome"]
        status = Status(data["status"])
        run_after = dt.datetime.fromisoformat(data["run_after"]) if data.get("run_after") \
            else None
        outcome = Outcome(task.id, status, data.get("message") or "", result=data.get("result"),
                          error=data.get("error"), run_after=run_after,
                          attempt_counts=bool(data.get("attempt_counts", True)))
        result = None
        if frame.get("has_result") and status in FINAL_STATUSES:
            value = None
            if outcome.result is not None:
                try:
                    value = self.app.decode_for_task(task.record, outcome.result, "result")
                except RoadieError:
                    value = None  # the worker lacks the plugin's types: hooks see no value
            result = Result(status, outcome.message, value)
        error = None
        if frame.get("error_type"):
            error = HostTaskError(f"{frame['error_type']}: {outcome.message}")
        return outcome, result, error

    def _died(self, task: RunningTask, host: HostProcess, executor_class: type[Executor],
              killed: _Kill | None) -> tuple[Outcome, Result | None, BaseException | None]:
        try:
            code = host.proc.wait(5)
        except subprocess.TimeoutExpired:
            host.proc.kill()
            code = host.proc.wait()
        self.discard(host)
        how = describe_exit(code)
        record = task.record
        grace = self.settings.cancel_grace
        if killed is not None and killed.reason == "taken over":  # refused by the database
            message = "taken over by another node (its host process was killed)"
            return Outcome(task.id, Status.CANCELLED, message), None, HostError(message)
        if killed is not None and killed.reason == "memory":
            message = (f"its host process was killed: it used {killed.detail}, over "
                       f"max_host_memory_mb={self.settings.max_host_memory_mb}")
            return Outcome(task.id, Status.FAILED, message), None, HostError(message)
        if task.cancelled:
            stopped = task.cancellation()
            if killed is not None:
                what = "stop" if stopped.timed_out else "honour the cancel"
                message = (f"{stopped.message} (it did not {what} within {grace:g} s, so its "
                           f"host process was killed)")
            else:
                message = f"{stopped.message} (its host process died: {how})"
            status = Status.FAILED if stopped.timed_out else Status.CANCELLED
            return Outcome(task.id, status, message), None, HostError(message)
        reason = f"its host process died ({how})"
        policy, max_attempts = executor_class.crash_policy, executor_class.max_crash_attempts
        if policy is not CrashPolicy.FAIL and record.attempts < max_attempts:
            again = ("resuming from its checkpoint" if policy is CrashPolicy.RESUME
                     else "retrying")
            message = f"{reason} during attempt {record.attempts}; {again}"
            if policy is CrashPolicy.RETRY:  # starts over: an empty checkpoint replaces it
                task._checkpoint = self.app.registry.encode(None, what="checkpoint")
                task._checkpoint_version += 1
            return (Outcome(task.id, Status.NEW, message, run_after=utcnow()), None,
                    HostError(message))
        extra = "" if policy is CrashPolicy.FAIL else \
            f" after {record.attempts} of {max_attempts} attempts"
        message = f"{reason} while it ran{extra}"
        log.warning("task %s: %s", task.id, message)
        return Outcome(task.id, Status.FAILED, message), None, HostError(message)

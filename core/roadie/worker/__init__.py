"""The worker: a node that claims tasks, runs them on threads, heartbeats, writes progress,
sees cancel requests and timeouts, and recovers the tasks of dead nodes."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from roadie.aio_runner import is_async_executor, split_claimable
from roadie.errors import PluginError, RoadieError
from roadie.executor import Isolation
from roadie.hookcalls import notify_hook
from roadie.records import NodeRecord
from roadie.running import RunningTask
from roadie.store import (
    CHANNEL_ADDED,
    CHANNEL_CANCEL,
    Claimable,
    split_payload,
    tag_subsets,
    utcnow,
)
from roadie.worker.claim_loop import ClaimLoop
from roadie.worker.maintenance import Maintenance
from roadie.worker.outage import DatabaseOutage
from roadie.worker.progress import ProgressWriter
from roadie.worker.stats import WorkerStats

if TYPE_CHECKING:
    from roadie.app import Roadie
    from roadie.hosts import HostPool

__all__ = ["DatabaseOutage", "Worker", "WorkerStats"]

log = logging.getLogger("roadie.worker")
SIGNAL_LATENCY = 0.2  # seconds: how soon the claim loop acts on SIGINT/SIGTERM at most


class Worker:
    """Claims and runs tasks until stopped (or, with ``until_idle``, until nothing is left)."""

    def __init__(
        self,
        app: Roadie,
        *,
        concurrency: int = 2,
        name: str | None = None,
        tags: Iterable[str] = (),
        until_idle: bool = False,
        handle_signals: bool | None = None,
        async_concurrency: int | None = None,
        out_of_process: bool = False,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if async_concurrency is None:
            async_concurrency = app.settings.async_concurrency
        if async_concurrency < 1:
            raise ValueError("async_concurrency must be at least 1")
        self.async_concurrency = async_concurrency
        self.app = app
        self.store = app.store
        self.settings = app.settings
        self.concurrency = concurrency
        self.until_idle = until_idle
        self.tags = frozenset(t.strip() for t in tags if t.strip())
        self.id = uuid.uuid4().hex[:16]
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.name = name or f"{self.host}:{self.pid}"
        self.handle_signals = (
            threading.current_thread() is threading.main_thread()
            if handle_signals is None else handle_signals
        )
        self.stats = WorkerStats()
        self._signals = 0  # SIGINT/SIGTERM received (counted by the handler)
        self._signals_seen = 0
        self.running: dict[int, RunningTask] = {}
        self._running_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._stop_now = threading.Event()
        self._progress = ProgressWriter(self)  # the sink of the tasks this worker runs
        self._maintenance = Maintenance(self)
        self.outage = DatabaseOutage(self.settings.heartbeat_interval,
                                     self.settings.heartbeat_grace)
        self._claimable: Claimable | None = None
        # async executors: their own claim, slots and event-loop thread (roadie.aio_runner)
        self._async_names: set[str] = set()
        self._async_ids: set[int] = set()
        self._claim_sync: Claimable | None = None
        self._claim_async: Claimable | None = None
        # this node's settle and live-state writes take turns on PostgreSQL, where the two
        # locking the same rows in different orders could deadlock (SQLite has one writer at
        # a time anyway; the heartbeat skips rows that are held)
        self._writes: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self.store.is_postgres else contextlib.nullcontext())
        self._out_of_process = out_of_process
        self._hosts: HostPool | None = None
        self._hosts_lock = threading.Lock()
        self._claims = ClaimLoop(self)  # the rounds, and the threads that run what they claim

    @property
    def hosts(self) -> HostPool:
        """The host processes of this worker (made, and roadie.hosts imported, when the first
        task or the shutdown asks: an idle worker does without)."""
        hosts = self._hosts
        if hosts is None:
            with self._hosts_lock:
                if self._hosts is None:
                    from roadie.hosts import HostPool

                    self._hosts = HostPool(self.app, self._progress,
                                             all_executors=self._out_of_process)
                hosts = self._hosts
        return hosts

    # -- what this node can run ----------------------------------------------------------

    def _build_claimable(self) -> Claimable:
        plugins = self.app.plugins
        executors: list[str] = []
        isolated: dict[str, Any] = {}
        for qualified in plugins.executor_names():
            try:
                executor_class = plugins.load_executor(qualified)
            except PluginError as exc:
                # still claimed, so that its tasks fail with the plugin's error
                log.warning("%s", exc)
                executors.append(qualified)
                continue
            executors.append(qualified)
            if is_async_executor(executor_class):
                self._async_names.add(qualified)
            if executor_class.isolation not in (Isolation.NOT_ISOLATED, Isolation.CUSTOM):
                # a custom key is computed once, when the task is added
                isolated[qualified] = self.app.isolation_key_function(qualified, executor_class)
        claimable = Claimable(
            executors=executors,
            isolated=isolated,
            plugins=plugins.versions(),
            tag_keys=tag_subsets(self.tags),
        )
        self._claim_sync, self._claim_async = split_claimable(claimable, self._async_names)
        return claimable

    def node_record(self) -> NodeRecord:
        """This worker as a node row."""
        assert self._claimable is not None
        now = utcnow()
        executor_isolation = {}
        for qualified in self._claimable.executors:
            error = self.app.plugins.executor_error(qualified)
            if error is None:
                executor_isolation[qualified] = self.app.plugins.load_executor(
                    qualified
                ).isolation.value
        return NodeRecord(
            id=self.id, name=self.name, host=self.host, pid=self.pid,
            concurrency=self.concurrency, plugins=self._claimable.plugins,
            executors=executor_isolation, tags=self.tags, started_at=now, heartbeat_at=now,
            stopped_at=None,
        )

    def _advertise(self) -> None:
        """Work out what this node can run, and register its node row (or update it)."""
        self._claimable = self._build_claimable()
        self.store.register_node(self.node_record())

    # -- running -------------------------------------------------------------------------

    def run(self) -> WorkerStats:
        """Run until stopped; returns the counters."""
        self._advertise()
        hub = self.store.listen()
        token = hub.subscribe(self._on_notification)
        previous_handlers = self._install_signal_handlers()
        try:
            notify_hook(self.app, "roadie_worker_started", worker=self)
            self._start_threads()
            self.app.recover_orphans(self)
            self._claims.run()
        finally:
            self._stopping.set()
            notify_hook(self.app, "roadie_worker_stopping", worker=self)
            self._shutdown()
            hub.unsubscribe(token)
            self._restore_signal_handlers(previous_handlers)
        return self.stats

    def busy_slots(self) -> tuple[int, int]:
        """(thread slots, async slots) busy now, for metrics."""
        with self._running_lock:
            busy_async = len(self._async_ids)
            return len(self.running) - busy_async, busy_async

    def stop(self, *, now: bool = False) -> None:
        """Stop claiming; running tasks finish (``now``: they go through their crash policy at
        once instead)."""
        self._stopping.set()
        if now:
            self._stop_now.set()
        self._wake.set()

    def _on_notification(self, channel: str, payload: str) -> None:
        if channel == CHANNEL_ADDED:
            self._claims.wake_to_claim()
        elif channel == CHANNEL_CANCEL:
            items = split_payload(payload)
            with self._running_lock:
                mine = set(self.running)
            if "*" in items:
                self._apply_cancel_requests(self.store.cancel_requests(self.id))
                return
            wanted = {int(item.split(":", 1)[0]) for item in items} & mine
            if wanted:
                self._apply_cancel_requests(wanted)

    def _start_threads(self) -> None:
        self._claims.start()
        self._maintenance.start()

    # -- running tasks: live state, attempts taken over, cancel requests -----------------

    def mark_dirty(self, task: RunningTask) -> None:
        """Schedule a throttled write of a running task's live state."""
        self._progress.mark_dirty(task)

    def flush_progress(self) -> None:
        """Write the live state of every task that changed since the last write."""
        self._progress.flush()

    def _stop_lost(self, task_ids: Iterable[int], what: str,
                   written: dict[int, RunningTask] | None = None) -> None:
        """The database refused a write (``what``) of these tasks' attempts: another node
        took them over (this one was thought dead). With ``written`` (the attempts the write
        was for), only those: a task put back meanwhile and claimed again by this worker is
        another attempt, not a lost one."""
        for task_id in task_ids:
            with self._running_lock:
                task = self.running.get(task_id)
            if task is not None and (written is None or written.get(task_id) is task):
                self.refused(task, what)

    def refused(self, task: RunningTask, what: str) -> None:
        """A write of ``task``'s attempt was refused because the task was taken over: count
        and log it, and stop the attempt (its host process, if it has one, is killed; its
        outcome will be refused too)."""
        self.stats.refused_writes += 1
        task.taken_over = True
        log.warning("task %s attempt %s: the database refused its %s: the task was taken "
                    "over by another node (%d refused write(s) on this worker)", task.id,
                    task.attempt, what, self.stats.refused_writes)
        if not task.ended:
            task.request_cancel("taken over by another node")

    def _apply_cancel_requests(self, task_ids: Iterable[int]) -> None:
        """Cancel those of these tasks that run here (a cancel request was made for them)."""
        for task_id in task_ids:
            with self._running_lock:
                task = self.running.get(task_id)
            if task is None or task.cancelled:
                continue
            record = self.store.get_task(task_id)
            who = record.cancel_requested_by or "someone"
            when = record.cancel_requested_at.isoformat(timespec="seconds") if \
                record.cancel_requested_at else "?"
            task.request_cancel(f"cancelled by {who} at {when}")

    # -- stopping ------------------------------------------------------------------------

    def _shutdown(self) -> None:
        claims = self._claims
        if self._stop_now.is_set():
            self.hosts.close()
            claims.settle_leftovers()  # tasks that ended keep their real outcome
            self._abandon_running()
        if self._stop_now.is_set():
            claims.end_threads(wait=False)
        else:
            claims.end_threads(wait=True)
            self._maintenance.join(timeout=10)
            claims.settle_leftovers()  # attempts that ended after the claim loop stopped
        claims.stop_runner()
        self.hosts.close()
        try:
            self.store.stop_node(self.id)
        except RoadieError as exc:
            log.warning("could not mark node %s stopped: %s", self.id, exc)

    def _abandon_running(self) -> None:
        """Stop at once: the tasks still running go through their crash policy now."""
        with self._running_lock:
            tasks = list(self.running.values())
        for task in tasks:
            task.request_cancel("the worker stopped")
        self.store.stop_node(self.id)
        for task in tasks:
            self.app.apply_crash_policy(task.record, self, reason="its worker was stopped")

    # -- signals -------------------------------------------------------------------------

    def _install_signal_handlers(self) -> dict[int, Any]:
        if not self.handle_signals:
            return {}
        previous: dict[int, Any] = {}

        def handler(signum: int, _frame: Any) -> None:
            # Runs in the main thread between two bytecodes, perhaps while the claim loop holds
            # the lock of an Event it waits on: taking any lock here could deadlock. Count the
            # signal; the claim loop acts on it (_take_signals).
            self._signals += 1

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        return previous

    def _wait(self, event: threading.Event, timeout: float) -> None:
        """Wait until ``event`` is set, ``timeout`` passes or a signal came (which the claim
        loop must see within SIGNAL_LATENCY)."""
        if not self.handle_signals:
            event.wait(timeout)
            return
        deadline = time.monotonic() + timeout
        while self._signals_seen == self._signals:
            left = deadline - time.monotonic()
            if left <= 0 or event.wait(min(left, SIGNAL_LATENCY)):
                return

    def _take_signals(self) -> None:
        """Act on the signals the handler counted: the first stops claiming, the next one
        stops at once."""
        while self._signals_seen < self._signals:
            self._signals_seen += 1
            if self._stopping.is_set():
                log.warning("second signal: stopping at once")
                self.stop(now=True)
            else:
                log.warning("stopping: running tasks finish, nothing new is claimed "
                            "(signal again to stop at once)")
                self.stop()

    def _restore_signal_handlers(self, previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

"""``roadie.Worker``: a node that claims tasks, runs them on threads, heartbeats, writes
progress, sees cancel requests and timeouts, and recovers the tasks of dead nodes.

``Worker`` is the facade: who the node is and what it can run (the executors, plugins and tags
it advertises in its node row), its life from ``run()`` to ``stop()``, the notifications it
listens to, and what the other parts share (the running tasks, the events that wake and stop
it). The moving parts live in the modules of this package, one concept each:

- ``claim_loop``: the rounds (record what ended and claim new tasks in one transaction; gather,
  claim ahead, hand over) and the threads that run what they claim;
- ``progress``: the live state of running tasks (status, messages, checkpoint) on its way to
  the database, throttled; the sink of every task the worker runs;
- ``maintenance``: the maintenance thread (live-state writes, timeouts, cancel polling,
  heartbeats, sweeps for dead nodes' tasks, retention, environment refreshes);
- ``stopping``: SIGINT/SIGTERM, and the shutdown once the claim loop returns;
- ``collector``: the garbage collector while a worker that owns its process runs;
- ``outage``: how a database outage is logged (``DatabaseOutage``);
- ``stats``: the counters of a run (``WorkerStats``).

The modules never import this one (but for type annotations): it imports them. Every
statement they run is in ``roadie.store``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from roadie.aio_runner import is_async_executor, split_claimable
from roadie.errors import PluginError, SchemaMismatchError
from roadie.executor import Isolation
from roadie.hookcalls import notify_hook
from roadie.limits import Limits, Rate, limits_of
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
from roadie.worker.collector import tuned_collector
from roadie.worker.maintenance import Maintenance
from roadie.worker.outage import DatabaseOutage
from roadie.worker.progress import ProgressWriter
from roadie.worker.stats import WorkerStats
from roadie.worker.stopping import Signals, shut_down

if TYPE_CHECKING:
    from roadie.app import Roadie
    from roadie.hosts import HostPool

__all__ = ["DatabaseOutage", "Worker", "WorkerStats"]

log = logging.getLogger("roadie.worker")


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
        self.outage = DatabaseOutage(self.settings.heartbeat_interval,
                                     self.settings.heartbeat_grace,
                                     on_mismatch=self._schema_changed)
        # the database's schema changed under this worker (see _schema_changed)
        self.schema_error: SchemaMismatchError | None = None
        self.running: dict[int, RunningTask] = {}
        self._running_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._stop_now = threading.Event()
        self._swept = threading.Event()  # the first sweep for dead nodes' tasks is done
        # the first round's tasks are handed over (async ones: started on the loop), or it
        # found none: the first sweep waits for this, rather than slow the first claim
        self._first_round = threading.Event()
        self._claimable: Claimable | None = None
        self._declared: dict[str, tuple[Limits, str]] = {}  # executor -> limits, isolation
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
        self._hosted: set[str] = set()  # executors whose tasks run in host processes
        self._hosts: HostPool | None = None
        self._hosts_lock = threading.Lock()
        # the parts (each reads what it needs of the above when it is made)
        self._maintenance = Maintenance(self)  # a bad retention setting fails here
        self._signals = Signals(self)
        self._progress = ProgressWriter(self)  # the sink of the tasks this worker runs
        self._claims = ClaimLoop(self)  # the rounds, and the threads that run what they claim

    @property
    def hosts(self) -> HostPool:
        """The host processes of this worker (made, and roadie.hosts imported, when the worker
        starts if some of its executors run in hosts, else when a task or the shutdown asks:
        a worker without such executors does without)."""
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
        slots: dict[str, int | None] = {}
        rates: dict[str, Rate] = {}
        self._declared = {}
        self._hosted = set()
        for qualified in plugins.executor_names():
            try:
                executor_class = plugins.load_executor(qualified)
            except PluginError as exc:
                # still claimed, so that its tasks fail with the plugin's error
                log.warning("%s", exc)
                executors.append(qualified)
                continue
            executors.append(qualified)
            if (getattr(executor_class, "out_of_process", False)
                    or getattr(executor_class, "roadie_env", None) is not None):
                self._hosted.add(qualified)
            if is_async_executor(executor_class):
                self._async_names.add(qualified)
            try:
                limits = limits_of(executor_class)
            except ValueError as exc:
                log.error("roadie: executor %s: %s; its limits are ignored", qualified, exc)
                limits = Limits()
            isolation = executor_class.isolation
            self._declared[qualified] = (limits, isolation.value)
            if isolation not in (Isolation.NOT_ISOLATED, Isolation.CUSTOM):
                # a custom key is computed once, when the task is added
                isolated[qualified] = self.app.isolation_key_function(qualified, executor_class)
            elif isolation is Isolation.NOT_ISOLATED and limits.controlled:
                # its limits hold for all its tasks together: one key, the executor's
                isolated[qualified] = self.app.isolation_key_function(
                    qualified, executor_class, Isolation.CLASS)
            if limits.controlled:
                keyed = isolation is not Isolation.NOT_ISOLATED
                slots[qualified] = (limits.max_running if limits.takes_slot(keyed) else None)
                if limits.rate is not None:
                    rates[qualified] = limits.rate
        claimable = Claimable(
            executors=executors,
            isolated=isolated,
            plugins=plugins.versions(),
            tag_keys=tag_subsets(self.tags),
            slots=slots,
            rates=rates,
        )
        self._claim_sync, self._claim_async = split_claimable(claimable, self._async_names)
        return claimable

    def runs_in_host(self, task: RunningTask) -> bool:
        """Whether ``task`` runs in a host process (``HostPool.wants``); answered without
        making the pool, nor importing roadie.hosts, while none of this worker's executors
        runs in one."""
        if (self._hosts is None and not self._out_of_process
                and task.record.executor not in self._hosted):
            return False
        return self.hosts.wants(task)

    def start_host_templates(self) -> None:
        """Start, in the background, the template host of each environment whose hosts will
        run executors of this node, so that the first task there does not wait for a Python
        process to start and import roadie and the plugins (a worker without such executors
        starts none, and never imports roadie.hosts)."""
        plugins = self.app.plugins
        hosted = []
        for qualified in plugins.executor_names():
            if plugins.executor_error(qualified) is not None:
                continue
            executor_class = plugins.load_executor(qualified)
            if self._out_of_process or executor_class.out_of_process:
                hosted.append(executor_class)
        if hosted:
            self.hosts.start_templates(hosted)

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

    def _advertise(self) -> frozenset[str]:
        """Work out what this node can run, and register its node row (or update it) with
        its executors' limits, in one transaction; returns the executors paused now."""
        self._claimable = self._build_claimable()
        return self.store.advertise_node(self.node_record(), self._declared)

    # -- running -------------------------------------------------------------------------

    def run(self) -> WorkerStats:
        """Run until stopped; returns the counters. Raises ``SchemaMismatchError`` once its
        running tasks have ended when the database's schema changed under it."""
        # a worker in the main thread owns its process: it tunes the garbage collector while
        # it runs (the tune_gc setting; roadie.worker.collector)
        owns_process = threading.current_thread() is threading.main_thread()
        with tuned_collector(self.settings.tune_gc and owns_process):
            return self._run()

    def _run(self) -> WorkerStats:
        hub = self.store.listen(wait=False)  # (connects while the node registers)
        self._claims.paused.seed(self._advertise())  # (the first claim needs no read of them)
        if not self.store.can_listen:
            log.warning(
                "roadie: behind a transaction pooler without listen_url, LISTEN cannot work: "
                "this worker looks for new tasks every %g s (postgres_poll_interval). Set "
                "ROADIE_LISTEN_URL to a direct connection to the server to start them within "
                "milliseconds", self.app.settings.postgres_poll_interval)
        token = hub.subscribe(self._on_notification)
        self.store.wait_listening()  # (LISTEN is in place before the first claim)
        self._signals.install()
        try:
            self.start_host_templates()
            notify_hook(self.app, "roadie_worker_started", worker=self)
            self._start_threads()  # (the maintenance thread sweeps for dead nodes' tasks)
            self._claims.run()
        finally:
            self._stopping.set()
            self._first_round.set()
            notify_hook(self.app, "roadie_worker_stopping", worker=self)
            shut_down(self)
            hub.unsubscribe(token)
            self._signals.restore()
        if self.schema_error is not None:
            raise self.schema_error
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

    def _schema_changed(self, error: SchemaMismatchError) -> None:
        """The database's schema is no longer the one this code knows: a roadie upgraded it
        (or it was downgraded) while this worker ran. Claiming more with statements written
        for another schema could break its rules, so the worker stops as after one SIGTERM:
        its running tasks finish (migrations only add, so their outcomes are still
        written), then ``run`` raises ``error``."""
        self.schema_error = error
        with self._running_lock:
            running = len(self.running)
        log.error("%s; this worker stops claiming, lets its %d running task(s) finish and "
                  "exits", error, running)
        self.stop()

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


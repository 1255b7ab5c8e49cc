"""The worker: a node that claims tasks, runs them on threads, heartbeats, writes progress,
sees cancel requests and timeouts, and recovers the tasks of dead nodes."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import os
import queue
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from roadie.aio_runner import AsyncRunner, is_async_executor, split_claimable
from roadie.errors import PluginError, RoadieError
from roadie.executor import Isolation
from roadie.hookcalls import notify_hook
from roadie.lifecycle import run_attempt
from roadie.records import NodeRecord, TaskRecord
from roadie.running import RunningTask
from roadie.status import FINAL_STATUSES, Status
from roadie.store import (
    CHANNEL_ADDED,
    CHANNEL_CANCEL,
    Claimable,
    Outcome,
    Settled,
    split_payload,
    tag_subsets,
    utcnow,
)
from roadie.worker.maintenance import Maintenance
from roadie.worker.outage import DatabaseOutage
from roadie.worker.progress import ProgressWriter
from roadie.worker.stats import WorkerStats

if TYPE_CHECKING:
    from roadie.app import Roadie
    from roadie.hosts import HostPool
    from roadie.result import Result

__all__ = ["DatabaseOutage", "Worker", "WorkerStats"]

log = logging.getLogger("roadie.worker")
SIGNAL_LATENCY = 0.2  # seconds: how soon the claim loop acts on SIGINT/SIGTERM at most
RUN_TIME_WEIGHT = 0.2  # of the newest attempt in the moving average of run times (prefetch)
ROUND_GATHER = 0.02  # seconds a finished attempt may wait for a bigger round, at most


@dataclass(frozen=True)
class _Done:
    """A finished attempt waiting to be written."""

    task: RunningTask
    outcome: Outcome
    result: Result | None
    error: BaseException | None
    seconds: float = 0.0  # how long the attempt ran
    released: bool = False  # claimed ahead, never started, put back to wait


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
        self._queue: queue.Queue[RunningTask | None] = queue.Queue()
        # claimed tasks that no thread has started yet, with when they were claimed; a thread
        # starts a task only if it takes it out of here first (under _start_lock), so that a
        # task put back (_release_unstarted) is never started as well
        self._unstarted: dict[int, tuple[RunningTask, float]] = {}
        self._starts: list[tuple[int, int, dt.datetime]] = []  # of tasks claimed ahead
        self._start_lock = threading.Lock()
        self._run_time: float | None = None  # moving average of run times (None: unknown)
        # finished attempts to record (appended by threads and the loop, taken by the claim
        # loop: a deque's append and popleft need no lock, a Queue takes one for each)
        self._done: collections.deque[_Done] = collections.deque()
        self._gathering_since: float | None = None  # finished attempts left for a bigger round
        # fewer tasks than this waiting unstarted, the next round is due (set by each round:
        # the threads plus half of what it claimed ahead; read by _gather and _hand_over),
        # and whether a thread handed the GIL over to the claim loop for it
        self._round_due_below = concurrency
        self._handed_over = False
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._stop_now = threading.Event()
        self._progress = ProgressWriter(self)  # the sink of the tasks this worker runs
        self._maintenance = Maintenance(self)
        self._threads: list[threading.Thread] = []
        self.outage = DatabaseOutage(self.settings.heartbeat_interval,
                                     self.settings.heartbeat_grace)
        self._claimable: Claimable | None = None
        # async executors: their own claim, slots and event-loop thread (roadie.aio_runner)
        self._async_names: set[str] = set()
        self._async_ids: set[int] = set()
        self._claim_sync: Claimable | None = None
        self._claim_async: Claimable | None = None
        self._runner: AsyncRunner | None = None
        # a kind of claim (thread or async executors) that came back short is skipped until
        # a task is added (or ended, which may free a lock) or the poll interval passes
        self._may_claim = {"sync": True, "async": True}
        self._claimed_short_at = {"sync": 0.0, "async": 0.0}
        # this node's settle and live-state writes take turns on PostgreSQL, where the two
        # locking the same rows in different orders could deadlock (SQLite has one writer at
        # a time anyway; the heartbeat skips rows that are held)
        self._writes: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self.store.is_postgres else contextlib.nullcontext())
        self._out_of_process = out_of_process
        self._hosts: HostPool | None = None
        self._hosts_lock = threading.Lock()

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
            self._claim_loop()
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
            self._may_claim["sync"] = self._may_claim["async"] = True
            self._wake.set()
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
        for index in range(self.concurrency):
            thread = threading.Thread(target=self._thread_main, name=f"roadie-worker-{index}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        if self._claim_async is not None:
            self._runner = AsyncRunner()
            self._runner.start()
        self._maintenance.start()

    def _claim_loop(self) -> None:
        """Settle finished attempts and claim new tasks, one transaction per round, until
        stopped (and every running task is settled) or idle."""
        assert self._claimable is not None
        poll = self.settings.poll_interval(self.store.is_postgres)
        while True:
            self._wake.clear()
            self._take_signals()
            if self._stop_now.is_set():
                return
            if self._gather():
                self._wait(self._wake, ROUND_GATHER)
                continue
            done = self._take_done()
            starts = self._take_starts(done)
            stopping = self._stopping.is_set()
            with self._running_lock:
                busy = len(self.running) - len(done)
                busy_async = len(self._async_ids) - sum(d.task.id in self._async_ids
                                                        for d in done)
            if stopping:
                self._release_unstarted(0.0)  # nothing claimed ahead runs after a stop
            ahead = 0 if stopping else self._claim_ahead()
            free = 0 if stopping else self.concurrency + ahead - (busy - busy_async)
            free_async = 0 if stopping or self._claim_async is None else (
                self.async_concurrency - busy_async)
            if self._claim_sync is None:
                free = 0
            now = time.monotonic()
            if any(self._isolated(d) or d.outcome.status not in FINAL_STATUSES
                   for d in done):  # a freed lock, a retry: claim both kinds
                self._may_claim["sync"] = self._may_claim["async"] = True
            claims = [(kind, claimable, limit) for kind, claimable, limit in (
                ("async", self._claim_async, free_async), ("sync", self._claim_sync, free))
                if limit > 0 and (self._may_claim[kind]
                                  or now - self._claimed_short_at[kind] >= poll)]
            if done or claims or starts:
                try:
                    settled = self._settle(done, claims, ahead, starts)
                except RoadieError as exc:
                    self.outage.failed(exc)
                    self._requeue_done(done)
                    with self._start_lock:
                        self._starts.extend(starts)
                    self._may_claim["sync"] = self._may_claim["async"] = True
                    self._wait(self._stopping, poll)
                    continue
                self.outage.reached()
                self.stats.claims += bool(claims)
                try:
                    self._after_settle(done, settled.finished)
                except Exception:
                    log.exception("roadie: after recording %d ended task(s)", len(done))
                self._accept_all(settled.claimed)
                self._round_due_below = self.concurrency + ahead // 2
                self._handed_over = False
                if settled.claimed or done or settled.parked:
                    continue
            if stopping and busy <= 0:
                return
            if self.until_idle and busy <= 0 and self._idle():
                return
            # starts to record go with the next round: at the latest one status_interval on
            self._wait(self._wake, self.settings.status_interval if self._starts else poll)

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

    def _settle(self, done: list[_Done], claims: list[tuple[str, Claimable | None, int]],
                ahead: int = 0, starts: list[tuple[int, int, dt.datetime]] | None = None,
                ) -> Settled:
        """Record ``done`` and make the ``claims`` (kind, claimable, free slots: for threads,
        for async executors), in one transaction; a kind of claim that comes back short is
        not repeated for a while. Of a claim for threads, the last ``ahead`` tasks are
        claimed ahead of a free thread; ``starts`` records when threads started tasks
        claimed ahead."""
        assert self._claimable is not None
        wanted = {kind: (claimable, limit) for kind, claimable, limit in claims}
        for kind in wanted:
            self._may_claim[kind] = False  # a task added from now on sets it again
        outcomes = [(d.outcome, self._isolated(d)) for d in done]
        can, limit = wanted.get("sync", (None, 0))
        can_async, limit_async = wanted.get("async", (None, 0))
        with self._writes:
            settled = self.store.settle(self.id, outcomes, can, limit, can_async, limit_async,
                                        ahead=ahead if can is not None else 0,
                                        started=starts or (),
                                        claimed_as={d.task.id: d.task.record for d in done},
                                        decoder=self.app.decode_for_task)
        if wanted:
            got_async = sum(r.executor in self._async_names for r in settled.claimed)
            got = {"sync": len(settled.claimed) - got_async, "async": got_async}
            for kind, (_, kind_limit) in wanted.items():
                # there may be more; a round that parked candidates (their isolation key was
                # taken) may find runnable tasks behind them: claim again at once
                if got[kind] >= kind_limit or settled.parked:
                    self._may_claim[kind] = True
                else:
                    self._claimed_short_at[kind] = time.monotonic()
        return settled

    def _isolated(self, done: _Done) -> bool:
        """Whether a finished attempt may hold an isolation lock (released when settled)."""
        assert self._claimable is not None
        record = done.task.record
        return record.isolation_key is not None or record.executor in self._claimable.isolated

    def _gather(self) -> bool:
        """Whether to leave the finished attempts for a later, bigger round: while the
        threads still have more than half of the tasks claimed ahead queued, a round now
        would claim little, and rounds of a few tasks cost more per task. (From half on, a
        round runs: the threads have work while the database answers.) Not for longer than
        ROUND_GATHER after the first of them finished, nor when stopping."""
        if not self._done or self._stopping.is_set():
            self._gathering_since = None
            return False
        queued = len(self._unstarted)  # (a length needs no lock)
        now = time.monotonic()
        if queued < self._round_due_below:
            self._gathering_since = None
            return False
        if self._gathering_since is None:
            self._gathering_since = now
        if now - self._gathering_since >= ROUND_GATHER:
            self._gathering_since = None
            return False
        return True

    def _take_done(self) -> list[_Done]:
        done = []
        while True:
            try:
                done.append(self._done.popleft())
            except IndexError:
                return done

    def _take_starts(self, done: list[_Done]) -> list[tuple[int, int, dt.datetime]]:
        """The starts of tasks claimed ahead to record (those that ended already go with
        their outcome)."""
        with self._start_lock:
            starts, self._starts = self._starts, []
        ended = {d.task.id for d in done}
        return [start for start in starts if start[0] not in ended]

    def _requeue_done(self, done: list[_Done]) -> None:
        for item in done:
            self._done.append(item)

    def _after_settle(self, done: list[_Done], finished: list[TaskRecord]) -> None:
        records = {r.id: r for r in finished}
        self._progress.forget([item.task.id for item in done])
        for item in done:
            task_id = item.task.id
            with self._running_lock:
                self.running.pop(task_id, None)
                self._async_ids.discard(task_id)
            record = records.get(task_id)
            if item.released:
                self.stats.released += record is not None
                continue
            self._run_time = item.seconds if self._run_time is None else (
                self._run_time + RUN_TIME_WEIGHT * (item.seconds - self._run_time))
            if record is None:
                item.task.taken_over = True
                self.refused(item.task, f"outcome ({item.outcome.status.label})")
                continue
            self.stats.finished += 1
            label = item.outcome.status.label
            self.stats.by_status[label] = self.stats.by_status.get(label, 0) + 1
            self.app.after_finish(record, item.outcome, item.result, item.error)

    def _idle(self) -> bool:
        assert self._claimable is not None
        return not self.app.has_pending_work(self._claimable)

    def _accept_all(self, records: list[TaskRecord]) -> None:
        """Start claimed tasks: async ones on the loop (one wake-up for all), the others on
        the threads (each lock taken once for the whole batch)."""
        on_loop: list[RunningTask] = []
        on_threads: list[RunningTask] = []
        sink, settings = self._progress, self.settings
        for record in records:  # settled with the app's decoder
            running = RunningTask(self.app, record, sink=sink,
                                  max_messages=settings.max_status_messages,
                                  child_width=settings.child_width)
            is_async = (record.executor in self._async_names and self._runner is not None
                        and not self.hosts.wants(running))  # a host runs its own loop
            (on_loop if is_async else on_threads).append(running)
        with self._running_lock:
            for running in on_loop + on_threads:
                self.running[running.id] = running
            self._async_ids.update(running.id for running in on_loop)
        self.stats.claimed += len(records)
        if on_threads:
            claimed_at = time.monotonic()
            with self._start_lock:
                for running in on_threads:
                    self._unstarted[running.id] = (running, claimed_at)
            for running in on_threads:
                self._queue.put(running)
        if on_loop:
            assert self._runner is not None
            self._runner.submit_many([(running, functools.partial(self._run_and_report, running))
                                      for running in on_loop])

    def _thread_main(self) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            with self._start_lock:
                entry = self._unstarted.get(task.id)
                if entry is None or entry[0] is not task:
                    continue  # put back while it waited here
                del self._unstarted[task.id]
                task.started = time.monotonic()
                began = None
                if task.record.started_at is None:  # claimed ahead: the next round records it
                    began = utcnow()
                    self._starts.append((task.id, task.attempt, began))
            self._run_and_report(task, began)

    def _claim_ahead(self) -> int:
        """How many tasks to claim beyond the free threads: as many as the threads are
        expected to start within ``prefetch_short`` seconds (from the moving average of run
        times), at most ``Settings.prefetch``; none until a task has ended here, nor while the
        tasks this node runs are not short on average (under ``prefetch_short``). A thread
        busy with a task that has run longer than that counts for none: one long task (a
        serial task holding its key, an export) leaves the other threads their prefetch,
        and a node whose threads all run long tasks claims none ahead."""
        prefetch, short = self.settings.prefetch, self.settings.prefetch_short
        if prefetch <= 0 or self._run_time is None or self._run_time >= short:
            return 0
        oldest = time.monotonic() - short
        with self._running_lock:
            long_running = sum(t.started is not None and t.started < oldest
                               and task_id not in self._async_ids
                               for task_id, t in self.running.items())
        threads = self.concurrency - long_running
        if threads <= 0:
            return 0
        return min(prefetch, int(threads * short / max(self._run_time, 1e-6)))

    def _release_unstarted(self, hold: float) -> None:
        """Put back every task that was claimed more than ``hold`` seconds ago and that no
        thread has started: any node may take it (the attempt does not count)."""
        if not self._unstarted:
            return
        since = time.monotonic() - hold
        with self._start_lock:
            stale = [task for task, claimed_at in self._unstarted.values()
                     if claimed_at <= since and not task.cancelled]
            for task in stale:
                del self._unstarted[task.id]
        for task in stale:
            outcome = Outcome(task.id, Status.NEW, "", attempt_counts=False,
                              attempt=task.attempt)
            self._done.append(_Done(task, outcome, None, None, released=True))
        if stale:
            self._wake.set()

    def _run_and_report(self, task: RunningTask, began: dt.datetime | None = None) -> None:
        try:
            self._done.append(self._run_one(task, began))
        except BaseException as exc:  # a bug in roadie itself: still end the task
            log.exception("roadie: unexpected error while running task %s", task.id)
            outcome = Outcome(task.id, Status.FAILED, f"roadie internal error: {exc!r}",
                              attempt=task.attempt, started_at=began)
            self._done.append(_Done(task, outcome, None, exc))
        self._wake.set()
        self._hand_over()

    def _hand_over(self) -> None:
        """Let the claim loop run its next round once it is due. While they have tasks, the
        threads pass the GIL between them, and the claim loop, though woken, would get it
        only when both wait on an empty queue: a round, then its tasks, then the next round,
        in series. So once per round the thread that sees fewer tasks waiting than the gather
        rule's threshold sleeps for no time, which hands the GIL over: the round then runs
        while the threads work through the rest (drains 2-29% faster, 17% in the median)."""
        if not self._handed_over and len(self._unstarted) < self._round_due_below:
            self._handed_over = True
            time.sleep(0)

    def _run_one(self, task: RunningTask, began: dt.datetime | None = None) -> _Done:
        if task.started is None:  # timeouts count from here, not from the claim
            task.started = time.monotonic()
        started = task.started
        if self.hosts.wants(task):  # an env executor, out_of_process, or --out-of-process
            outcome, result, error = self.hosts.run_attempt(task)
        else:
            outcome, result, error = run_attempt(self.app, task)
        task.ended = True
        status_bytes, messages, checkpoint = self._progress.final_state(task)
        outcome = dataclasses.replace(outcome, task_status=status_bytes, messages=messages,
                                      checkpoint=checkpoint, attempt=task.attempt,
                                      started_at=began)
        return _Done(task, outcome, result, error, seconds=time.monotonic() - started)

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
        if self._stop_now.is_set():
            self.hosts.close()
            self._settle_leftovers()  # tasks that ended keep their real outcome
            self._abandon_running()
        for _ in self._threads:
            self._queue.put(None)
        if not self._stop_now.is_set():
            for thread in self._threads:
                thread.join()
            self._maintenance.join(timeout=10)
            self._settle_leftovers()  # attempts that ended after the claim loop stopped
        if self._runner is not None:
            if "aio" in self.app.__dict__:  # async executors used app.aio on this loop
                try:
                    self._runner.run(self.app.aio.close())
                except Exception:
                    log.exception("roadie: closing the async client's connections")
            self._runner.stop()
        self.hosts.close()
        try:
            self.store.stop_node(self.id)
        except RoadieError as exc:
            log.warning("could not mark node %s stopped: %s", self.id, exc)

    def _settle_leftovers(self) -> None:
        done = self._take_done()
        if not done:
            return
        try:
            settled = self.store.settle(self.id, [(d.outcome, True) for d in done], None, 0,
                                        decoder=self.app.decode_for_task)
            self._after_settle(done, settled.finished)
        except Exception:
            log.exception("roadie: could not record %d ended task(s) at shutdown", len(done))

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

"""The claim loop: the worker's rounds, and the threads that run what the rounds claim.

A round is one transaction (``Store.settle``): it records the attempts that ended since the
last round and claims tasks for the free slots, thread slots and async ones. A task claimed
for a thread waits in a queue until one of the ``concurrency`` threads starts it; an async
one goes to the event loop of ``roadie.aio_runner``. Each attempt that ends, with its last
live state, goes back to the loop for the next round. The loop ends when the worker stops
(once every running task is settled) or, with ``until_idle``, when nothing is left to run.

What keeps the rounds few and full:

- claiming ahead (prefetch): while the tasks this node runs are short, a round claims more
  than the free threads, as many as they should start within ``prefetch_short``; a task
  claimed ahead that no thread starts within ``prefetch_hold`` is put back for any node;
- the gather rule: finished attempts wait for a bigger round (ROUND_GATHER at most) while
  the threads still have enough tasks queued;
- the hand-over: once per round a thread yields the GIL, so that the next round runs while
  the threads work through the rest;
- a kind of claim that came back short is not repeated until a task is added or one ends
  (which may free an isolation lock) or the poll interval passes; a round that parked
  candidates (their isolation key was taken) claims again at once.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from roadie.aio_runner import AsyncRunner
from roadie.errors import RoadieError
from roadie.lifecycle import release_error, run_attempt
from roadie.records import TaskRecord, instance_of, instance_with_defaults
from roadie.running import RunningTask
from roadie.status import FINAL_STATUSES, Status
from roadie.store import Claimable, Outcome, Settled, utcnow
from roadie.worker.paused import PausedExecutors

if TYPE_CHECKING:
    from roadie.result import Result
    from roadie.worker import Worker

log = logging.getLogger("roadie.worker")
RUN_TIME_WEIGHT = 0.2  # of the newest attempt in the moving average of run times (prefetch)
LONG_RUN = 2.0  # a task that has run this many times the average run time or more is long
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


# seconds a task claimed ahead before a run time was known (_first_ahead) waits for a slot
# before it is put back, at most (prefetch_hold if shorter): the slots' first tasks may be long
GUESS_HOLD = 0.2
THROTTLE_MARGIN = 0.002  # seconds after a rate's next start frees that the claim looks again


class ClaimLoop:
    """The rounds of one worker (``run``, in the thread that runs the worker) and the threads
    that run the tasks they claim (``start``, and at shutdown ``end_threads``)."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        # what the parts of the worker share, held here too: the hot path reads its own
        # attributes, not the worker's
        self.app = worker.app
        self.store = worker.store
        self.settings = worker.settings
        self.stats = worker.stats
        self.outage = worker.outage
        self.running = worker.running
        self._running_lock = worker._running_lock
        self._async_ids = worker._async_ids
        self._async_names = worker._async_names
        self._progress = worker._progress
        self._writes = worker._writes
        self._wake = worker._wake
        self._stopping = worker._stopping
        self._stop_now = worker._stop_now
        self._signals = worker._signals
        self._queue: queue.Queue[RunningTask | None] = queue.Queue()
        # claimed tasks that no thread has started yet, with when they were claimed; a thread
        # starts a task only if it takes it out of here first (under _start_lock), so that a
        # task put back (release_unstarted) is never started as well
        self._unstarted: dict[int, tuple[RunningTask, float]] = {}
        self._starts: list[tuple[int, int, dt.datetime]] = []  # of tasks claimed ahead
        self._start_lock = threading.Lock()
        # moving average of run times, per kind of slot (None: unknown)
        self._run_time: dict[str, float | None] = {"sync": None, "async": None}
        # finished attempts to record (appended by threads and the loop, taken by the claim
        # loop: a deque's append and popleft need no lock, a Queue takes one for each)
        self._done: collections.deque[_Done] = collections.deque()
        self._gathering_since: float | None = None  # finished attempts left for a bigger round
        # fewer tasks than this waiting unstarted, the next round is due (set by each round:
        # the threads plus half of what it claimed ahead; read by _gather and _hand_over),
        # and whether a thread handed the GIL over to the claim loop for it
        self._round_due_below = worker.concurrency
        self._handed_over = False
        # a kind of claim (thread or async executors) that came back short is skipped until
        # a task is added (or ended, which may free a lock) or the poll interval passes
        self._may_claim = {"sync": True, "async": True}
        self._claimed_short_at = {"sync": 0.0, "async": 0.0}
        self._threads: list[threading.Thread] = []
        self._runner: AsyncRunner | None = None  # async executors' loop (roadie.aio_runner)
        self.paused = PausedExecutors(worker)  # the claim leaves paused executors out
        self._throttled_until: float | None = None  # monotonic: a rate's next start frees
        self._first_noted = False  # the first round is over (_first_round_over)
        self._guessed = False  # async slots had tasks claimed ahead before a run time was known
        self._guessed_ids: set[int] = set()  # those tasks, until started or put back

    # -- the threads and the async runner ------------------------------------------------

    def start(self) -> None:
        """Start the threads, and the async executors' event loop if this node runs any."""
        for index in range(self._worker.concurrency):
            thread = threading.Thread(target=self.thread_main, name=f"roadie-worker-{index}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        if self._worker._claim_async is not None:
            self._runner = AsyncRunner(slots=self._worker.async_concurrency)
            self._runner.start()

    def end_threads(self) -> None:
        """Tell the threads to end once they are through with what is queued for them."""
        for _ in self._threads:
            self._queue.put(None)

    def join_threads(self) -> None:
        """Wait for the threads to end."""
        for thread in self._threads:
            thread.join()

    def stop_runner(self) -> None:
        """Stop the async executors' event loop, closing the app's async client on it first
        if they used it."""
        runner = self._runner
        if runner is None:
            return
        if "aio" in self.app.__dict__:  # async executors used app.aio on this loop
            try:
                runner.run(self.app.aio.close())
            except Exception:
                log.exception("roadie: closing the async client's connections")
        runner.stop()

    # -- the rounds ------------------------------------------------------------------------

    def wake_to_claim(self) -> None:
        """A task was added: the next round claims both kinds again, now."""
        self._may_claim["sync"] = self._may_claim["async"] = True
        self._wake.set()

    def run(self) -> None:
        """Settle finished attempts and claim new tasks, one transaction per round, until
        stopped (and every running task is settled) or idle."""
        worker = self._worker
        assert worker._claimable is not None
        poll = self.settings.poll_interval(self.store.is_postgres)
        take_signals, wait = self._signals.take, self._signals.wait
        while True:
            self._wake.clear()
            take_signals()
            if self._stop_now.is_set():
                return
            if self._gather():
                wait(self._wake, ROUND_GATHER)
                continue
            done = self._take_done()
            if done:  # (before this round's claim ahead, which they inform)
                self._note_run_times(done)
            starts = self._take_starts(done)
            stopping = self._stopping.is_set()
            with self._running_lock:
                busy = len(self.running) - len(done)
                busy_async = len(self._async_ids) - sum(d.task.id in self._async_ids
                                                        for d in done)
            if stopping:
                self.release_unstarted(0.0)  # nothing claimed ahead runs after a stop
            concurrency = worker.concurrency
            ahead = 0 if stopping else self._claim_ahead("sync")
            free = 0 if stopping else concurrency + ahead - (busy - busy_async)
            if self.paused.refresh():  # a pause or a resume: claim again, without them
                self._may_claim["sync"] = self._may_claim["async"] = True
            claim_sync = self.paused.without_paused(worker._claim_sync)
            claim_async = self.paused.without_paused(worker._claim_async)
            guessing = self._guessed
            ahead_async = 0 if stopping or claim_async is None else self._claim_ahead("async")
            guessing = self._guessed and not guessing  # this round's claim ahead is the guess
            free_async = 0 if stopping or claim_async is None else (
                worker.async_concurrency + ahead_async - busy_async)
            if claim_sync is None:
                free = 0
            now = time.monotonic()
            outcomes = self._outcomes(done) if done else []
            if any(held or outcome.status not in FINAL_STATUSES
                   for outcome, held in outcomes):  # a freed lock, a retry: claim both kinds
                self._may_claim["sync"] = self._may_claim["async"] = True
            claims = [(kind, claimable, limit) for kind, claimable, limit in (
                ("async", claim_async, free_async), ("sync", claim_sync, free))
                if limit > 0 and (self._may_claim[kind]
                                  or now - self._claimed_short_at[kind] >= poll)]
            if done or claims or starts:
                try:
                    settled = self._settle(done, outcomes, claims, (ahead, ahead_async),
                                           starts)
                except RoadieError as exc:
                    self.outage.failed(exc)
                    self._requeue_done(done)
                    with self._start_lock:
                        self._starts.extend(starts)
                    self._may_claim["sync"] = self._may_claim["async"] = True
                    self._first_round_over()
                    # (stopping already: wait all the same, to try again)
                    wait(self._stop_now if stopping else self._stopping, poll)
                    continue
                self.outage.reached()
                self.stats.claims += bool(claims)
                try:
                    self._after_settle(done, settled.finished)
                except Exception:
                    log.exception("roadie: after recording %d ended task(s)", len(done))
                self._accept_all(settled.claimed, guessed=guessing)
                self._first_round_over()
                # (in the first generation, the guess of _first_ahead still waits, though
                # these rounds claim nothing ahead: half of it, not nothing)
                self._round_due_below = concurrency + (
                    ahead + (ahead_async or len(self._guessed_ids))) // 2
                self._handed_over = False
                if settled.throttled_until is not None:  # (a little late rather than early)
                    self._throttled_until = min(
                        self._throttled_until or float("inf"),
                        time.monotonic() + THROTTLE_MARGIN
                        + (settled.throttled_until - utcnow()).total_seconds())
                if settled.claimed or done or settled.parked:
                    continue
            self._first_round_over()
            if stopping and busy <= 0:
                return
            if worker.until_idle and busy <= 0 and self._idle():
                return
            # starts to record go with the next round: at the latest one status_interval on;
            # a head held back by its rate: when its next start frees
            timeout = self.settings.status_interval if self._starts else poll
            if self._throttled_until is not None:
                timeout = max(0.0, min(timeout, self._throttled_until - time.monotonic()))
            if timeout > 0:
                wait(self._wake, timeout)
            if (self._throttled_until is not None
                    and time.monotonic() >= self._throttled_until):
                self._throttled_until = None
                self._may_claim["sync"] = self._may_claim["async"] = True

    def _first_round_over(self) -> None:
        """Let the first sweep for dead nodes' tasks begin (once): when the async tasks of the
        first round have started on the loop (the loop runs this after them), else now."""
        first = self._worker._first_round
        if first.is_set() or self._first_noted:
            return
        self._first_noted = True
        if self._runner is not None:
            self._runner.after_queued(self._first_started)
        else:
            first.set()

    def _first_started(self) -> None:
        """(On the loop) the first round's async tasks have started: the first sweep may
        begin, and the next round may claim ahead of the busy slots (``_first_ahead``)."""
        self._worker._first_round.set()
        self._wake.set()

    def _outcomes(self, done: list[_Done]) -> list[tuple[Outcome, bool]]:
        """The outcomes of ``done`` to record, each with whether its attempt may hold an
        isolation lock (released when it is settled)."""
        claimable = self._worker._claimable
        assert claimable is not None
        isolated = claimable.isolated
        outcomes = []
        for item in done:
            record = item.task.record
            outcomes.append((item.outcome, record.isolation_key is not None
                             or record.executor in isolated))
        return outcomes

    def _settle(self, done: list[_Done], outcomes: list[tuple[Outcome, bool]],
                claims: list[tuple[str, Claimable | None, int]],
                ahead: tuple[int, int] = (0, 0),
                starts: list[tuple[int, int, dt.datetime]] | None = None) -> Settled:
        """Record ``done`` (their ``outcomes``) and make the ``claims`` (kind, claimable, free
        slots: for threads, for async executors), in one transaction; a kind of claim that
        comes back short is not repeated for a while. Of each claim, the last tasks (``ahead``:
        for threads, for async slots) are claimed ahead of a free slot; ``starts`` records when
        tasks claimed ahead started."""
        wanted = {kind: (claimable, limit) for kind, claimable, limit in claims}
        for kind in wanted:
            self._may_claim[kind] = False  # a task added from now on sets it again
        can, limit = wanted.get("sync", (None, 0))
        can_async, limit_async = wanted.get("async", (None, 0))
        with self._writes:
            settled = self.store.settle(self._worker.id, outcomes, can, limit, can_async,
                                        limit_async, ahead=ahead[0] if can is not None else 0,
                                        ahead_async=ahead[1] if can_async is not None else 0,
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

    def _note_run_times(self, done: list[_Done]) -> None:
        """Fold the run times of the attempts in ``done`` into the moving averages of their
        kind of slot (which size the claim ahead)."""
        run_time, async_ids = self._run_time, self._async_ids
        for item in done:
            if item.released:
                continue
            kind = "async" if item.task.id in async_ids else "sync"
            average = run_time[kind]
            run_time[kind] = item.seconds if average is None else (
                average + RUN_TIME_WEIGHT * (item.seconds - average))

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
        ends = []  # for the overview's rollup, counted under one lock
        for item in done:
            task_id = item.task.id
            with self._running_lock:
                self.running.pop(task_id, None)
                self._async_ids.discard(task_id)
            record = records.get(task_id)
            if item.released:
                self.stats.released += record is not None
                continue
            if record is None:
                item.task.taken_over = True
                self._worker.refused(item.task, f"outcome ({item.outcome.status.label})")
                continue
            self.stats.finished += 1
            ends.append((record.executor, item.outcome.status, record.finished_at or utcnow(),
                         item.seconds if item.outcome.attempt_counts else None))
            label = item.outcome.status.label
            self.stats.by_status[label] = self.stats.by_status.get(label, 0) + 1
            self.app.after_finish(record, item.outcome, item.result, item.error)
        if ends:
            self.app.rollup.ended_many(ends)
        for item in done:  # (its hooks have seen it: what it holds goes with the attempt)
            release_error(item.error)

    def settle_leftovers(self) -> None:
        """At shutdown: record the attempts that ended after the last round."""
        done = self._take_done()
        if not done:
            return
        try:
            settled = self.store.settle(self._worker.id, [(d.outcome, True) for d in done],
                                        None, 0, decoder=self.app.decode_for_task)
            self._after_settle(done, settled.finished)
        except Exception:
            log.exception("roadie: could not record %d ended task(s) at shutdown", len(done))

    def _idle(self) -> bool:
        """Nothing left to run: the sweep for dead nodes' tasks as the worker started is
        done, and no task it can run is due."""
        if not self._worker._swept.is_set():
            return False  # (the sweep wakes the loop when it is done)
        claimable = self.paused.without_paused(self._worker._claimable)
        return claimable is None or not self.app.has_pending_work(claimable)

    # -- from a claim to a finished attempt ------------------------------------------------

    def _accept_all(self, records: list[TaskRecord], *, guessed: bool = False) -> None:
        """Start claimed tasks: async ones on the loop (one wake-up for all), the others on
        the threads (each lock taken once for the whole batch). ``guessed``: the async ones
        claimed ahead were claimed by ``_first_ahead``."""
        on_loop: list[RunningTask] = []
        on_threads: list[RunningTask] = []
        sink, settings = self._progress, self.settings
        for record in records:  # settled with the app's decoder
            running = RunningTask(self.app, record, sink=sink,
                                  max_messages=settings.max_status_messages,
                                  child_width=settings.child_width)
            is_async = (record.executor in self._async_names and self._runner is not None
                        and not self._worker.runs_in_host(running))  # a host runs its own loop
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
            ahead = [running for running in on_loop if running.record.started_at is None]
            if ahead:  # claimed ahead of a free slot: started as slots free, or put back
                claimed_at = time.monotonic()
                with self._start_lock:
                    if guessed:  # put back sooner (release_unstarted)
                        self._guessed_ids.update(running.id for running in ahead)
                    for running in ahead:
                        self._unstarted[running.id] = (running, claimed_at)
            self._runner.submit_many([(running, functools.partial(self._start_async, running))
                                      for running in on_loop])

    def thread_main(self) -> None:
        """The body of each thread: start queued tasks until told to end."""
        while True:
            task = self._queue.get()
            if task is None:
                return
            began = self._take_to_start(task)
            if began is not False:
                self._run_and_report(task, began)

    def _start_async(self, task: RunningTask) -> None:
        """Start an async attempt (on the loop, in its greenlet, once it has a slot); one
        claimed ahead only if it was not put back meanwhile."""
        if task.record.started_at is None:
            began = self._take_to_start(task)
            if began is False:
                return
            self._run_and_report(task, began)
        else:
            task.started = time.monotonic()
            self._run_and_report(task)

    def _take_to_start(self, task: RunningTask) -> dt.datetime | Literal[False] | None:
        """Take a claimed task out of the unstarted ones to start it: False if it was put
        back while it waited (it must not start); else when it started, if it was claimed
        ahead (the next round records that start), or None."""
        with self._start_lock:
            entry = self._unstarted.get(task.id)
            if entry is None or entry[0] is not task:
                return False  # put back while it waited
            del self._unstarted[task.id]
            task.started = time.monotonic()
            began = None
            if task.record.started_at is None:  # claimed ahead: the next round records it
                began = utcnow()
                self._starts.append((task.id, task.attempt, began))
        return began

    def _claim_ahead(self, kind: str) -> int:
        """How many tasks to claim beyond the free slots of a ``kind`` ("sync": threads,
        "async": async slots): as many as those slots are expected to start within
        ``prefetch_short`` seconds (from the moving average of their run times), at most
        ``Settings.prefetch``; none while that average is over LONG_RUN times
        ``prefetch_short``, and until a task of that kind has ended here, none but the async
        slots' one claim of ``_first_ahead``. A slot busy with a long task
        counts for none: one that has run longer than ``prefetch_short`` and than LONG_RUN
        times the average (a task of about the average is not long, even as it ends; a slot
        whose task ended and waits for the round to record it is free).
        One long task (a serial task holding its key, an export) leaves the other slots
        their prefetch, and a node whose slots all run long tasks claims none ahead. So one
        thread never has a task of ``prefetch_short`` or longer claimed ahead, while 200
        async slots whose tasks take ``prefetch_short`` start about one every half
        millisecond and may have up to 200 (capped by ``prefetch``)."""
        prefetch, short = self.settings.prefetch, self.settings.prefetch_short
        run_time = self._run_time[kind]
        if run_time is None and prefetch > 0:
            return self._first_ahead(kind)
        if prefetch <= 0 or run_time is None or run_time > LONG_RUN * short:
            return 0  # (tasks this long: the rounds keep up, a start claimed ahead costs a write)
        on_loop = kind == "async"
        oldest = time.monotonic() - max(short, LONG_RUN * run_time)
        async_ids = self._async_ids
        with self._running_lock:
            long_running = sum(t.started is not None and t.started < oldest and not t.ended
                               and (task_id in async_ids) == on_loop
                               for task_id, t in self.running.items())
        slots = (self._worker.async_concurrency if on_loop
                 else self._worker.concurrency) - long_running
        if slots <= 0:
            return 0
        return min(prefetch, int(slots * short / max(run_time, 1e-6)))

    def _first_ahead(self, kind: str) -> int:
        """Claim ahead before a run time is known, once: when every async slot is busy with
        the first round's tasks (started on the loop), as many tasks as there are slots (at
        most ``prefetch``), so that the second generation starts as the first ends rather
        than a round later. Bounded as any claim ahead (what no slot starts within
        ``prefetch_hold`` is put back, and these within GUESS_HOLD), and once only: tasks
        that turn out long are not claimed ahead again. Threads never: they start in turn,
        a round keeps up with them."""
        if kind != "async" or self._guessed or not self._worker._first_round.is_set():
            return 0
        slots = self._worker.async_concurrency
        with self._running_lock:
            busy = len(self._async_ids)
        if busy < slots:
            return 0  # (a slot is free: the claim fills it, nothing need wait ahead)
        self._guessed = True
        return min(self.settings.prefetch, slots)

    def release_unstarted(self, hold: float) -> None:
        """Put back every task that was claimed more than ``hold`` seconds ago and that no
        thread or async slot has started: any node may take it (the attempt does not
        count)."""
        if not self._unstarted:
            if self._guessed_ids:  # (all started)
                with self._start_lock:
                    if not self._unstarted:
                        self._guessed_ids.clear()
            return
        now = time.monotonic()
        since, guess_since = now - hold, now - min(hold, GUESS_HOLD)
        guessed = self._guessed_ids
        with self._start_lock:
            stale = [task for task, claimed_at in self._unstarted.values()
                     if (claimed_at <= since
                         or (task.id in guessed and claimed_at <= guess_since))
                     and not task.cancelled]
            for task in stale:
                del self._unstarted[task.id]
            if guessed:
                guessed.intersection_update(self._unstarted)
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
        if not self._wake.is_set():  # (set takes the event's lock and notifies: once will do)
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
        record = task.record
        if not task.cancelled:  # (one cancelled while it waited for a thread never starts)
            now = began or record.started_at or utcnow()  # (set by the claim, or began)
            self.app.rollup.started(record.executor, now, (
                now - max(record.created_at, record.run_after)).total_seconds())
        if self._worker.runs_in_host(task):  # an env executor, out_of_process, or all
            outcome, result, error = self._worker.hosts.run_attempt(task)
        else:
            outcome, result, error = run_attempt(self.app, task)
        task.ended = True
        status_bytes, messages, checkpoint = self._progress.final_state(task)
        outcome = instance_of(Outcome, {  # (dataclasses.replace, without its per-field cost)
            **outcome.__dict__, "task_status": status_bytes, "messages": messages,
            "checkpoint": checkpoint, "attempt": task.attempt, "started_at": began})
        try:
            return instance_with_defaults(_Done, {"task": task, "outcome": outcome,
                                                  "result": result, "error": error,
                                                  "seconds": time.monotonic() - started})
        finally:  # (the error's traceback holds this frame: no cycle through its locals)
            del error

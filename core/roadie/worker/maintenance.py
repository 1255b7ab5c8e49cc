"""The worker's maintenance thread, beside the claim loop and the threads that run tasks.

Every ``status_interval`` it writes the live state of running tasks that changed, stops the
tasks past their timeout, and puts back the tasks claimed ahead that no thread started within
``prefetch_hold``. Less often: it asks for cancel requests (``cancel_poll_interval``, in case
a notification was missed); it heartbeats the node and its running attempts, advertising its
executors anew when an environment changed, checks that the database's schema revision is
still the code's, and sweeps for the tasks of dead nodes (``heartbeat_interval``); and it
deletes ended tasks past the retention, a few batches per tick so that no heartbeat is late
(``retention_interval``). It writes the overview's counts (once a second) and a sample of
the queue's depth (once a minute, by the first node to look). After a stop it goes on while
tasks still run. A failure is logged (a database error through the outage log) and the next
tick tries again: nothing stops the heartbeat but the worker's end."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import TYPE_CHECKING

from roadie.errors import DatabaseError, RoadieError
from roadie.retention import BATCH, cutoffs, parse_retention, prune
from roadie.rollup import minute_of
from roadie.store import utcnow

if TYPE_CHECKING:
    from roadie.worker import Worker

log = logging.getLogger("roadie.worker")
PRUNE_BATCHES = 10  # retention: batches of deletes per maintenance tick, at most
# the rows of nodes gone this long are deleted (every restart of a worker adds one: on
# Kubernetes, one per pod), looked for this often
NODES_KEPT = dt.timedelta(days=7)
FORGET_NODES_EVERY = 3600.0
FIRST_SWEEP_WAIT = 1.0  # seconds the first sweep waits for the first round, at most
ROLLUP_FLUSH_INTERVAL = 1.0  # seconds between writes of the overview's counts, at least


class Maintenance:
    """The maintenance thread of one worker (``start``, then ``join`` when it stops)."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._retention = parse_retention(worker.settings.retention)  # a bad value fails here
        self._thread: threading.Thread | None = None
        # the minute of the last depth sample: from the next one on (a worker that just
        # started has other work: a drain measurably slowed by it)
        self._sampled: dt.datetime | None = minute_of(utcnow())

    def start(self) -> None:
        """Start the thread."""
        self._thread = threading.Thread(target=self._main, name="roadie-maintenance",
                                        daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait for the thread to end (it does once the worker stops and no task runs)."""
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def _main(self) -> None:
        worker = self._worker
        settings = worker.settings
        next_heartbeat = time.monotonic() + settings.heartbeat_interval
        next_sweep = time.monotonic() + settings.heartbeat_interval
        next_forget = time.monotonic() + settings.heartbeat_interval
        next_cancel_poll = time.monotonic() + settings.cancel_poll_interval
        next_prune = time.monotonic() + min(settings.retention_interval, 5.0)
        next_rollup = time.monotonic() + ROLLUP_FLUSH_INTERVAL
        # (after the first round: the two would slow each other, and the first claim waits
        # for nothing else; the claim loop is not idle before the sweep)
        worker._first_round.wait(FIRST_SWEEP_WAIT)
        self._first_sweep()
        while not worker._stopping.wait(settings.status_interval) or worker.running:
            if worker._stop_now.is_set():
                return
            now = time.monotonic()
            try:
                worker.flush_progress()
                self._check_timeouts()
                worker._claims.release_unstarted(settings.prefetch_hold)
                if now >= next_cancel_poll:
                    next_cancel_poll = now + settings.cancel_poll_interval
                    with worker._running_lock:
                        busy = bool(worker.running)
                    if busy:
                        worker._apply_cancel_requests(worker.store.cancel_requests(worker.id))
                if now >= next_heartbeat:
                    next_heartbeat = now + settings.heartbeat_interval
                    self._refresh_envs()
                    self._heartbeat()
                    if worker.schema_error is None:  # still the schema this code knows?
                        worker.store.check_revision()
                if now >= next_sweep and worker.schema_error is None:
                    next_sweep = now + settings.heartbeat_interval
                    worker.stats.recovered += worker.app.recover_orphans(worker)
                if now >= next_forget and worker.schema_error is None:
                    next_forget = now + FORGET_NODES_EVERY
                    worker.store.forget_nodes(utcnow() - NODES_KEPT)
                # the overview's counts (once a second), the queue's depth (once a minute)
                if now >= next_rollup and worker.schema_error is None:
                    next_rollup = now + ROLLUP_FLUSH_INTERVAL
                    worker.app.rollup.flush(worker.store)
                    minute = minute_of(utcnow())
                    if minute != self._sampled:
                        worker.store.sample_depth(minute)
                        self._sampled = minute
                if self._retention and now >= next_prune and not worker._stopping.is_set():
                    next_prune = now + settings.retention_interval
                    if self._prune() >= PRUNE_BATCHES * BATCH:
                        next_prune = now  # more to delete: go on at the next tick
            except DatabaseError as exc:
                worker.outage.failed(exc)
            except RoadieError as exc:
                log.warning("worker maintenance failed: %s", exc)
            except Exception:  # keep heartbeating whatever happens
                log.exception("worker maintenance failed")

    def _first_sweep(self) -> None:
        """The sweep for dead nodes' tasks as the worker starts, once its first round has
        handed its tasks over rather than before it; the claim loop waits for it before it
        calls itself idle, and claims again once it is done (it may have put tasks back to
        wait)."""
        worker = self._worker
        try:
            worker.stats.recovered += worker.app.recover_orphans(worker)
        except DatabaseError as exc:
            worker.outage.failed(exc)
        except Exception:
            log.exception("worker maintenance failed: the sweep for dead nodes' tasks")
        finally:
            worker._swept.set()
            worker._claims.wake_to_claim()

    def _check_timeouts(self) -> None:
        """Cancel the running tasks past their timeout (the task's, else its executor's),
        counted from when a thread started them."""
        worker = self._worker
        now = time.monotonic()
        with worker._running_lock:
            tasks = list(worker.running.values())
        for task in tasks:
            limit = task.record.timeout
            if limit is None:
                executor = task.executor
                limit = executor.timeout if executor is not None else None
            if limit is None or task.cancelled or task.started is None:
                continue
            if now - task.started >= limit:
                task.request_cancel(f"timed out after {limit:g} s", timed_out=True)

    def _heartbeat(self) -> None:
        """Heartbeat the node and the attempts it runs; stop those the database no longer
        counts as this node's (another node took them over)."""
        worker = self._worker
        with worker._running_lock:
            beating = {i: t for i, t in worker.running.items()
                       if not t.ended and not t.taken_over}
        lost = worker.store.heartbeat(  # skips rows held: no turn
            worker.id, {i: t.attempt for i, t in beating.items()})
        if lost:
            worker._stop_lost(lost, "heartbeat", beating)

    def _prune(self) -> int:
        """Delete ended tasks past the retention (a bounded number of batches per tick, so
        that heartbeats are never late)."""
        worker = self._worker
        deleted = prune(worker.app, cutoffs(self._retention), max_batches=PRUNE_BATCHES)
        if deleted:
            log.info("retention: deleted %d ended task(s)", deleted)
            worker.stats.pruned += deleted
        return deleted

    def _refresh_envs(self) -> None:
        """An environment changed: advertise its executors anew; retire its warm hosts."""
        worker = self._worker
        if worker.app.plugins.refresh_envs():
            log.info("an environment changed: refreshing this node's executors")
            worker.hosts.retire_idle()
            worker._advertise()
            worker.start_host_templates()  # of the environments as they are now

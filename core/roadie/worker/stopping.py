"""How a worker stops.

``Worker.stop()`` asks it to, from any thread. So do SIGINT and SIGTERM when the worker
handles signals (by default when it runs in the main thread): the first stops claiming and
lets the running tasks finish, the next one stops at once (``Signals``). The signal handler
only counts; the claim loop acts on the count, and never waits longer than SIGNAL_LATENCY
without looking at it.

Once the claim loop has returned, ``shut_down`` ends the rest in order: the threads (after
the tasks they run), the maintenance thread, the attempts that ended since the last round,
the async executors' event loop, the host processes, and last the node row. Stopping at once
waits for no task: those still running go through their crash policy (``abandon_running``).
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from roadie.errors import RoadieError

if TYPE_CHECKING:
    from roadie.worker import Worker

log = logging.getLogger("roadie.worker")
SIGNAL_LATENCY = 0.2  # seconds: how soon the claim loop acts on SIGINT/SIGTERM at most


class Signals:
    """SIGINT and SIGTERM while a worker runs: ``install`` counts them, ``take`` (in the
    claim loop) acts on them, ``wait`` waits for an event without missing one, ``restore``
    puts the previous handlers back."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._received = 0  # SIGINT/SIGTERM received (counted by the handler)
        self._seen = 0
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Count SIGINT and SIGTERM from now on, if the worker handles signals."""
        if not self._worker.handle_signals:
            return

        def handler(signum: int, _frame: Any) -> None:
            # Runs in the main thread between two bytecodes, perhaps while the claim loop holds
            # the lock of an Event it waits on: taking any lock here could deadlock. Count the
            # signal; the claim loop acts on it (take).
            self._received += 1

        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, handler)

    def restore(self) -> None:
        """Put back the handlers that ``install`` replaced."""
        previous, self._previous = self._previous, {}
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def take(self) -> None:
        """Act on the signals the handler counted: the first stops claiming, the next one
        stops at once."""
        while self._seen < self._received:
            self._seen += 1
            if self._worker._stopping.is_set():
                log.warning("second signal: stopping at once")
                self._worker.stop(now=True)
            else:
                log.warning("stopping: running tasks finish, nothing new is claimed "
                            "(signal again to stop at once)")
                self._worker.stop()

    def wait(self, event: threading.Event, timeout: float) -> None:
        """Wait until ``event`` is set, ``timeout`` passes or a signal came (which the claim
        loop must see within SIGNAL_LATENCY)."""
        if not self._worker.handle_signals:
            event.wait(timeout)
            return
        deadline = time.monotonic() + timeout
        while self._seen == self._received:
            left = deadline - time.monotonic()
            if left <= 0 or event.wait(min(left, SIGNAL_LATENCY)):
                return


def shut_down(worker: Worker) -> None:
    """End what is left of ``worker`` once its claim loop has returned."""
    claims = worker._claims
    if worker._stop_now.is_set():
        close_hosts(worker)
        claims.settle_leftovers()  # tasks that ended keep their real outcome
        abandon_running(worker)
    claims.end_threads()
    if not worker._stop_now.is_set():
        claims.join_threads()
        worker._maintenance.join(timeout=10)
        claims.settle_leftovers()  # attempts that ended after the claim loop stopped
    claims.stop_runner()
    close_hosts(worker)
    if worker.schema_error is None:
        try:  # the overview's last counts, and the node stopped, in one transaction
            worker.app.rollup.write_with(
                functools.partial(worker.store.add_rollup_and_stop, node=worker.id))
            return
        except RoadieError as exc:
            log.warning("could not write the overview's counts: %s", exc)
    try:
        worker.store.stop_node(worker.id)
    except RoadieError as exc:
        log.warning("could not mark node %s stopped: %s", worker.id, exc)


def close_hosts(worker: Worker) -> None:
    """End the worker's host processes, if it made its pool of them."""
    if worker._hosts is not None:
        worker._hosts.close()


def abandon_running(worker: Worker) -> None:
    """Stop at once: the tasks still running go through their crash policy now."""
    with worker._running_lock:
        tasks = list(worker.running.values())
    for task in tasks:
        task.request_cancel("the worker stopped")
    worker.store.stop_node(worker.id)
    for task in tasks:
        worker.app.apply_crash_policy(task.record, worker, reason="its worker was stopped")

"""The live state of the tasks a worker runs: their status attributes, recent messages and
newest checkpoint, on their way to the database.

A running task marks itself dirty when one of them changes (``ProgressWriter`` is the
``ProgressSink`` of every task the worker runs, and of its host processes); the maintenance
thread writes what changed, for all tasks in one statement, at most every
``status_interval`` (``flush``); an attempt's last state goes with its outcome instead
(``final_state``), and a checkpoint already written is not sent again. A write the database
refuses (the attempt was taken over by another node) stops the attempt; a cancel request the
write finds is applied at once."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from roadie.errors import RoadieError

if TYPE_CHECKING:
    from roadie.running import RunningTask
    from roadie.worker import Worker

log = logging.getLogger("roadie.worker")


class ProgressWriter:
    """Which running tasks changed since their last write, and what was written (the
    checkpoint versions); writes them, throttled. Thread-safe: tasks mark themselves from
    their own threads (and lightweight children), the maintenance thread flushes."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._dirty: set[int] = set()
        self._lock = threading.Lock()
        self._written: dict[int, int] = {}  # task id -> version of its checkpoint written

    def mark_dirty(self, task: RunningTask) -> None:
        """Schedule a throttled write of a running task's live state."""
        with self._lock:
            self._dirty.add(task.id)

    def refused(self, task: RunningTask, what: str) -> None:
        """A write of ``task``'s attempt (``what``) was refused: the worker counts it and
        stops the attempt (``Worker.refused``)."""
        self._worker.refused(task, what)

    def flush(self) -> None:
        """Write the live state of every task that changed since the last write."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        if not dirty:
            return
        worker = self._worker
        updates: dict[int, tuple[bytes | None, bytes | None, bytes | None]] = {}
        written: dict[int, RunningTask] = {}  # the attempts the updates are for
        versions: dict[int, int] = {}
        attempts: dict[int, int] = {}
        young: set[int] = set()
        first_write = time.monotonic() - worker.settings.status_interval
        for task_id in sorted(dirty):
            with worker._running_lock:
                task = worker.running.get(task_id)
            if task is None or task.ended or task.taken_over:
                continue
            if task.started is not None and task.started > first_write:
                # a short task's live state is written with its outcome; a longer one's
                # first write comes one interval after its start
                young.add(task_id)
                continue
            attempts[task_id] = task.attempt
            version, checkpoint = task.pending_checkpoint()
            if version == self._written.get(task_id):
                checkpoint = None
            status_bytes, messages = self.encode(task)
            updates[task_id] = (status_bytes, messages, checkpoint)
            written[task_id] = task
            versions[task_id] = version
        if young:
            with self._lock:
                self._dirty.update(young)
        if not updates:
            return
        try:
            with worker._writes:
                cancelled, lost = worker.store.save_progress(worker.id, updates, attempts)
        except BaseException:
            with self._lock:  # try again at the next tick
                self._dirty.update(updates)
            raise
        with self._lock:
            self._written.update(versions)
        worker.stats.progress_writes += len(updates) - len(lost)
        if cancelled:
            worker._apply_cancel_requests(cancelled)
        if lost:  # (an attempt that ended meanwhile is not its task's next attempt)
            worker._stop_lost(lost, "progress", written)

    def final_state(self, task: RunningTask) -> tuple[bytes | None, bytes | None, bytes | None]:
        """The live state to write with the outcome of ``task``'s attempt, which ended:
        (status, messages, checkpoint), the checkpoint None if it was written already."""
        version, checkpoint = task.pending_checkpoint()
        with self._lock:
            if version == self._written.get(task.id):
                checkpoint = None  # already written
        status_bytes, messages = self.encode(task)
        return status_bytes, messages, checkpoint

    def forget(self, task_ids: Iterable[int]) -> None:
        """These tasks' attempts are settled: nothing of theirs is left to write."""
        with self._lock:
            for task_id in task_ids:
                self._dirty.discard(task_id)
                self._written.pop(task_id, None)

    def encode(self, task: RunningTask) -> tuple[bytes | None, bytes | None]:
        """The task's status attributes and recent messages, encoded; an oversized message log
        is cut to its newest messages rather than failing the task."""
        if task.encoded_live_state is not None:  # run in a host, which encoded it
            return task.encoded_live_state
        registry = self._worker.app.registry
        try:
            status_bytes: bytes | None = registry.encode(task.status.snapshot(),
                                                         what="task status")
        except RoadieError as exc:
            log.warning("task %s: cannot write its status: %s", task.id, exc)
            status_bytes = None
        messages = list(task.messages)
        while True:
            try:
                return status_bytes, registry.encode(messages, what="status messages")
            except RoadieError:
                if not messages:
                    return status_bytes, None
                messages = messages[len(messages) // 2 + 1:]

"""Watching tasks change: ``Roadie.watch`` (woken by NOTIFY on PostgreSQL, polling otherwise)
and ``TaskWatch``, what a watch has seen, which the async client's ``watch`` shares."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from roadie.records import TaskRecord
from roadie.status import FINAL_STATUSES, Status
from roadie.store import CHANNEL_CHANGED

if TYPE_CHECKING:
    from roadie.app import Roadie


def watch(app: Roadie, ids: Iterable[int] | None, filters: Mapping[str, Any], *,
          interval: float, timeout: float | None, until_done: bool) -> Iterator[TaskRecord]:
    """``Roadie.watch``: yield each task every time it changes, until the watch is over."""
    watch = TaskWatch(ids, filters, until_done=until_done, timeout=timeout)
    changed = threading.Event()

    def on_change(channel: str, _payload: str) -> None:
        if channel == CHANNEL_CHANGED:
            changed.set()

    hub = app.store.listen()
    token = hub.subscribe(on_change)
    try:
        while True:
            changed.clear()
            tasks = watch.fetch(app)
            yield from watch.changes(app, tasks, interval)
            wait = watch.wait(tasks, interval)
            if wait is None:
                return
            changed.wait(wait)
    finally:
        hub.unsubscribe(token)


class TaskWatch:
    """What ``watch`` (and its async twin) has seen: which tasks changed since the last look,
    and whether to go on."""

    def __init__(self, ids: Iterable[int] | None, filters: Mapping[str, Any], *,
                 until_done: bool, timeout: float | None) -> None:
        self.ids = None if ids is None else list(ids)
        self.filters = dict(filters)
        self.until_done = until_done
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self._seen: dict[int, tuple[dt.datetime, int, bytes | None, int]] = {}
        self._counted: dict[int, tuple[float, int]] = {}  # waiting parent: (when, ended)

    def fetch(self, app: Roadie) -> list[TaskRecord]:
        """The watched tasks as they are now."""
        if self.ids is not None:
            return app.store.list_tasks(ids=self.ids, limit=None, decoder=app.decode_for_task)
        return app.list_tasks(**self.filters, limit=None)

    def changes(self, app: Roadie, tasks: list[TaskRecord],
                interval: float) -> list[TaskRecord]:
        """The tasks among ``tasks`` that changed since the last look, by id (a parent
        waiting for its subtasks changes when more of them have ended)."""
        changed = []
        for task in sorted(tasks, key=lambda t: t.id):
            ended = (self._subtasks_ended(app, task, interval)
                     if task.status == Status.WAITING else 0)
            mark = (task.updated_at, int(task.status), task.status_bytes, ended)
            if self._seen.get(task.id) != mark:
                self._seen[task.id] = mark
                changed.append(task)
        return changed

    def _subtasks_ended(self, app: Roadie, task: TaskRecord, interval: float) -> int:
        """How many subtasks of a waiting parent have ended (counted at most once per
        ``interval``)."""
        from roadie.trees import tree_status

        last = self._counted.get(task.id)
        now = time.monotonic()
        if last is None or now - last[0] >= interval:
            last = (now, tree_status(app, task).get("subtasks_ended", 0))
            self._counted[task.id] = last
        return last[1]

    def wait(self, tasks: list[TaskRecord], interval: float) -> float | None:
        """How long to wait for the next change, or None when the watch is over."""
        if self.until_done and tasks and all(t.status in FINAL_STATUSES for t in tasks):
            return None
        if self.deadline is None:
            return interval
        left = self.deadline - time.monotonic()
        return None if left <= 0 else min(interval, left)

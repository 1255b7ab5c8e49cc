"""Task trees (issue 16): persistent subtasks a running task adds, the parent's wait in
``Status.WAITING`` without a thread, its fan-in (``Executor.subtasks_done``), and the live
progress of a tree. The SQL lives in ``roadie.store.trees``.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, overload

from roadie.records import TaskRecord
from roadie.result import Result
from roadie.status import Status

if TYPE_CHECKING:
    from roadie.app import Roadie
    from roadie.running import RunningTask

BATCH = 1000
"""How many subtasks ``add_subtasks`` encodes and inserts at once (memory stays bounded)."""
PAGE = 500
"""How many subtasks ``Subtasks`` reads at once."""


def add_subtasks(task: RunningTask, items: Iterable[Mapping[str, Any]], *,
                 batch: int = BATCH, app: Roadie | None = None) -> list[int]:
    """Add subtasks of the running ``task`` from ``items`` (each holds ``add_task``'s
    arguments: ``{"executor": ..., "context": ..., "name": ...}``), ``batch`` at a time;
    returns their ids. ``items`` may be a generator: only one batch is in memory. ``app``:
    the task's app on another connection (the async driver's)."""
    app = app or task.app
    ids: list[int] = []
    resolved: dict[Any, Any] = {}
    iterator = iter(enumerate(items))
    while True:
        chunk = list(itertools.islice(iterator, batch))
        if not chunk:
            return ids
        specs = [app._new_task(*_split(index, item), resolved, **_options(item))
                 for index, item in chunk]
        ids.extend(record.id for record in app._insert_subtasks(task, specs))


def add_subtask(task: RunningTask, executor: str, context: Mapping[str, Any] | None = None,
                *, app: Roadie | None = None, **options: Any) -> TaskRecord:
    """Add one subtask of the running ``task``; returns it as stored."""
    app = app or task.app
    spec = app._new_task(executor, context, {}, **options)
    (record,) = app._insert_subtasks(task, [spec])
    return record


def _split(index: int, item: Mapping[str, Any]) -> tuple[str, Any]:
    try:
        return item["executor"], item.get("context")
    except KeyError:
        raise ValueError(f"subtasks[{index}] has no 'executor'") from None


def _options(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in ("executor", "context")}


class Subtasks(Sequence[TaskRecord]):
    """The subtasks of one task, oldest first, read from the database on each use.

    ``subtasks_done(task, subtasks)`` receives one. Iterate it as often as you like: each
    loop reads from the first subtask on, a page at a time, so memory stays bounded however
    many there are. ``len(subtasks)`` is one COUNT query; ``subtasks[i]`` (negative too) reads
    one record and ``subtasks[a:b]`` a list of them; ``list(subtasks)`` keeps them all in
    memory. Nothing is cached: every read shows the subtasks as they are now.

    ``Subtasks(app, parent_id)`` reads any task's subtasks outside a fan-in too; ``page`` is
    how many records one read fetches. ``parent_id`` names the parent.
    """

    def __init__(self, app: Roadie, parent_id: int, *, page: int = PAGE) -> None:
        if page < 1:
            raise ValueError("page must be at least 1")
        self._app = app
        self.parent_id = parent_id
        self.page = page

    def __len__(self) -> int:
        return self._app._subtask_count(self.parent_id)

    def __iter__(self) -> Iterator[TaskRecord]:
        return self._from(0, None)

    def __reversed__(self) -> Iterator[TaskRecord]:
        end = len(self)
        while end > 0:
            start = max(0, end - self.page)
            yield from reversed(self._app._subtask_page(self.parent_id, 0, end - start, start))
            end = start

    @overload
    def __getitem__(self, index: int) -> TaskRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[TaskRecord]: ...

    def __getitem__(self, index: int | slice) -> TaskRecord | list[TaskRecord]:
        if isinstance(index, slice):
            positions = range(*index.indices(len(self)))
            if not positions:
                return []
            first, step = min(positions), abs(positions.step)
            span = self._from(first, max(positions) - first + 1)
            picked = list(itertools.islice(span, 0, None, step))
            return picked if positions.step > 0 else picked[::-1]
        position = operator.index(index)
        if position < 0:
            position += len(self)
        found = self._app._subtask_page(self.parent_id, 0, 1, position) \
            if position >= 0 else []
        if not found:
            raise IndexError(f"subtask index {index} out of range")
        return found[0]

    def index(self, value: Any, start: int = 0, stop: int | None = None) -> int:
        """The position of the first subtask equal to ``value`` (a record), read in pages."""
        positions = range(*slice(start, stop).indices(len(self)))
        for position, record in enumerate(self._from(positions.start, len(positions)),
                                          positions.start):
            if record is value or record == value:
                return position
        raise ValueError(f"{value!r} is not a subtask of task {self.parent_id}")

    def _from(self, position: int, count: int | None) -> Iterator[TaskRecord]:
        """``count`` subtasks (all the rest: None) from ``position`` on, a page at a time."""
        after, offset = 0, position
        while count is None or count > 0:
            limit = self.page if count is None else min(self.page, count)
            records = self._app._subtask_page(self.parent_id, after, limit, offset)
            if not records:
                return
            yield from records
            if count is not None:
                count -= len(records)
            after, offset = records[-1].id, 0

    def __repr__(self) -> str:
        return f"<Subtasks of task {self.parent_id}>"


def subtask_page(app: Roadie, parent_id: int, after: int, limit: int,
                 offset: int = 0) -> list[TaskRecord]:
    """Up to ``limit`` subtasks of ``parent_id`` with ids above ``after``, oldest first,
    skipping the first ``offset`` of those."""
    ids = app.store.trees.subtask_ids(parent_id, after=after, limit=limit, offset=offset)
    if not ids:
        return []
    records = app.store.list_tasks(ids=ids, limit=None, decoder=app.decode_for_task)
    return sorted(records, key=lambda r: r.id)


def default_subtasks_done(task: RunningTask, subtasks: Iterable[TaskRecord]) -> Result:
    """Success when every subtask succeeded; otherwise FAILED naming the ones that did not
    (the first five; reads ``subtasks`` once, keeping only those five)."""
    total = failed = 0
    named: list[TaskRecord] = []
    for sub in subtasks:
        total += 1
        if sub.status != Status.SUCCESSFUL:
            failed += 1
            if len(named) < 5:
                named.append(sub)
    if not failed:
        return Result.success(f"{total} subtasks succeeded")
    text = "; ".join(f"task {s.id} {s.name!r} {s.status.label}: {s.status_message}"
                     for s in named)
    more = f" (and {failed - 5} more)" if failed > 5 else ""
    return Result.failed(f"{failed} of {total} subtasks did not succeed: {text}{more}")


def tree_status(app: Roadie, record: TaskRecord) -> dict[str, Any]:
    """The live progress of a parent: its subtasks counted by status, and a percent."""
    counts = app.store.trees.subtask_counts(record.id)
    if not counts:
        return {}
    total = sum(counts.values())
    ended = sum(n for s, n in counts.items() if s.is_final)
    return {
        "subtasks": {s.label: n for s, n in sorted(counts.items())},
        "subtasks_total": total,
        "subtasks_ended": ended,
        "subtasks_percent": round(100.0 * ended / total, 1),
    }

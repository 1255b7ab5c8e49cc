"""Task trees (issue 16): persistent subtasks a running task adds, the parent's wait in
``Status.WAITING`` without a thread, its fan-in (``Executor.subtasks_done``), and the live
progress of a tree. The SQL lives in ``roadie.store.trees``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from roadie.records import TaskRecord
from roadie.result import Result
from roadie.status import Status

if TYPE_CHECKING:
    from roadie.app import Roadie
    from roadie.running import RunningTask

BATCH = 1000
"""How many subtasks ``add_subtasks`` encodes and inserts at once (memory stays bounded)."""


def add_subtasks(task: RunningTask, items: Iterable[Mapping[str, Any]], *,
                 batch: int = BATCH, app: Roadie | None = None) -> list[int]:
    """Add subtasks of the running ``task`` from ``items`` (each holds ``add_task``'s
    arguments: ``{"executor": ..., "context": ..., "name": ...}``), ``batch`` at a time;
    returns their ids. ``items`` may be a generator: only one batch is in memory. ``app``:
    the task's app on another connection (the async driver's)."""
    app = app or task.app
    ids: list[int] = []
    resolved: dict[str, Any] = {}
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


def iter_subtasks(app: Roadie, parent_id: int, *, page: int = 500) -> Iterator[TaskRecord]:
    """The subtasks of ``parent_id``, oldest first, read a page at a time."""
    after = 0
    while True:
        records = app._subtask_page(parent_id, after, page)
        if not records:
            return
        yield from records
        after = records[-1].id


def subtask_page(app: Roadie, parent_id: int, after: int, limit: int) -> list[TaskRecord]:
    """Up to ``limit`` subtasks of ``parent_id`` with ids above ``after``, oldest first."""
    ids = app.store.trees.subtask_ids(parent_id, after=after, limit=limit)
    if not ids:
        return []
    records = app.store.list_tasks(ids=ids, limit=None, decoder=app.decode_for_task)
    return sorted(records, key=lambda r: r.id)


def default_subtasks_done(task: RunningTask, subtasks: Iterable[TaskRecord]) -> Result:
    """Success when every subtask succeeded; otherwise FAILED naming the ones that did not."""
    total = 0
    bad: list[TaskRecord] = []
    for sub in subtasks:
        total += 1
        if sub.status != Status.SUCCESSFUL:
            bad.append(sub)
    if not bad:
        return Result.success(f"{total} subtasks succeeded")
    named = "; ".join(f"task {s.id} {s.name!r} {s.status.label}: {s.status_message}"
                      for s in bad[:5])
    more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
    return Result.failed(f"{len(bad)} of {total} subtasks did not succeed: {named}{more}")


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

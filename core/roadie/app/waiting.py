"""Why a task that waits is not running yet: its subtasks, the tasks it comes ``after``, its
run-after time, its isolation key (held, or another task runs first), or no live worker with
its plugins and tags (shown by ``roadie list``/``show`` and the web pages)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from roadie.status import Status
from roadie.store import utcnow

if TYPE_CHECKING:
    from roadie.app import Roadie
    from roadie.records import TaskRecord


def waiting_reason(app: Roadie, task: TaskRecord) -> str | None:
    """``Roadie.waiting_reason``: why ``task`` waits, or None when nothing stands in its way."""
    if task.status == Status.WAITING:
        return "waiting for its subtasks to end"
    if task.status not in (Status.NEW, Status.QUEUED):
        return None
    from roadie.store.trees import BLOCKED

    if task.run_after >= BLOCKED:
        unmet = app.store.trees.unmet_dependencies(task.id)
        return f"waiting for tasks {', '.join(str(i) for i in unmet)}"
    if task.run_after > utcnow():
        return f"waiting: runs after {task.run_after.isoformat(timespec='seconds')}"
    if task.status == Status.QUEUED and task.isolation_key:
        holder = app.store.held_locks().get(task.isolation_key)
        if holder is not None:
            return f"queued: task {holder} holds isolation key {task.isolation_key!r}"
        head = app.store.queue_head(task.isolation_key)
        if head is not None and head != task.id:
            return (f"queued: task {head} runs first (isolation key "
                    f"{task.isolation_key!r}, one at a time)")
    now = utcnow()
    nodes = [n for n in app.list_nodes() if n.is_alive(now, app.settings.heartbeat_grace)]
    if not nodes:
        return "waiting: no worker is running (start one with `roadie worker`)"
    needs = dict(task.plugins)
    for node in nodes:
        if all(p in node.plugins for p in needs) and task.tags <= node.tags:
            return None
    missing_plugin = [p for p in needs if not any(p in n.plugins for n in nodes)]
    if missing_plugin:
        wanted = ", ".join(missing_plugin)
        return f"waiting: no worker has plugin {wanted}"
    return f"waiting: no worker has tags {', '.join(sorted(task.tags))}"

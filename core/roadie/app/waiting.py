"""Why a task that waits is not running yet: its subtasks, the tasks it comes ``after``, its
run-after time, a paused executor, its rate limit, its isolation key or limit (its slots held,
or others run first), or no live worker with its plugins and tags (shown by ``roadie list``/
``show`` and the web pages)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from roadie.status import Status
from roadie.store import utcnow

if TYPE_CHECKING:
    from roadie.app import Roadie
    from roadie.limits import Limits
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
    if task.executor in app.store.paused_executors():
        return (f"waiting: executor {task.executor} is paused (resume it with "
                f"`roadie executors resume {task.executor}`)")
    limits, isolated = app.executor_limits(task.executor)
    if (limits.rate is not None and task.run_after > utcnow()
            and task.status_message.startswith("waiting for its rate limit")):
        return (f"waiting for its rate limit ({limits.rate}): starts at "
                f"{task.run_after.isoformat(timespec='milliseconds')} at the earliest")
    if task.run_after > utcnow():
        return f"waiting: runs after {task.run_after.isoformat(timespec='seconds')}"
    if task.status == Status.QUEUED and task.isolation_key:
        reason = _key_reason(app, task, limits, isolated)
        if reason is not None:
            return reason
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


def _key_reason(app: Roadie, task: TaskRecord, limits: Limits, isolated: bool) -> str | None:
    """Why a task QUEUED behind its key waits: its slots are taken, or others run first."""
    key = task.isolation_key
    holders, heads = app.store.key_state(key or "")
    if task.id in heads:
        return None
    width = limits.width(isolated) or 1
    what = f"isolation key {key!r}" if isolated else f"executor {task.executor}"
    if limits.max_running is None and holders and isolated:
        return f"queued: task {holders[0]} holds {what}"
    if holders and len(holders) >= width:
        return (f"queued: {len(holders)} of {width} running for {what} (max_running "
                f"{width}); it starts when one ends")
    if heads:
        first = ", ".join(map(str, heads[:5]))
        one = "one at a time" if width == 1 else f"{width} at a time"
        runs = f"tasks {first} run" if len(heads) > 1 else f"task {first} runs"
        return f"queued: {runs} first ({what}, {one})"
    return None

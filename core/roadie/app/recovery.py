"""Crash recovery: the running tasks of dead workers, found by their stale heartbeat, end or
wait again as their executor's crash policy says (fail, retry, or resume from the checkpoint);
a cancel requested before the crash wins over any policy."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from roadie.errors import PluginError, UnknownExecutor
from roadie.executor import CrashPolicy
from roadie.hookcalls import notify_hook
from roadie.records import TaskRecord
from roadie.status import Status
from roadie.store import utcnow

if TYPE_CHECKING:
    from roadie.app import Roadie
    from roadie.worker import Worker

log = logging.getLogger("roadie")


def recover_orphans(app: Roadie, worker: Worker | None = None) -> int:
    """``Roadie.recover_orphans``: apply the crash policy to the running tasks of dead nodes;
    returns how many were handled."""
    count = 0
    app.store.trees.sweep()  # fan-ins a crash interrupted
    orphans = app.store.orphaned_tasks(app.settings.heartbeat_grace)
    # (the nodes only when there is an orphan: every worker sweeps every heartbeat)
    nodes = {n.id: n for n in app.store.list_nodes(include_stopped=True)} if orphans else {}
    for task in orphans:
        if worker is not None and task.node == worker.id:
            continue  # this worker's own: its heartbeat lagged (a database outage)
        node = nodes.get(task.node or "")
        if node is None:
            reason = f"worker {task.node} is gone"
        else:
            seen = node.heartbeat_at.isoformat(timespec="seconds")
            reason = f"worker {node.name} stopped responding (last heartbeat {seen})"
        if app.apply_crash_policy(task, worker, reason=reason):
            count += 1
    app.store.promote_stranded()  # tasks parked behind a lock that nobody holds
    return count


def apply_crash_policy(app: Roadie, task: TaskRecord, worker: Worker | None, *,
                       reason: str) -> bool:
    """``Roadie.apply_crash_policy``: end or requeue a task whose worker died."""
    record = app.get_task(task.id)
    try:
        executor_class = app.plugins.load_executor(record.executor)
        policy, max_attempts = executor_class.crash_policy, executor_class.max_crash_attempts
    except UnknownExecutor:
        if _someone_else_has(app, record):
            return False  # a live node with the plugin applies the real policy
        policy, max_attempts = CrashPolicy.FAIL, 1
    except PluginError:
        policy, max_attempts = CrashPolicy.FAIL, 1
    progress = _progress_summary(record)
    grace = None if worker is not None and record.node == worker.id else \
        app.settings.heartbeat_grace  # another node's task: only while it stays dead
    if record.cancel_requested_at is not None:  # the cancel wins over any policy
        outcome = "cancelled"
        message = (f"cancelled by {record.cancel_requested_by or 'someone'}; {reason} "
                   f"before it stopped{progress}")
        done = app.store.take_over_orphan(record, Status.CANCELLED, message, grace=grace)
    elif record.started_at is None:  # claimed ahead, never started: whatever the policy
        outcome = "requeued"
        message = f"{reason} before it started the task; waiting again"
        done = app.store.take_over_orphan(record, Status.NEW, message, grace=grace)
    elif policy is not CrashPolicy.FAIL and record.attempts < max_attempts:
        outcome = policy.value
        again = ("resuming from its checkpoint" if policy is CrashPolicy.RESUME
                 else "retrying")
        message = f"{reason} during attempt {record.attempts}; {again}{progress}"
        done = app.store.take_over_orphan(record, Status.NEW, message, grace=grace,
                                          keep_checkpoint=policy is CrashPolicy.RESUME)
    else:
        outcome = "failed"
        limit = ("" if policy is CrashPolicy.FAIL
                 else f" after {record.attempts} of {max_attempts} attempts")
        message = f"{reason} while it ran{limit}{progress}"
        done = app.store.take_over_orphan(record, Status.FAILED, message, grace=grace)
    if done:
        updated = app.get_task(task.id)
        log.warning("task %s: %s", task.id, message)
        notify_hook(app, "roadie_task_orphaned", task=updated, node=record.node or "",
                    outcome=outcome)
        if outcome in ("failed", "cancelled"):
            app.count_ended([updated])
        if outcome == "failed":
            notify_hook(app, "roadie_task_failed", task=updated, message=message, error=None)
        elif outcome == "cancelled":
            notify_hook(app, "roadie_task_cancelled", task=updated, message=message)
    return done


def _someone_else_has(app: Roadie, record: TaskRecord) -> bool:
    now = utcnow()
    return any(
        record.executor in node.executors
        for node in app.store.list_nodes()
        if node.is_alive(now, app.settings.heartbeat_grace)
    )


def _progress_summary(record: TaskRecord) -> str:
    try:
        status = record.task_status
    except Exception:
        return ""
    if "done" not in status:
        return ""
    total = status.get("total")
    return f"; last progress {status['done']}" + (f" of {total}" if total is not None else "")

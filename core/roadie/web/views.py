"""Tasks, nodes and plugins as JSON-ready dicts: the API returns them and the pages render
them, so a page and its JSON twin always show the same thing."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import enum
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from roadie.errors import RoadieError
from roadie.status import Status
from roadie.store import utcnow

if TYPE_CHECKING:
    from roadie.app import Roadie
    from roadie.records import (
        AttachmentInfo,
        AttemptRecord,
        ExecutorState,
        NodeRecord,
        TaskRecord,
    )
    from roadie.schedules import ScheduleInfo


def jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON-ready copy of a decoded value (unknown types become their ``repr``)."""
    if depth > 40:
        return "…"
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, enum.Enum):
        return jsonable(value.value, depth + 1) if isinstance(value.value, (int, str)) \
            else repr(value)
    if isinstance(value, int):
        return value if abs(value) < 2**53 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value[:4096]).decode()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [jsonable(v, depth + 1) for v in items]
    return repr(value)


def _time(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _decoded(task: TaskRecord, attribute: str, default: Any) -> tuple[Any, str | None]:
    """A decoded attribute, or the default and the reason it could not be decoded."""
    try:
        return jsonable(getattr(task, attribute)), None
    except RoadieError as exc:
        return default, str(exc)
    except Exception as exc:  # a plugin's decoder failing must not break the page
        return default, f"{type(exc).__name__}: {exc}"


def progress_of(attributes: Mapping[str, Any]) -> dict[str, Any] | None:
    """``{"done", "total", "percent"}`` from a task's status attributes, or None."""
    percent = attributes.get("percent")
    done = attributes.get("done")
    total = attributes.get("total")
    if not isinstance(percent, (int, float)) or isinstance(percent, bool):
        percent = None
        if isinstance(done, (int, float)) and isinstance(total, (int, float)) and total > 0:
            percent = 100.0 * done / total
        elif isinstance(attributes.get("progress"), (int, float)):
            percent = float(attributes["progress"])
    if percent is None or not math.isfinite(percent):
        return None
    percent = max(0.0, min(100.0, float(percent)))
    return {"done": done if isinstance(done, (int, float)) else None,
            "total": total if isinstance(total, (int, float)) else None,
            "percent": round(percent, 1)}


def live_state(task: TaskRecord,
               subtasks: Mapping[str, int] | None = None) -> dict[str, Any]:
    """What a watching page updates: status, message and progress. ``subtasks`` (counts per
    status label) also goes out, and while the task waits for its subtasks without progress
    of its own, the share of them that ended is its progress."""
    attributes, _ = _decoded(task, "task_status", {})
    if not isinstance(attributes, dict):
        attributes = {}
    note = attributes.get("message") if task.status == Status.IN_PROGRESS else None
    progress = progress_of(attributes)
    if subtasks and progress is None and task.status == Status.WAITING:
        total = sum(subtasks.values())
        ended = sum(n for label, n in subtasks.items() if Status.parse(label).is_final)
        progress = {"done": ended, "total": total, "percent": round(100.0 * ended / total, 1)}
    state = {
        "id": task.id,
        "status": task.status.label,
        "status_message": task.status_message,
        "note": task.status_message or (note if isinstance(note, str) else ""),
        "completed": task.completed,
        "cancel_requested": task.cancel_requested,
        "progress": progress,
        "updated_at": _time(task.updated_at),
    }
    if subtasks is not None:
        state["subtasks"] = dict(subtasks)
    return state


def task_summary(task: TaskRecord, subtasks: Mapping[str, int] | None = None) -> dict[str, Any]:
    """A task as the list shows it (``subtasks``: its subtask counts, when known)."""
    state = live_state(task, subtasks)
    return {
        **state,
        "name": task.name,
        "owner": task.owner,
        "group": task.group,
        "executor": task.executor,
        "attempts": task.attempts,
        "priority": task.priority,
        "node": task.node,
        "created_at": _time(task.created_at),
        "started_at": _time(task.started_at),
        "finished_at": _time(task.finished_at),
        "parent_id": getattr(task, "parent_id", None),
        "schedule": task.schedule,
        "scheduled_for": _time(task.scheduled_for),
    }


def task_detail(app: Roadie, task: TaskRecord) -> dict[str, Any]:
    """Everything about one task (decode problems are reported, never raised)."""
    context, context_error = _decoded(task, "context", {})
    attributes, status_error = _decoded(task, "task_status", {})
    messages, messages_error = _decoded(task, "recent_messages", [])
    subtasks = subtask_counts(app, task)
    detail = task_summary(task, subtasks)
    detail.update({
        "context": context,
        "status_attributes": attributes,
        "recent_messages": messages,
        "recent_lines": [_message_line(m) for m in messages[-10:]][::-1]
        if isinstance(messages, list) else [],
        "error": task.error,
        "tags": sorted(task.tags),
        "plugins": dict(task.plugins),
        "run_after": _time(task.run_after),
        "timeout": task.timeout,
        "heartbeat_at": _time(task.heartbeat_at),
        "cancel_requested_by": task.cancel_requested_by if task.cancel_requested else None,
        "waiting_reason": None,
        "decode_errors": [e for e in (context_error, status_error, messages_error) if e],
        "children": attributes.get("children") if isinstance(attributes, dict) else None,
        "subtasks": subtasks,
    })
    with contextlib.suppress(Exception):  # a reason is a nicety; never fail the page for it
        detail["waiting_reason"] = app.waiting_reason(task)
    return detail


def _message_line(message: Any) -> dict[str, str]:
    """A status message as a time, its text and its other fields."""
    if not isinstance(message, dict):
        return {"at": "", "text": str(message), "rest": ""}
    rest = {k: v for k, v in message.items() if k not in ("at", "message")}
    at = message.get("at")
    return {"at": at[11:19] if isinstance(at, str) else "",
            "text": str(message.get("message", "")),
            "rest": ", ".join(f"{k} {v}" for k, v in rest.items())}


def subtask_counts(app: Roadie, task: TaskRecord) -> dict[str, int] | None:
    """Counts per status of a task's persistent subtasks, or None when it has none (one
    grouped count, however many subtasks)."""
    counts = app.store.trees.subtask_counts(task.id)
    return {status.label: n for status, n in sorted(counts.items())} or None


def attempt_view(attempt: AttemptRecord) -> dict[str, Any]:
    """One finished attempt."""
    return {"attempt": attempt.attempt, "node": attempt.node, "status": attempt.status.label,
            "message": attempt.message, "error": attempt.error,
            "started_at": _time(attempt.started_at), "finished_at": _time(attempt.finished_at)}


def attachment_view(info: AttachmentInfo) -> dict[str, Any]:
    """One attachment's metadata."""
    return {"name": info.name, "size": info.size, "checksum": info.checksum,
            "media_type": info.media_type, "created_at": _time(info.created_at)}


def node_view(app: Roadie, node: NodeRecord, running: int, now: dt.datetime) -> dict[str, Any]:
    """One worker node, with whether it is alive."""
    alive = node.is_alive(now, app.settings.heartbeat_grace)
    return {
        "id": node.id, "name": node.name, "host": node.host, "pid": node.pid,
        "concurrency": node.concurrency, "plugins": dict(node.plugins),
        "executors": sorted(node.executors), "tags": sorted(node.tags),
        "started_at": _time(node.started_at), "heartbeat_at": _time(node.heartbeat_at),
        "heartbeat_age": round((now - node.heartbeat_at).total_seconds(), 1),
        "state": "alive" if alive else ("stopped" if node.stopped_at else "dead"),
        "running": running,
    }


def nodes_view(app: Roadie) -> list[dict[str, Any]]:
    """Every registered node with its count of running tasks."""
    now = utcnow()
    running: dict[str, int] = {}
    for task in app.list_tasks(status=Status.IN_PROGRESS, limit=10_000):
        if task.node:
            running[task.node] = running.get(task.node, 0) + 1
    return [node_view(app, node, running.get(node.id, 0), now)
            for node in app.list_nodes(include_stopped=True)[:200]]


def plugins_view(app: Roadie) -> dict[str, Any]:
    """Installed plugins (executors, hooks, errors), built-ins and environment errors."""
    manager = app.plugins
    manager.load()
    for qualified in manager.executor_names():  # importing finds the broken ones
        with contextlib.suppress(RoadieError):
            manager.load_executor(qualified)
    plugins = []
    for info in sorted(manager.infos.values(), key=lambda i: i.name):
        plugins.append({
            "name": info.name, "version": info.version, "env": info.env,
            "executors": [{"name": f"{info.name}:{entry}",
                           "error": manager.executor_error(f"{info.name}:{entry}")}
                          for entry in sorted(info.executors)],
            "hooks": list(info.hooks),
            "blocked": info.blocked, "error": info.error,
        })
    builtins = [{"name": info.name, "hooks": list(info.hooks), "blocked": info.blocked}
                for info in manager.builtin_infos()]
    env_errors = [{"env": env, "error": error}
                  for env, error in sorted(manager.env_errors.items())]
    return {"plugins": plugins, "builtins": builtins, "environment_errors": env_errors}


def executors_view(app: Roadie) -> list[dict[str, Any]]:
    """Executors a task can be added for: installed here, or advertised by live nodes."""
    found: dict[str, dict[str, Any]] = {}
    for name in app.plugins.executor_names():
        found[name] = {"name": name, "installed": True, "nodes": 0}
    now = utcnow()
    with contextlib.suppress(RoadieError):
        for node in app.list_nodes():
            if not node.is_alive(now, app.settings.heartbeat_grace):
                continue
            for name in node.executors:
                entry = found.setdefault(name, {"name": name, "installed": False, "nodes": 0})
                entry["nodes"] += 1
    return sorted(found.values(), key=lambda e: e["name"])


def executor_state_view(state: ExecutorState) -> dict[str, Any]:
    """One executor's flow control and queue: paused or not (since when, by whom), its
    limits, and its waiting, held and running tasks."""
    rate = state.rate_limit
    return {
        "executor": state.executor, "paused": state.paused,
        "paused_at": _time(state.paused_at), "paused_by": state.paused_by,
        "max_running": state.max_running,
        "rate_limit": {"count": rate.count, "per": rate.per} if rate is not None else None,
        "limits": state.limits, "waiting": state.waiting, "held": state.held,
        "running": state.running,
    }


def executor_states_view(app: Roadie,
                         states: list[ExecutorState] | None = None) -> list[dict[str, Any]]:
    """Executors with their flow control and queues (``Roadie.list_executors``, or just
    ``states``), and where they run: ``installed`` in this process, on ``nodes`` live nodes
    (``name`` repeats ``executor``, as ``/api/executors`` always answered)."""
    where = {entry["name"]: entry for entry in executors_view(app)}
    if states is None:
        from roadie.app import flow

        states = app.list_executors()
        advertised_only = sorted(set(where) - {state.executor for state in states})
        if advertised_only:  # a live node runs it, though no worker declared it
            states = sorted(states + flow.list_executors(app, advertised_only),
                            key=lambda state: state.executor)
    views = []
    for state in states:
        found = where.get(state.executor, {})
        views.append({"name": state.executor, "installed": found.get("installed", False),
                      "nodes": found.get("nodes", 0), **executor_state_view(state)})
    return views


def counts_view(app: Roadie) -> dict[str, int]:
    """How many tasks have each status (every status, zeros included)."""
    counts = app.store.count_tasks()
    return {status.label: counts.get(status, 0) for status in Status}


def schedule_view(info: ScheduleInfo) -> dict[str, Any]:
    """One schedule: its rule, state, next slot (UTC and its own time zone) and last firing."""
    next_local = info.next_local
    return {
        "name": info.name, "executor": info.executor, "origin": info.origin,
        "rule": info.description, "cron": info.cron,
        "every": info.every.total_seconds() if info.every is not None else None,
        "timezone": info.timezone, "catch_up": info.catch_up, "jitter": info.jitter,
        "overlap": info.overlap, "paused": info.paused, "state": info.state,
        "problem": info.problem, "task_name": info.task_name, "owner": info.owner,
        "group": info.group, "priority": info.priority, "tags": sorted(info.tags),
        "next_at": _time(info.next_at),
        "next_local": next_local.isoformat() if next_local is not None else None,
        "last_slot": _time(info.last_slot), "last_task_id": info.last_task_id,
        "last_fired_by": info.last_fired_by, "note": info.note,
    }


def schedules_view(app: Roadie) -> list[dict[str, Any]]:
    """Every schedule, by name, with its next run."""
    return [schedule_view(info) for info in app.list_schedules()]


def environments_view(app: Roadie) -> list[dict[str, Any]]:
    """The plugin environments (``roadie env``): Python, plugins and their executors, or why
    one cannot be read. Answers come from each environment's probe cache when it is fresh."""
    from roadie.envs.manage import list_envs

    envs_dir = app.plugins.envs_dir
    if envs_dir is None or not Path(envs_dir).is_dir():
        return []
    found = []
    for info in list_envs(Path(envs_dir)):
        plugins = [{"name": name, "version": data.get("version") or "?",
                    "executors": sorted(f"{name}:{e}" for e in data.get("executors", {}))}
                   for name, data in sorted(info.plugins.items())]
        found.append({"name": info.name, "path": str(info.path), "python": info.python,
                      "python_version": info.python_version, "plugins": plugins,
                      "error": info.error})
    return found

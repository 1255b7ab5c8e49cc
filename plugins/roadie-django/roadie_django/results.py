"""Django ``TaskResult``s read from roadie's task rows and attempt log, and how roadie's
statuses, times, errors and nodes read in Django's terms."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

import roadie
from roadie import Status

from roadie_django.compat import (
    Task,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    set_return_value,
)
from roadie_django.nodes import node_names

EXECUTOR = "roadie-django:task"
ASYNC_EXECUTOR = "roadie-django:async-task"
EXECUTORS = frozenset({EXECUTOR, ASYNC_EXECUTOR})

# roadie's statuses in Django's four: a task waiting for a worker, for its isolation lock or
# to be retried is READY; running, or waiting for its subtasks, is RUNNING; CANCELLED (by
# `roadie cancel`, the dashboard or a timeout) is FAILED, with a roadie.Cancelled error
STATUSES = {
    Status.NEW: TaskResultStatus.READY,
    Status.QUEUED: TaskResultStatus.READY,
    Status.IN_PROGRESS: TaskResultStatus.RUNNING,
    Status.WAITING: TaskResultStatus.RUNNING,
    Status.SUCCESSFUL: TaskResultStatus.SUCCESSFUL,
    Status.FAILED: TaskResultStatus.FAILED,
    Status.CANCELLED: TaskResultStatus.FAILED,
}
CANCELLED_PATH = "roadie.errors.Cancelled"
NO_EXCEPTION_PATH = "roadie.errors.RoadieError"  # a failure without an exception (a crash)
_CLASS_PATH = re.compile(r"^([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)+): ")



def exception_path(exc: BaseException) -> str:
    """``module.QualifiedName`` of an exception's class (Django's ``exception_class_path``)."""
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


def failure_message(exc: BaseException) -> str:
    """The status message of a task that raised ``exc``: its class path first, so that the
    class of each failed attempt can be read back from the attempt log."""
    text = str(exc)
    return f"{exception_path(exc)}: {text}" if text else f"{exception_path(exc)}: "


def task_id_of(result_id: Any) -> int:
    """roadie's task id of a Django result id (the id as a string)."""
    text = str(result_id)
    if not text.isdigit():
        raise TaskResultDoesNotExist(
            f"{result_id!r} is not the id of a roadie task (ids are whole numbers)")
    return int(text)


def django_time(value: dt.datetime | None) -> dt.datetime | None:
    """A time as Django's settings want it: aware with ``USE_TZ``, else naive local time."""
    from django.conf import settings
    from django.utils import timezone

    if value is None or settings.USE_TZ:
        return value
    return timezone.make_naive(value)


def new_result(task: Task, task_id: int, *, args: list[Any], kwargs: dict[str, Any],
               backend: str, enqueued_at: dt.datetime) -> TaskResult:
    """The result of a task just enqueued (READY)."""
    return TaskResult(
        task=task, id=str(task_id), status=TaskResultStatus.READY,
        enqueued_at=django_time(enqueued_at), started_at=None, finished_at=None,
        last_attempted_at=None, args=args, kwargs=kwargs, backend=backend, errors=[],
        worker_ids=[])


def read_result(app: roadie.Roadie, result_id: Any) -> TaskResult:
    """The ``TaskResult`` of a Django task stored by roadie (raises
    ``TaskResultDoesNotExist`` for an unknown id, or a task of another executor)."""
    from roadie_django.runtime import load_task

    task_id = task_id_of(result_id)
    try:
        record = app.get_task(task_id)
    except roadie.TaskNotFound:
        raise TaskResultDoesNotExist(f"no task has id {task_id}") from None
    if record.executor not in EXECUTORS:
        raise TaskResultDoesNotExist(
            f"task {task_id} is a roadie task of executor {record.executor!r}, not a Django "
            f"task")
    context = record.context
    task = load_task(context.get("task"), task_id, context)
    attempts = app.attempts(task_id) if record.attempts else []
    nodes = [a.node for a in attempts]
    if record.status in (Status.IN_PROGRESS, Status.WAITING) and record.node:
        nodes.append(record.node)
    starts = [a.started_at for a in attempts if a.started_at] + (
        [record.started_at] if record.started_at else [])
    result: TaskResult = TaskResult(
        task=task,
        id=str(task_id),
        status=STATUSES[record.status],
        enqueued_at=django_time(record.created_at),
        started_at=django_time(min(starts, default=None)),
        finished_at=django_time(record.finished_at if record.status.is_final else None),
        last_attempted_at=django_time(max(starts, default=None)),
        args=list(context.get("args", [])),
        kwargs=dict(context.get("kwargs", {})),
        backend=str(context.get("backend", task.backend)),
        errors=errors_of(record, attempts),
        worker_ids=node_names(app, nodes),
    )
    if record.status == Status.SUCCESSFUL:
        set_return_value(result, record.result)
    return result


def errors_of(record: roadie.TaskRecord,
              attempts: Sequence[roadie.AttemptRecord]) -> list[TaskError]:
    """One ``TaskError`` per attempt that failed or was cancelled, oldest first."""
    errors = []
    for attempt in attempts:
        if attempt.status == Status.CANCELLED:
            errors.append(TaskError(exception_class_path=CANCELLED_PATH,
                                    traceback=attempt.message))
        elif attempt.status == Status.FAILED:
            errors.append(_error(attempt.message, attempt.error))
    if record.status == Status.CANCELLED and not any(
            a.status == Status.CANCELLED for a in attempts):  # cancelled before it started
        errors.append(TaskError(exception_class_path=CANCELLED_PATH,
                                traceback=record.status_message))
    return errors


def _error(message: str, trace: str | None) -> TaskError:
    if not trace:  # no exception: a timeout, a crash of the worker, a refused context
        path = CANCELLED_PATH if message.startswith("timed out") else NO_EXCEPTION_PATH
        return TaskError(exception_class_path=path, traceback=message)
    found = _CLASS_PATH.match(message)
    if found:
        path = found.group(1)
    else:  # a message that roadie-django did not write: the class as the traceback says it
        last = trace.rstrip().rsplit("\n", 1)[-1]
        name = last.split(":", 1)[0].strip()
        path = name if "." in name else f"builtins.{name or 'Exception'}"
    return TaskError(exception_class_path=path, traceback=trace)

"""The built-in logging of task events (logger ``roadie.events``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from roadie.hookspecs import hookimpl
from roadie.jsonlog import task_fields

if TYPE_CHECKING:
    from roadie.app import Roadie
    from roadie.records import TaskRecord
    from roadie.result import Result
    from roadie.running import RunningTask
    from roadie.worker import Worker

log = logging.getLogger("roadie.events")


@hookimpl
def roadie_task_added(app: Roadie, task: TaskRecord) -> None:
    if not log.isEnabledFor(logging.DEBUG):  # add_tasks calls this for every task
        return
    log.debug("task %s added: %s %r", task.id, task.executor, task.name,
              extra=task_fields(task))


@hookimpl
def roadie_before_task(task: RunningTask) -> None:
    if not log.isEnabledFor(logging.INFO):  # the fields cost more than the call
        return
    log.info("task %s started: %s attempt %d", task.id, task.record.executor, task.attempt,
             extra=task_fields(task, "started"))


@hookimpl
def roadie_task_finished(task: TaskRecord, result: Result) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    log.info("task %s successful: %s", task.id, result.message, extra=task_fields(task))


@hookimpl
def roadie_task_failed(task: TaskRecord, message: str, error: BaseException | None) -> None:
    log.warning("task %s failed: %s", task.id, message, extra=task_fields(task))


@hookimpl
def roadie_task_cancelled(task: TaskRecord, message: str) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    log.info("task %s cancelled: %s", task.id, message, extra=task_fields(task))


@hookimpl
def roadie_task_orphaned(task: TaskRecord, node: str, outcome: str) -> None:
    log.warning("task %s of dead worker %s: %s", task.id, node, outcome,
                extra=task_fields(task))


@hookimpl
def roadie_worker_started(worker: Worker) -> None:
    log.info("worker %s started (%d threads)", worker.name, worker.concurrency)


@hookimpl
def roadie_worker_stopping(worker: Worker) -> None:
    log.info("worker %s stopping", worker.name)

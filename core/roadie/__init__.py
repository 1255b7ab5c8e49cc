"""roadie: persistent background tasks whose executors come from pip-installed plugins."""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from roadie.app import Roadie
from roadie.codec import TypeRegistry, context_type
from roadie.config import Settings
from roadie.errors import (
    AttachmentError,
    Cancelled,
    ConfigurationError,
    ContextDecodeError,
    ContextEncodeError,
    ContextError,
    DatabaseError,
    DependencyError,
    InvalidTransition,
    PluginError,
    RoadieError,
    ScheduleError,
    ScheduleNotFound,
    SchemaMismatchError,
    SchemaNewerError,
    SchemaOutdatedError,
    TaskNotFound,
    TransactionError,
    TypeRegistrationError,
    UnknownExecutor,
)
from roadie.executor import CrashPolicy, Executor, Isolation, Retry, StatusMessageTranslator
from roadie.hookspecs import hookimpl, hookspec
from roadie.lifecycle import Delay, Veto
from roadie.limits import Rate
from roadie.records import (
    AttachmentInfo,
    AttemptRecord,
    ExecutorState,
    NodeRecord,
    TaskDraft,
    TaskRecord,
)
from roadie.result import Result
from roadie.running import AsyncTaskCalls, RunningTask, current_task
from roadie.schedules import Cron, Every, ScheduleInfo
from roadie.status import Status
from roadie.taskstatus import TaskStatus
from roadie.worker import Worker, WorkerStats

if TYPE_CHECKING:
    from roadie.aio_client import AsyncRoadie
    from roadie.attachments import AttachmentStore, LocalAttachmentStore
    from roadie.lightweight import ChildState, LightweightTask
    from roadie.trees import Subtasks

__version__ = "0.1.0"

__all__ = [
    "AsyncRoadie",
    "AsyncTaskCalls",
    "AttachmentError",
    "AttachmentInfo",
    "AttachmentStore",
    "AttemptRecord",
    "Cancelled",
    "ChildState",
    "ConfigurationError",
    "ContextDecodeError",
    "ContextEncodeError",
    "ContextError",
    "CrashPolicy",
    "Cron",
    "DatabaseError",
    "Delay",
    "DependencyError",
    "Every",
    "Executor",
    "ExecutorState",
    "InvalidTransition",
    "Isolation",
    "LightweightTask",
    "LocalAttachmentStore",
    "NodeRecord",
    "PluginError",
    "Rate",
    "Result",
    "Retry",
    "Roadie",
    "RoadieError",
    "RunningTask",
    "ScheduleError",
    "ScheduleInfo",
    "ScheduleNotFound",
    "SchemaMismatchError",
    "SchemaNewerError",
    "SchemaOutdatedError",
    "Settings",
    "Status",
    "StatusMessageTranslator",
    "Subtasks",
    "TaskDraft",
    "TaskNotFound",
    "TaskRecord",
    "TaskStatus",
    "TransactionError",
    "TypeRegistrationError",
    "TypeRegistry",
    "UnknownExecutor",
    "Veto",
    "Worker",
    "WorkerStats",
    "context_type",
    "current_task",
    "hookimpl",
    "hookspec",
]

logging.getLogger("roadie").addHandler(logging.NullHandler())


# Imported on first use (PEP 562), what a worker needs only for a task that uses it: a worker,
# or any synchronous program, compiles and keeps none of these modules until then (issue 31:
# idle memory). The async client, subtasks, lightweight children, attachment stores.
_LAZY = {
    "AsyncRoadie": "roadie.aio_client",
    "Subtasks": "roadie.trees",
    "ChildState": "roadie.lightweight",
    "LightweightTask": "roadie.lightweight",
    "AttachmentStore": "roadie.attachments",
    "LocalAttachmentStore": "roadie.attachments",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # (found as a plain attribute from now on)
    return value

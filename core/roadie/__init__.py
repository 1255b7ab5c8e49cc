"""roadie: persistent background tasks whose executors come from pip-installed plugins."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from roadie.app import Roadie
from roadie.attachments import AttachmentStore, LocalAttachmentStore
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
from roadie.lightweight import ChildState, LightweightTask
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
from roadie.trees import Subtasks
from roadie.worker import Worker, WorkerStats

if TYPE_CHECKING:
    from roadie.aio_client import AsyncRoadie

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


def __getattr__(name: str) -> Any:
    # AsyncRoadie is imported on first use (PEP 562): a worker, or any synchronous program,
    # never compiles or keeps roadie.aio_client
    if name == "AsyncRoadie":
        from roadie.aio_client import AsyncRoadie

        return AsyncRoadie
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

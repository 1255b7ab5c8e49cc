"""Read-only views of stored rows: tasks, nodes, attempts, attachments."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from roadie.status import Status

Decoder = Callable[["TaskRecord", bytes, str], Any]
T = TypeVar("T")


@dataclass(frozen=True)
class TaskRecord:
    """A task as stored. ``context``, ``result``, ``checkpoint`` and ``status`` attributes are
    decoded on access (inside the task's import context); the raw bytes stay available."""

    id: int
    name: str
    owner: str | None
    group: str | None
    executor: str
    plugins: Mapping[str, str]
    status: Status
    status_message: str
    completed: bool
    attempts: int
    isolation_key: str | None
    priority: int
    run_after: dt.datetime
    tags: frozenset[str]
    timeout: float | None
    node: str | None
    heartbeat_at: dt.datetime | None
    cancel_requested_at: dt.datetime | None
    cancel_requested_by: str | None
    error: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    updated_at: dt.datetime
    context_bytes: bytes = field(repr=False)
    result_bytes: bytes | None = field(default=None, repr=False)
    checkpoint_bytes: bytes | None = field(default=None, repr=False)
    status_bytes: bytes | None = field(default=None, repr=False)
    messages_bytes: bytes | None = field(default=None, repr=False)
    captured_bytes: bytes | None = field(default=None, repr=False)
    decoder: Decoder | None = field(default=None, repr=False, compare=False)
    schedule: str | None = None  # the name of the schedule that made it
    scheduled_for: dt.datetime | None = None  # the schedule's slot (UTC)
    parent_id: int | None = None  # the task that added it with ``add_subtask``
    fan_in: bool = False  # its subtasks have ended: ``subtasks_done`` runs next
    has_dependents: bool = field(default=False, repr=False)  # some task runs ``after`` it
    unique_key: str | None = None  # no other task of its executor with this key is open

    def _decode(self, data: bytes | None, what: str, default: Any = None) -> Any:
        if data is None:
            return default
        if self.decoder is None:
            raise RuntimeError("this TaskRecord was made without a decoder")
        return self.decoder(self, data, what)

    @property
    def context(self) -> dict[str, Any]:
        """The decoded context map."""
        return self._decode(self.context_bytes, "context", {})

    @property
    def result(self) -> Any:
        """The decoded ``Result.value`` the executor returned, or None."""
        return self._decode(self.result_bytes, "result")

    @property
    def checkpoint(self) -> dict[str, Any] | None:
        """The last checkpoint saved with ``task.checkpoint(...)``, or None."""
        return self._decode(self.checkpoint_bytes, "checkpoint")

    @property
    def captured(self) -> dict[str, Any]:
        """The caller context captured by ``roadie_capture_context`` hooks at add time."""
        return self._decode(self.captured_bytes, "captured context", {})

    @property
    def task_status(self) -> dict[str, Any]:
        """The live status attributes (progress, counters, ...) as last written."""
        return self._decode(self.status_bytes, "task status", {})

    @property
    def recent_messages(self) -> list[dict[str, Any]]:
        """The most recent status messages, oldest first."""
        return self._decode(self.messages_bytes, "status messages", [])

    @property
    def cancel_requested(self) -> bool:
        """Whether a cancel was requested and the task has not ended yet."""
        return self.cancel_requested_at is not None and not self.status.is_final

    @property
    def plugin_names(self) -> list[str]:
        """The plugin distributions the task needs."""
        return sorted(self.plugins)


def instance_of(cls: type[T], fields: dict[str, Any]) -> T:
    """An instance of the frozen dataclass ``cls`` from a map of all its fields, without
    the per-field cost of its ``__init__``: the claim loop and ``add_tasks`` build thousands
    a second. The instance keeps ``fields`` as its own (pass a new dict)."""
    instance = object.__new__(cls)
    object.__setattr__(instance, "__dict__", fields)
    return instance


_DEFAULTS: dict[type, tuple[dict[str, Any], frozenset[str]]] = {}  # by dataclass


def _defaults(cls: type) -> tuple[dict[str, Any], frozenset[str]]:
    """The fields of the dataclass ``cls`` that have a default, with it, and all its field
    names (worked out once per class)."""
    known = _DEFAULTS.get(cls)
    if known is None:
        fields = dataclasses.fields(cls)
        known = _DEFAULTS[cls] = (
            {f.name: f.default for f in fields if f.default is not dataclasses.MISSING},
            frozenset(f.name for f in fields))
    return known


def instance_with_defaults(cls: type[T], fields: dict[str, Any]) -> T:
    """``instance_of`` for a map of some of the fields, the others taking their defaults; a
    name that is not a field of ``cls`` raises TypeError, as ``__init__`` would."""
    defaults, names = _defaults(cls)
    if not fields.keys() <= names:
        raise TypeError(f"{cls.__name__} has no field {sorted(fields.keys() - names)}")
    return instance_of(cls, {**defaults, **fields})


def task_record_of(fields: dict[str, Any]) -> TaskRecord:
    """A TaskRecord from a map of all its fields (``instance_of``)."""
    return instance_of(TaskRecord, fields)


@dataclass(frozen=True)
class TaskDraft:
    """A task about to be added, as ``Executor.isolation_key`` sees it."""

    executor: str
    name: str
    owner: str | None
    group: str | None
    context: Mapping[str, Any]

    @property
    def task_group(self) -> str | None:
        """The group, under its column name."""
        return self.group


@dataclass(frozen=True)
class ExecutorState:
    """An executor's flow control and queue, as ``Roadie.list_executors`` reports it:
    whether it is paused, its limits (``max_running``, ``rate_limit``, the ``roadie.Rate``),
    and how many of its tasks wait, wait held by a control (over its limit, its rate or its
    isolation key, or paused), and run."""

    executor: str
    paused: bool
    max_running: int | None
    rate_limit: Any  # roadie.Rate | None
    waiting: int
    held: int
    running: int
    paused_at: dt.datetime | None = None
    paused_by: str | None = None

    @property
    def limits(self) -> str:
        """The limits in words ('' for none)."""
        from roadie.limits import Limits

        return Limits(self.max_running, self.rate_limit).describe()


@dataclass(frozen=True)
class NodeRecord:
    """A worker process as registered in the database."""

    id: str
    name: str
    host: str
    pid: int
    concurrency: int
    plugins: Mapping[str, str]
    executors: Mapping[str, str]  # "dist:name" -> isolation value
    tags: frozenset[str]
    started_at: dt.datetime
    heartbeat_at: dt.datetime
    stopped_at: dt.datetime | None

    def is_alive(self, now: dt.datetime, grace: float) -> bool:
        """Whether the node heartbeat is fresher than ``grace`` seconds and it has not stopped."""
        return self.stopped_at is None and (now - self.heartbeat_at).total_seconds() <= grace


@dataclass(frozen=True)
class AttemptRecord:
    """One finished attempt at running a task."""

    task_id: int
    attempt: int
    node: str | None
    status: Status
    message: str
    error: str | None
    started_at: dt.datetime | None
    finished_at: dt.datetime


@dataclass(frozen=True)
class AttachmentInfo:
    """A file kept with a task."""

    task_id: int
    name: str
    size: int
    checksum: str
    media_type: str
    created_at: dt.datetime

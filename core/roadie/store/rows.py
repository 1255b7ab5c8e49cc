"""Task rows into ``TaskRecord`` objects, and the times and maps in them: the one place that
reads a task row, whether SQLAlchemy or the driver returned it."""

from __future__ import annotations

import datetime as dt
import functools
import json
import operator
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.engine import Connection, Row

from roadie import models
from roadie.records import Decoder, TaskRecord, task_record_of
from roadie.status import Status
from roadie.store.engine import driver_rows

T = models.tasks
TIME_COLUMNS = tuple(c.name for c in T.c if isinstance(c.type, models.UTCDateTime))
_UTC = dt.timezone.utc


def utc_time(when: dt.datetime) -> dt.datetime:
    """An aggregate's time (no column type applied) in UTC."""
    if isinstance(when, str):
        when = dt.datetime.fromisoformat(when)
    return when.replace(tzinfo=dt.timezone.utc) if when.tzinfo is None else when.astimezone(
        dt.timezone.utc)


def sqlite_time(when: dt.datetime | None) -> str | None:
    """A time as SQLAlchemy stores it in SQLite."""
    if when is None:
        return None
    return when.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds")


def sqlite_rows(conn: Connection, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    """Task rows read by driver SQL on SQLite, with their times as aware UTC datetimes."""
    rows = driver_rows(conn, sql, params)
    for row in rows:
        for column in TIME_COLUMNS:
            text = row.get(column)
            if text is not None:
                row[column] = dt.datetime.fromisoformat(text + "+00:00")
    return rows


def in_utc(row: dict[str, Any]) -> dict[str, Any]:
    """A task row read by driver SQL (no SQLAlchemy types), with its times in UTC."""
    for column in TIME_COLUMNS:
        when = row.get(column)
        if when is not None and when.tzinfo is not _UTC:
            row[column] = when.astimezone(_UTC)
    return row


# TaskRecord fields and the task columns they come from, for records read by driver SQL
_RECORD_SOURCES = (
    ("id", "id"), ("name", "name"), ("owner", "owner"), ("group", "task_group"),
    ("executor", "executor"), ("plugins", "plugins"), ("status", "status"),
    ("status_message", "status_message"), ("completed", "completed"),
    ("attempts", "attempts"), ("isolation_key", "isolation_key"), ("priority", "priority"),
    ("run_after", "run_after"), ("tags", "tags"), ("timeout", "timeout"), ("node", "node"),
    ("heartbeat_at", "heartbeat_at"), ("cancel_requested_at", "cancel_requested_at"),
    ("cancel_requested_by", "cancel_requested_by"), ("error", "error"),
    ("created_at", "created_at"), ("started_at", "started_at"),
    ("finished_at", "finished_at"), ("updated_at", "updated_at"),
    ("context_bytes", "context"), ("result_bytes", "result"),
    ("checkpoint_bytes", "checkpoint"), ("status_bytes", "task_status"),
    ("messages_bytes", "messages"), ("captured_bytes", "captured"),
    ("schedule", "schedule"), ("scheduled_for", "scheduled_for"),
    ("parent_id", "parent_id"), ("fan_in", "fan_in"), ("has_dependents", "has_dependents"),
    ("unique_key", "unique_key"),
)
_RECORD_FIELDS = tuple(name for name, _ in _RECORD_SOURCES)
_RECORD_COLUMNS = frozenset(column for _, column in _RECORD_SOURCES)
_RECORD_TIMES = tuple(name for name, column in _RECORD_SOURCES if column in TIME_COLUMNS)


def _record_of_fields(fields: dict[str, Any], decoder: Decoder | None) -> TaskRecord:
    """A TaskRecord from its fields as the columns hold them (``_RECORD_SOURCES``): the
    status as a Status, the plugins map from its JSON text, tags as a set, flags as bools,
    times in UTC. The one place that turns a task row into a record."""
    plugins = fields["plugins"]
    if isinstance(plugins, str):  # some drivers (and the own sessions) hand JSON as text
        fields["plugins"] = dict(_plugins_map(plugins))
    elif plugins is None:
        fields["plugins"] = {}
    fields["status"] = STATUS_OF[fields["status"]]
    fields["status_message"] = fields["status_message"] or ""
    fields["tags"] = _tag_set(fields["tags"])
    fields["completed"] = bool(fields["completed"])
    fields["fan_in"] = bool(fields["fan_in"])
    fields["has_dependents"] = bool(fields["has_dependents"])
    for name in _RECORD_TIMES:
        when = fields[name]
        if when is not None and when.tzinfo is not _UTC:
            fields[name] = when.astimezone(_UTC)
    fields["decoder"] = decoder
    return task_record_of(fields)


@functools.lru_cache(maxsize=64)
def record_reader(keys: tuple[str, ...]) -> Callable[[Sequence[Any], Decoder | None],
                                                      TaskRecord]:
    """How to make a TaskRecord from a driver row with the columns ``keys``: one dict from
    the row's values (not a row dict, then a record dict, as ``task_record`` makes)."""
    if not _RECORD_COLUMNS.issubset(keys):  # an older schema (downgraded under a worker)
        return lambda values, decoder: task_record(dict(zip(keys, values, strict=True)),
                                                   decoder)
    pick = operator.itemgetter(*(keys.index(column) for _, column in _RECORD_SOURCES))

    def record_of(values: Sequence[Any], decoder: Decoder | None) -> TaskRecord:
        return _record_of_fields(dict(zip(_RECORD_FIELDS, pick(values), strict=True)),
                                 decoder)

    return record_of


STATUS_OF = {int(status): status for status in Status}


@functools.lru_cache(maxsize=1024)
def _plugins_map(text: str) -> dict[str, str]:
    """A task's plugins map from its JSON text (cached: tasks share a few; copy the result)."""
    plugins: dict[str, str] = json.loads(text)
    return plugins


@functools.lru_cache(maxsize=1024)
def _tag_set(text: str | None) -> frozenset[str]:
    return frozenset(t for t in (text or "").split(",") if t)


def plugins_texts(maps: list[dict[str, str]]) -> list[str]:
    """Plugins maps as JSON text (the maps of a batch are mostly equal)."""
    texts: dict[tuple[tuple[str, str], ...], str] = {}
    found = []
    for plugins in maps:
        key = tuple(plugins.items())
        text = texts.get(key)
        if text is None:
            text = texts[key] = json.dumps(plugins)
        found.append(text)
    return found


def added_records(ids: Sequence[int], table: dict[str, list[Any]],
                  decoder: Decoder | None) -> list[TaskRecord]:
    """The TaskRecords of tasks just inserted (``tasks._bulk_insert``) with their ``ids``,
    from ``table``, the rows' values a column at a time: the columns it leaves out are NULL.
    The fields are made as ``_record_of_fields`` makes them, a column at a time; a field
    that every record has alike is made once."""
    names: list[str] = ["id"]
    columns: list[Sequence[Any]] = [ids]
    same: dict[str, Any] = {"decoder": decoder}
    for name, column in _RECORD_SOURCES[1:]:
        values = table.get(column)
        if values is None:
            same[name] = _ABSENT.get(name)
            continue
        convert = _ADDED_FIELD.get(name, _as_is)
        # (the plugins maps are each task's own)
        if name != "plugins" and values.count(values[0]) == len(values):
            same[name] = convert(values[0])
        else:
            names.append(name)
            columns.append(values if convert is _as_is else list(map(convert, values)))
    records = []
    for row in zip(*columns, strict=True):
        fields = same.copy()
        for name, value in zip(names, row, strict=True):
            fields[name] = value
        records.append(task_record_of(fields))
    return records


def _as_is(value: Any) -> Any:
    return value


def _in_utc(when: dt.datetime | None) -> dt.datetime | None:
    return when if when is None or when.tzinfo is _UTC else when.astimezone(_UTC)


def _plugins_field(plugins: Any) -> Any:
    if isinstance(plugins, str):
        return dict(_plugins_map(plugins))
    return {} if plugins is None else plugins


# ``_record_of_fields``'s conversions, one field at a time (``added_records``), and the
# fields of columns a row leaves out
_ADDED_FIELD: dict[str, Callable[[Any], Any]] = {
    "plugins": _plugins_field, "status": STATUS_OF.__getitem__,
    "status_message": lambda message: message or "", "tags": _tag_set, "completed": bool,
    "fan_in": bool, "has_dependents": bool, **{name: _in_utc for name in _RECORD_TIMES}}
_ABSENT = {"plugins": {}, "status_message": "", "tags": frozenset(), "completed": False,
           "fan_in": False, "has_dependents": False}


def task_record(row: Any, decoder: Decoder | None) -> TaskRecord:
    """A TaskRecord from a result row or a mapping of column names (a column it lacks,
    such as those added by later migrations in an old query, is NULL)."""
    m = row._mapping if isinstance(row, Row) else row
    return _record_of_fields({name: m.get(column) for name, column in _RECORD_SOURCES},
                             decoder)

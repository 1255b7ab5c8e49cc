"""The worker's log formats: ``--log-format json`` writes one JSON object per line; the text
format is one plain line per event when standard error is not a terminal (rich's columns wrap
long lines, which log collectors would split into many events)."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from roadie.records import TaskRecord
    from roadie.running import RunningTask

TASK_FIELDS = ("task_id", "executor", "attempt", "status", "node")


def task_fields(task: TaskRecord | RunningTask, status: str | None = None) -> dict[str, Any]:
    """The ``extra`` of a log call about ``task``: its id, executor, attempt and status (the
    formatter adds the node)."""
    from roadie.running import RunningTask

    record = task.record if isinstance(task, RunningTask) else task
    return {
        "task_id": record.id,
        "executor": record.executor,
        "attempt": record.attempts,
        "status": status or record.status.label,
    }


class JsonFormatter(logging.Formatter):
    """Formats a log record as one JSON object: time, level, logger, message, the task fields
    when the record is about a task, and the node (this worker's name when the record does
    not say)."""

    def __init__(self, node: str | None = None) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        """One line of JSON."""
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in TASK_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if "node" not in line and self.node:
            line["node"] = self.node
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class LineFormatter(logging.Formatter):
    """Formats a log record as one line of text: time, level, logger, message (and the task
    fields when the record is about a task); newlines in the message or a traceback become
    ``\\n`` so that an event never spans lines."""

    def format(self, record: logging.LogRecord) -> str:
        """One line of text."""
        when = dt.datetime.fromtimestamp(record.created, dt.timezone.utc)
        text = (f"{when.isoformat(timespec='milliseconds')} {record.levelname} "
                f"{record.name}: {record.getMessage()}")
        fields = [f"{name}={getattr(record, name)}" for name in TASK_FIELDS
                  if getattr(record, name, None) is not None]
        if fields:
            text += f" [{' '.join(fields)}]"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text.replace("\r\n", "\n").replace("\n", "\\n")

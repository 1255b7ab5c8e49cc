"""The worker's log formats: ``--log-format json`` writes one JSON object per line; the text
format is one plain line per event when standard error is not a terminal (rich's columns wrap
long lines, which log collectors would split into many events)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from typing import TYPE_CHECKING, Any

from roadie.running import RunningTask

if TYPE_CHECKING:
    from roadie.records import TaskRecord

TASK_FIELDS = ("task_id", "executor", "attempt", "status", "node")

_ENCODER = json.JSONEncoder(default=str)  # what json.dumps(..., default=str) makes per call


def task_fields(task: TaskRecord | RunningTask, status: str | None = None) -> dict[str, Any]:
    """The ``extra`` of a log call about ``task``: its id, executor, attempt and status (the
    formatter adds the node)."""
    record = task.record if isinstance(task, RunningTask) else task
    return {
        "task_id": record.id,
        "executor": record.executor,
        "attempt": record.attempts,
        "status": status or record.status.label,
    }


class _Clock:
    """A record's time in UTC as ``datetime.fromtimestamp(created, timezone.utc)`` would
    write it, without making a datetime per record: the date and time to the second are
    made once a second, the fraction is the same rounding (half to even, to microseconds)."""

    def __init__(self) -> None:
        self._second: tuple[float, str] = (math.nan, "")  # one tuple: read whole by threads

    def split(self, created: float) -> tuple[str, int]:
        """``YYYY-MM-DDTHH:MM:SS`` and the microseconds of ``created``."""
        fraction, second = math.modf(created)
        micro = round(fraction * 1e6)
        if micro >= 1_000_000:
            micro -= 1_000_000
            second += 1.0
        elif micro < 0:  # before 1970
            micro += 1_000_000
            second -= 1.0
        cached, text = self._second
        if second != cached:
            when = dt.datetime.fromtimestamp(second, dt.timezone.utc)
            text = when.replace(tzinfo=None).isoformat(timespec="seconds")
            self._second = (second, text)
        return text, micro

    def milliseconds(self, created: float) -> str:
        """``isoformat(timespec="milliseconds")``: the milliseconds truncated."""
        text, micro = self.split(created)
        return f"{text}.{micro // 1000:03d}+00:00"

    def isoformat(self, created: float) -> str:
        """``isoformat()``: microseconds, left out when they are 0."""
        text, micro = self.split(created)
        return f"{text}.{micro:06d}+00:00" if micro else f"{text}+00:00"


class JsonFormatter(logging.Formatter):
    """Formats a log record as one JSON object: time, level, logger, message, the task fields
    when the record is about a task, and the node (this worker's name when the record does
    not say)."""

    def __init__(self, node: str | None = None) -> None:
        super().__init__()
        self.node = node
        self._clock = _Clock()

    def format(self, record: logging.LogRecord) -> str:
        """One line of JSON."""
        line: dict[str, Any] = {
            "time": self._clock.isoformat(record.created),
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
        return _ENCODER.encode(line)


class LineFormatter(logging.Formatter):
    """Formats a log record as one line of text: time, level, logger, message (and the task
    fields when the record is about a task); newlines in the message or a traceback become
    ``\\n`` so that an event never spans lines."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # logging.Formatter's arguments, as before
        self._clock = _Clock()

    def format(self, record: logging.LogRecord) -> str:
        """One line of text."""
        text = (f"{self._clock.milliseconds(record.created)} {record.levelname} "
                f"{record.name}: {record.getMessage()}")
        fields: list[str] = []
        for name in TASK_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                fields.append(f"{name}={value}")
        if fields:
            text += f" [{' '.join(fields)}]"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text.replace("\r\n", "\n").replace("\n", "\\n")

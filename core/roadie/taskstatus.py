"""The live attribute map of a running task: progress, counters, the current step."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar


class TaskStatus(Mapping[str, Any]):
    """A thread-safe map of status attributes that remembers whether it changed.

    Translators write it; the worker flushes it to the database with throttling. When a task
    reports ``done`` and ``total`` the map also holds ``percent``, ``rate`` (per second) and
    ``eta_seconds``, derived here so that every executor gets them for free.
    """

    PROGRESS_KEYS: ClassVar[frozenset[str]] = frozenset({"done", "total", "message"})

    def __init__(self, initial: Mapping[str, Any] | None = None) -> None:
        self._data: dict[str, Any] = dict(initial or {})
        self._lock = threading.Lock()
        self._version = 0
        self._started = time.monotonic()

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(dict(self._data))

    def __len__(self) -> int:
        return len(self._data)

    @property
    def version(self) -> int:
        """Increases with every change."""
        return self._version

    def snapshot(self) -> dict[str, Any]:
        """A copy of the attributes."""
        with self._lock:
            return dict(self._data)

    def set(self, key: str, value: Any) -> None:
        """Set one attribute."""
        self.update({key: value})

    def update(self, values: Mapping[str, Any]) -> None:
        """Set several attributes at once."""
        if not values:
            return
        with self._lock:
            self._data.update(values)
            self._version += 1

    def increment(self, key: str, by: float = 1) -> None:
        """Add ``by`` to a numeric attribute (0 if absent)."""
        with self._lock:
            self._data[key] = self._data.get(key, 0) + by
            self._version += 1

    def apply_progress_fields(self, message: Mapping[str, Any]) -> None:
        """Apply the generic progress fields ``done``, ``total`` and ``message`` of a status
        message, and derive ``percent``, ``rate`` and ``eta_seconds``."""
        values: dict[str, Any] = {}
        if "message" in message:
            values["message"] = message["message"]
        if "done" in message:
            values["done"] = message["done"]
        if "total" in message and message["total"] is not None:
            values["total"] = message["total"]
        if not values:
            return
        data = self._data
        with self._lock:
            data.update(values)
            done, total = data.get("done"), data.get("total")
            if isinstance(done, (int, float)):
                elapsed = max(time.monotonic() - self._started, 1e-6)
                rate = done / elapsed
                data["rate"] = round(rate, 3)
                if isinstance(total, (int, float)) and total > 0:
                    data["percent"] = round(min(100.0, 100.0 * done / total), 2)
                    left = max(total - done, 0)
                    data["eta_seconds"] = round(left / rate, 1) if rate > 0 else None
            self._version += 1

"""Task statuses, with the values of Liferay's BackgroundTaskConstants."""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    """The status of a task.

    NEW waits for a worker; QUEUED is runnable but waits for its isolation lock;
    FAILED, SUCCESSFUL and CANCELLED are final. WAITING (not in Liferay) is a parent that
    waits for its subtasks without holding a thread; it is neither final nor claimable.
    """

    NEW = 0
    IN_PROGRESS = 1
    FAILED = 2
    SUCCESSFUL = 3
    QUEUED = 4
    CANCELLED = 5
    WAITING = 6

    @property
    def label(self) -> str:
        """The lower-case label: ``new``, ``in-progress``, ``failed``, ..."""
        return self.name.lower().replace("_", "-")

    @property
    def is_final(self) -> bool:
        """True for FAILED, SUCCESSFUL and CANCELLED."""
        return self in FINAL_STATUSES

    @classmethod
    def parse(cls, value: str | int | Status) -> Status:
        """A status from its value, name or label (``"in-progress"``, ``"IN_PROGRESS"``, ``1``)."""
        if isinstance(value, Status):
            return value
        if isinstance(value, int):
            return cls(value)
        text = value.strip()
        if text.isdigit():
            return cls(int(text))
        key = text.upper().replace("-", "_")
        try:
            return cls[key]
        except KeyError:
            labels = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown status {value!r}; use one of: {labels}") from None

    def __str__(self) -> str:
        return self.label


FINAL_STATUSES = frozenset({Status.FAILED, Status.SUCCESSFUL, Status.CANCELLED})
WAITING_STATUSES = frozenset({Status.NEW, Status.QUEUED})

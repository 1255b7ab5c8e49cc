"""The names of the notification channels and the shape of their payloads.

Apart from ``engine`` so that a process which only names a channel (a host, the worker's
wake-up handler) does not import SQLAlchemy.
"""

from __future__ import annotations

CHANNEL_ADDED = "roadie_task_added"
CHANNEL_CHANGED = "roadie_task_changed"
CHANNEL_CANCEL = "roadie_task_cancel"
CHANNEL_SCHEDULES = "roadie_schedules_changed"


def split_payload(payload: str) -> list[str]:
    """The items of a notification payload (``["*"]`` means "anything may have changed")."""
    return [p for p in payload.split(",") if p]

"""The context of a ``takes_context=True`` task: Django's ``TaskContext``, plus roadie's
running task (live progress, cancellation, attachments)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from roadie_django.compat import TaskContext

if TYPE_CHECKING:
    import roadie


@dataclass(frozen=True, kw_only=True)
class RoadieTaskContext(TaskContext):
    """What a ``@task(takes_context=True)`` function gets as ``context`` on a roadie worker.

    Django's ``context.task_result`` and ``context.attempt`` work as everywhere; the extra
    ``context.roadie_task`` is roadie's ``RunningTask``: ``context.roadie_task.progress(done,
    total)`` shows live progress in ``roadie watch``, the dashboard and
    ``app.get_task_status(id)``, ``context.roadie_task.raise_if_cancelled()`` is a safe point
    for ``roadie cancel``, and ``context.roadie_task.attach(name, data)`` keeps a file.
    """

    roadie_task: roadie.RunningTask

    def progress(self, done: float, total: float | None = None,
                 message: str | None = None) -> None:
        """Report progress (``context.roadie_task.progress``): ``done`` of ``total``, with an
        optional message. Also a safe point: it raises ``roadie.Cancelled`` once the task was
        cancelled."""
        self.roadie_task.progress(done, total, message)

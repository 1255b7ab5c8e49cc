"""``roadie watch``: live progress bars of tasks until they end (``roadie demo`` shows its
tasks the same way)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from roadie.cli.common import STATUS_STYLE, console, safe_status, with_app
from roadie.status import FINAL_STATUSES, Status

if TYPE_CHECKING:
    from roadie.app import Roadie
    from roadie.records import TaskRecord


@click.command()
@click.argument("task_ids", type=int, nargs=-1)
@click.option("--timeout", type=float, default=None, help="Stop watching after N seconds.")
@with_app
def watch(app: Roadie, task_ids: tuple[int, ...], timeout: float | None) -> None:
    """Show live progress bars of tasks until they end (default: every unfinished task)."""
    ids = list(task_ids) or [
        t.id for t in app.list_tasks(status=[Status.NEW, Status.QUEUED, Status.IN_PROGRESS,
                                             Status.WAITING], limit=None)
    ]
    if not ids:
        click.echo("no unfinished tasks to watch")
        return
    for task_id in ids:
        app.get_task(task_id)
    watch_tasks(app, ids, timeout=timeout)


def watch_tasks(app: Roadie, ids: list[int], *, timeout: float | None = None) -> list[TaskRecord]:
    """Live progress bars for ``ids`` until all have ended; returns their final records."""
    from rich.console import Group
    from rich.live import Live
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    out = console()
    progress = Progress(
        TextColumn("{task.fields[label]}"), BarColumn(), TaskProgressColumn(),
        TextColumn("{task.fields[state]}"), TimeElapsedColumn(), console=out,
    )
    bars: dict[int, Any] = {}
    latest: dict[int, TaskRecord] = {}
    with Live(Group(progress), console=out, refresh_per_second=8, transient=False):
        for task in app.watch(ids, timeout=timeout):
            latest[task.id] = task
            status = safe_status(task)
            if task.status == Status.WAITING:  # a tree: the bar follows its subtasks
                from roadie.trees import tree_status

                tree = tree_status(app, task)
                status = {"total": tree.get("subtasks_total"), "done": tree.get("subtasks_ended"),
                          "message": f"{tree.get('subtasks_ended', 0)} of "
                                     f"{tree.get('subtasks_total', 0)} subtasks ended"}
            total = status.get("total") or 1
            done = status.get("done") or 0
            if task.status == Status.SUCCESSFUL and not status.get("total"):
                done = total
            label = f"#{task.id} {task.name or task.executor}"[:40]
            state = state_text(task, status)
            if task.id not in bars:
                bars[task.id] = progress.add_task("", total=total, completed=done, label=label,
                                                  state=state)
            else:
                progress.update(bars[task.id], total=total, completed=done, state=state)
    return [latest[i] for i in ids if i in latest]


def state_text(task: TaskRecord, status: dict[str, Any]) -> str:
    """The short text after a progress bar: the status and the last message."""
    style = STATUS_STYLE[task.status]
    text = f"[{style}]{task.status.label}[/{style}]"
    detail = task.status_message if task.status in FINAL_STATUSES else status.get("message", "")
    if task.cancel_requested:
        detail = "cancel requested"
    return f"{text} {str(detail)[:50]}".rstrip()

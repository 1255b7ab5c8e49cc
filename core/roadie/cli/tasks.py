"""``roadie submit``, ``list``, ``show``, ``cancel``, ``retry``, ``delete`` and ``recover``:
one task at a time, from adding it to deleting it."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import click

from roadie.cli.common import console, new_table, progress_text, styled_status, with_app
from roadie.errors import RoadieError
from roadie.status import Status

if TYPE_CHECKING:
    from roadie.app import Roadie
    from roadie.records import TaskRecord


@click.command()
@click.argument("executor")
@click.option("--context", "context_json", default="{}", help="The context map, as JSON.")
@click.option("--name", default="", help="A name for the task.")
@click.option("--owner", default=None)
@click.option("--group", default=None)
@click.option("--priority", type=int, default=0, help="Higher runs first.")
@click.option("--delay", type=float, default=None, help="Seconds before it may start.")
@click.option("--tag", "tags", multiple=True, help="A tag a worker must have (repeatable).")
@click.option("--timeout", type=float, default=None, help="Seconds before it is stopped.")
@with_app
def submit(app: Roadie, executor: str, context_json: str, name: str, owner: str | None,
           group: str | None, priority: int, delay: float | None, tags: tuple[str, ...],
           timeout: float | None) -> None:
    """Add a task for EXECUTOR ("distribution:name", see `roadie plugins`)."""
    try:
        context = json.loads(context_json)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--context") from None
    task = app.add_task(executor, context, name=name, owner=owner, group=group,
                        priority=priority, delay=delay, tags=tags, timeout=timeout)
    click.echo(f"task {task.id} added ({task.status.label}): {task.executor}")


@click.command("list")
@click.option("--status", "statuses", multiple=True, help="new, in-progress, failed, ...")
@click.option("--executor", default=None)
@click.option("--owner", default=None)
@click.option("--group", default=None)
@click.option("--schedule", default=None, help="Only the tasks this schedule made.")
@click.option("--parent", "parent_id", type=int, default=None,
              help="Only the subtasks of this task.")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--offset", type=int, default=0)
@with_app
def list_(app: Roadie, statuses: tuple[str, ...], executor: str | None, owner: str | None,
          group: str | None, schedule: str | None, limit: int, offset: int,
          parent_id: int | None) -> None:
    """List tasks, newest first."""
    tasks = app.list_tasks(status=list(statuses) or None, executor=executor, owner=owner,
                           group=group, schedule=schedule, limit=limit, offset=offset,
                           parent_id=parent_id)
    table = new_table("id", "name", "executor", "status", "progress", "message", "created")
    for task in tasks:
        message = task.status_message
        reason = app.waiting_reason(task)
        if reason:
            message = reason
        elif task.cancel_requested:
            message = "cancel requested"
        table.add_row(
            str(task.id), task.name, task.executor, styled_status(task.status),
            progress_text(task), message[:80], task.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    console().print(table)


@click.command()
@click.argument("task_id", type=int)
@with_app
def show(app: Roadie, task_id: int) -> None:
    """Show everything about one task."""
    task = app.get_task(task_id)
    out = console()
    table = new_table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, Any]] = [
        ("id", task.id), ("name", task.name), ("executor", task.executor),
        ("plugins", ", ".join(f"{k} {v}" for k, v in sorted(task.plugins.items()))),
        ("status", styled_status(task.status)), ("message", task.status_message),
        ("completed", task.completed), ("owner", task.owner), ("group", task.group),
        ("attempts", task.attempts), ("priority", task.priority),
        ("tags", ", ".join(sorted(task.tags))), ("isolation key", task.isolation_key),
        ("node", task.node), ("created", task.created_at), ("started", task.started_at),
        ("finished", task.finished_at), ("run after", task.run_after),
        ("schedule", f"{task.schedule} (slot {task.scheduled_for})" if task.schedule else None),
        ("parent", task.parent_id),
    ]
    reason = app.waiting_reason(task)
    if reason:
        rows.append(("waiting", reason))
    if task.cancel_requested:
        rows.append(("cancel", f"requested by {task.cancel_requested_by} at "
                               f"{task.cancel_requested_at}"))
    for key, value in rows:
        if value not in (None, ""):
            table.add_row(key, value if not isinstance(value, (int, dt.datetime)) else str(value))
    out.print(table)
    for title, getter in (("context", lambda: task.context), ("status", lambda: task.task_status),
                          ("result", lambda: task.result)):
        try:
            value = getter()
        except RoadieError as exc:
            value = f"(cannot decode: {exc})"
        if value not in (None, {}, []):
            out.print(f"[bold]{title}[/bold]: {value!r}")
    try:
        messages = task.recent_messages
    except RoadieError:
        messages = []
    if messages:
        out.print("[bold]recent status messages[/bold]:")
        for message in messages[-10:]:
            at = message.pop("at", None)
            stamp = at.strftime("%H:%M:%S.%f")[:-3] if isinstance(at, dt.datetime) else ""
            out.print(f"  {stamp} {message!r}")
    attempts = app.attempts(task.id)
    if len(attempts) > 1 or any(a.status != Status.SUCCESSFUL for a in attempts):
        out.print("[bold]attempts[/bold]:")
        for attempt in attempts:
            out.print(f"  #{attempt.attempt} {attempt.status.label} on {attempt.node}: "
                      f"{attempt.message}")
    print_tree(app, task)
    attachments = app.list_attachments(task.id)
    if attachments:
        out.print("[bold]attachments[/bold]: " + ", ".join(
            f"{a.name} ({a.size:,} bytes)" for a in attachments))
    if task.error:
        out.print("[bold]error[/bold]:")
        out.print(task.error.rstrip(), markup=False)


@click.command()
@click.argument("task_id", type=int)
@with_app
def cancel(app: Roadie, task_id: int) -> None:
    """Cancel a task (a running one stops at its next safe point)."""
    task = app.cancel_task(task_id, by="cli")
    if task.status == Status.CANCELLED:
        click.echo(f"task {task_id} cancelled")
    else:
        click.echo(f"task {task_id}: cancel requested; it stops at its next safe point")


@click.command()
@click.argument("task_id", type=int)
@with_app
def retry(app: Roadie, task_id: int) -> None:
    """Run a failed or cancelled task again (same row, same context)."""
    app.resume_task(task_id)
    click.echo(f"task {task_id} is waiting for a worker again")


@click.command()
@click.argument("task_id", type=int)
@click.option("--tree", is_flag=True,
              help="Also delete its subtasks (refused while one of them runs).")
@with_app
def delete(app: Roadie, task_id: int, tree: bool) -> None:
    """Delete a task that is not running, with its attachments."""
    app.delete_task(task_id, tree=tree)
    click.echo(f"task {task_id} deleted" + (" with its subtasks" if tree else ""))


@click.command()
@with_app
def recover(app: Roadie) -> None:
    """Apply the crash policy to the running tasks of dead workers now."""
    count = app.recover_orphans()
    click.echo(f"{count} task(s) of dead workers recovered")


def print_tree(app: Roadie, task: TaskRecord, *, shown: int = 20) -> None:
    """The subtasks of ``task``: counts by status, percent ended, and the first few."""
    from roadie.trees import tree_status

    summary = tree_status(app, task)
    if not summary:
        return
    out = console()
    counts = ", ".join(f"{n} {label}" for label, n in summary["subtasks"].items())
    out.print(f"[bold]subtasks[/bold]: {summary['subtasks_ended']} of "
              f"{summary['subtasks_total']} ended ({summary['subtasks_percent']:g}%): {counts}")
    for sub in app.list_tasks(parent_id=task.id, limit=shown):
        out.print(f"  ├─ #{sub.id} {sub.name or sub.executor} {styled_status(sub.status)} "
                  f"{sub.status_message[:60]}".rstrip())
    if summary["subtasks_total"] > shown:
        out.print(f"  └─ ... {summary['subtasks_total'] - shown} more "
                  f"(`roadie list --parent {task.id}`)")


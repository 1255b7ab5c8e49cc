"""``roadie schedules``: list schedules with their next slots, add, remove, pause, resume,
run now."""

from __future__ import annotations

import json

import click

from roadie.app import Roadie
from roadie.cli.common import app_of, console, new_table, with_app
from roadie.schedules import CATCH_UP, ScheduleInfo


@click.group(invoke_without_command=True)
@click.pass_context
def schedules(ctx: click.Context) -> None:
    """List schedules with their next fire times and state (and manage them: add, remove,
    pause, resume, run-now)."""
    if ctx.invoked_subcommand is None:
        show_schedules(app_of(ctx))


def show_schedules(app: Roadie) -> None:
    """The table of ``roadie schedules``."""
    items = app.list_schedules()
    if not items:
        click.echo("no schedules (add one with `roadie schedules add NAME EXECUTOR --cron ...`"
                   " or declare `schedule = roadie.Cron(...)` on an executor)")
        return
    table = new_table("name", "rule", "executor", "next", "state", "last (UTC)", "note")
    for item in items:
        table.add_row(item.name, item.description, item.executor, _local(item), _state(item),
                      _last(item), (item.problem or item.note)[:90])
    console().print(table)


def _local(item: ScheduleInfo) -> str:
    local = item.next_local
    return local.strftime("%Y-%m-%d %H:%M:%S %Z") if local is not None else "-"


def _state(item: ScheduleInfo) -> str:
    style = {"active": "green", "paused": "yellow", "broken": "red"}[item.state]
    return f"[{style}]{item.state}[/{style}]"


def _last(item: ScheduleInfo) -> str:
    if item.last_slot is None:
        return "-"
    task = f" (task {item.last_task_id})" if item.last_task_id is not None else ""
    return item.last_slot.strftime("%Y-%m-%d %H:%M:%S") + task


@schedules.command("add")
@click.argument("name")
@click.argument("executor")
@click.option("--cron", default=None, help="A cron expression, e.g. '0 3 * * *'.")
@click.option("--every", type=float, default=None, help="An interval in seconds.")
@click.option("--timezone", default="UTC", show_default=True,
              help="The time zone of the cron expression.")
@click.option("--context", "context_json", default="{}", help="The tasks' context, as JSON.")
@click.option("--catch-up", type=click.Choice(CATCH_UP), default="latest", show_default=True,
              help="Slots missed while no worker ran: none, the newest, or all.")
@click.option("--jitter", type=float, default=0.0, help="Delay each task up to N seconds.")
@click.option("--no-overlap", is_flag=True, help="Skip a slot while the last task runs.")
@click.option("--replace", is_flag=True, help="Replace a schedule of that name.")
@click.option("--task-name", default=None, help="The tasks' name (default: NAME).")
@click.option("--owner", default=None)
@click.option("--group", default=None)
@click.option("--priority", type=int, default=0)
@click.option("--tag", "tags", multiple=True, help="A tag a worker must have (repeatable).")
@click.option("--timeout", type=float, default=None, help="Seconds before a task is stopped.")
@with_app
def add(app: Roadie, name: str, executor: str, cron: str | None, every: float | None,
        timezone: str, context_json: str, catch_up: str, jitter: float, no_overlap: bool,
        replace: bool, task_name: str | None, owner: str | None, group: str | None,
        priority: int, tags: tuple[str, ...], timeout: float | None) -> None:
    """Add schedule NAME that makes EXECUTOR tasks (--cron or --every)."""
    try:
        context = json.loads(context_json)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--context") from None
    options = {"owner": owner, "group": group, "priority": priority, "tags": tags,
               "timeout": timeout}
    if task_name is not None:
        options["name"] = task_name
    info = app.add_schedule(name, executor, context, cron=cron, every=every,
                            timezone=timezone, catch_up=catch_up, jitter=jitter,
                            overlap=not no_overlap, replace=replace, **options)
    click.echo(f"schedule {info.name} added: {info.description}, next at {_local(info)}")


@schedules.command("remove")
@click.argument("name")
@with_app
def remove(app: Roadie, name: str) -> None:
    """Delete schedule NAME (the tasks it made stay)."""
    app.remove_schedule(name)
    click.echo(f"schedule {name} removed")


@schedules.command("pause")
@click.argument("name")
@with_app
def pause(app: Roadie, name: str) -> None:
    """Stop schedule NAME firing until it is resumed."""
    app.pause_schedule(name)
    click.echo(f"schedule {name} paused")


@schedules.command("resume")
@click.argument("name")
@with_app
def resume(app: Roadie, name: str) -> None:
    """Let schedule NAME fire again, from its next slot."""
    info = app.resume_schedule(name)
    click.echo(f"schedule {name} resumed, next at {_local(info)}")


@schedules.command("run-now")
@click.argument("name")
@with_app
def run_now(app: Roadie, name: str) -> None:
    """Make one task of schedule NAME now, outside its slots."""
    task = app.run_schedule_now(name)
    click.echo(f"task {task.id} added ({task.status.label}): {task.executor} for schedule "
               f"{name}")

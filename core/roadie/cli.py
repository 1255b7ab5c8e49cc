"""The ``roadie`` command line."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from roadie.app import Roadie
from roadie.errors import RoadieError
from roadie.records import TaskRecord
from roadie.status import FINAL_STATUSES, Status

if TYPE_CHECKING:  # rich is imported when something prints, so a worker never loads it
    from rich.console import Console
    from rich.table import Table

F = TypeVar("F", bound=Callable[..., Any])

STATUS_STYLE = {
    Status.NEW: "cyan", Status.IN_PROGRESS: "yellow", Status.FAILED: "red",
    Status.SUCCESSFUL: "green", Status.QUEUED: "magenta", Status.CANCELLED: "dim",
    Status.WAITING: "blue",
}


def console() -> Console:
    """The console everything prints to (stdout; width from the terminal or 120)."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 120, highlight=False)


def new_table(*columns: str, **options: Any) -> Table:
    """A rich table with these column headers."""
    from rich.table import Table

    return Table(*columns, **options)


class RoadieGroup(click.Group):
    """A group that prints roadie's errors in one line, and adds plugins' commands."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RoadieError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except (ValueError, TypeError) as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if ctx.parent is None:  # the root: `--url` may follow any subcommand
            args = url_first(args)
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_plugin_commands(ctx)
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None or name == "worker":  # plugins may add options to `worker`
            self._add_plugin_commands(ctx)
            command = super().get_command(ctx, name)
        return command

    def _add_plugin_commands(self, ctx: click.Context) -> None:
        if getattr(self, "_plugin_commands_added", False):
            return
        self._plugin_commands_added = True
        try:
            Roadie().plugins.hook.roadie_register_commands(cli=self)
        except Exception as exc:  # a broken plugin must not break the CLI
            click.echo(f"warning: a plugin failed to add its commands: {exc}", err=True)


def url_first(args: list[str]) -> list[str]:
    """The arguments with every ``--url URL`` / ``--url=URL`` moved before the subcommand
    (so ``roadie db upgrade --url URL`` means ``roadie --url URL db upgrade``); nothing after
    a ``--`` is touched."""
    moved: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            rest.extend(args[index:])
            break
        if arg == "--url" and index + 1 < len(args):
            moved += args[index:index + 2]
            index += 2
            continue
        if arg.startswith("--url="):
            moved.append(arg)
        else:
            rest.append(arg)
        index += 1
    return moved + rest


def app_of(ctx: click.Context) -> Roadie:
    """The Roadie of this invocation (built on first use)."""
    obj = ctx.ensure_object(dict)
    if "app" not in obj:
        obj["app"] = Roadie(obj.get("url"))
    return obj["app"]


def with_app(function: F) -> F:
    """Pass the Roadie as the first argument."""

    @click.pass_context
    @functools.wraps(function)
    def wrapper(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
        return function(app_of(ctx), *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@click.group(cls=RoadieGroup)
@click.option("--url", envvar="ROADIE_URL", help="Database URL (default: the embedded SQLite "
              "file; env ROADIE_URL).")
@click.option("--debug", is_flag=True, hidden=True)
@click.version_option(package_name="roadie")
@click.pass_context
def cli(ctx: click.Context, url: str | None, debug: bool) -> None:
    """roadie: persistent background tasks run by executors from installed plugins."""
    ctx.ensure_object(dict).update(url=url, debug=debug)


# -- tasks -------------------------------------------------------------------------------


@cli.command()
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


@cli.command("list")
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


@cli.command()
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


@cli.command()
@click.argument("task_id", type=int)
@with_app
def cancel(app: Roadie, task_id: int) -> None:
    """Cancel a task (a running one stops at its next safe point)."""
    task = app.cancel_task(task_id, by="cli")
    if task.status == Status.CANCELLED:
        click.echo(f"task {task_id} cancelled")
    else:
        click.echo(f"task {task_id}: cancel requested; it stops at its next safe point")


@cli.command()
@click.argument("task_id", type=int)
@with_app
def retry(app: Roadie, task_id: int) -> None:
    """Run a failed or cancelled task again (same row, same context)."""
    app.resume_task(task_id)
    click.echo(f"task {task_id} is waiting for a worker again")


@cli.command()
@click.argument("task_id", type=int)
@click.option("--tree", is_flag=True,
              help="Also delete its subtasks (refused while one of them runs).")
@with_app
def delete(app: Roadie, task_id: int, tree: bool) -> None:
    """Delete a task that is not running, with its attachments."""
    app.delete_task(task_id, tree=tree)
    click.echo(f"task {task_id} deleted" + (" with its subtasks" if tree else ""))


@cli.command()
@click.option("--older-than", "older_than", required=True,
              help="Age since the task ended: 30d, 12h, 90m, 45s, 2w.")
@click.option("--status", "statuses", multiple=True,
              help="successful, failed or cancelled (repeatable; default all three).")
@with_app
def prune(app: Roadie, older_than: str, statuses: tuple[str, ...]) -> None:
    """Delete ended tasks older than --older-than, with their attempts and attachments."""
    from roadie.retention import parse_duration

    try:
        age = parse_duration(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    try:
        count = app.prune(age, statuses=statuses or None)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--status") from None
    click.echo(f"{count} ended task(s) deleted")


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


@cli.command()
@with_app
def recover(app: Roadie) -> None:
    """Apply the crash policy to the running tasks of dead workers now."""
    count = app.recover_orphans()
    click.echo(f"{count} task(s) of dead workers recovered")


# -- attachments -------------------------------------------------------------------------


@cli.command()
@click.argument("task_id", type=int)
@with_app
def attachments(app: Roadie, task_id: int) -> None:
    """List the attachments of a task."""
    table = new_table("name", "size", "media type", "checksum", "created")
    for item in app.list_attachments(task_id):
        table.add_row(item.name, f"{item.size:,}", item.media_type, item.checksum[:19] + "…",
                      item.created_at.strftime("%Y-%m-%d %H:%M:%S"))
    console().print(table)


@cli.group()
def attachment() -> None:
    """Read a task's attachments."""


@attachment.command("get")
@click.argument("task_id", type=int)
@click.argument("name")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file (default: standard output).")
@with_app
def attachment_get(app: Roadie, task_id: int, name: str, output: Path | None) -> None:
    """Write attachment NAME of task TASK_ID to a file or standard output."""
    with app.open_attachment(task_id, name) as source:
        if output is None:
            shutil.copyfileobj(source, sys.stdout.buffer)
            sys.stdout.flush()
        else:
            try:
                with output.open("wb") as target:
                    shutil.copyfileobj(source, target)
            except OSError as exc:
                raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
            click.echo(f"wrote {output}", err=True)


# -- running -----------------------------------------------------------------------------


@cli.command()
@click.option("--concurrency", "-c", type=int, default=2, show_default=True,
              help="Threads per process.")
@click.option("--processes", "-p", type=int, default=1, show_default=True,
              help="Worker processes to start.")
@click.option("--until-idle", is_flag=True, help="Stop once no task is waiting.")
@click.option("--tag", "tags", multiple=True, help="A tag of this node (repeatable).")
@click.option("--name", default=None, help="The node name (default host:pid).")
@click.option("--out-of-process", is_flag=True, envvar="ROADIE_OUT_OF_PROCESS",
              help="Run every executor in a host process (not only out_of_process ones).")
@click.option("--async-concurrency", type=int, default=None,
              help="Slots for async executors, on the event-loop thread (default 100).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, envvar="ROADIE_LOG_FORMAT",
              help="json: one JSON object per line (task id, executor, attempt, status, node).")
@click.pass_context
def worker(ctx: click.Context, concurrency: int, processes: int, until_idle: bool,
           tags: tuple[str, ...], name: str | None, out_of_process: bool = False,
           async_concurrency: int | None = None, log_format: str = "text") -> None:
    """Claim and run tasks until stopped (Ctrl-C: finish running tasks; twice: at once)."""
    import logging
    import socket

    handler: logging.Handler
    if log_format == "json":
        from roadie.jsonlog import JsonFormatter

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter(name or f"{socket.gethostname()}:{os.getpid()}"))
        os.environ["ROADIE_LOG_FORMAT"] = "json"  # to worker processes
    elif sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False)
    else:  # a log collector: one line per event, never wrapped
        from roadie.jsonlog import LineFormatter

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(LineFormatter())
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[handler])
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if processes > 1:
        if out_of_process:
            os.environ["ROADIE_OUT_OF_PROCESS"] = "1"  # the children read it
        if async_concurrency is not None:
            os.environ["ROADIE_ASYNC_CONCURRENCY"] = str(async_concurrency)  # to the children
        run_processes(ctx.obj.get("url"), processes, concurrency, until_idle, tags, name)
        return
    stats = app_of(ctx).run_worker(concurrency=concurrency, until_idle=until_idle, tags=tags,
                                   name=name, out_of_process=out_of_process,
                                   async_concurrency=async_concurrency)
    refused = f" refused_writes={stats.refused_writes}" if stats.refused_writes else ""
    click.echo(f"worker stopped: {stats.finished} task(s) run " +
               " ".join(f"{k}={v}" for k, v in sorted(stats.by_status.items())) + refused)


def run_processes(url: str | None, processes: int, concurrency: int, until_idle: bool,
                  tags: Iterable[str], name: str | None) -> None:
    """Start ``processes`` worker processes and wait for them (signals are passed on)."""
    import signal
    import subprocess

    command = [sys.executable, "-m", "roadie"]
    if url:
        command += ["--url", url]
    command += ["worker", "--concurrency", str(concurrency)]
    if until_idle:
        command.append("--until-idle")
    for tag in tags:
        command += ["--tag", tag]
    children = []
    for index in range(processes):
        extra = ["--name", f"{name}-{index + 1}"] if name else []
        # which of the processes each one is (a plugin may give each its own port, say)
        env = {**os.environ, "ROADIE_WORKER_INDEX": str(index + 1),
               "ROADIE_WORKER_PROCESSES": str(processes)}
        # their own session: a terminal's Ctrl-C reaches them once, forwarded by the parent
        children.append(subprocess.Popen(command + extra, start_new_session=True, env=env))

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            child.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    codes = [child.wait() for child in children]
    if any(codes):
        raise SystemExit(max(codes))


@cli.command()
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


def safe_status(task: TaskRecord) -> dict[str, Any]:
    """A task's status attributes, or {} if they cannot be decoded here."""
    try:
        return task.task_status
    except RoadieError:
        return {}


def state_text(task: TaskRecord, status: dict[str, Any]) -> str:
    """The short text after a progress bar: the status and the last message."""
    style = STATUS_STYLE[task.status]
    text = f"[{style}]{task.status.label}[/{style}]"
    detail = task.status_message if task.status in FINAL_STATUSES else status.get("message", "")
    if task.cancel_requested:
        detail = "cancel requested"
    return f"{text} {str(detail)[:50]}".rstrip()


def styled_status(status: Status) -> str:
    """A status label with its colour."""
    style = STATUS_STYLE[status]
    return f"[{style}]{status.label}[/{style}]"


def progress_text(task: TaskRecord) -> str:
    """``40%`` or ``12/30`` or '' for a task's list row."""
    status = safe_status(task)
    if "percent" in status:
        return f"{status['percent']:.0f}%"
    if "done" in status:
        return str(status["done"])
    return ""


@cli.command()
@click.option("--tasks", "count", type=int, default=6, show_default=True)
@with_app
def demo(app: Roadie, count: int) -> None:
    """Add a few example tasks to the embedded database and run them with a live view."""
    if "roadie-examples:count" not in app.plugins.executor_names():
        raise click.ClickException(
            "roadie demo needs the roadie-examples plugin: pip install -e plugins/roadie-examples"
        )
    from roadie_examples.types import Batch  # the plugin is installed: its type is too

    out = console()
    out.print(f"[bold]roadie demo[/bold] on {app.store.safe_url}")
    plan: list[dict[str, Any]] = [
        {"executor": "roadie-examples:count", "context": {"n": 30 + 10 * i, "delay": 0.04},
         "name": f"count to {30 + 10 * i}"} for i in range(max(count - 5, 1))
    ]
    plan += [
        {"executor": "roadie-examples:fanout", "context": {"items": 48, "width": 8,
                                                           "delay": 0.03},
         "name": "48 children, 8 at a time"},
        {"executor": "roadie-examples:serial", "context": {"seconds": 0.6}, "name": "serial A"},
        {"executor": "roadie-examples:serial", "context": {"seconds": 0.6}, "name": "serial B"},
        {"executor": "roadie-examples:report",
         "context": {"batch": Batch(0, 5, planned=dt.datetime.now(dt.timezone.utc))},
         "name": "report with a Batch"},
        {"executor": "roadie-examples:fail", "context": {"reason": "a demo of a failure"},
         "name": "fails on purpose"},
    ]
    tasks = app.add_tasks(plan)
    out.print(f"added {len(tasks)} tasks; a worker with 4 threads runs them:")
    worker = app.worker(concurrency=4, until_idle=True, handle_signals=False)
    thread = threading.Thread(target=worker.run, name="roadie-demo-worker", daemon=True)
    thread.start()
    try:
        final = watch_tasks(app, [t.id for t in tasks], timeout=120)
    finally:
        worker.stop()
        thread.join(timeout=30)
    out.print()
    table = new_table("id", "name", "status", "message")
    for task in final:
        table.add_row(str(task.id), task.name, styled_status(task.status),
                      task.status_message[:70])
    out.print(table)
    out.print("next: [bold]roadie list[/bold], [bold]roadie show ID[/bold], "
              f"[bold]roadie attachments {tasks[-2].id}[/bold]")


# -- plugins, nodes, database -------------------------------------------------------------


@cli.command()
@click.pass_context
def plugins(ctx: click.Context) -> None:
    """Installed plugins: versions, executors, hooks, and broken ones with their error."""
    app = Roadie(ctx.obj.get("url"))
    manager = app.plugins
    manager.load()
    for qualified in manager.executor_names():  # import executors to find broken ones
        with contextlib.suppress(RoadieError):
            manager.load_executor(qualified)
    table = new_table("plugin", "version", "env", "executors", "hooks", "problem")
    for info in sorted(manager.infos.values(), key=lambda i: i.name):
        problem = "blocked" if info.blocked else (info.error or "")
        if info.also_in:  # the rule: the worker's own environment first, then envs by name
            problem = (problem + "\n" if problem else "") + (
                f"also in env {', '.join(info.also_in)} (not used: this one runs)")
        table.add_row(info.name, info.version, info.env or "(worker)",
                      "\n".join(sorted(info.executors)),
                      "\n".join(info.hooks), f"[red]{problem}[/red]" if problem else "")
    for env, error in sorted(manager.env_errors.items()):
        table.add_row("?", "", env, "", "", f"[red]{error}[/red]")
    for info in manager.builtin_infos():
        table.add_row(info.name, "built-in", "", "", "\n".join(info.hooks),
                      "blocked" if info.blocked else "")
    console().print(table)


@cli.command()
@with_app
def nodes(app: Roadie) -> None:
    """Worker nodes registered in the database."""
    from roadie.store import utcnow

    now = utcnow()
    table = new_table("id", "name", "pid", "threads", "tags", "plugins", "heartbeat", "state")
    for node in app.list_nodes(include_stopped=True)[:50]:
        alive = node.is_alive(now, app.settings.heartbeat_grace)
        state = "[green]alive[/green]" if alive else (
            "stopped" if node.stopped_at else "[red]dead[/red]")
        age = (now - node.heartbeat_at).total_seconds()
        table.add_row(node.id, node.name, str(node.pid), str(node.concurrency),
                      ", ".join(sorted(node.tags)),
                      ", ".join(f"{k} {v}" for k, v in sorted(node.plugins.items())),
                      f"{age:.0f}s ago", state)
    console().print(table)


@cli.group()
def db() -> None:
    """Database schema commands."""


@db.command()
@click.pass_context
def upgrade(ctx: click.Context) -> None:
    """Create or upgrade the database schema."""
    app = Roadie(ctx.obj.get("url"))
    app.upgrade_schema()
    from roadie.store import Store

    store = Store(app.url)
    try:
        current, _ = store.schema_revision()
    finally:
        store.dispose()
    click.echo(f"database {store.safe_url} is at schema revision {current}")


@cli.group()
def env() -> None:
    """Python environments for plugins (their executors run in host processes)."""


def _envs_dir(ctx: click.Context) -> Any:
    from roadie.config import Settings

    return Settings.from_env().envs_path()


def _env_errors(function: F) -> F:
    """Show an EnvError as one line and exit 1."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from roadie.errors import EnvError

        try:
            return function(*args, **kwargs)
        except EnvError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


@env.command("create")
@click.argument("name")
@click.option("--python", "python", default=None, help="The interpreter (default: this one).")
@click.pass_context
@_env_errors
def env_create(ctx: click.Context, name: str, python: str | None) -> None:
    """Create environment NAME with roadie's runtime."""
    from roadie.envs import create_env

    info = create_env(_envs_dir(ctx), name, python=python)
    click.echo(f"created environment {info.name} at {info.path} (Python {info.python_version})")


@env.command("install")
@click.argument("name")
@click.argument("specs", nargs=-1, required=True)
@click.pass_context
@_env_errors
def env_install(ctx: click.Context, name: str, specs: tuple[str, ...]) -> None:
    """Install plugin distributions into NAME (names, requirements, wheels, paths)."""
    from roadie.envs import install

    info = install(_envs_dir(ctx), name, list(specs))
    executors = sorted(f"{d}:{e}" for d, p in info.plugins.items() for e in p["executors"])
    click.echo(f"installed into {name}; its executors: {', '.join(executors) or 'none'}")


@env.command("list")
@click.pass_context
@_env_errors
def env_list(ctx: click.Context) -> None:
    """Each environment with its Python, plugins and executors."""
    from roadie.envs import list_envs

    table = new_table("env", "python", "plugins", "executors", "problem")
    for info in list_envs(_envs_dir(ctx)):
        plugins = "\n".join(f"{d} {p['version']}" for d, p in sorted(info.plugins.items()))
        executors = "\n".join(sorted(
            f"{d}:{e}" + (" [red](broken)[/red]" if m.get("error") else "")
            for d, p in info.plugins.items() for e, m in p["executors"].items()))
        table.add_row(info.name, f"{info.python_version} {info.python}", plugins, executors,
                      f"[red]{info.error}[/red]" if info.error else "")
    console().print(table)


@env.command("remove")
@click.argument("name")
@click.pass_context
@_env_errors
def env_remove(ctx: click.Context, name: str) -> None:
    """Delete environment NAME."""
    from roadie.envs import remove_env

    remove_env(_envs_dir(ctx), name)
    click.echo(f"removed environment {name}")


from roadie.cli_schedules import schedules  # noqa: E402 - it builds on the helpers above

cli.add_command(schedules)

from roadie.starter import plugin_group  # noqa: E402

cli.add_command(plugin_group)

from roadie.cli_web import web  # noqa: E402 - it builds on the helpers above

cli.add_command(web)


def main() -> None:
    """The console script."""
    cli(prog_name="roadie")

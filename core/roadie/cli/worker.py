"""``roadie worker`` (run one, or several processes) and ``roadie nodes`` (the workers the
database knows)."""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import click

from roadie.cli.common import app_of, console, new_table, with_app

if TYPE_CHECKING:
    from roadie.app import Roadie


@click.command()
@click.option("--concurrency", "-c", type=int, default=2, show_default=True,
              help="Threads per process.")
@click.option("--processes", "-p", type=int, default=1, show_default=True,
              help="Worker processes to start.")
@click.option("--until-idle", is_flag=True, help="Stop once no task is waiting.")
@click.option("--tag", "tags", multiple=True, help="A tag of this node (repeatable).")
@click.option("--name", default=None, envvar="ROADIE_NODE_NAME",
              help="The node name (default host:pid; env ROADIE_NODE_NAME).")
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


@click.command()
@click.option("--check", "check", metavar="NAME", multiple=True,
              help="Exit 0 if the newest node named NAME is alive, 1 if not (repeatable: "
                   "all of them). For liveness probes.")
@with_app
def nodes(app: Roadie, check: tuple[str, ...] = ()) -> None:
    """Worker nodes registered in the database."""
    from roadie.store import utcnow

    now = utcnow()
    if check:
        problems = [problem for name in check if (problem := check_node(app, name, now))]
        if problems:
            for problem in problems:
                click.echo(problem, err=True)
            raise SystemExit(1)
        return
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


def check_node(app: Roadie, name: str, now: dt.datetime) -> str | None:
    """Why the newest node named ``name`` is not alive, or None (and a line on stdout) when
    it is: its heartbeat is at most ``heartbeat_grace`` old and it has not stopped."""
    found = app.list_nodes(include_stopped=True, name=name)
    if not found:
        return f"no node named {name!r}: its worker has not started (roadie nodes lists them)"
    node = found[0]
    age = (now - node.heartbeat_at).total_seconds()
    grace = app.settings.heartbeat_grace
    if node.stopped_at is not None:
        return f"node {name!r} stopped at {node.stopped_at:%Y-%m-%d %H:%M:%S} UTC"
    if not node.is_alive(now, grace):
        return (f"node {name!r} is dead: its last heartbeat is {age:.0f} s old, over "
                f"heartbeat_grace ({grace:g} s)")
    click.echo(f"node {name!r} is alive: last heartbeat {age:.0f} s ago")
    return None

"""``roadie executors``: list executors with their flow control and queues, pause, resume."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from roadie.cli.common import app_of, console, new_table, with_app

if TYPE_CHECKING:
    from roadie.app import Roadie
    from roadie.records import ExecutorState


@click.group(invoke_without_command=True)
@click.pass_context
def executors(ctx: click.Context) -> None:
    """List executors: paused or not, their waiting, held and running tasks, and their
    limits (and pause or resume one)."""
    if ctx.invoked_subcommand is None:
        show_executors(app_of(ctx))


def show_executors(app: Roadie) -> None:
    """The table of ``roadie executors``."""
    from rich.markup import escape

    states = app.list_executors()
    if not states:
        click.echo("no executors (install a plugin, or start a worker that has one)")
        return
    table = new_table("executor", "paused", "waiting", "held", "running", "limits")
    for state in states:
        paused = f"[yellow]{escape(paused_text(state))}[/yellow]" if state.paused else "-"
        table.add_row(escape(state.executor), paused, str(state.waiting), str(state.held),
                      str(state.running), escape(state.limits or "-"))
    console().print(table)


def paused_text(state: ExecutorState) -> str:
    """``paused since 2025-01-02 03:04:05 UTC by ops``, or '' when it is not paused."""
    if not state.paused:
        return ""
    text = "paused"
    if state.paused_at is not None:
        text += f" since {state.paused_at.strftime('%Y-%m-%d %H:%M:%S')} UTC"
    if state.paused_by:
        text += f" by {state.paused_by}"
    return text


def one_line(state: ExecutorState) -> str:
    """An executor's state in one line, as pause and resume print it."""
    counts = f"{state.waiting} waiting, {state.held} held, {state.running} running"
    limits = f"; {state.limits}" if state.limits else ""
    return f"executor {state.executor}: {paused_text(state) or 'not paused'}; {counts}{limits}"


@executors.command("pause")
@click.argument("name")
@with_app
def pause(app: Roadie, name: str) -> None:
    """Stop every worker starting tasks of executor NAME ("dist:name") until it is resumed
    (running tasks finish; new tasks can still be added)."""
    click.echo(one_line(app.pause_executor(name, by="cli")))


@executors.command("resume")
@click.argument("name")
@with_app
def resume(app: Roadie, name: str) -> None:
    """Let workers start tasks of executor NAME again."""
    click.echo(one_line(app.resume_executor(name)))

"""``roadie plugins`` (the installed plugins, their hooks and problems) and ``roadie plugin
new`` (start a plugin distribution; the files come from ``roadie.starter``)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from roadie.app import Roadie
from roadie.cli.common import console, new_table
from roadie.errors import RoadieError
from roadie.starter import create_plugin


@click.command()
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


@click.group("plugin")
def plugin_group() -> None:
    """Start a plugin."""


@plugin_group.command("new")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              default=Path("."), show_default=True,
              help="The folder to create the plugin's folder (roadie-NAME) in.")
def new(name: str, directory: Path) -> None:
    """Create the plugin distribution roadie-NAME: a pyproject with its entry points, an
    executor with progress, checkpoints and cancellation, a hook, a context type, tests and a
    README. Then: cd roadie-NAME && pip install -e . && pytest"""
    target = create_plugin(name, directory)
    click.echo(f"created {target}")
    click.echo(f"next: cd {target} && pip install -e '.[test]' && pytest")

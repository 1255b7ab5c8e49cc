"""The ``roadie`` command line: the root group, and one module per group of commands.

- ``tasks``: submit, list, show, cancel, retry, delete, recover
- ``attachments``: attachments, attachment get
- ``prune``: prune
- ``worker``: worker, nodes
- ``watch``: watch; ``demo``: demo
- ``plugins``: plugins, plugin new
- ``db``: db upgrade; ``env``: env create|install|list|remove
- ``schedules``: schedules [add|remove|pause|resume|run-now]
- ``executors``: executors [pause|resume]
- ``web``: web

``common`` holds what they share. The command modules never import this package (it imports
each one as one of its commands is first looked up); plugins add commands through the
``roadie_register_commands`` hook, and use ``roadie.cli.app_of(ctx)`` for the invocation's app.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from roadie.app import Roadie
from roadie.cli.common import app_of, with_app
from roadie.errors import RoadieError

__all__ = ["app_of", "cli", "main", "with_app"]

# The built-in commands: name -> (module of roadie.cli, attribute). A command's module is
# imported when the command is looked up, so `roadie worker` loads none of the others (they
# and what they import would stay in an idle worker's memory, about 0.35 MB).
BUILTIN_COMMANDS = {
    "submit": ("tasks", "submit"), "list": ("tasks", "list_"), "show": ("tasks", "show"),
    "cancel": ("tasks", "cancel"), "retry": ("tasks", "retry"), "delete": ("tasks", "delete"),
    "recover": ("tasks", "recover"),
    "attachments": ("attachments", "attachments"), "attachment": ("attachments", "attachment"),
    "prune": ("prune", "prune"),
    "worker": ("worker", "worker"), "nodes": ("worker", "nodes"),
    "watch": ("watch", "watch"), "demo": ("demo", "demo"),
    "plugins": ("plugins", "plugins"), "plugin": ("plugins", "plugin_group"),
    "db": ("db", "db"), "env": ("env", "env"), "schedules": ("schedules", "schedules"),
    "executors": ("executors", "executors"), "web": ("web", "web"),
}


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
        self._add_builtin_commands()
        self._add_plugin_commands(ctx)
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and name in BUILTIN_COMMANDS:
            command = self._add_builtin_command(name)
        if command is None:  # perhaps a plugin's: the plugins see every built-in command
            self._add_builtin_commands()
        if command is None or name == "worker":  # plugins may add options to `worker`
            self._add_plugin_commands(ctx)
            command = super().get_command(ctx, name)
        return command

    def _add_builtin_command(self, name: str) -> click.Command:
        """Import the module of the built-in command ``name``, and add the command."""
        module, attribute = BUILTIN_COMMANDS[name]
        command: click.Command = getattr(importlib.import_module(f"roadie.cli.{module}"),
                                         attribute)
        self.add_command(command)
        return command

    def _add_builtin_commands(self) -> None:
        """Add the built-in commands not added yet (nor replaced by a plugin's)."""
        for name in BUILTIN_COMMANDS:
            if name not in self.commands:
                self._add_builtin_command(name)

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


@click.group(cls=RoadieGroup)
@click.option("--url", envvar="ROADIE_URL", help="Database URL (default: the embedded SQLite "
              "file; env ROADIE_URL).")
@click.option("--debug", is_flag=True, hidden=True)
@click.version_option(package_name="roadie")
@click.pass_context
def cli(ctx: click.Context, url: str | None, debug: bool) -> None:
    """roadie: persistent background tasks run by executors from installed plugins."""
    ctx.ensure_object(dict).update(url=url, debug=debug)


def main() -> None:
    """The console script."""
    cli(prog_name="roadie")

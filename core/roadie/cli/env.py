"""``roadie env create|install|list|remove``: Python environments of their own for plugins."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from roadie.cli.common import console, new_table

F = TypeVar("F", bound=Callable[..., Any])


@click.group()
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

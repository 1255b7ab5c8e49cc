"""What the command modules share: the app of an invocation, the console and tables they
print, and how a task's status reads in them."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from roadie.app import Roadie
from roadie.errors import RoadieError
from roadie.status import Status

if TYPE_CHECKING:  # rich is imported when something prints, so a worker never loads it
    from rich.console import Console
    from rich.table import Table

    from roadie.records import TaskRecord

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


def safe_status(task: TaskRecord) -> dict[str, Any]:
    """A task's status attributes, or {} if they cannot be decoded here."""
    try:
        return task.task_status
    except RoadieError:
        return {}


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


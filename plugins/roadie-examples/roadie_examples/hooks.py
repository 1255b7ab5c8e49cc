"""This plugin's hook implementations: its context types, a timing wrapper, the caller's
locale carried to the worker, a veto, and a CLI command."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import roadie

from roadie_examples.types import Batch

if TYPE_CHECKING:  # click only where the CLI asks for commands: a worker never loads it
    import click

log = logging.getLogger("roadie_examples")


@roadie.hookimpl
def roadie_register_types(register: Callable[..., Any]) -> None:
    """Register ``Batch`` as ``roadie-examples:Batch`` (version 2)."""
    register(Batch)


@roadie.hookimpl(wrapper=True)
def roadie_execute_task(
    task: roadie.RunningTask, executor: roadie.Executor
) -> Generator[None, roadie.Result, roadie.Result]:
    """Time this plugin's tasks and put the duration in their status."""
    started = time.perf_counter()
    try:
        return (yield)
    finally:
        task.status.set("seconds", round(time.perf_counter() - started, 3))


# -- the caller's locale travels with the task (capture at add time, restore on the worker) --

LOCALE: ContextVar[str] = ContextVar("roadie_examples_locale", default="en")
LOCALE_KEY = "roadie-examples.locale"


@roadie.hookimpl
def roadie_capture_context(executor: str, context: dict[str, Any]) -> dict[str, Any] | None:
    """Remember the caller's locale for this plugin's tasks."""
    if executor.startswith("roadie-examples:"):
        return {LOCALE_KEY: LOCALE.get()}
    return None


@roadie.hookimpl
def roadie_restore_context(
    task: roadie.RunningTask, captured: dict[str, Any]
) -> AbstractContextManager[None] | None:
    """Run the task in the locale its caller had."""
    if LOCALE_KEY not in captured:
        return None
    return _in_locale(captured[LOCALE_KEY])


@contextmanager
def _in_locale(locale: str) -> Iterator[None]:
    token = LOCALE.set(locale)
    try:
        yield
    finally:
        LOCALE.reset(token)


@roadie.hookimpl
def roadie_before_task(task: roadie.RunningTask) -> roadie.Veto | None:
    """A task whose context says ``"skip": true`` is cancelled before it starts."""
    if task.context.get("skip"):
        return roadie.Veto("skipped: its context asked for it")
    return None


@roadie.hookimpl
def roadie_register_commands(cli: click.Group) -> None:
    """``roadie examples-seed N``: add N count tasks."""
    import click

    @cli.command("examples-seed")
    @click.argument("count", type=int, default=3)
    @click.pass_context
    def seed(ctx: click.Context, count: int) -> None:
        """Add COUNT example count tasks."""
        from roadie.cli import app_of

        tasks = app_of(ctx).add_tasks([
            {"executor": "roadie-examples:count", "context": {"n": 10 * (i + 1)},
             "name": f"seeded count {i + 1}"} for i in range(count)
        ])
        click.echo(f"added {len(tasks)} count tasks: {', '.join(str(t.id) for t in tasks)}")


# -- the web app: a panel on this plugin's task pages, and a page of its executors --------


@roadie.hookimpl
def roadie_web_extend(web: Any) -> None:
    """Show the timing this plugin's wrapper records on its task pages, and add a page that
    lists its executors (``/x/examples``)."""

    def timing(app: roadie.Roadie, task: roadie.TaskRecord) -> dict[str, Any] | None:
        if not task.executor.startswith("roadie-examples:"):
            return None
        status = task.task_status
        if "seconds" not in status:
            return {"timed by": "roadie-examples (once the task ends)"}
        values: dict[str, Any] = {"seconds in execute": status["seconds"]}
        if status.get("done") and status["seconds"]:
            values["steps per second"] = round(status["done"] / status["seconds"], 1)
        return values

    def executors(app: roadie.Roadie) -> list[dict[str, Any]]:
        rows = []
        for name in app.plugins.executor_names():
            if name.startswith("roadie-examples:"):
                doc = (app.plugins.load_executor(name).__doc__ or "").strip().splitlines()
                rows.append({"executor": name, "what it does": doc[0] if doc else ""})
        return rows

    web.add_task_panel("roadie-examples timing", timing)
    web.add_page("examples", "Examples", executors,
                 description="The executors of the roadie-examples plugin.")

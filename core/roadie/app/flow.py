"""Flow control from the application's side: each executor's limits (from its class, or as a
worker declared them for processes without its plugin), pausing and resuming executors on
every node, and the table of executors that ``roadie executors`` and the web app show."""

from __future__ import annotations

from typing import TYPE_CHECKING

from roadie.errors import PluginError, UnknownExecutor
from roadie.executor import Isolation
from roadie.limits import Limits, limits_of
from roadie.plugins import split_executor_name
from roadie.records import ExecutorState

if TYPE_CHECKING:
    from roadie.app import Roadie


def executor_limits(app: Roadie, qualified: str) -> tuple[Limits, bool]:
    """``qualified``'s limits and whether it isolates its tasks by key: from its class when
    its plugin is installed here, else as a worker last declared them."""
    if app.plugins.has_executor(qualified):
        try:
            executor_class = app.plugins.load_executor(qualified)
        except PluginError:
            return Limits(), False
        return limits_of(executor_class), executor_class.isolation is not Isolation.NOT_ISOLATED
    row = app.store.executor_rows([qualified]).get(qualified)
    if row is None:
        return Limits(), False
    isolated = row.isolation not in (None, Isolation.NOT_ISOLATED.value)
    return row.limits, isolated


def known_executor(app: Roadie, name: str) -> str:
    """``name`` as a qualified executor name that this process, a worker or a task knows;
    raises UnknownExecutor naming the known ones."""
    try:
        dist, entry = split_executor_name(name)
    except ValueError as exc:
        raise UnknownExecutor(str(exc)) from None
    qualified = f"{dist}:{entry}"
    known = set(app.plugins.executor_names()) | set(app.store.executor_rows())
    for node in app.store.list_nodes():
        known.update(node.executors)
    if qualified in known or app.store.has_tasks_of(qualified):
        return qualified
    listed = ", ".join(sorted(known)) or "none"
    raise UnknownExecutor(f"no executor {qualified!r} is installed here, declared by a worker "
                          f"or has tasks (known: {listed})")


def set_paused(app: Roadie, name: str, paused: bool, by: str) -> ExecutorState:
    """``Roadie.pause_executor`` and ``resume_executor``."""
    qualified = known_executor(app, name)
    app.store.set_paused(qualified, paused, by)
    return executor_state(app, qualified)


def executor_state(app: Roadie, qualified: str) -> ExecutorState:
    """One executor's row of ``list_executors``."""
    for state in list_executors(app, [qualified]):
        return state
    raise UnknownExecutor(qualified)  # (known_executor checked it)


def list_executors(app: Roadie, only: list[str] | None = None) -> list[ExecutorState]:
    """``Roadie.list_executors``: every executor installed here, declared by a worker or
    with waiting or running tasks, by name."""
    rows = app.store.executor_rows()
    counts = app.store.executor_counts()
    names = set(app.plugins.executor_names()) | set(rows) | set(counts)
    if only is not None:
        names = set(only)
    states = []
    for name in sorted(names):
        row = rows.get(name)
        limits, _ = executor_limits(app, name)
        waiting, held, running = counts.get(name, (0, 0, 0))
        states.append(ExecutorState(
            executor=name, paused=bool(row and row.paused), max_running=limits.max_running,
            rate_limit=limits.rate, waiting=waiting, held=held, running=running,
            paused_at=row.paused_at if row else None, paused_by=row.paused_by if row else None))
    return states

"""One attempt of one task, through the hooks: load, decode, veto, restore, execute, wait for
children, and the Outcome that the worker writes."""

from __future__ import annotations

import contextlib
import datetime as dt
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from roadie.aio_runner import resolve
from roadie.errors import Cancelled, ContextDecodeError, HookFailure, PluginError, RoadieError
from roadie.executor import Executor
from roadie.hookcalls import call_hook
from roadie.records import instance_with_defaults
from roadie.result import Result
from roadie.running import RunningTask, _current
from roadie.status import Status
from roadie.store import Outcome, utcnow

if TYPE_CHECKING:
    from roadie.app import Roadie


@dataclass(frozen=True)
class Veto:
    """Returned by ``roadie_before_task``: do not run the task; it ends CANCELLED, ``reason``
    being its status message."""

    reason: str


@dataclass(frozen=True)
class Delay:
    """Returned by ``roadie_before_task``: put the task back to wait ``seconds``, with ``reason``
    as its status message. The attempt does not count."""

    seconds: float
    reason: str = ""


def run_attempt(
    app: Roadie, task: RunningTask
) -> tuple[Outcome, Result | None, BaseException | None]:
    """Run one attempt of ``task`` and say how it ended (nothing is written here)."""
    record = task.record
    if task.cancelled:  # cancelled while it waited for a thread: it never starts
        stopped = task.cancellation()
        return _cancelled(task, stopped), None, stopped
    try:
        executor_class = app.plugins.load_executor(record.executor)
    except (PluginError, RoadieError) as exc:
        return _failed(task, f"cannot load executor {record.executor!r}: {exc}", None), None, exc
    try:
        task.context = record.context
    except ContextDecodeError as exc:
        message = f"cannot decode the context of task {record.id}: {exc}"
        return _failed(task, message, None), None, exc

    executor = executor_class()
    task.executor = executor
    plugins = task.plugins
    token = _current.set(task)
    try:
        verdict = call_hook(app, "roadie_before_task",
                            app.plugins.task_hook("roadie_before_task", plugins), task=task)
        if isinstance(verdict, Veto):
            return _outcome(task, Status.CANCELLED, verdict.reason), None, None
        if isinstance(verdict, Delay) and not task.cancelled:
            outcome = _outcome(task, Status.NEW, verdict.reason or "delayed",
                               run_after=utcnow() + dt.timedelta(seconds=verdict.seconds),
                               attempt_counts=False)
            return outcome, None, None
        result = _execute(app, task, executor, plugins)
    except Cancelled as exc:
        task.wait_children()
        return _cancelled(task, exc), None, exc
    except HookFailure as exc:
        task.wait_children()
        return _failed(task, str(exc), exc), None, exc
    except Exception as exc:
        task.wait_children()
        if task.cancelled:  # a cancel was requested: no retry, whatever the error
            stopped = task.cancellation()
            return _cancelled(task, stopped), None, stopped
        return _on_exception(task, executor, exc), None, exc
    except BaseException as exc:  # SystemExit and the like: the task fails, the worker lives
        task.wait_children()
        message = f"the executor raised {type(exc).__name__}: {exc}"
        return _failed(task, message, exc), None, exc
    finally:
        _current.reset(token)

    failed_children = task.wait_children()
    if result.status == Status.WAITING and task.cancelled:
        # cancelled before the parent went WAITING: it ends CANCELLED, not through its fan-in
        # (its subtasks are cancelled with it by ``cancel_task``)
        stopped = task.cancellation()
        return _cancelled(task, stopped), None, stopped
    children = task._made_children()  # (asking a task without any would make them)
    if task.cancelled and children is not None and children.cut_short():
        try:
            task.raise_if_cancelled()
        except Cancelled as exc:
            return _cancelled(task, exc), None, exc
    if failed_children and result.status == Status.SUCCESSFUL:
        first = failed_children[0]
        error = first.exception()
        message = (f"{len(failed_children)} of {len(task.children)} child tasks failed; "
                   f"first: {first.name!r}: {type(error).__name__}: {error}")
        return _failed(task, message, error), None, error
    value = None
    if result.value is not None:
        try:
            value = app.registry.encode(result.value, what=f"result of task {record.id}")
        except RoadieError as exc:
            return _failed(task, str(exc), exc), None, exc
    return _outcome(task, result.status, result.message, result=value), result, None


def _execute(app: Roadie, task: RunningTask, executor: Executor, plugins: list[str]) -> Result:
    with contextlib.ExitStack() as stack:
        managers = call_hook(app, "roadie_restore_context",
                             app.plugins.task_hook("roadie_restore_context", plugins),
                             task=task, captured=task.captured)
        for manager in managers:
            if manager is not None:
                stack.enter_context(manager)
        result = call_hook(app, "roadie_execute_task",
                           app.plugins.task_hook("roadie_execute_task", plugins),
                           task=task, executor=executor)
    if result is None:
        result = Result.SUCCESS
    if not isinstance(result, Result):
        raise TypeError(
            f"{type(executor).__qualname__}.execute returned {type(result).__name__}, not a "
            f"roadie.Result (return roadie.Result.SUCCESS or roadie.Result.failed('why'))"
        )
    return result


def _on_exception(task: RunningTask, executor: Executor, exc: Exception) -> Outcome:
    retry = executor.retry
    trace = "".join(traceback.format_exception(exc))
    if retry is not None and retry.applies(exc, task.attempt):
        delay = retry.delay(task.attempt)
        message = (f"attempt {task.attempt} of {retry.max_attempts} failed "
                   f"({type(exc).__name__}: {exc}); retrying in {delay:g} s")
        return _outcome(task, Status.NEW, message, error=trace,
                        run_after=utcnow() + dt.timedelta(seconds=delay))
    try:
        message = resolve(executor.handle_exception(task, exc))  # may be async
    except Exception as handler_error:
        message = (f"{type(exc).__name__}: {exc} (and handle_exception failed: "
                   f"{type(handler_error).__name__}: {handler_error})")
    children = task._made_children()  # (making them for this would tie them to the task)
    child = children.child_of(exc) if children is not None else None
    if child is not None:
        message = f"child task {child.name!r} failed: {message}"
    return _outcome(task, Status.FAILED, str(message), error=trace)


def _cancelled(task: RunningTask, exc: Cancelled) -> Outcome:
    if exc.timed_out:
        return _outcome(task, Status.FAILED, exc.message)
    return _outcome(task, Status.CANCELLED, exc.message)


def _failed(task: RunningTask, message: str, exc: BaseException | None) -> Outcome:
    trace = "".join(traceback.format_exception(exc)) if exc is not None else None
    return _outcome(task, Status.FAILED, message, error=trace)


def _outcome(task: RunningTask, status: Status, message: str, **extra: Any) -> Outcome:
    # (without the per-field cost of a frozen dataclass's __init__: 4.7 us; this way 2.3)
    return instance_with_defaults(Outcome, {"task_id": task.id, "status": status,
                                            "message": message, **extra})


def release_error(error: BaseException | None) -> None:
    """Let go of the frames an ended attempt's error holds, once its hooks have seen it: the
    traceback's frames keep their locals (the task, its context, the executor), and a frame
    that holds the error makes a cycle that only the garbage collector would free, however
    large the context. Clearing them frees it all as the round lets go of the attempt. The
    errors chained to it (``__cause__``, ``__context__``) are cleared too; a frame that still
    runs is left as it is."""
    seen: set[int] = set()
    errors = [error]
    while errors:
        error = errors.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        errors += [error.__cause__, error.__context__]

"""The built-in ``roadie_execute_task``: call the executor (wrappers go around it)."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from roadie.aio_runner import await_executor
from roadie.errors import HookFailure
from roadie.hookcalls import mark_from_executor
from roadie.hookspecs import hookimpl

if TYPE_CHECKING:
    from roadie.executor import Executor
    from roadie.result import Result
    from roadie.running import RunningTask


@hookimpl(trylast=True)
def roadie_execute_task(task: RunningTask, executor: Executor) -> Result:
    """Run ``executor.execute(task)``; its exceptions are marked as the executor's own, so
    that they are not mistaken for a failing plugin hook."""
    try:
        if task.record.fan_in:  # its subtasks have ended: the fan-in runs instead
            from roadie.trees import Subtasks

            result = executor.subtasks_done(task, Subtasks(task.app, task.id))
        else:
            result = executor.execute(task)
        if inspect.isawaitable(result):  # an async executor: await it on the worker's loop
            return await_executor(task, result)
        return result
    except HookFailure:
        raise  # a plugin's hook failed inside execute (for example a status translator)
    except BaseException as exc:
        mark_from_executor(exc)
        raise

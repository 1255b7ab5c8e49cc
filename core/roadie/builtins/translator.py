"""The built-in status translator: the executor's own, or the default generic progress."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from roadie.executor import StatusMessageTranslator
from roadie.hookcalls import mark_from_executor
from roadie.hookspecs import hookimpl

if TYPE_CHECKING:
    from roadie.running import RunningTask
    from roadie.taskstatus import TaskStatus

DEFAULT = StatusMessageTranslator()


@hookimpl(trylast=True)
def roadie_status_message(task: RunningTask, message: dict[str, Any], status: TaskStatus) -> None:
    """Translate with ``executor.translator``, or the default one."""
    translator = getattr(task.executor, "translator", None) or DEFAULT
    try:
        translator.translate(task, message, status)
    except Exception as exc:  # the executor's own translator: its error, not a plugin's
        mark_from_executor(exc)
        raise

"""The executor: the class a plugin writes to do a task's work."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from roadie.deprecation import DeprecatedAlias, check_aliases

if TYPE_CHECKING:
    from collections.abc import Sequence

    from roadie.limits import Rate
    from roadie.records import TaskDraft, TaskRecord
    from roadie.result import Result
    from roadie.running import RunningTask
    from roadie.schedules import Rule
    from roadie.taskstatus import TaskStatus


class Isolation(enum.Enum):
    """Which tasks of an executor may not run at the same time.

    NOT_ISOLATED: any number at once. CLASS: one at a time per executor (Liferay's serial
    executor). GROUP, OWNER, TASK_NAME: one at a time per executor and group, owner or task
    name. CUSTOM: one at a time per executor and the key that ``Executor.isolation_key``
    computes.
    """

    NOT_ISOLATED = "not-isolated"
    CLASS = "class"
    GROUP = "group"
    OWNER = "owner"
    TASK_NAME = "task-name"
    CUSTOM = "custom"


class CrashPolicy(enum.Enum):
    """What happens to a task whose worker died while it ran.

    FAIL: FAILED, saying which worker stopped and when. RETRY: back to NEW, while the attempt
    count is below ``Executor.max_crash_attempts``. RESUME: the same, with its last checkpoint.
    """

    FAIL = "fail"
    RETRY = "retry"
    RESUME = "resume"


@dataclass(frozen=True)
class Retry:
    """Retry a task whose ``execute`` raised one of ``on`` (exception classes).

    ``max_attempts`` bounds the task's attempt count (every attempt, the first included, for
    whatever reason it ended); after a failed attempt ``n`` the next waits
    ``backoff * factor ** (n - 1)`` seconds (at most ``max_backoff``). Crashes are bounded by
    ``Executor.max_crash_attempts`` instead.
    """

    on: tuple[type[BaseException], ...] = (Exception,)
    max_attempts: int = 3
    backoff: float = 1.0
    factor: float = 2.0
    max_backoff: float = 300.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1``."""
        return float(min(self.max_backoff, self.backoff * self.factor ** max(0, attempt - 1)))

    def applies(self, exc: BaseException, attempt: int) -> bool:
        """Whether ``exc`` on attempt ``attempt`` earns another attempt."""
        return attempt < self.max_attempts and isinstance(exc, self.on)


class StatusMessageTranslator:
    """Turns a status message (a map sent by ``task.send_status``) into task status attributes.

    Subclass and override ``translate``; the default copies the message's keys and derives
    percent, rate and time left from ``done`` and ``total``.
    """

    def translate(self, task: RunningTask, message: dict[str, Any], status: TaskStatus) -> None:
        """Update ``status`` from ``message``."""
        status.apply_progress_fields(message)
        status.update({k: v for k, v in message.items() if k not in status.PROGRESS_KEYS})


class Executor:
    """The base class of executors. Subclass it, implement ``execute``, declare an entry point.

    Class attributes configure how roadie runs the executor's tasks.
    """

    isolation: ClassVar[Isolation] = Isolation.NOT_ISOLATED
    translator: ClassVar[StatusMessageTranslator | None] = None
    crash_policy: ClassVar[CrashPolicy] = CrashPolicy.FAIL
    max_crash_attempts: ClassVar[int] = 3  # crash policy RETRY/RESUME: attempt count limit
    max_attempts = DeprecatedAlias("max_crash_attempts", since="0.2", removal="0.4")
    retry: ClassVar[Retry | None] = None
    timeout: ClassVar[float | None] = None
    out_of_process: ClassVar[bool] = False  # run in a host process (see docs/operations.md)
    schedule: ClassVar[Rule | None] = None  # roadie.Cron(...) or roadie.Every(...): recurring
    # flow control, on all nodes together (per isolation key when one is set; see limits.py)
    max_running: ClassVar[int | None] = None  # at most this many running at once
    rate_limit: ClassVar[Rate | None] = None  # at most Rate.count starts per Rate.per seconds

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_aliases(cls)  # a subclass setting ``max_attempts`` means max_crash_attempts

    def execute(self, task: RunningTask) -> Result:
        """Do the work of ``task`` and return a Result."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement execute(task)")

    def subtasks_done(self, task: RunningTask, subtasks: Sequence[TaskRecord]) -> Result:
        """Decide the result of a task that returned ``Result.wait_for_subtasks()``, once all
        its subtasks have ended. ``subtasks`` is a ``roadie.Subtasks``: their records, oldest
        first, read a page at a time on every pass (iterate it as often as you need),
        ``len()`` a count, indexing a read of one record. The default succeeds when all
        succeeded, and otherwise fails naming those that did not (any sequence of records
        may be passed to it)."""
        from roadie.trees import default_subtasks_done

        return default_subtasks_done(task, subtasks)

    def handle_exception(self, task: RunningTask, exc: BaseException) -> str:
        """The status message of a task whose ``execute`` raised ``exc``."""
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    def isolation_key(self, task: TaskDraft) -> str | None:
        """For ``Isolation.CUSTOM``: the key under which ``task`` (about to be added) runs
        alone, or None for no isolation. Computed once, when the task is added."""
        return None

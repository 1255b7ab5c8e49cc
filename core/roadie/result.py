"""What an executor returns: a final status and a status message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from roadie.status import Status


@dataclass(frozen=True)
class Result:
    """The outcome of ``Executor.execute``: a final status, a message and an optional value.

    ``value`` is encoded like a context map and kept in the task's ``result``.
    """

    status: Status
    message: str = ""
    value: Any = None

    SUCCESS: ClassVar[Result]

    def __post_init__(self) -> None:
        if not isinstance(self.status, Status):
            object.__setattr__(self, "status", Status(self.status))
        if not self.status.is_final and self.status != Status.WAITING:
            raise ValueError(
                f"a Result needs a final status (successful, failed or cancelled), "
                f"not {self.status.label}"
            )

    @classmethod
    def success(cls, message: str = "", value: Any = None) -> Result:
        """A SUCCESSFUL result."""
        return cls(Status.SUCCESSFUL, message, value)

    @classmethod
    def wait_for_subtasks(cls, message: str = "waiting for its subtasks") -> Result:
        """Park the task in WAITING, holding no thread or lock, until every subtask it added
        has ended; then the executor's ``subtasks_done`` decides its result."""
        return cls(Status.WAITING, message)

    @classmethod
    def failed(cls, message: str, value: Any = None) -> Result:
        """A FAILED result with the reason as its message."""
        return cls(Status.FAILED, message, value)


Result.SUCCESS = Result(Status.SUCCESSFUL)

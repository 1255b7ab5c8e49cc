"""Every error roadie raises; each message names the task, key or plugin and what to do."""

from __future__ import annotations


class RoadieError(Exception):
    """The base of every roadie error."""


class ConfigurationError(RoadieError):
    """A setting or argument is wrong."""


class DatabaseError(RoadieError):
    """The database cannot be reached, or its schema does not match the code, or it refused a
    statement (``unreachable`` is False then: retrying the same call will not help)."""

    unreachable = True


class SchemaMismatchError(DatabaseError):
    """The database's schema revision is not the one this roadie was written for: the
    message names both revisions and what to do. ``revision`` is the database's (None: no
    roadie schema), ``head`` this roadie's. A worker that meets it stops claiming, lets its
    running tasks finish and exits with it."""

    unreachable = False

    def __init__(self, message: str, *, revision: str | None = None, head: str | None = None
                 ) -> None:
        super().__init__(message)
        self.revision = revision
        self.head = head


class SchemaOutdatedError(SchemaMismatchError):
    """The database schema is missing or older than the code: run ``roadie db upgrade``."""


class SchemaNewerError(SchemaMismatchError):
    """The database schema is newer than the code (a newer roadie upgraded it, or its revision
    is unknown here): upgrade roadie on this machine."""


class TransactionError(RoadieError, ValueError):
    """``connection=`` cannot take the task: not a connection roadie knows, on another
    database than the app's, or in autocommit mode (no transaction to join)."""


class TaskNotFound(RoadieError, LookupError):
    """No task has the given id."""

    def __init__(self, task_id: int) -> None:
        super().__init__(f"task {task_id} does not exist (see `roadie list`)")
        self.task_id = task_id


class DependencyError(RoadieError, ValueError):
    """``after=[ids]`` names a task that does not exist (or would make a cycle)."""


class UnknownExecutor(RoadieError, LookupError):
    """No installed plugin (nor any live worker) provides the executor."""


class PluginError(RoadieError):
    """A plugin failed to load; the message names the plugin and its error."""


class ContextError(RoadieError):
    """A context map (or status message) cannot be encoded or decoded."""


class ContextEncodeError(ContextError, TypeError):
    """A value in a context map cannot be encoded; the message names its key path."""


class ContextDecodeError(ContextError, ValueError):
    """Stored bytes cannot be decoded: corrupt data, a missing plugin or type, a newer version."""


class HookFailure(RoadieError):
    """A plugin's hook raised; the message names the plugin and the hook."""


class TypeRegistrationError(RoadieError):
    """A type was registered twice under one key, or with bad arguments."""


class InvalidTransition(RoadieError):
    """The task's status does not allow the operation (for example resuming a running task)."""


class TakenOver(InvalidTransition):
    """A write of an attempt was refused: its task was taken over since (its node was thought
    dead), so the attempt is stale. Its worker stops it and writes no outcome for it."""


class AttachmentError(RoadieError):
    """An attachment name, size or lookup is wrong."""


class ScheduleError(RoadieError, ValueError):
    """A schedule's cron expression, time zone, interval or options are wrong, or the named
    schedule does not exist (the message names the schedule, the expression and the field)."""


class ScheduleNotFound(ScheduleError, LookupError):
    """No schedule has that name."""


class Cancelled(Exception):
    """Raised inside a running task at a safe point once a cancel was requested.

    Executors may catch it to clean up, but should re-raise it.
    """

    def __init__(self, message: str = "cancelled", *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.timed_out = timed_out


class EnvError(RoadieError):
    """An environment (``roadie env``) cannot be created, changed or found."""


class StarterError(RoadieError):
    """``roadie plugin new`` could not create a plugin (a bad name, or a folder that exists)."""

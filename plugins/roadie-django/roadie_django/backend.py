"""``RoadieBackend``: Django's Tasks framework, with roadie as the queue and the workers."""

from __future__ import annotations

import datetime as dt
import inspect
from typing import Any

import roadie
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS

from roadie_django import database, results
from roadie_django.compat import (
    DEFAULT_TASK_QUEUE_NAME,
    BaseTaskBackend,
    Task,
    TaskResult,
    normalize_json,
    task_enqueued,
)

OPTIONS = ("url", "database")
QUEUE_TAG = "queue:"


class RoadieBackend(BaseTaskBackend):
    """A Django Tasks backend that stores tasks in roadie and runs them on ``roadie worker``.

    ``TASKS = {"default": {"BACKEND": "roadie_django.RoadieBackend"}}`` keeps the tasks in
    Django's ``default`` database (SQLite or PostgreSQL); ``OPTIONS``:

    - ``"database"``: the Django database alias to use (default ``"default"``); an enqueue
      inside ``transaction.atomic()`` on it is part of that transaction.
    - ``"url"``: a roadie URL of another database instead (enqueues then join no
      transaction, unless ``"database"`` is also given and names the same database).

    ``QUEUES`` lists the allowed queue names (default ``["default"]``); a task of queue
    ``"default"`` runs on every worker, one of queue ``NAME`` on workers started with
    ``--tag queue:NAME``.
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        unknown = sorted(set(self.options) - set(OPTIONS))
        if unknown:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS'] has unknown key(s) {', '.join(unknown)}; "
                f"roadie_django.RoadieBackend takes: {', '.join(OPTIONS)}")
        self.configured_url: str | None = self.options.get("url")
        default = None if self.configured_url else DEFAULT_DB_ALIAS
        self.database: str | None = self.options.get("database", default)

    # -- where -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The roadie URL of this backend's database (the one ``roadie worker`` must use)."""
        if self.configured_url:
            return self.configured_url
        assert self.database is not None
        return database.url_of_database(self.database)

    @property
    def app(self) -> roadie.Roadie:
        """The ``roadie.Roadie`` on this backend's database (one per URL and process): for
        anything beyond Django's API, such as ``app.get_task_status(int(result.id))`` or
        the dashboard, ``roadie.web.create_app(backend.app)``."""
        return database.shared_app(self.url)

    # -- enqueue -----------------------------------------------------------------------------

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        """Add a roadie task for ``task``; inside a transaction on the backend's Django
        database, the task is written in that transaction."""
        self.validate_task(task)
        arguments = self._arguments(task, args, kwargs)
        connection = None if self.database is None else database.open_transaction(
            self.database)
        record = self.app.add_task(**arguments, connection=connection)  # None: its own
        return self._enqueued(task, record, arguments)

    async def aenqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        """``enqueue`` on roadie's async client (``app.aio``), without blocking the loop."""
        from asgiref.sync import sync_to_async
        from django.db import connections

        if self.database is not None and connections[self.database].in_atomic_block:
            # an atomic block is synchronous code: join it there
            return await sync_to_async(self.enqueue)(task, args, kwargs)
        self.validate_task(task)
        arguments = self._arguments(task, args, kwargs)
        record = await self.app.aio.add_task(**arguments)
        return self._enqueued(task, record, arguments)

    def _arguments(self, task: Task, args: Any, kwargs: Any) -> dict[str, Any]:
        """``add_task``'s arguments for an enqueue of ``task``."""
        run_after = task.run_after
        if run_after is not None:
            from django.utils import timezone

            if timezone.is_naive(run_after):  # USE_TZ = False: the current time zone's
                run_after = timezone.make_aware(run_after)
            run_after = run_after.astimezone(dt.timezone.utc)
        executor = results.ASYNC_EXECUTOR if inspect.iscoroutinefunction(task.func) \
            else results.EXECUTOR
        return {
            "executor": executor,
            "context": {
                "task": task.module_path,
                "args": normalize_json(list(args)),
                "kwargs": normalize_json(dict(kwargs)),
                "backend": self.alias,
                "queue_name": task.queue_name,
                "priority": task.priority,
                "run_after": run_after.isoformat() if run_after else None,
            },
            "name": task.module_path,
            "priority": task.priority,
            "run_after": run_after,
            "tags": queue_tags(task.queue_name),
        }

    def _enqueued(self, task: Task, record: roadie.TaskRecord,
                  arguments: dict[str, Any]) -> TaskResult:
        context = arguments["context"]
        result = results.new_result(task, record.id, args=context["args"],
                                    kwargs=context["kwargs"], backend=self.alias,
                                    enqueued_at=record.created_at)
        task_enqueued.send(type(self), task_result=result)
        return result

    # -- results -----------------------------------------------------------------------------

    def get_result(self, result_id: str) -> TaskResult:
        """The result of a task, read now from the database (from any process)."""
        return results.read_result(self.app, result_id)

    async def aget_result(self, result_id: str) -> TaskResult:
        """``get_result`` on roadie's async client."""
        return await self.app.aio.call(lambda app: results.read_result(app, result_id))

    # -- checks ------------------------------------------------------------------------------

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        """Django system checks: the database is one roadie can use (roadie's schema there is
        checked by ``roadie_django.checks`` when Django asks about databases)."""
        try:
            _ = self.url
        except ImproperlyConfigured as exc:
            return [checks.Error(str(exc), obj=f"TASKS[{self.alias!r}]",
                                 id="roadie_django.E001")]
        return []


def queue_tags(queue_name: str) -> list[str]:
    """roadie's tags of a Django queue: none for ``"default"`` (every worker runs it),
    ``queue:NAME`` otherwise (workers started with ``--tag queue:NAME`` run it)."""
    return [] if queue_name == DEFAULT_TASK_QUEUE_NAME else [f"{QUEUE_TAG}{queue_name}"]

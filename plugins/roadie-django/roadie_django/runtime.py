"""A Django task on a roadie worker: Django set up once per process, the task function found
(only a ``@task`` of an installed app), its connections handled as a request's are, and its
outcome turned into roadie's."""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import roadie

if TYPE_CHECKING:
    from roadie_django.compat import Task, TaskResult

_setup_lock = threading.Lock()


class NotADjangoTask(roadie.RoadieError):
    """A roadie-django task names something that is not a ``@task`` of an installed app."""


class DjangoNotConfigured(roadie.ConfigurationError):
    """The worker process has no Django settings (``DJANGO_SETTINGS_MODULE``)."""


def django_configured() -> bool:
    """Whether this process has Django settings (``DJANGO_SETTINGS_MODULE`` or
    ``settings.configure()``)."""
    from django.conf import settings

    return bool(settings.configured or os.environ.get("DJANGO_SETTINGS_MODULE"))


def ensure_django() -> None:
    """Set Django up in this process, once (``django.setup()``), unless it is already."""
    from django.apps import apps

    if apps.ready:
        return
    if not django_configured():
        raise DjangoNotConfigured(
            "roadie-django: this worker has no Django settings; start it with "
            "DJANGO_SETTINGS_MODULE set (`DJANGO_SETTINGS_MODULE=mysite.settings roadie "
            "worker`), or with `python manage.py roadie worker`")
    with _setup_lock:
        if not apps.ready:
            import django

            django.setup()


def load_task(path: Any, task_id: int, context: Mapping[str, Any]) -> Task:
    """The Django ``Task`` at ``path`` with the options it was enqueued with (queue,
    priority, run_after, backend). Only a ``@task`` of an installed app is accepted; nothing
    outside the installed apps is imported."""
    from django.apps import apps
    from django.utils.module_loading import import_string

    from roadie_django.compat import Task

    if not isinstance(path, str) or "." not in path:
        raise NotADjangoTask(
            f"task {task_id}: its context names no Django task (its 'task' is {path!r}, not "
            f"a dotted path such as 'myapp.tasks.send_email')")
    if apps.get_containing_app_config(path) is None:
        raise NotADjangoTask(
            f"task {task_id}: {path!r} is not in an installed Django app; roadie-django runs "
            f"only @task functions of the apps in INSTALLED_APPS")
    try:
        found = import_string(path)
    except ImportError as exc:
        raise NotADjangoTask(f"task {task_id}: cannot import {path!r}: {exc}") from exc
    if not isinstance(found, Task):
        raise NotADjangoTask(
            f"task {task_id}: {path!r} is a {type(found).__name__}, not a Django task; "
            f"decorate the function with @task (from django.tasks, or django_tasks)")
    run_after = context.get("run_after")
    return found.using(
        priority=context.get("priority"), queue_name=context.get("queue_name"),
        backend=context.get("backend"),
        run_after=dt.datetime.fromisoformat(run_after) if run_after else None)


def begin_connections() -> None:
    """What Django does when a request starts: forget logged queries (``DEBUG``) and close
    the connections that are broken or older than ``CONN_MAX_AGE``."""
    from django.db import close_old_connections, reset_queries

    reset_queries()
    close_old_connections()


def end_connections() -> None:
    """What Django does when a request ends: close the connections that are broken or older
    than ``CONN_MAX_AGE`` (all of them with the default ``CONN_MAX_AGE = 0``)."""
    from django.db import close_old_connections

    close_old_connections()


class Run:
    """One attempt of a Django task: the function, its arguments and its ``TaskResult``."""

    def __init__(self, running: roadie.RunningTask) -> None:
        from roadie_django.compat import TaskResult, TaskResultStatus
        from roadie_django.results import django_time, errors_of, node_names

        ensure_django()
        self.running = running
        record = running.record
        context = running.context
        self.task = load_task(context.get("task"), record.id, context)
        self.args = list(context.get("args", []))
        self.kwargs = dict(context.get("kwargs", {}))
        earlier = running.app.attempts(record.id) if record.attempts > 1 else []
        started = [a.started_at for a in earlier if a.started_at] + [
            record.started_at or roadie_now()]
        self.result: TaskResult = TaskResult(
            task=self.task, id=str(record.id), status=TaskResultStatus.RUNNING,
            enqueued_at=django_time(record.created_at),
            started_at=django_time(min(started)), finished_at=None,
            last_attempted_at=django_time(max(started)), args=self.args, kwargs=self.kwargs,
            backend=self.task.backend, errors=errors_of(record, earlier),
            worker_ids=node_names(running.app, [a.node for a in earlier] + [record.node]))

    def arguments(self) -> tuple[list[Any], dict[str, Any]]:
        """The positional arguments (the context first, for ``takes_context``) and keywords."""
        if not self.task.takes_context:
            return self.args, self.kwargs
        from roadie_django.context import RoadieTaskContext

        context = RoadieTaskContext(task_result=self.result, roadie_task=self.running)
        return [context, *self.args], self.kwargs

    def started(self) -> None:
        """Send Django's ``task_started``."""
        from roadie_django.compat import task_started

        task_started.send(sender=self.backend_class(), task_result=self.result)

    def succeeded(self, value: Any) -> roadie.Result:
        """The return value, JSON-normalised as Django's backends keep it, and
        ``task_finished``; returns roadie's result."""
        from roadie_django.compat import TaskResultStatus, normalize_json, set_return_value

        value = normalize_json(value)
        self._finish(TaskResultStatus.SUCCESSFUL)
        set_return_value(self.result, value)
        self._send_finished()
        return roadie.Result.success(value=value)

    def failed(self, exc: BaseException) -> None:
        """Note the error on the result and send ``task_finished`` (call it in the ``except``
        block, so that receivers see the exception as Django's do)."""
        import traceback

        from roadie_django.compat import TaskError, TaskResultStatus
        from roadie_django.results import exception_path

        self.result.errors.append(TaskError(
            exception_class_path=exception_path(exc),
            traceback="".join(traceback.format_exception(exc))))
        self._finish(TaskResultStatus.FAILED)
        self._send_finished()

    def _finish(self, status: Any) -> None:
        from roadie_django.results import django_time

        object.__setattr__(self.result, "status", status)
        object.__setattr__(self.result, "finished_at", django_time(roadie_now()))

    def _send_finished(self) -> None:
        from roadie_django.compat import task_finished

        task_finished.send(sender=self.backend_class(), task_result=self.result)

    def backend_class(self) -> type:
        """The class of the task's backend (the sender of Django's task signals)."""
        return type(self.task.get_backend())


def roadie_now() -> dt.datetime:
    """Now, in UTC (as roadie stores times)."""
    return dt.datetime.now(dt.timezone.utc)


def run_sync(running: roadie.RunningTask) -> roadie.Result:
    """Run a Django task in this worker thread, between Django's connection handling."""
    run = Run(running)
    args, kwargs = run.arguments()
    begin_connections()
    try:
        run.started()
        try:
            value = run.task.call(*args, **kwargs)
        except BaseException as exc:
            run.failed(exc)
            raise
        return run.succeeded(value)
    finally:
        end_connections()


async def run_async(running: roadie.RunningTask) -> roadie.Result:
    """Run a Django task (a coroutine function) on the worker's event loop. Django's
    connections are handled in the thread where its async ORM runs them."""
    from asgiref.sync import sync_to_async

    run = Run(running)
    args, kwargs = run.arguments()
    await sync_to_async(begin_connections)()
    try:
        await sync_to_async(run.started)()
        try:
            value = await run.task.acall(*args, **kwargs)
        except BaseException as exc:
            run.failed(exc)
            raise
        return run.succeeded(value)
    finally:
        await sync_to_async(end_connections)()

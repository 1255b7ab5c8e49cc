"""Django's task framework, from wherever it is installed: ``django.tasks`` (Django 6 and
newer) or the ``django-tasks`` backport (module ``django_tasks``, for Django 4.2-5.2). Every
other module of roadie-django imports these names from here, never from either package.

The two have the same API, but some names differ (the backport's ``InvalidTaskError`` is
Django's ``InvalidTask``); this module gives Django's names.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

__all__ = [
    "DEFAULT_TASK_BACKEND_ALIAS",
    "DEFAULT_TASK_QUEUE_NAME",
    "SOURCE",
    "BaseTaskBackend",
    "InvalidTask",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "default_task_backend",
    "normalize_json",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]


def _package() -> ModuleType:
    try:
        return importlib.import_module("django.tasks")
    except ImportError:
        pass
    try:
        return importlib.import_module("django_tasks")
    except ImportError as exc:
        import django

        raise ImportError(
            f"roadie-django needs Django's task framework: Django {django.get_version()} has "
            f"no django.tasks (Django 6 and newer have it); install the backport with "
            f"`pip install django-tasks`") from exc


if TYPE_CHECKING:  # the types of the backport, which ships them (Django 6's are the same)
    from django_tasks import (
        DEFAULT_TASK_BACKEND_ALIAS,
        DEFAULT_TASK_QUEUE_NAME,
        TaskContext,
        TaskResult,
        default_task_backend,
        task_backends,
    )
    from django_tasks import TaskResultStatus as _TaskResultStatus
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import Task, TaskError
    from django_tasks.exceptions import InvalidTaskError as InvalidTask
    from django_tasks.exceptions import TaskResultDoesNotExist
    from django_tasks.signals import task_enqueued, task_finished, task_started
    from django_tasks.utils import normalize_json

    TaskResultStatus: Any = _TaskResultStatus  # TextChoices: its members are typed as tuples
else:
    _tasks = _package()
    SOURCE = _tasks.__name__  # "django.tasks" or "django_tasks"
    _base = importlib.import_module(f"{SOURCE}.base")
    _exceptions = importlib.import_module(f"{SOURCE}.exceptions")
    _signals = importlib.import_module(f"{SOURCE}.signals")

    DEFAULT_TASK_BACKEND_ALIAS = _tasks.DEFAULT_TASK_BACKEND_ALIAS
    DEFAULT_TASK_QUEUE_NAME = _tasks.DEFAULT_TASK_QUEUE_NAME
    task_backends = _tasks.task_backends
    default_task_backend = _tasks.default_task_backend
    BaseTaskBackend = importlib.import_module(f"{SOURCE}.backends.base").BaseTaskBackend
    Task = _base.Task
    TaskContext = _base.TaskContext
    TaskError = _base.TaskError
    TaskResult = _base.TaskResult
    TaskResultStatus = _base.TaskResultStatus
    InvalidTask = getattr(_exceptions, "InvalidTask", None) or _exceptions.InvalidTaskError
    TaskResultDoesNotExist = _exceptions.TaskResultDoesNotExist
    task_enqueued = _signals.task_enqueued
    task_started = _signals.task_started
    task_finished = _signals.task_finished
    if SOURCE == "django.tasks":
        from django.utils.json import normalize_json
    else:
        from django_tasks.utils import normalize_json

SOURCE: str


def set_return_value(result: TaskResult, value: Any) -> None:
    """Set the (frozen) result's return value, as Django's own backends do."""
    object.__setattr__(result, "_return_value", value)

"""roadie hooks of roadie-django: Django set up when a worker starts (with
``DJANGO_SETTINGS_MODULE`` set), the worker's database checked against the backends', and
Django tasks put back while a worker cannot run them. Importing this module imports no Django:
every roadie process loads it."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import roadie
from roadie import hookimpl

if TYPE_CHECKING:
    from roadie.worker import Worker

log = logging.getLogger("roadie_django")
NOT_CONFIGURED_DELAY = 30.0  # seconds a Django task waits after a worker without Django saw it


@hookimpl
def roadie_default_url(settings: roadie.Settings) -> str | None:
    """With ``DJANGO_SETTINGS_MODULE`` set and no URL given: the database of the roadie
    backend in ``TASKS`` (the ``default`` one if there are several), so that a plain
    ``roadie worker`` (or ``roadie web``, ``roadie db upgrade``) uses Django's."""
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        return None
    from roadie_django.backend import RoadieBackend
    from roadie_django.compat import DEFAULT_TASK_BACKEND_ALIAS, task_backends
    from roadie_django.runtime import ensure_django

    ensure_django()
    urls = {alias: backend.url for alias in task_backends.settings
            if isinstance(backend := task_backends[alias], RoadieBackend)}
    return urls.get(DEFAULT_TASK_BACKEND_ALIAS) or next(iter(urls.values()), None)


@hookimpl
def roadie_worker_started(worker: Worker) -> None:
    """With ``DJANGO_SETTINGS_MODULE`` set: set Django up (once per process), and say so
    when no roadie backend in ``TASKS`` uses the worker's database."""
    from roadie_django.nodes import remember_node

    remember_node(worker.id, worker.name)
    module = os.environ.get("DJANGO_SETTINGS_MODULE")
    if not module:
        return
    from roadie_django.runtime import ensure_django

    try:
        ensure_django()
    except Exception as exc:
        log.error("roadie-django: cannot set Django up with DJANGO_SETTINGS_MODULE=%s: %s: %s "
                  "(Django tasks will fail on this worker)", module, type(exc).__name__, exc)
        return
    check_worker_database(worker.app.url)


def check_worker_database(url: str) -> bool:
    """Whether a roadie backend of ``TASKS`` keeps its tasks at ``url``; logs an error
    naming both databases when none does (or none is configured)."""
    from roadie_django.backend import RoadieBackend
    from roadie_django.compat import task_backends
    from roadie_django.database import safe_url, same_database

    found = []
    for alias in task_backends.settings:
        try:
            backend = task_backends[alias]
            if isinstance(backend, RoadieBackend):
                found.append((alias, backend.url))
        except Exception as exc:
            log.error("roadie-django: TASKS[%r] cannot be loaded: %s", alias, exc)
    if any(same_database(url, theirs) for _, theirs in found):
        return True
    if not found:
        log.error("roadie-django: no backend in TASKS is roadie_django.RoadieBackend; this "
                  "worker runs no Django tasks that Django enqueues")
        return False
    listing = ", ".join(f"TASKS[{alias!r}] at {safe_url(theirs)}" for alias, theirs in found)
    log.error("roadie-django: this worker uses %s, but Django enqueues to %s; start it with "
              "`python manage.py roadie worker`, or with ROADIE_URL (or --url) set to that "
              "database", safe_url(url), listing)
    return False


@hookimpl
def roadie_before_task(task: roadie.RunningTask) -> roadie.Delay | None:
    """Put a Django task back (for another worker) while this one has no Django settings."""
    from roadie_django.runtime import django_configured

    if django_configured():
        return None
    log.error("roadie-django: task %s (%s) needs Django, but this worker has no "
              "DJANGO_SETTINGS_MODULE; it waits %g s for a worker that has", task.id,
              task.name, NOT_CONFIGURED_DELAY)
    return roadie.Delay(NOT_CONFIGURED_DELAY,
                        "waiting for a worker with DJANGO_SETTINGS_MODULE set (the worker "
                        "that claimed it has no Django settings)")

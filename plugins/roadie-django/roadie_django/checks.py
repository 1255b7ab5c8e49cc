"""The system check of roadie's schema: run by ``manage.py migrate`` and ``manage.py check
--database ALIAS`` (a database check, as Django's own that connect), it warns when the schema
of a roadie backend's PostgreSQL database is missing or older than the code, and says which
command upgrades it. (SQLite needs none: roadie upgrades a SQLite file itself.)"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import roadie
from django.core import checks


@checks.register(checks.Tags.database)
def check_schemas(app_configs: Sequence[Any] | None = None, *,
                  databases: Sequence[str] | None = None,
                  **kwargs: Any) -> list[checks.CheckMessage]:
    """Warnings about the roadie schema of every roadie backend on one of ``databases`` (or
    with a URL of its own), when Django names databases to check."""
    if not databases:
        return []
    from django.core.exceptions import ImproperlyConfigured

    from roadie_django.backend import RoadieBackend
    from roadie_django.compat import task_backends

    messages = []
    for alias in task_backends.settings:
        try:
            backend = task_backends[alias]
            url = backend.url if isinstance(backend, RoadieBackend) else None
        except ImproperlyConfigured:
            continue  # the backend's own check (roadie_django.E001) says why
        if url is None or (backend.database is not None and backend.database not in databases):
            continue
        messages += schema_messages(alias, url)
    return messages


def schema_messages(alias: str, url: str) -> list[checks.CheckMessage]:
    """Warnings when roadie's schema at ``url`` is missing or old, or the database cannot be
    reached."""
    if url.startswith("sqlite"):
        return []
    probe = roadie.Roadie(url, auto_upgrade=False, entry_points=False)
    try:
        probe.store  # noqa: B018 - connects and checks the schema
    except roadie.SchemaOutdatedError as exc:
        return [checks.Warning(
            str(exc), hint=f"run `python manage.py roadie --backend {alias} db upgrade` (or "
            f"`roadie db upgrade` with ROADIE_URL set to this database)",
            obj=f"TASKS[{alias!r}]", id="roadie_django.W001")]
    except roadie.DatabaseError as exc:
        return [checks.Warning(f"cannot check roadie's schema: {exc}",
                               obj=f"TASKS[{alias!r}]", id="roadie_django.W002")]
    finally:
        probe.close()
    return []

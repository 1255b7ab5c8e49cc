"""Which database roadie uses for a Django project: the URL of a ``DATABASES`` entry, the
shared ``roadie.Roadie`` of each URL, and the open transaction an enqueue joins."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import roadie
import sqlalchemy as sa
from django.core.exceptions import ImproperlyConfigured

# the libpq parameters that a Django PostgreSQL OPTIONS entry may hold and that mean the same
# in a roadie URL (Django's own options, such as isolation_level or pool, are not passed on)
LIBPQ_OPTIONS = frozenset({
    "application_name", "channel_binding", "client_encoding", "connect_timeout",
    "gssencmode", "keepalives", "keepalives_count", "keepalives_idle", "keepalives_interval",
    "options", "passfile", "service", "sslcert", "sslcrl", "sslkey", "sslmode", "sslpassword",
    "sslrootcert", "target_session_attrs",
})

_apps: dict[str, roadie.Roadie] = {}
_apps_lock = threading.Lock()


def url_of_database(alias: str) -> str:
    """The roadie URL of Django's database ``alias``: ``sqlite:///<absolute path>`` for a
    SQLite file, ``postgresql+psycopg://user:password@host:port/name`` for PostgreSQL."""
    from django.db import connections
    from django.utils.connection import ConnectionDoesNotExist

    try:
        wrapper = connections[alias]
    except ConnectionDoesNotExist:
        raise ImproperlyConfigured(
            f"roadie-django: there is no database {alias!r} in DATABASES; name one in "
            f"TASKS[...]['OPTIONS']['database'], or give a roadie URL in "
            f"TASKS[...]['OPTIONS']['url']") from None
    config = wrapper.settings_dict
    if wrapper.vendor == "sqlite":
        if wrapper.is_in_memory_db():
            raise ImproperlyConfigured(
                f"roadie-django: database {alias!r} is an in-memory SQLite database, which a "
                f"worker process cannot share; use a file (for tests: DATABASES[{alias!r}]"
                f"['TEST']['NAME'] = a file path), or give TASKS[...]['OPTIONS']['url']")
        path = Path(str(config["NAME"])).expanduser().resolve()
        return sa.engine.URL.create("sqlite", database=str(path)).render_as_string(
            hide_password=False)
    if wrapper.vendor == "postgresql":
        options = config.get("OPTIONS") or {}
        return sa.engine.URL.create(
            "postgresql+psycopg",
            username=config.get("USER") or None,
            password=config.get("PASSWORD") or None,
            host=config.get("HOST") or None,
            port=int(config["PORT"]) if config.get("PORT") else None,
            database=config.get("NAME") or None,
            query={k: str(v) for k, v in sorted(options.items()) if k in LIBPQ_OPTIONS},
        ).render_as_string(hide_password=False)
    raise ImproperlyConfigured(
        f"roadie-django: database {alias!r} uses {config.get('ENGINE')!r}, but roadie keeps "
        f"its tasks in SQLite or PostgreSQL; give a roadie URL in "
        f"TASKS[...]['OPTIONS']['url'] (then enqueues do not join that database's "
        f"transactions)")


def safe_url(url: str) -> str:
    """``url`` with its password hidden, for messages."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def same_database(first: str, second: str) -> bool:
    """Whether two roadie URLs name the same database (a SQLite file by its resolved path;
    PostgreSQL by host, port, database and user)."""
    a, b = sa.engine.make_url(first), sa.engine.make_url(second)
    if a.get_backend_name() != b.get_backend_name():
        return False
    if a.get_backend_name() == "sqlite":
        return _sqlite_path(a) == _sqlite_path(b)
    return ((a.host or "", a.port or 5432, a.database, a.username)
            == (b.host or "", b.port or 5432, b.database, b.username))


def _sqlite_path(url: sa.engine.URL) -> str:
    return str(Path(url.database or "").expanduser().resolve())


def shared_app(url: str) -> roadie.Roadie:
    """The one ``roadie.Roadie`` of this process for ``url`` (Django makes a backend per
    thread; they share the app and its connection pool)."""
    with _apps_lock:
        app = _apps.get(url)
        if app is None:
            app = _apps[url] = roadie.Roadie(url)
        return app


def open_transaction(alias: str) -> Any:
    """The DB-API connection of Django's database ``alias`` when it is inside a transaction
    (an ``atomic()`` block, or autocommit turned off), else None."""
    from django.db import connections

    wrapper = connections[alias]
    if not wrapper.in_atomic_block and (wrapper.connection is None or wrapper.get_autocommit()):
        return None
    wrapper.ensure_connection()
    raw = wrapper.connection
    driver = type(raw).__module__.split(".")[0]
    if wrapper.vendor == "postgresql" and driver != "psycopg":
        raise ImproperlyConfigured(
            f"roadie-django: database {alias!r} runs on {driver}; "
            f"enqueueing inside its transactions needs psycopg 3 (`pip install psycopg`, "
            f"which Django prefers when both are installed)")
    return raw

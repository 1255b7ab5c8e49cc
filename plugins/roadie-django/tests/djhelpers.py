"""What the tests of roadie-django share: the test databases, emptying them, and starting
real worker processes with deadlines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from roadie.testing import for_xdist_worker

TESTS = Path(__file__).resolve().parent
ALIASES = ("default", "pg")  # Django's SQLite and PostgreSQL databases of the test project
WORKER_DEADLINE = 120.0  # seconds a worker process may take to drain a test's tasks


def pg_url(database: str) -> str:
    """A URL of the PostgreSQL test server (ROADIE_TEST_PG_URL's, as the core's tests pick
    it, or 127.0.0.1:5432) for ``database``: never the core's own test databases."""
    base = sa.engine.make_url(os.environ.get(
        "ROADIE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    return base.set(database=database).render_as_string(hide_password=False)


# (one pair per pytest-xdist worker when the tests run in parallel)
PG_URL = for_xdist_worker(os.environ.get("ROADIE_DJANGO_TEST_PG_URL") or pg_url("test_django"))
PG2_URL = for_xdist_worker(os.environ.get("ROADIE_DJANGO_TEST_PG2_URL")
                           or pg_url("test_django2"))
_pg: dict[str, Any] = {}


def require_postgres() -> None:
    """Make the test databases afresh, or skip (locally) / fail (CI=true) when the
    server is unreachable. Asked once per session."""
    if "why" not in _pg:
        try:
            server = sa.engine.make_url(PG_URL).set(database="postgres")
            engine = sa.create_engine(server, isolation_level="AUTOCOMMIT",
                                      connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                # made afresh once per session: a schema an earlier run left (another
                # checkout's newer revision, say) must not decide what these tests see
                for url in (PG_URL, PG2_URL):
                    name = sa.engine.make_url(url).database
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                    conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            engine.dispose()
            _pg["why"] = None
        except Exception as exc:
            _pg["why"] = str(exc).splitlines()[0]
    if _pg["why"] is None:
        return
    message = f"PostgreSQL unreachable at {PG_URL}: {_pg['why']}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
    pytest.skip(message)


def empty_roadie(url: str) -> None:
    """Delete every row of roadie's tables at ``url`` (the schema stays)."""
    from roadie.models import metadata

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if url.startswith("postgresql"):
            names = ", ".join(t.name for t in metadata.sorted_tables)
            conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(metadata.sorted_tables):
                conn.execute(table.delete())
    engine.dispose()


def worker_env(*, django: bool = True) -> dict[str, str]:
    """The environment of a worker process: the test project importable, its settings (or
    none, with ``django=False``), and short intervals."""
    env = {k: v for k, v in os.environ.items() if k not in ("ROADIE_URL", "PYTEST_ADDOPTS")}
    env.update({
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")])),
        "ROADIE_DJANGO_TEST_PG_URL": PG_URL,
        "ROADIE_DJANGO_TEST_PG2_URL": PG2_URL,
        "ROADIE_HEARTBEAT_INTERVAL": "0.2",
        "ROADIE_SQLITE_POLL_INTERVAL": "0.02",
        "ROADIE_POSTGRES_POLL_INTERVAL": "0.5",
        "ROADIE_PENDING_HORIZON": "10",
    })
    if django:
        env["DJANGO_SETTINGS_MODULE"] = "djsite.settings"
    else:
        env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def run(command: list[str], *, django: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``command`` (a worker with ``--until-idle``, a management command) to its end,
    within ``WORKER_DEADLINE``; fail with its output when it fails."""
    process = subprocess.run(command, env=worker_env(django=django), capture_output=True,
                             text=True, timeout=WORKER_DEADLINE, cwd=TESTS)
    assert process.returncode == 0, (
        f"{' '.join(command)} exited with {process.returncode}\n{process.stdout}\n"
        f"{process.stderr}")
    return process


def run_worker(url: str | None, *options: str,
               django: bool = True) -> subprocess.CompletedProcess[str]:
    """``roadie --url URL worker --until-idle OPTIONS`` in a process of its own (without a
    URL, the default backend's, which roadie-django gives when Django's settings are set)."""
    where = ["--url", url] if url else []
    return run([sys.executable, "-m", "roadie", *where, "worker", "--until-idle", *options],
               django=django)


def manage(*arguments: str) -> subprocess.CompletedProcess[str]:
    """``python -m django ARGUMENTS`` (manage.py) with the test project's settings."""
    return run([sys.executable, "-m", "django", *arguments])


_pg_ready: list[bool] = []


def prepare_postgres() -> None:
    """The PostgreSQL test database reachable, with Django's tables and roadie's schema."""
    require_postgres()
    if not _pg_ready:
        from django.core.management import call_command
        from roadie_django.compat import task_backends

        call_command("migrate", run_syncdb=True, database="pg", verbosity=0)
        call_command("roadie", "--backend", "pg", "db", "upgrade")
        assert task_backends["pg"].url == PG_URL
        _pg_ready.append(True)


def empty(alias: str) -> None:
    """Empty roadie's tables and the shop's on Django database ``alias``."""
    from roadie_django.compat import task_backends
    from shop.models import Event, Order

    empty_roadie(task_backends[alias].url)
    Order.objects.using(alias).all().delete()
    Event.objects.using(alias).all().delete()

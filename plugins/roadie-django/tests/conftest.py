"""Fixtures of roadie-django's tests: the test project (``djsite``, app ``shop``) set up once
in this process, its databases emptied before each test.

Django's settings are given with ``settings.configure()`` from the settings module, so that no
``DJANGO_SETTINGS_MODULE`` leaks into the environment of other tests' processes; worker
processes get it explicitly (``djhelpers.worker_env``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import djhelpers


def configure_django() -> Path:
    """Django set up with the test project (at import: the test modules import its tasks),
    its files in a new temporary folder."""
    import django
    from django.conf import settings

    if settings.configured:
        return Path(os.environ["ROADIE_DJANGO_TEST_DIR"])
    directory = Path(tempfile.mkdtemp(prefix="roadie-django-tests-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    os.environ["ROADIE_DJANGO_TEST_DIR"] = str(directory)
    os.environ["ROADIE_DJANGO_TEST_PG_URL"] = djhelpers.PG_URL
    os.environ["ROADIE_DJANGO_TEST_PG2_URL"] = djhelpers.PG2_URL
    from djsite import settings as module

    settings.configure(**{k: getattr(module, k) for k in dir(module) if k.isupper()})
    django.setup()
    return directory


DIRECTORY = configure_django()


@pytest.fixture(scope="session", autouse=True)
def django_project() -> Path:
    """The test project's SQLite database migrated, with roadie's tables."""
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, database="default", verbosity=0)
    call_command("roadie", "db", "upgrade")  # roadie's tables in the same SQLite file
    return DIRECTORY


@pytest.fixture(params=djhelpers.ALIASES, ids=["sqlite", "postgres"])
def alias(request: pytest.FixtureRequest) -> Iterator[str]:
    """A backend alias (``default`` on SQLite, ``pg`` on PostgreSQL; the same alias names
    its Django database), emptied."""
    if request.param == "pg":
        djhelpers.prepare_postgres()
    djhelpers.empty(request.param)
    yield request.param

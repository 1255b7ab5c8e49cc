"""Fixtures: every ``app`` test runs on SQLite and on PostgreSQL (ROADIE_TEST_PG_URL; skipped
when unreachable, failing when CI=true)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import roadie
import sqlalchemy as sa
from roadie.models import metadata
from roadie.testing import make_app

PG_URL = os.environ.get("ROADIE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def empty_postgres() -> None:
    """Empty roadie's tables, or skip (fail under CI=true) when PostgreSQL is unreachable."""
    try:
        engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.begin() as conn:
            if conn.execute(sa.text("select to_regclass('roadie_tasks')")).scalar():
                names = ", ".join(t.name for t in metadata.sorted_tables)
                conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        engine.dispose()
    except sa.exc.OperationalError as exc:
        message = f"PostgreSQL unreachable at {PG_URL}: {str(exc).splitlines()[0]}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(message)


@pytest.fixture(params=["sqlite", "postgres"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[roadie.Roadie]:
    """A Roadie with every installed plugin, on each database."""
    if request.param == "postgres":
        empty_postgres()
        url = PG_URL
    else:
        url = f"sqlite:///{tmp_path / 'roadie.db'}"
    instance = make_app(url, tmp_path / "data")
    yield instance
    instance.close()

"""Shared fixtures: every ``app`` test runs on SQLite and on PostgreSQL.

PostgreSQL tests skip when the server is unreachable, except when CI=true, where they fail.
Set ROADIE_TEST_PG_URL to use another server than 127.0.0.1:5432/test.
"""

from __future__ import annotations

import atexit
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import sqlalchemy as sa
from roadie import Roadie
from roadie.store import Store
from roadie.testing import make_app, postgres_test_url

from tests.pgbouncer import Bouncer, pgbouncer_available

# one database per pytest-xdist worker under `pytest -n N`; the worker processes that tests
# start, and the plugins' tests, read it from the environment
PG_URL = os.environ["ROADIE_TEST_PG_URL"] = postgres_test_url()
ROADIE_TABLES = ("roadie_tasks", "roadie_locks", "roadie_nodes", "roadie_attempts",
                 "roadie_attachments", "roadie_schedules", "roadie_dependencies",
                 "roadie_rate_slots", "roadie_executors", "roadie_minutes",
                 "roadie_hours")
_pg_state: dict[str, object] = {}


def postgres_available() -> bool:
    """Whether the test PostgreSQL answers (asked once per session)."""
    if "ok" not in _pg_state:
        try:
            engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(sa.text("select 1"))
            engine.dispose()
            _pg_state["ok"] = True
        except Exception as exc:
            _pg_state["ok"] = False
            _pg_state["why"] = str(exc).splitlines()[0]
    return bool(_pg_state["ok"])


def require_postgres() -> None:
    """Skip (locally) or fail (CI=true) when PostgreSQL is unreachable."""
    if postgres_available():
        return
    message = f"PostgreSQL unreachable at {PG_URL}: {_pg_state.get('why')}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
    pytest.skip(message)


def reset_postgres() -> None:
    """Empty roadie's tables, after bringing an existing schema to the code's head revision
    once a session (the database may hold an older schema from an earlier run)."""
    if not _pg_state.get("upgraded"):
        store = Store(PG_URL)
        try:
            if store.schema_revision()[0] is not None:
                store.upgrade()
        finally:
            store.dispose()
        _pg_state["upgraded"] = True
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        exists = conn.execute(sa.text("select to_regclass('roadie_tasks')")).scalar()
        if exists:
            conn.execute(sa.text(f"TRUNCATE {', '.join(ROADIE_TABLES)} RESTART IDENTITY"))
    engine.dispose()


# the core and recovery tests run through a PgBouncer in transaction mode too, without and
# with a direct connection for LISTEN (ROADIE_POOLER, ROADIE_LISTEN_URL reach every app and
# every worker process these tests start)
POOLED_MODULES = ("test_worker", "test_recovery", "test_api")
POOLED = ("pgbouncer", "pgbouncer+listen")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``db_url``'s databases: SQLite and PostgreSQL, and for ``POOLED_MODULES`` the pooler."""
    explicit = any(mark.args and mark.args[0] == "db_url"
                   for mark in metafunc.definition.iter_markers("parametrize"))
    if "db_url" in metafunc.fixturenames and not explicit:
        pooled = metafunc.module.__name__.rpartition(".")[2] in POOLED_MODULES
        metafunc.parametrize("db_url", ["sqlite", "postgres", *(POOLED if pooled else ())],
                             indirect=True)


def require_pgbouncer() -> Bouncer:
    """The session's PgBouncer in front of the test server (skipped locally without the
    pgbouncer program, failed under CI=true)."""
    require_postgres()
    if not pgbouncer_available():
        message = "pgbouncer is not installed (apt-get install pgbouncer)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: the pooler tests must run)")
        pytest.skip(message)
    if "bouncer" not in _pg_state:
        bouncer = Bouncer(PG_URL)
        atexit.register(bouncer.stop)
        _pg_state["bouncer"] = bouncer
    return cast(Bouncer, _pg_state["bouncer"])


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file, or the emptied PostgreSQL test database
    (directly, or through a transaction pooler: then the pooler logs no problem)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'roadie.db'}"
        return
    require_postgres()
    reset_postgres()
    if request.param == "postgres":
        yield PG_URL
        return
    bouncer = require_pgbouncer()
    monkeypatch.setenv("ROADIE_POOLER", "transaction")
    if request.param == "pgbouncer+listen":
        monkeypatch.setenv("ROADIE_LISTEN_URL", PG_URL)
    seen = len(bouncer.problems())
    yield bouncer.url()
    assert bouncer.problems()[seen:] == [], "PgBouncer logged problems"


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> Iterator[Roadie]:
    """A Roadie on each database, with fast intervals and the test executors registered."""
    instance = make_app(db_url, tmp_path / "data")
    register_test_executors(instance)
    yield instance
    instance.close()


def register_test_executors(app: Roadie) -> None:
    """Executors defined in tests/executors.py, under the pseudo-distribution 'tests'."""
    from tests import executors

    for name, cls in executors.ALL.items():
        app.plugins.register_executor(f"tests:{name}", cls)


@pytest.fixture
def make_plugin(tmp_path: Path) -> Iterator[object]:
    """Create throwaway plugin distributions on a fresh path entry (with dist-info metadata)."""
    site = tmp_path / "site"
    site.mkdir()
    sys.path.insert(0, str(site))
    created: list[str] = []

    def create(dist: str, files: dict[str, str], executors: dict[str, str],
               hooks: str | None = None, version: str = "0.1") -> Path:
        for relative, text in files.items():
            path = site / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
        )
        lines = ["[roadie.executors]"] + [f"{k} = {v}" for k, v in executors.items()]
        if hooks:
            lines += ["", "[roadie.plugins]", f"{dist.replace('-', '_')} = {hooks}"]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        created.extend(p.split("/")[0].removesuffix(".py") for p in files)
        return site

    create.site = site  # type: ignore[attr-defined]
    yield create
    sys.path.remove(str(site))
    for module in list(sys.modules):
        if module.split(".")[0] in created:
            del sys.modules[module]


@pytest.fixture
def recorded(make_plugin: object, db_url: str, tmp_path: Path) -> dict[str, object]:
    """The record plugin on the path, and a side table ``test_runs`` in a side database."""
    from tests import record_plugin

    site = make_plugin(record_plugin.DIST, {f"{record_plugin.MODULE}.py": record_plugin.SOURCE},
                       record_plugin.EXECUTORS)  # type: ignore[operator]
    runs_url = (db_url if db_url.startswith("postgresql")
                else f"sqlite:///{tmp_path / 'runs.db'}")
    record_plugin.create_runs_table(runs_url)
    return {"site": site, "runs_url": runs_url}

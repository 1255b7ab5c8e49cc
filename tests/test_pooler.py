"""Behind a transaction pooler (PgBouncer in transaction mode, ``pooler="transaction"``): no
prepared statement, no session state, wake-ups through ``listen_url`` or by polling.

The core and recovery tests also run through the pooler (``POOLED_MODULES`` in conftest.py);
these are the pooler's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import roadie
from roadie import Status
from roadie.testing import make_app, wait_final, wait_for

from tests.conftest import PG_URL, require_pgbouncer, reset_postgres
from tests.processes import start_worker, stop

PROBLEMS = (" WARNING ", " ERROR ", "Traceback")


@pytest.fixture
def pooled_url() -> Iterator[str]:
    """The emptied test database through the session's PgBouncer (which then logs no
    problem)."""
    bouncer = require_pgbouncer()
    reset_postgres()
    seen = len(bouncer.problems())
    yield bouncer.url()
    assert bouncer.problems()[seen:] == [], "PgBouncer logged problems"


def test_a_client_polling_through_the_pooler_never_fails(pooled_url: str,
                                                          tmp_path: Path) -> None:
    """psycopg prepares a statement it has run five times; through a transaction pooler the
    next run lands on another server connection. With pooler="transaction" nothing is
    prepared."""
    app = make_app(pooled_url, tmp_path / "data", pooler="transaction")
    try:
        task = app.add_task("roadie-examples:noop", {})
        for _ in range(1000):
            assert app.get_task(task.id).status is Status.NEW
        assert len(app.add_tasks([("roadie-examples:noop", {})] * 50)) == 50  # COPY too
    finally:
        app.close()


@pytest.mark.parametrize("listen", [False, True], ids=["polling", "listen_url"])
def test_a_worker_process_behind_the_pooler_logs_no_problem(
        pooled_url: str, tmp_path: Path, listen: bool) -> None:
    app = make_app(pooled_url, tmp_path / "data", pooler="transaction")
    log = tmp_path / "worker.log"
    env = {"ROADIE_POOLER": "transaction", "ROADIE_POSTGRES_POLL_INTERVAL": "0.2"}
    if listen:
        env["ROADIE_LISTEN_URL"] = PG_URL
    worker = start_worker(pooled_url, tmp_path / "data", "--concurrency", "4", env=env,
                          log=log)
    try:
        tasks = app.add_tasks([{"executor": "roadie-examples:count",
                                "context": {"n": 3, "delay": 0.01}} for _ in range(40)])
        failing = app.add_task("roadie-examples:fail", {})
        for task in tasks:
            assert wait_final(app, task.id, timeout=60).status is Status.SUCCESSFUL
        assert wait_final(app, failing.id, timeout=60).status is Status.FAILED
    finally:
        assert stop(worker) == 0
        app.close()
    lines = log.read_text().splitlines()
    notices = [line for line in lines if "LISTEN cannot work" in line]
    assert len(notices) == (0 if listen else 1)
    expected = ("LISTEN cannot work", "roadie.events: task",  # the notice; task events
                "signal again to stop at once")  # the stop
    assert [line for line in lines if any(p in line for p in PROBLEMS)
            and not any(e in line for e in expected)] == []


def test_listen_url_wakes_a_worker_behind_the_pooler_at_once(pooled_url: str,
                                                            tmp_path: Path) -> None:
    """A worker that would poll only every minute starts a task added through the pooler:
    the NOTIFY goes through the pooler, the LISTEN on the direct connection hears it."""
    app = make_app(pooled_url, tmp_path / "data", pooler="transaction")
    env = {"ROADIE_POOLER": "transaction", "ROADIE_LISTEN_URL": PG_URL,
           "ROADIE_POSTGRES_POLL_INTERVAL": "60"}
    worker = start_worker(pooled_url, tmp_path / "data", env=env)
    try:
        wait_for(lambda: app.list_nodes(), timeout=30, message="the worker to start")
        first = app.add_task("roadie-examples:noop", {})
        assert wait_final(app, first.id, timeout=10).status is Status.SUCCESSFUL
        second = app.add_task("roadie-examples:noop", {})  # the worker was idle: woken
        assert wait_final(app, second.id, timeout=10).status is Status.SUCCESSFUL
    finally:
        assert stop(worker) == 0
        app.close()


def test_pooler_settings_are_checked(tmp_path: Path) -> None:
    def store_of(**settings: object) -> object:
        return roadie.Roadie(PG_URL, data_dir=tmp_path, **settings).store

    with pytest.raises(roadie.ConfigurationError, match=r"'none'.*'transaction'"):
        store_of(pooler="session")
    with pytest.raises(roadie.ConfigurationError, match="ALTER ROLE"):
        store_of(pooler="transaction", postgres_synchronous_commit="off")
    with pytest.raises(roadie.ConfigurationError, match="PostgreSQL URL"):
        store_of(listen_url="sqlite:///x.db")


def test_the_settle_statement_runs_through_the_pooler_many_times(pooled_url: str,
                                                               tmp_path: Path) -> None:
    """The worker's hot statements (settle, claim) run far more than five times on one
    client connection: none is prepared, none fails."""
    app = make_app(pooled_url, tmp_path / "data", pooler="transaction")
    try:
        tasks = app.add_tasks([("roadie-examples:noop", {})] * 300)
        app.run_worker(concurrency=2, until_idle=True)
        assert {t.status for t in app.list_tasks(limit=None)} == {Status.SUCCESSFUL}
        assert len(tasks) == 300
    finally:
        app.close()

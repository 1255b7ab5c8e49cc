"""A PostgreSQL restart while a worker drains: the worker says how long the database has been
unreachable, reconnects, and no task is lost or stuck. On a throwaway cluster of its own."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from roadie import Status
from roadie.testing import check_invariants, make_app, wait_for

from tests.pgcluster import Cluster, pg_bindir, throwaway_cluster
from tests.processes import start_worker, stop


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if pg_bindir() is None:
        message = "no PostgreSQL binaries to make a throwaway cluster"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: this test must run)")
        pytest.skip(message)
    with throwaway_cluster() as made:
        yield made


@pytest.mark.slow
def test_a_worker_drains_through_a_postgres_restart(cluster: Cluster, tmp_path: Path) -> None:
    app = make_app(cluster.url, tmp_path / "data")
    tasks = app.add_tasks([{"executor": "roadie-examples:count", "context": {"n": 4,
                                                                            "delay": 0.05}}
                           for _ in range(150)])
    log = tmp_path / "worker.log"
    worker = start_worker(cluster.url, tmp_path / "data", "--concurrency", "4", log=log)
    try:
        wait_for(lambda: len(app.list_tasks(status=[Status.SUCCESSFUL], limit=None)) >= 20,
                 timeout=60, message="the drain to start")
        app.close()  # the test's own connections die with the server too
        cluster.stop()
        wait_for(lambda: "database unreachable for" in log.read_text(), timeout=60,
                 message="the worker to say how long the database has been unreachable")
        down_since = time.monotonic()
        cluster.start()
        wait_for(lambda: "database reachable again after" in log.read_text(), timeout=60,
                 message="the worker to reconnect")
        assert time.monotonic() - down_since < 60
        wait_for(lambda: all(t.completed for t in app.list_tasks(limit=None)), timeout=120,
                 message="every task to end")
        assert worker.poll() is None  # it never gave up
    finally:
        code = stop(worker)
    text = log.read_text()
    assert code == 0, text
    final = app.list_tasks(limit=None)
    assert sorted(t.id for t in final) == sorted(t.id for t in tasks)  # nothing lost
    assert {t.status for t in final} == {Status.SUCCESSFUL}, [
        (t.id, t.status_message) for t in final if t.status is not Status.SUCCESSFUL]
    assert check_invariants(app, running_needs_live_node=False) == []
    app.close()

"""A primary failover while workers drain: a primary and its streaming standby (synchronous
replication), workers on a multi-host URL that asks for the read-write server; the standby is
promoted mid-drain and the old primary stopped. Every task committed before or after ends
exactly once, the workers reconnect by themselves and say so, and no write is applied twice."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from roadie import Status
from roadie.testing import check_invariants, make_app, wait_for

from tests.pgcluster import Cluster, pg_bindir, throwaway_pair
from tests.processes import start_worker, stop


@pytest.fixture
def pair() -> Iterator[tuple[Cluster, Cluster]]:
    if pg_bindir() is None:
        message = "no PostgreSQL binaries to make a primary and a standby"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: this test must run)")
        pytest.skip(message)
    with throwaway_pair() as made:
        yield made


def multi_host_url(*clusters: Cluster) -> str:
    hosts = "&".join(f"host=127.0.0.1:{c.port}" for c in clusters)
    return f"postgresql+psycopg://postgres@/roadie?{hosts}&target_session_attrs=read-write"


@pytest.mark.slow
def test_workers_follow_a_promoted_standby(pair: tuple[Cluster, Cluster],
                                           tmp_path: Path) -> None:
    primary, standby = pair
    url = multi_host_url(primary, standby)
    app = make_app(url, tmp_path / "data")  # the schema, replicated to the standby
    primary.require_synchronous_standby()
    work = {"executor": "roadie-examples:count", "context": {"n": 4, "delay": 0.05}}
    before = app.add_tasks([work] * 150)
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = [start_worker(url, tmp_path / "data", "--concurrency", "4", log=log)
               for log in logs]
    try:
        wait_for(lambda: len(app.list_tasks(status=[Status.SUCCESSFUL], limit=None)) >= 20,
                 timeout=60, message="the drain to start")
        app.close()  # its pooled connections go to the old primary
        standby.promote()
        primary.stop("fast")
        for log in logs:
            wait_for(lambda log=log: "database reachable again after" in log.read_text(),
                     timeout=90, message=f"{log.name}: the worker to reconnect")
        after = app.add_tasks([work] * 50)  # on the new primary
        wait_for(lambda: all(t.completed for t in app.list_tasks(limit=None)), timeout=120,
                 message="every task to end")
        assert all(worker.poll() is None for worker in workers)  # none gave up
    finally:
        codes = [stop(worker) for worker in workers]
    assert codes == [0, 0], [log.read_text()[-3000:] for log in logs]
    final = app.list_tasks(limit=None)
    assert sorted(t.id for t in final) == sorted(t.id for t in [*before, *after])
    assert {t.status for t in final} == {Status.SUCCESSFUL}, [
        (t.id, t.status, t.status_message) for t in final if t.status is not Status.SUCCESSFUL]
    # exactly once: one attempt each, recorded once, whatever failed with the old primary
    assert {t.id: len(app.attempts(t.id)) for t in final} == {t.id: 1 for t in final}
    assert {t.attempts for t in final} == {1}
    assert check_invariants(app, running_needs_live_node=False) == []
    app.close()

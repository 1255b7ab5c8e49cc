"""A backlog of serial tasks never stops a node from running other work (issue 27).

The scenario, as a new user meets it: a long serial task runs, a backlog of its executor was
added while no worker ran (one call at a time, or one ``add_tasks`` of 10,000), and no-ops of
another executor wait behind it. The no-ops must run at once, and once the long task ends the
backlog runs one at a time, in priority and id order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import roadie
from roadie import Status
from roadie.testing import BackgroundWorker, make_app, wait_for

from tests import executors
from tests.conftest import register_test_executors
from tests.processes import start_worker, stop

LONG = {"seconds": 60}
# The scenario runs with the default poll intervals, as a user's worker does: the test
# settings' short ones would hide a claim loop that waits instead of claiming again.
DEFAULT_POLLS = {"sqlite_poll_interval": 0.1, "postgres_poll_interval": 2.0}


@pytest.fixture
def app(db_url: str, tmp_path: Path) -> Iterator[roadie.Roadie]:
    """The test app (on each database) with the default poll intervals."""
    instance = make_app(db_url, tmp_path / "data", **DEFAULT_POLLS)
    register_test_executors(instance)
    yield instance
    instance.close()


def _backlog_size(app: roadie.Roadie) -> int:
    return 100 if app.store.is_postgres else 2_000


def _counts(app: roadie.Roadie, executor: str) -> dict[Status, int]:
    return {s: n for (s, e), n in app.store.count_tasks_by_executor().items() if e == executor}


def _all_noops_done(app: roadie.Roadie, executor: str, count: int) -> bool:
    return _counts(app, executor).get(Status.SUCCESSFUL, 0) == count


def test_a_serial_backlog_leaves_the_threads_to_other_work(app: roadie.Roadie) -> None:
    """The issue's scenario as written: the backlog added one task at a time."""
    long = app.add_task("tests:serial-sleep", LONG)
    backlog = [app.add_task("tests:serial-sleep", {"seconds": 0})
               for _ in range(_backlog_size(app))]
    noops = [app.add_task("tests:sleep", {"seconds": 0}) for _ in range(100)]
    with BackgroundWorker(app, concurrency=3):
        wait_for(lambda: app.get_task(long.id).status is Status.IN_PROGRESS,
                 message="the long serial task to start")
        wait_for(lambda: _all_noops_done(app, "tests:sleep", len(noops)), timeout=30,
                 message="the 100 no-ops to run beside the long serial task")
        assert app.get_task(long.id).status is Status.IN_PROGRESS
        assert _counts(app, "tests:serial-sleep").get(Status.SUCCESSFUL, 0) == 0
        assert app.get_task(backlog[0].id).status is Status.QUEUED
        app.cancel_task(long.id)


def test_a_serial_backlog_of_one_add_tasks_call(app: roadie.Roadie) -> None:
    """The same with the backlog added in one ``add_tasks`` call of 10,000."""
    long = app.add_task("tests:serial-sleep", LONG)
    app.add_tasks([{"executor": "tests:serial-sleep", "context": {"seconds": 0}}] * 10_000)
    noops = app.add_tasks([{"executor": "tests:sleep", "context": {"seconds": 0}}] * 100)
    with BackgroundWorker(app, concurrency=3):
        wait_for(lambda: app.get_task(long.id).status is Status.IN_PROGRESS,
                 message="the long serial task to start")
        wait_for(lambda: _all_noops_done(app, "tests:sleep", len(noops)), timeout=30,
                 message="the 100 no-ops to run beside the long serial task")
        assert _counts(app, "tests:serial-sleep") == {Status.IN_PROGRESS: 1,
                                                      Status.QUEUED: 10_000}
        app.cancel_task(long.id)


def test_the_backlog_runs_one_at_a_time_in_priority_and_id_order(app: roadie.Roadie) -> None:
    """A backlog added before any worker runs, with mixed priorities and a batch among single
    adds, runs in priority then id order once its key frees, never two at once."""
    executors.RUNS.clear()
    singles = [app.add_task("tests:serial", {"seconds": 0.05}, priority=p) for p in (0, 5, 1)]
    batch = app.add_tasks([{"executor": "tests:serial", "context": {"seconds": 0.05},
                            "priority": p} for p in (2, 5, 0, 9)])
    later = app.add_task("tests:serial", {"seconds": 0.05}, priority=7)
    backlog = [*singles, *batch, later]
    statuses = [app.get_task(t.id).status for t in backlog]
    assert statuses == [Status.QUEUED] * 6 + [Status.NEW, Status.QUEUED]  # the 9 runs next
    with BackgroundWorker(app, concurrency=3):
        wait_for(lambda: _counts(app, "tests:serial").get(Status.SUCCESSFUL, 0) == 8,
                 message="the whole backlog to run")
    runs = sorted(executors.RUNS, key=lambda r: r[1])
    expected = [t.id for t in sorted(backlog, key=lambda t: (-t.priority, t.id))]
    assert [r[0] for r in runs] == expected
    assert all(a[2] <= b[1] for a, b in itertools.pairwise(runs))  # never at once
    assert app.store.held_locks() == {}


def test_a_higher_priority_task_goes_before_a_waiting_head(app: roadie.Roadie) -> None:
    """The next task of a key that no worker took yet gives way to a more urgent one."""
    executors.RUNS.clear()
    low = app.add_task("tests:serial", {"seconds": 0})
    urgent = app.add_task("tests:serial", {"seconds": 0}, priority=3)
    assert app.get_task(low.id).status is Status.QUEUED
    assert app.get_task(urgent.id).status is Status.NEW
    app.run_worker(concurrency=2, until_idle=True)
    assert [r[0] for r in sorted(executors.RUNS, key=lambda r: r[1])] == [urgent.id, low.id]


def test_a_schedules_task_queues_behind_the_head_of_its_key(app: roadie.Roadie) -> None:
    """Tasks a schedule makes join their key's queue as added tasks do."""
    executors.RUNS.clear()
    head = app.add_task("tests:serial", {"seconds": 0})
    app.add_schedule("every-minute", "tests:serial", {"seconds": 0}, every=60)
    made = app.run_schedule_now("every-minute")
    assert app.get_task(made.id).status is Status.QUEUED
    assert f"task {head.id} runs first" in (app.waiting_reason(app.get_task(made.id)) or "")
    app.remove_schedule("every-minute")
    app.run_worker(concurrency=2, until_idle=True)
    assert [r[0] for r in sorted(executors.RUNS, key=lambda r: r[1])] == [head.id, made.id]


def test_a_waiting_task_says_what_it_waits_for(app: roadie.Roadie) -> None:
    head = app.add_task("tests:serial", {"seconds": 0})
    behind = app.add_task("tests:serial", {"seconds": 0})
    reason = app.waiting_reason(app.get_task(behind.id))
    assert f"task {head.id}" in reason and "tests:serial" in reason


@pytest.mark.slow
def test_a_serial_backlog_with_three_worker_processes(db_url: str, tmp_path: Path) -> None:
    """The scenario with 3 workers in separate processes (the example plugin's executors)."""
    app = make_app(db_url, tmp_path / "data", **DEFAULT_POLLS)
    long = app.add_task("roadie-examples:serial", LONG)
    size = _backlog_size(app)
    app.add_tasks([{"executor": "roadie-examples:serial", "context": {"seconds": 0}}] * size)
    noops = app.add_tasks([{"executor": "roadie-examples:noop"}] * 100)
    polls = {f"ROADIE_{k.upper()}": str(v) for k, v in DEFAULT_POLLS.items()}
    workers = [start_worker(db_url, tmp_path / "data", "--concurrency", "3",
                            log=tmp_path / f"worker-{i}.log", env=polls) for i in range(3)]
    try:
        wait_for(lambda: app.get_task(long.id).status is Status.IN_PROGRESS, timeout=30,
                 message="the long serial task to start")
        wait_for(lambda: _all_noops_done(app, "roadie-examples:noop", len(noops)),
                 timeout=30, message="the 100 no-ops to run beside the long serial task")
        assert _counts(app, "roadie-examples:serial") == {Status.IN_PROGRESS: 1,
                                                           Status.QUEUED: size}
        app.cancel_task(long.id)
        wait_for(lambda: _counts(app, "roadie-examples:serial").get(Status.SUCCESSFUL, 0)
                 == size, timeout=60, message="the backlog to run once the key is free")
        assert app.store.held_locks() == {}
    finally:
        for worker in workers:
            stop(worker)
        app.close()

"""The claim: tasks it cannot take now (queued behind a lock, delayed, for other tags or
executors) wait out of its way, and come back when they can run (issue 12)."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import roadie
import sqlalchemy as sa
from roadie import Status, models
from roadie.store import Store, utcnow
from roadie.testing import BackgroundWorker, make_app, wait_final, wait_for

from tests import executors
from tests.conftest import register_test_executors


def test_serial_tasks_queued_behind_a_lock_run_one_by_one_in_order(app: roadie.Roadie) -> None:
    executors.RUNS.clear()
    first = app.add_task("tests:serial", {"seconds": 0.5})
    with BackgroundWorker(app, concurrency=3):
        wait_for(lambda: app.get_task(first.id).status is Status.IN_PROGRESS,
                 message="the first serial task to start")
        queued = [app.add_task("tests:serial", {"seconds": 0}, priority=p)
                  for p in (0, 5, 0, 5, 1)]
        assert {app.get_task(t.id).status for t in queued} == {Status.QUEUED}
        for task in queued:
            assert wait_final(app, task.id).status is Status.SUCCESSFUL
    runs = sorted(executors.RUNS, key=lambda r: r[1])
    expected = [first.id] + [t.id for t in sorted(queued, key=lambda t: (-t.priority, t.id))]
    assert [r[0] for r in runs] == expected
    assert all(a[2] <= b[1] for a, b in itertools.pairwise(runs))  # never at once
    assert app.store.held_locks() == {}


def test_a_cancelled_queued_task_does_not_hold_up_the_next(app: roadie.Roadie) -> None:
    first = app.add_task("tests:serial", {"seconds": 0.4})
    with BackgroundWorker(app, concurrency=2):
        wait_for(lambda: app.get_task(first.id).status is Status.IN_PROGRESS,
                 message="the first serial task to start")
        second = app.add_task("tests:serial", {"seconds": 0})
        third = app.add_task("tests:serial", {"seconds": 0})
        app.cancel_task(second.id)
        assert wait_final(app, third.id).status is Status.SUCCESSFUL
    assert app.get_task(second.id).status is Status.CANCELLED


def test_a_queue_whose_lock_vanished_is_woken_by_recovery(app: roadie.Roadie) -> None:
    """Tasks parked behind a lock that nobody holds any more (a crash at the wrong time) run
    once a worker's periodic recovery finds them."""
    first = app.add_task("roadie-examples:serial", {"seconds": 30})
    with BackgroundWorker(app, concurrency=1):
        wait_for(lambda: app.get_task(first.id).status is Status.IN_PROGRESS,
                 message="the first serial task to start")
        waiting = [app.add_task("roadie-examples:serial", {"seconds": 0}) for _ in range(3)]
        assert {app.get_task(t.id).status for t in waiting} == {Status.QUEUED}
        with app.store.write() as conn:  # the lock disappears without waking anything
            conn.execute(models.locks.delete())
        app.cancel_task(first.id)
        assert wait_final(app, first.id).status is Status.CANCELLED
        for task in waiting:
            assert wait_final(app, task.id).status is Status.SUCCESSFUL


def test_delayed_and_blocked_tasks_run_when_their_time_comes(app: roadie.Roadie) -> None:
    later = app.add_task("roadie-examples:echo", {"x": 1}, delay=0.3)
    hour = app.add_task("roadie-examples:echo", {"x": 2}, delay=3600)
    base = app.add_task("roadie-examples:echo", {"x": 3}, delay=0.2)
    after = app.add_task("roadie-examples:echo", {"x": 4}, after=[base.id])
    with BackgroundWorker(app, concurrency=2):
        for task in (later, base, after):
            assert wait_final(app, task.id).status is Status.SUCCESSFUL
    assert app.get_task(hour.id).status is Status.NEW
    done = app.get_task(later.id)
    assert done.started_at is not None
    assert done.started_at >= done.run_after
    assert app.get_task(after.id).started_at >= app.get_task(base.id).finished_at


def test_a_worker_with_many_tags_claims_every_task_it_can_run(app: roadie.Roadie) -> None:
    tags = [f"t{i}" for i in range(9)]  # 512 subsets: more ranges than one SQLite query takes
    fit = app.add_task("roadie-examples:echo", {"x": 1}, tags=["t2", "t7"])
    plain = app.add_task("roadie-examples:echo", {"x": 2})
    other = app.add_task("roadie-examples:echo", {"x": 3}, tags=["gpu"])
    with BackgroundWorker(app, concurrency=2, tags=tags):
        for task in (fit, plain):
            assert wait_final(app, task.id).status is Status.SUCCESSFUL
    assert app.get_task(other.id).status is Status.NEW


def test_an_older_schema_is_upgraded_in_place(db_url: str, tmp_path: Path) -> None:
    """A database at the schema before the claim rework keeps its waiting tasks: the due
    ones run, the delayed ones wait for their time, a queue whose lock is gone runs."""
    from alembic import command

    store = Store(db_url)
    try:
        with store.write() as conn:  # a fresh database, or (PostgreSQL) back down to it
            config = store._alembic_config(conn)
            command.upgrade(config, "i16_task_trees")
            command.downgrade(config, "i16_task_trees")
        now = utcnow()
        old = sa.table("roadie_tasks", *[sa.column(c.name, c.type) for c in models.tasks.c
                                         if c.name not in ("id", "claimable")])
        row = {"name": "", "executor": "roadie-examples:echo", "plugins": {},
               "context": b"\x80", "status": 0, "status_message": "", "completed": False,
               "attempts": 0, "priority": 0, "tags": "", "created_at": now,
               "updated_at": now, "fan_in": False, "has_dependents": False}
        with store.write() as conn:
            conn.execute(old.insert(), [
                {**row, "run_after": now - dt.timedelta(seconds=1), "name": "due"},
                {**row, "run_after": now + dt.timedelta(seconds=0.5), "name": "soon"},
                {**row, "run_after": now + dt.timedelta(hours=1), "name": "later"},
                {**row, "run_after": now, "name": "queued", "status": 4,
                 "context": b"\x81\xa7seconds\x00",
                 "isolation_key": "roadie-examples:serial",
                 "executor": "roadie-examples:serial"},
            ])
    finally:
        store.dispose()
    app = make_app(db_url, tmp_path / "data")  # upgrades the schema
    register_test_executors(app)
    try:
        app.run_worker(concurrency=2, until_idle=True)
        status = {t.name: t.status for t in app.list_tasks()}
        assert status == {"due": Status.SUCCESSFUL, "soon": Status.SUCCESSFUL,
                          "later": Status.NEW, "queued": Status.SUCCESSFUL}
    finally:
        app.close()

"""Claiming ahead (``Settings.prefetch``): only while the node's tasks are short, and a task
claimed ahead that no thread starts within ``prefetch_hold`` is put back for any node."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import roadie
from roadie import Status
from roadie.store import utcnow
from roadie.testing import BackgroundWorker, make_app, wait_final, wait_for

from tests.conftest import register_test_executors


def _app(db_url: str, tmp_path: Path, name: str, **settings: object) -> roadie.Roadie:
    app = make_app(db_url, tmp_path / name, **settings)
    register_test_executors(app)
    return app


def _warm_up(app: roadie.Roadie, worker: BackgroundWorker) -> None:
    """Let ``worker`` run a few quick tasks, so that it knows its tasks are short."""
    quick = app.add_tasks([("tests:sleep", {"seconds": 0.001}) for _ in range(3)])
    for task in quick:
        wait_final(app, task.id)


def _started_for(app: roadie.Roadie, task_id: int, seconds: float) -> bool:
    task = app.get_task(task_id)
    return (task.status is Status.IN_PROGRESS and task.started_at is not None
            and task.started_at <= utcnow() - dt.timedelta(seconds=seconds))


def test_a_task_claimed_ahead_behind_a_long_one_is_put_back_for_another_node(
        db_url: str, tmp_path: Path) -> None:
    ahead = _app(db_url, tmp_path, "a", prefetch=3, prefetch_short=1.0, prefetch_hold=0.3)
    other = _app(db_url, tmp_path, "b")
    with BackgroundWorker(ahead, concurrency=1) as first:
        _warm_up(ahead, first)
        # one call: the idle worker claims the long task and the quick ones ahead of it
        long, *quick = ahead.add_tasks(
            [{"executor": "tests:sleep", "context": {"seconds": 30}, "priority": 5}]
            + [("tests:sleep", {"seconds": 0.001}) for _ in range(3)])
        wait_for(lambda: first.worker.stats.released >= 1, message="a task put back")
        with BackgroundWorker(other, concurrency=1) as second:
            ended = [wait_final(ahead, task.id) for task in quick]
            assert ahead.get_task(long.id).status is Status.IN_PROGRESS  # still running
            assert {task.node for task in ended} == {second.worker.id}
            assert all(task.status is Status.SUCCESSFUL for task in ended)
            # being put back does not count as an attempt
            assert [task.attempts for task in ended] == [1, 1, 1]
            assert all(len(ahead.store.attempts_of(task.id)) == 1 for task in quick)
        ahead.cancel_task(long.id, by="test")
        wait_final(ahead, long.id)
    ahead.close()
    other.close()


def test_a_worker_running_long_tasks_does_not_claim_ahead(
        db_url: str, tmp_path: Path) -> None:
    ahead = _app(db_url, tmp_path, "a", prefetch=3, prefetch_hold=60)
    other = _app(db_url, tmp_path, "b")
    with BackgroundWorker(ahead, concurrency=1) as first:
        _warm_up(ahead, first)
        long = ahead.add_task("tests:sleep", {"seconds": 30})
        wait_for(lambda: _started_for(ahead, long.id, 0.3), message="the long task running")
        quick = ahead.add_tasks([("tests:sleep", {"seconds": 0.001}) for _ in range(3)])
        with BackgroundWorker(other, concurrency=1) as second:
            # had the first worker claimed them, they would wait for prefetch_hold (60 s)
            ended = [wait_final(ahead, task.id) for task in quick]
            assert {task.node for task in ended} == {second.worker.id}
        assert first.worker.stats.released == 0
        ahead.cancel_task(long.id, by="test")
        wait_final(ahead, long.id)
    ahead.close()
    other.close()


def test_one_long_task_leaves_the_other_threads_their_prefetch(
        db_url: str, tmp_path: Path) -> None:
    """A thread held by a long task (a serial task holding its key) counts for nothing, but
    the others still claim ahead: tasks claimed ahead wait IN_PROGRESS, not yet started."""
    ahead = _app(db_url, tmp_path, "a", prefetch=3, prefetch_short=1.0, prefetch_hold=60)
    with BackgroundWorker(ahead, concurrency=2) as first:
        _warm_up(ahead, first)
        long = ahead.add_task("tests:sleep", {"seconds": 30})
        wait_for(lambda: _started_for(ahead, long.id, 1.2), message="the long task running")
        quick = ahead.add_tasks([("tests:sleep", {"seconds": 0.3}) for _ in range(6)])

        def claimed_ahead() -> bool:
            tasks = [ahead.get_task(task.id) for task in quick]
            return any(t.status is Status.IN_PROGRESS and t.started_at is None for t in tasks)

        wait_for(claimed_ahead, message="a quick task claimed ahead beside the long one")
        for task in quick:
            assert wait_final(ahead, task.id).status is Status.SUCCESSFUL
        ahead.cancel_task(long.id, by="test")
        wait_final(ahead, long.id)
    ahead.close()


def test_a_worker_claims_ahead_only_what_its_threads_start_within_prefetch_short(
        db_url: str, tmp_path: Path) -> None:
    """Tasks of 50 ms, prefetch_short 0.5 s, one thread: at most 0.5 / 0.05 = 10 tasks wait
    claimed ahead on this worker, however large ``prefetch`` is and however many wait."""
    app = _app(db_url, tmp_path, "a", prefetch=100, prefetch_short=0.5, prefetch_hold=60)
    tasks = app.add_tasks([("tests:sleep", {"seconds": 0.05}) for _ in range(150)])
    worker = BackgroundWorker(app, concurrency=1).start()
    try:
        for finished in (3, 6, 9, 12):
            wait_for(lambda n=finished: worker.worker.stats.finished >= n,
                     message=f"{finished} tasks finished")
            claimed = app.store.count_tasks().get(Status.IN_PROGRESS, 0)
            assert claimed <= 1 + 10, f"{claimed} tasks claimed by one thread"
    finally:
        worker.stop()
    # what it had claimed ahead went back to waiting, uncounted
    assert {app.get_task(t.id).status for t in tasks} == {Status.NEW, Status.SUCCESSFUL}
    app.close()


def test_stopping_puts_back_what_was_claimed_ahead(db_url: str, tmp_path: Path) -> None:
    app = _app(db_url, tmp_path, "a", prefetch=3, prefetch_short=60, prefetch_hold=60)
    worker = BackgroundWorker(app, concurrency=1).start()
    _warm_up(app, worker)
    long, *quick = app.add_tasks(
        [{"executor": "tests:sleep", "context": {"seconds": 3.0}, "priority": 5}]
        + [("tests:sleep", {"seconds": 0.001}) for _ in range(3)])
    wait_for(lambda: all(app.get_task(t.id).status is Status.IN_PROGRESS
                         for t in (long, *quick)), message="all four claimed")
    stats = worker.stop()
    assert stats is not None and stats.released == 3
    assert app.get_task(long.id).status is Status.SUCCESSFUL  # a started task finishes
    for task in quick:
        back = app.get_task(task.id)
        assert (back.status, back.node, back.attempts) == (Status.NEW, None, 0)
    app.close()


def test_a_dead_workers_tasks_claimed_ahead_go_back_uncounted(app: roadie.Roadie) -> None:
    """The crash policy applies to what the dead worker started; what it had only claimed
    ahead waits again, whatever the policy (here FAIL), with no attempt counted."""
    from roadie.store import Claimable

    tasks = app.add_tasks([("tests:sleep", {}) for _ in range(3)])
    can = Claimable(executors=["tests:sleep"], isolated={}, plugins={"tests": "0"},
                    tag_keys=[""])
    claimed = app.store.settle("ghost-node", [], can, 3, ahead=2).claimed
    assert [t.id for t in claimed] == [t.id for t in tasks]
    assert [t.started_at is not None for t in claimed] == [True, False, False]
    assert app.recover_orphans() == 3
    started, *ahead = (app.get_task(t.id) for t in tasks)
    assert started.status is Status.FAILED and started.attempts == 1
    for task in ahead:
        assert (task.status, task.attempts, task.node) == (Status.NEW, 0, None)
        assert "before it started the task" in task.status_message
        assert app.store.attempts_of(task.id) == []


def test_a_task_claimed_ahead_records_its_start_when_a_thread_takes_it(
        db_url: str, tmp_path: Path) -> None:
    app = _app(db_url, tmp_path, "a", prefetch=3, prefetch_short=60, prefetch_hold=60)
    with BackgroundWorker(app, concurrency=1) as worker:
        _warm_up(app, worker)
        tasks = app.add_tasks([("tests:sleep", {"seconds": 0.2}) for _ in range(4)])
        ended = [wait_final(app, task.id) for task in tasks]
    assert all(t.status is Status.SUCCESSFUL and t.attempts == 1 for t in ended)
    # each started when its thread took it: one after the other, not all at the claim
    starts = sorted(t.started_at for t in ended if t.started_at is not None)
    assert len(starts) == 4
    assert starts[-1] - starts[0] >= dt.timedelta(seconds=0.5)
    app.close()


def _warm_up_async(app: roadie.Roadie) -> None:
    """Let the worker run a few quick async tasks, so that it knows they are short."""
    quick = app.add_tasks([("tests:asleep", {"seconds": 0.001}) for _ in range(3)])
    for task in quick:
        wait_final(app, task.id)


def test_an_async_slot_has_tasks_claimed_ahead_each_started_when_the_slot_frees(
        db_url: str, tmp_path: Path) -> None:
    """One async slot, prefetch 3: the worker claims the next tasks ahead of the slot (no
    start recorded), and each records its start when the slot takes it, one after the
    other."""
    app = _app(db_url, tmp_path, "a", prefetch=3, prefetch_short=60, prefetch_hold=60)
    with BackgroundWorker(app, concurrency=1, async_concurrency=1):
        _warm_up_async(app)
        tasks = app.add_tasks([("tests:asleep", {"seconds": 0.3}) for _ in range(4)])

        def claimed_ahead() -> bool:
            now = [app.get_task(t.id) for t in tasks]
            return sum(t.status is Status.IN_PROGRESS and t.started_at is None
                       for t in now) >= 2

        wait_for(claimed_ahead, message="tasks claimed ahead of the one async slot")
        ended = [wait_final(app, task.id) for task in tasks]
    assert all(t.status is Status.SUCCESSFUL and t.attempts == 1 for t in ended)
    starts = sorted(t.started_at for t in ended if t.started_at is not None)
    assert len(starts) == 4
    assert starts[-1] - starts[0] >= dt.timedelta(seconds=0.8)  # one slot: in turn
    app.close()


def test_stopping_puts_back_what_was_claimed_ahead_of_async_slots(
        db_url: str, tmp_path: Path) -> None:
    app = _app(db_url, tmp_path, "a", prefetch=3, prefetch_short=60, prefetch_hold=60)
    worker = BackgroundWorker(app, concurrency=1, async_concurrency=1).start()
    _warm_up_async(app)
    long, *quick = app.add_tasks(
        [{"executor": "tests:asleep", "context": {"seconds": 2.0}, "priority": 5}]
        + [("tests:asleep", {"seconds": 0.001}) for _ in range(3)])
    wait_for(lambda: all(app.get_task(t.id).status is Status.IN_PROGRESS
                         for t in (long, *quick)), message="all four claimed")
    stats = worker.stop()
    assert stats is not None and stats.released == 3
    assert app.get_task(long.id).status is Status.SUCCESSFUL  # a started task finishes
    for task in quick:
        back = app.get_task(task.id)
        assert (back.status, back.node, back.attempts, back.started_at) == (
            Status.NEW, None, 0, None)
    app.close()


def test_an_async_task_claimed_ahead_behind_a_long_one_is_put_back_for_another_node(
        db_url: str, tmp_path: Path) -> None:
    ahead = _app(db_url, tmp_path, "a", prefetch=3, prefetch_short=1.0, prefetch_hold=0.3)
    other = _app(db_url, tmp_path, "b")
    with BackgroundWorker(ahead, concurrency=1, async_concurrency=1) as first:
        _warm_up_async(ahead)
        # one call: the idle worker claims the long task and the quick ones ahead of it
        long, *quick = ahead.add_tasks(
            [{"executor": "tests:asleep", "context": {"seconds": 30}, "priority": 5}]
            + [("tests:asleep", {"seconds": 0.001}) for _ in range(3)])
        wait_for(lambda: first.worker.stats.released >= 1, message="a task put back")
        with BackgroundWorker(other, concurrency=1, async_concurrency=1) as second:
            ended = [wait_final(ahead, task.id) for task in quick]
            assert ahead.get_task(long.id).status is Status.IN_PROGRESS  # still running
            assert {task.node for task in ended} == {second.worker.id}
            assert all(task.status is Status.SUCCESSFUL for task in ended)
            # being put back does not count as an attempt
            assert [task.attempts for task in ended] == [1, 1, 1]
        ahead.cancel_task(long.id, by="test")
        wait_final(ahead, long.id)
    ahead.close()
    other.close()


def test_async_slots_claim_ahead_once_before_a_run_time_is_known(
        db_url: str, tmp_path: Path) -> None:
    """Before any async task has ended here, a worker whose async slots are all busy claims
    ahead once: the task taken ahead of a long one goes back within ``prefetch_hold``, and no
    other is claimed ahead while no task has ended."""
    ahead = _app(db_url, tmp_path, "a", prefetch=3, prefetch_hold=0.3)
    other = _app(db_url, tmp_path, "b")
    long, *quick = ahead.add_tasks(
        [{"executor": "tests:asleep", "context": {"seconds": 30}, "priority": 5}]
        + [("tests:asleep", {"seconds": 0.001}) for _ in range(3)])
    with BackgroundWorker(ahead, concurrency=1, async_concurrency=1) as first:
        wait_for(lambda: first.worker.stats.released >= 1, message="a task put back")
        with BackgroundWorker(other, concurrency=1, async_concurrency=1) as second:
            ended = [wait_final(ahead, task.id) for task in quick]
            assert {task.node for task in ended} == {second.worker.id}
            assert [task.attempts for task in ended] == [1, 1, 1]
        assert ahead.get_task(long.id).status is Status.IN_PROGRESS  # still running
        # the long task, and one claimed ahead of the one slot, once
        assert (first.worker.stats.claimed, first.worker.stats.released) == (2, 1)
        ahead.cancel_task(long.id, by="test")
        wait_final(ahead, long.id)
    ahead.close()
    other.close()

"""Crash recovery, cancellation, timeouts, retries, resume: no task stuck or lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import roadie
from roadie import Status
from roadie.testing import BackgroundWorker, run_task, wait_final, wait_for

from tests import record_plugin
from tests.processes import kill, start_worker, stop, worker_env


def fresh_app(app: roadie.Roadie) -> roadie.Roadie:
    return roadie.Roadie(app.url, settings=app.settings)


def running(app: roadie.Roadie, task_id: int, done_at_least: int = 0) -> Any:
    task = app.get_task(task_id)
    if task.status is Status.IN_PROGRESS and task.task_status.get("done", 0) >= done_at_least:
        return task
    return None


@pytest.mark.slow
def test_kill_9_mid_task_then_recover(app: roadie.Roadie, recorded: dict, tmp_path: Path) -> None:
    """A worker dies with kill -9 while running serial, retry, resumable and fail-policy
    tasks; another worker finds them and applies each executor's crash policy."""
    client = fresh_app(app)
    runs_url = recorded["runs_url"]
    resumable = client.add_task("roadie-recorded:resumable",
                                {"runs_url": runs_url, "n": 60, "step": 0.05})
    serial = client.add_task("roadie-recorded:serial", {"runs_url": runs_url, "seconds": 30})
    retry = client.add_task("roadie-recorded:retry", {"runs_url": runs_url, "seconds": 2})
    failing = client.add_task("roadie-recorded:record", {"runs_url": runs_url, "seconds": 30})
    queued = client.add_task("roadie-recorded:serial", {"runs_url": runs_url, "seconds": 0})
    victim = start_worker(client.url, tmp_path / "data", "--concurrency", "4",
                          pythonpath=[recorded["site"]], log=tmp_path / "victim.log")
    try:
        wait_for(lambda: running(client, resumable.id, done_at_least=10), timeout=60,
                 message="the resumable task to make progress")
        wait_for(lambda: all(client.get_task(t.id).status is Status.IN_PROGRESS
                             for t in (serial, retry, failing)), timeout=30,
                 message="all four tasks to run")
        assert client.get_task(queued.id).status in (Status.NEW, Status.QUEUED)
        assert serial.isolation_key in client.store.held_locks()
    finally:
        kill(victim)
    rescuer = start_worker(client.url, tmp_path / "data", "--concurrency", "4",
                           pythonpath=[recorded["site"]], log=tmp_path / "rescuer.log")
    try:
        for task in (resumable, retry, queued):
            assert wait_final(client, task.id, timeout=90).status is Status.SUCCESSFUL, \
                client.get_task(task.id)
        for task in (serial, failing):
            ended = wait_final(client, task.id, timeout=60)
            assert ended.status is Status.FAILED
            assert "stopped responding" in ended.status_message
        assert "last progress" not in client.get_task(failing.id).status_message
    finally:
        assert stop(rescuer) == 0
    assert client.store.held_locks() == {}
    # the resumed attempt started from the checkpoint of the killed one
    done = client.get_task(resumable.id)
    assert done.attempts == 2
    starts = [r for r in record_plugin.runs(runs_url, "start") if r["task_id"] == resumable.id]
    assert [r["attempt"] for r in starts] == [1, 2]
    assert int(starts[1]["note"]) >= 10
    assert "resumed from" in done.status_message
    # the retried task ran twice, never at the same time
    retry_runs = [r for r in record_plugin.runs(runs_url) if r["task_id"] == retry.id]
    assert [r["attempt"] for r in retry_runs if r["phase"] == "start"] == [1, 2]
    attempts = client.attempts(retry.id)
    assert [a.status for a in attempts] == [Status.FAILED, Status.SUCCESSFUL]
    assert "stopped responding" in attempts[0].message
    client.close()


def test_graceful_stop_finishes_running_tasks(app: roadie.Roadie, tmp_path: Path) -> None:
    task = app.add_task("roadie-examples:count", {"n": 30, "delay": 0.03})
    process = start_worker(app.url, tmp_path / "data", "--concurrency", "1",
                           log=tmp_path / "w.log")
    wait_for(lambda: running(app, task.id, done_at_least=3), message="the task to run")
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0, (tmp_path / "w.log").read_text()
    done = app.get_task(task.id)
    assert done.status is Status.SUCCESSFUL
    nodes = app.list_nodes(include_stopped=True)
    assert nodes and all(n.stopped_at is not None for n in nodes)


def test_second_signal_stops_at_once_through_the_crash_policy(app: roadie.Roadie,
                                                             tmp_path: Path) -> None:
    task = app.add_task("roadie-examples:count", {"n": 2000, "delay": 0.05})
    process = start_worker(app.url, tmp_path / "data", "--concurrency", "1",
                           log=tmp_path / "w.log")
    try:
        wait_for(lambda: running(app, task.id, done_at_least=2), message="the task to run")
        process.send_signal(signal.SIGINT)
        wait_for(lambda: "stopping" in (tmp_path / "w.log").read_text(), message="first signal")
        process.send_signal(signal.SIGINT)
        process.wait(30)
    finally:
        kill(process)  # a no-op once it exited; never leave a worker behind
    after = app.get_task(task.id)
    # count's crash policy is RESUME: back to NEW at once, keeping its checkpoint
    assert after.status is Status.NEW, after
    assert "its worker was stopped" in after.status_message
    assert app.store.held_locks() == {}


def test_cancel_a_running_task_from_another_process(app: roadie.Roadie, tmp_path: Path) -> None:
    task = app.add_task("roadie-examples:fanout", {"items": 400, "width": 4, "delay": 0.02})
    process = start_worker(app.url, tmp_path / "data", "--concurrency", "1",
                           log=tmp_path / "w.log")
    try:
        wait_for(lambda: running(app, task.id, done_at_least=8), message="children to run")
        requested = app.cancel_task(task.id, by="operator")
        assert requested.status is Status.IN_PROGRESS and requested.cancel_requested
        done = wait_final(app, task.id)
        assert done.status is Status.CANCELLED
        assert "cancelled by operator" in done.status_message
        children = done.task_status["children"]
        assert children["runnable"] == 0
        assert children["closed"] < 400  # the rest never ran
    finally:
        assert stop(process) == 0


def test_cancel_in_process_is_seen_at_the_next_safe_point(app: roadie.Roadie) -> None:
    task = app.add_task("tests:spin", {})
    with BackgroundWorker(app, concurrency=1):
        wait_for(lambda: running(app, task.id, done_at_least=1))
        app.cancel_task(task.id, by="me")
        done = wait_final(app, task.id)
    assert done.status is Status.CANCELLED and done.completed
    assert done.status_message.startswith("cancelled by me at ")


def test_timeout_fails_the_task(app: roadie.Roadie) -> None:
    by_executor = app.add_task("tests:timed", {})
    by_task = app.add_task("tests:spin", {}, timeout=0.3)
    app.run_worker(concurrency=2, until_idle=True)
    for task_id in (by_executor.id, by_task.id):
        done = app.get_task(task_id)
        assert done.status is Status.FAILED
        assert done.status_message == "timed out after 0.3 s"


def test_retry_with_backoff(app: roadie.Roadie) -> None:
    task = run_task(app, "tests:flaky", {"succeed_on": 3}).task
    assert task.status is Status.SUCCESSFUL
    assert task.status_message == "worked on attempt 3"
    attempts = app.attempts(task.id)
    assert [a.attempt for a in attempts] == [1, 2, 3]
    assert [a.status for a in attempts] == [Status.FAILED, Status.FAILED, Status.SUCCESSFUL]
    assert "retrying in 0.05 s" in attempts[0].message
    assert "ConnectionError: flaky on attempt 2" in attempts[1].message
    first_wait = (attempts[1].started_at - attempts[0].started_at).total_seconds()
    second_wait = (attempts[2].started_at - attempts[1].started_at).total_seconds()
    # From start to start: the retry's run_after counts from the failure, which lies between an
    # attempt's start and its recorded finish (written a moment later, when the worker settles).
    assert first_wait >= 0.05 and second_wait >= 0.1  # backoff, then backoff * factor


def test_retries_run_out(app: roadie.Roadie) -> None:
    task = run_task(app, "tests:flaky", {"succeed_on": 99}).task
    assert task.status is Status.FAILED
    assert task.attempts == 3
    assert task.status_message == "ConnectionError: flaky on attempt 3"


def test_resume_a_failed_task(app: roadie.Roadie) -> None:
    task = run_task(app, "tests:boom", {"reason": "first"}).task
    assert task.status is Status.FAILED
    app.resume_task(task.id)
    app.run_worker(concurrency=1, until_idle=True)
    again = app.get_task(task.id)
    assert again.status is Status.FAILED and again.attempts == 2
    assert len(app.attempts(task.id)) == 2


def test_recover_command_with_no_dead_workers(app: roadie.Roadie) -> None:
    assert app.recover_orphans() == 0


def test_orphans_of_a_vanished_node(app: roadie.Roadie) -> None:
    """A task claimed by a node that never comes back is failed by `recover_orphans`."""
    from roadie.store import Claimable

    task = app.add_task("tests:sleep", {})
    can = Claimable(executors=["tests:sleep"], isolated={}, plugins={"tests": "0"},
                    tag_keys=[""])
    (claimed,) = app.store.claim("ghost-node", can, 1)
    assert claimed.id == task.id
    assert app.recover_orphans() == 1
    done = app.get_task(task.id)
    assert done.status is Status.FAILED
    assert "worker ghost-node is gone" in done.status_message


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # PostgreSQL: the test above
def test_sqlite_two_processes_survive_a_kill(app: roadie.Roadie, recorded: dict,
                                             tmp_path: Path) -> None:
    assert app.store.is_sqlite
    client = fresh_app(app)
    runs_url = recorded["runs_url"]
    tasks = client.add_tasks(
        [{"executor": "roadie-recorded:serial", "context": {"runs_url": runs_url,
                                                           "seconds": 0.2}} for _ in range(4)]
        + [{"executor": "roadie-recorded:retry", "context": {"runs_url": runs_url,
                                                            "seconds": 0.3}} for _ in range(6)])
    first = start_worker(client.url, tmp_path / "data", "--concurrency", "2",
                         pythonpath=[recorded["site"]])
    second = start_worker(client.url, tmp_path / "data", "--concurrency", "2",
                          pythonpath=[recorded["site"]])
    wait_for(lambda: len(record_plugin.runs(runs_url, "start")) >= 3, timeout=60)
    kill(first)
    try:
        for task in tasks:
            wait_final(client, task.id, timeout=90)
    finally:
        assert stop(second) == 0
    statuses = [client.get_task(t.id).status for t in tasks]
    assert all(s in (Status.SUCCESSFUL, Status.FAILED) for s in statuses)
    assert all(client.get_task(t.id).status is Status.SUCCESSFUL for t in tasks[4:])
    assert client.store.held_locks() == {}
    client.close()


def test_cli_recover(app: roadie.Roadie, tmp_path: Path) -> None:
    env = worker_env(tmp_path / "data")
    out = subprocess.run([sys.executable, "-m", "roadie", "--url", app.url, "recover"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "0 task(s) of dead workers recovered" in out.stdout
    assert os.environ.get("ROADIE_URL") is None or True


# -- regressions found in review ---------------------------------------------------------------


class Exits(roadie.Executor):
    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        sys.exit(3)


class NetworkErrorAfterCancel(roadie.Executor):
    retry = roadie.Retry(on=(ConnectionError,), max_attempts=5, backoff=0.05)

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        task.wait_cancelled(30)  # a blocking call, woken early by the cancel...
        raise ConnectionError("socket closed")  # ...whose connection then errors out


class Chatty(roadie.Executor):
    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        for _ in range(50):
            task.send_status({"log": "x" * 100_000})  # each alone is far under the limit
        return roadie.Result.success("done")


class Long(roadie.Executor):
    crash_policy = roadie.CrashPolicy.RETRY

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        for i in range(400):
            task.progress(i, 400)
            time.sleep(0.01)
        return roadie.Result.SUCCESS


def test_system_exit_in_an_executor_fails_the_task_not_the_worker(app: roadie.Roadie) -> None:
    app.plugins.register_executor("tests:exits", Exits)
    bad = app.add_task("tests:exits", {})
    good = app.add_task("tests:sleep", {"seconds": 0})
    app.run_worker(concurrency=1, until_idle=True)
    assert app.get_task(bad.id).status is Status.FAILED
    assert "SystemExit" in app.get_task(bad.id).status_message
    assert app.get_task(good.id).status is Status.SUCCESSFUL


def test_a_cancel_wins_over_a_retryable_error(app: roadie.Roadie) -> None:
    app.plugins.register_executor("tests:net", NetworkErrorAfterCancel)
    task = app.add_task("tests:net", {})
    with BackgroundWorker(app, concurrency=1):
        wait_for(lambda: app.get_task(task.id).status is Status.IN_PROGRESS)
        app.cancel_task(task.id, by="ops")
        done = wait_final(app, task.id)
    assert done.status is Status.CANCELLED and done.attempts == 1
    assert done.status_message.startswith("cancelled by ops")


def test_recovery_honours_a_pending_cancel(app: roadie.Roadie) -> None:
    from roadie.store import Claimable

    task = app.add_task("roadie-examples:count", {})  # crash policy RESUME
    can = Claimable(executors=["roadie-examples:count"], isolated={},
                    plugins={"roadie-examples": "0.1.0"}, tag_keys=[""])
    app.store.claim("vanished", can, 1)
    app.cancel_task(task.id, by="alice")
    assert app.recover_orphans() == 1
    done = app.get_task(task.id)
    assert done.status is Status.CANCELLED
    assert done.status_message.startswith("cancelled by alice; worker vanished is gone")


def test_timeouts_count_from_the_start_not_the_claim(db_url: str, tmp_path: Path) -> None:
    from roadie.testing import make_app

    from tests.conftest import register_test_executors

    app = make_app(db_url, tmp_path / "data", prefetch=1)
    register_test_executors(app)
    first = app.add_task("tests:sleep", {"seconds": 0.8})
    second = app.add_task("tests:sleep", {"seconds": 0.01}, timeout=0.5)  # waits ~0.8 s queued
    app.run_worker(concurrency=1, until_idle=True)
    assert app.get_task(first.id).status is Status.SUCCESSFUL
    assert app.get_task(second.id).status is Status.SUCCESSFUL
    app.close()


def test_an_oversized_message_log_is_cut_not_fatal(app: roadie.Roadie) -> None:
    app.plugins.register_executor("tests:chatty-big", Chatty)
    task = run_task(app, "tests:chatty-big").task
    assert task.status is Status.SUCCESSFUL and task.status_message == "done"
    assert 0 < len(task.recent_messages) < 50


def test_a_task_taken_over_stops_on_its_old_worker(app: roadie.Roadie) -> None:
    """A worker that could not heartbeat for a while (a pause, a network blip) finds its task
    taken over: it stops it at the next safe point and its outcome is not written."""
    import datetime as dt

    from roadie import models
    from roadie.store import utcnow

    app.plugins.register_executor("tests:long", Long)
    task = app.add_task("tests:long", {})
    # the old worker must not heartbeat between the backdating below and the recovery (it
    # learns of the takeover from its next progress write)
    slow_heart = roadie.Roadie(app.url, settings=app.settings.replace(heartbeat_interval=60))
    slow_heart.plugins.register_executor("tests:long", Long)
    with BackgroundWorker(slow_heart, concurrency=1) as old:
        wait_for(lambda: running(app, task.id, done_at_least=5))
        def looks_dead_then_recovered() -> bool:
            with app.store.write() as conn:  # the old worker looks dead for a moment
                conn.execute(models.nodes.update().values(
                    heartbeat_at=utcnow() - dt.timedelta(seconds=60)))
            # (its next heartbeat may come first under load: then look again)
            return app.recover_orphans() == 1

        wait_for(looks_dead_then_recovered, message="the task taken over")
        done = wait_final(app, task.id)  # the old attempt stops; the retry runs (here too)
        # the stopped attempt's outcome was not written (the counter follows the database
        # write, so wait for it rather than race it)
        wait_for(lambda: old.worker.stats.finished == 1, message="the retry counted")
        assert old.worker.stats.finished == 1
    slow_heart.close()
    assert done.status is Status.SUCCESSFUL and done.attempts == 2
    attempts = app.attempts(task.id)
    assert [a.status for a in attempts] == [Status.FAILED, Status.SUCCESSFUL]
    assert "stopped responding" in attempts[0].message


def test_the_rows_of_nodes_long_gone_are_forgotten(app: roadie.Roadie) -> None:
    """Every worker start adds a node row (one per pod on Kubernetes): rows of nodes stopped
    or silent for long are deleted, unless a task still runs there (recovery needs it)."""
    import datetime as dt

    from roadie.records import NodeRecord

    now = dt.datetime.now(dt.timezone.utc)
    long_ago = now - dt.timedelta(days=8)

    def node(node_id: str, heartbeat: dt.datetime) -> NodeRecord:
        return NodeRecord(node_id, node_id, "host", 1, 1, {}, {}, frozenset(), heartbeat,
                          heartbeat, None)

    for node_id, heartbeat in (("stopped-long-ago", long_ago), ("silent-long-ago", long_ago),
                               ("silent-with-a-task", long_ago), ("recent", now)):
        app.store.register_node(node(node_id, heartbeat))
    app.store.stop_node("stopped-long-ago")
    from roadie import models

    task = app.add_task("tests:sleep", {})
    with app.store.write() as conn:  # stopped a week ago; a task running on the silent one
        conn.execute(models.nodes.update().where(models.nodes.c.id == "stopped-long-ago")
                     .values(stopped_at=long_ago))
        conn.execute(models.tasks.update().where(models.tasks.c.id == task.id)
                     .values(status=int(Status.IN_PROGRESS), node="silent-with-a-task"))
    assert app.store.forget_nodes(now - dt.timedelta(days=7)) == 2
    assert sorted(n.id for n in app.store.list_nodes(include_stopped=True)) == [
        "recent", "silent-with-a-task"]


def test_a_worker_until_idle_runs_the_tasks_its_first_sweep_puts_back(
        app: roadie.Roadie) -> None:
    """The sweep for dead nodes' tasks as a worker starts runs beside its first round; a
    worker run until idle still waits for it, and runs what it put back to wait."""
    from roadie.store import Claimable

    orphan = app.add_task("roadie-examples:count", {"n": 1, "delay": 0})  # crash policy RESUME
    can = Claimable(executors=["roadie-examples:count"], isolated={},
                    plugins={"roadie-examples": "0.1.0"}, tag_keys=[""])
    (claimed,) = app.store.claim("vanished", can, 1)
    assert claimed.id == orphan.id
    stats = app.run_worker(concurrency=1, until_idle=True)
    assert stats.recovered == 1
    done = app.get_task(orphan.id)
    assert done.status is Status.SUCCESSFUL and done.attempts == 2

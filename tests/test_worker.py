"""Running tasks: results, failures, exceptions, current_task, concurrency."""

from __future__ import annotations

import pytest
import roadie
from roadie import Status
from roadie.testing import BackgroundWorker, run_task, wait_final, wait_for

from tests import executors


def test_successful_task_records_everything(app: roadie.Roadie) -> None:
    run = run_task(app, "roadie-examples:count", {"n": 5, "delay": 0})
    task = run.task
    assert task.status is Status.SUCCESSFUL
    assert task.completed
    assert task.status_message == "counted to 5"
    assert task.result == 5
    assert task.attempts == 1
    assert task.started_at is not None and task.finished_at is not None
    assert task.created_at <= task.started_at <= task.finished_at
    assert run.status["done"] == 5 and run.status["percent"] == 100.0
    assert app.get_task_status(task.id)["total"] == 5


def test_exception_goes_through_handle_exception(app: roadie.Roadie) -> None:
    task = run_task(app, "roadie-examples:fail", {"reason": "disk full"}).task
    assert task.status is Status.FAILED
    assert task.completed
    assert task.status_message == "fail example: disk full"
    assert task.error is not None and "Traceback" in task.error
    assert "ValueError: disk full" in task.error


def test_default_handle_exception_message(app: roadie.Roadie) -> None:
    task = run_task(app, "tests:boom", {"reason": "kaput"}).task
    assert task.status is Status.FAILED
    assert task.status_message == "RuntimeError: kaput"


def test_failed_result_without_exception(app: roadie.Roadie) -> None:
    task = run_task(app, "tests:refuse").task
    assert task.status is Status.FAILED and task.status_message == "refused politely"
    assert task.error is None


def test_execute_must_return_a_result(app: roadie.Roadie) -> None:
    task = run_task(app, "tests:badreturn").task
    assert task.status is Status.FAILED
    assert "not a roadie.Result" in task.status_message


def test_current_task_from_nested_calls(app: roadie.Roadie) -> None:
    task = run_task(app, "tests:whoami").task
    assert task.status_message == str(task.id)
    assert roadie.current_task() is None


def test_many_tasks_each_run_once_on_a_thread_pool(app: roadie.Roadie) -> None:
    executors.RUNS.clear()
    tasks = app.add_tasks([{"executor": "tests:tracked", "context": {"seconds": 0.005}}
                           for _ in range(60)])
    stats = app.run_worker(concurrency=4, until_idle=True)
    assert stats.finished == 60
    ran = [run[0] for run in executors.RUNS]
    assert sorted(ran) == sorted(t.id for t in tasks)
    assert all(t.status is Status.SUCCESSFUL for t in app.list_tasks(limit=None))


def test_two_workers_in_one_process_never_run_a_task_twice(app: roadie.Roadie) -> None:
    executors.RUNS.clear()
    tasks = app.add_tasks([{"executor": "tests:tracked", "context": {"seconds": 0.002}}
                           for _ in range(80)])
    with BackgroundWorker(app, concurrency=2), BackgroundWorker(app, concurrency=2):
        for task in tasks:
            wait_final(app, task.id)
    ran = [run[0] for run in executors.RUNS]
    assert len(ran) == len(set(ran)) == 80


def test_priority_then_age(app: roadie.Roadie) -> None:
    executors.RUNS.clear()
    low = app.add_task("tests:tracked", {"seconds": 0}, priority=0)
    high = app.add_task("tests:tracked", {"seconds": 0}, priority=5)
    low2 = app.add_task("tests:tracked", {"seconds": 0}, priority=0)
    app.run_worker(concurrency=1, until_idle=True)
    assert [run[0] for run in executors.RUNS] == [high.id, low.id, low2.id]


def test_broken_plugin_fails_its_tasks_with_the_error(app: roadie.Roadie, make_plugin) -> None:
    make_plugin("roadie-broken", {"roadie_broken/__init__.py": "raise ImportError('no numpy')"},
                {"work": "roadie_broken:Work"})
    fresh = roadie.Roadie(app.url, settings=app.settings)
    assert "roadie-broken:work" in fresh.plugins.executor_names()
    task = fresh.add_task("roadie-broken:work", {"a": 1})
    fresh.run_worker(concurrency=1, until_idle=True)
    done = fresh.get_task(task.id)
    assert done.status is Status.FAILED
    assert "plugin 'roadie-broken' is broken" in done.status_message
    assert "no numpy" in done.status_message
    assert done.context == {"a": 1}  # the row and its bytes are kept
    fresh.close()


@pytest.mark.parametrize("concurrency", [0, -1])
def test_bad_concurrency(app: roadie.Roadie, concurrency: int) -> None:
    with pytest.raises(ValueError, match="concurrency must be at least 1"):
        app.run_worker(concurrency=concurrency)


def test_prefetch_claims_ahead_and_a_cancelled_prefetched_task_never_starts(
        db_url: str, tmp_path) -> None:
    from roadie.testing import make_app, wait_for

    from tests.conftest import register_test_executors

    # (claim ahead whatever the tasks' length, and never put a claimed task back)
    app = make_app(db_url, tmp_path / "data", prefetch=3, prefetch_short=60, prefetch_hold=60)
    register_test_executors(app)
    executors.RUNS.clear()
    tasks = app.add_tasks([{"executor": "tests:tracked", "context": {"seconds": 0.3}}
                           for _ in range(5)])
    with BackgroundWorker(app, concurrency=1):
        # one runs, three more are claimed ahead of the thread
        wait_for(lambda: sum(app.get_task(t.id).status is Status.IN_PROGRESS
                             for t in tasks) == 4, message="four claimed tasks")
        waiting = tasks[3]
        app.cancel_task(waiting.id, by="test")
        for task in tasks:
            wait_final(app, task.id)
    assert app.get_task(waiting.id).status is Status.CANCELLED
    ran = [run[0] for run in executors.RUNS]
    assert waiting.id not in ran
    assert sorted(ran) == sorted(t.id for t in tasks if t.id != waiting.id)
    app.close()


class EndedRecords:
    """Keeps the record each ending hook was given."""

    def __init__(self) -> None:
        self.records: dict[int, roadie.TaskRecord] = {}

    @roadie.hookimpl
    def roadie_task_finished(self, task: roadie.TaskRecord, result: object) -> None:
        self.records[task.id] = task

    @roadie.hookimpl
    def roadie_task_failed(self, task: roadie.TaskRecord, message: str,
                           error: object) -> None:
        self.records[task.id] = task

    @roadie.hookimpl
    def roadie_task_cancelled(self, task: roadie.TaskRecord, message: str) -> None:
        self.records[task.id] = task


def test_the_ending_hooks_see_each_task_as_stored(app: roadie.Roadie) -> None:
    """The finished record a round hands to the hooks is the stored row, also for what
    others wrote while the task ran: checkpoints, a cancel request, a dependent."""
    ended = EndedRecords()
    app.plugins.register(ended, name="ended")
    counting = app.add_task("roadie-examples:count", {"n": 20, "delay": 0.01})
    long = app.add_task("roadie-examples:count", {"n": 5000, "delay": 0.01})
    failing = app.add_task("roadie-examples:fail", {})
    plain = app.add_tasks([("roadie-examples:noop", {})] * 30)
    with BackgroundWorker(app, concurrency=2):
        wait_for(lambda: app.get_task(long.id).status is Status.IN_PROGRESS)
        dependent = app.add_task("roadie-examples:noop", after=[long.id])
        app.cancel_task(long.id, by="tester")
        for task in [counting, long, failing, dependent, *plain]:
            wait_final(app, task.id)
    stored = {task.id: app.get_task(task.id) for task in [counting, long, failing, *plain]}
    assert stored[counting.id].checkpoint == {"i": 20}
    assert stored[long.id].status is Status.CANCELLED
    assert stored[long.id].cancel_requested_by == "tester"
    assert stored[long.id].has_dependents
    assert stored[failing.id].status is Status.FAILED
    assert {task_id: ended.records.get(task_id) for task_id in stored} == stored
    assert ended.records[counting.id].result == 20


def test_a_refused_statement_is_not_reported_as_an_outage(
        caplog: pytest.LogCaptureFixture, tmp_path: object) -> None:
    """SQLite's "too many columns" is the statement's fault, not the database's: the worker
    logs it as an error (once per reminder period), never as "database unreachable"."""
    import sqlalchemy as sa
    from roadie.store import Store
    from roadie.worker.outage import DatabaseOutage

    store = Store(f"sqlite:///{tmp_path}/refused.db")
    try:
        with pytest.raises(roadie.DatabaseError) as refused, store.read() as conn:
            conn.exec_driver_sql("SELECT " + ", ".join(["1"] * 40_000))
    finally:
        store.dispose()
    assert not refused.value.unreachable and "refused a statement" in str(refused.value)
    down = Store("postgresql+psycopg://nobody@127.0.0.1:1/none")
    try:
        with pytest.raises(roadie.DatabaseError) as unreachable, down.read() as conn:
            conn.execute(sa.text("SELECT 1"))
    finally:
        down.dispose()
    assert unreachable.value.unreachable
    outage = DatabaseOutage(every=60, grace=30)
    with caplog.at_level("WARNING", logger="roadie.worker"):
        for _ in range(3):
            outage.failed(refused.value)
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert "unreachable" not in caplog.text and outage.since is None

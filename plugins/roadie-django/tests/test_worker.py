"""Django tasks run by real ``roadie worker`` processes, on SQLite and PostgreSQL: results,
failures, async functions, the context with live progress, Django's connection handling,
priorities, refused paths, and results read by yet another process.

One batch of tasks is enqueued and drained by one worker per database (module-scoped), and
each test checks its part of it; tests that need a worker of their own start one.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import roadie
from djhelpers import empty, manage, prepare_postgres, run_worker
from roadie_django.compat import TaskResult, TaskResultStatus, task_backends
from shop.models import Event
from shop.tasks import OutOfStock, add, count, double, fail, record, send_email


@dataclass
class Batch:
    """The tasks of one batch, enqueued on ``alias`` and drained by one worker."""

    alias: str
    ok: TaskResult
    failing: TaskResult
    coroutine: TaskResult
    progress: TaskResult
    later: TaskResult
    run_after: dt.datetime
    priorities: dict[int, TaskResult]
    email: TaskResult
    os_system: roadie.TaskRecord
    plain_function: roadie.TaskRecord
    worker_output: str

    @property
    def app(self) -> roadie.Roadie:
        return task_backends[self.alias].app

    def get(self, result: TaskResult) -> TaskResult:
        return task_backends[self.alias].get_result(result.id)


@pytest.fixture(scope="module", params=["default", "pg"], ids=["sqlite", "postgres"])
def batch(request: pytest.FixtureRequest) -> Iterator[Batch]:
    alias = request.param
    if alias == "pg":
        prepare_postgres()
    empty(alias)
    backend = task_backends[alias]
    on = {"backend": alias}
    priorities = {p: record.using(priority=p, **on).enqueue(f"priority {p}", alias)
                  for p in (-20, 80, 10)}
    run_after = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1.5)
    made = Batch(
        alias=alias,
        ok=add.using(**on).enqueue(2, b=3),
        failing=fail.using(**on).enqueue("no stock of blue paint"),
        coroutine=double.using(**on).enqueue(21),
        progress=count.using(**on).enqueue(4),
        later=add.using(run_after=run_after, **on).enqueue(1, 1),
        run_after=run_after,
        priorities=priorities,
        email=send_email.using(**on).enqueue("ann@example.com"),
        os_system=backend.app.add_task("roadie-django:task",
                                       {"task": "os.system", "args": ["echo hacked"]}),
        plain_function=backend.app.add_task("roadie-django:task",
                                            {"task": "shop.tasks.not_a_task"}),
        worker_output="",
    )
    # one thread, so that the priorities decide the order; SQLite's worker is started as
    # `roadie worker` with no URL (roadie-django gives the default backend's), PostgreSQL's
    # as `manage.py roadie worker`
    if alias == "default":
        process = run_worker(None, "--concurrency", "1", "--name", "django-test")
    else:
        process = manage("roadie", "--backend", alias, "worker", "--until-idle",
                         "--concurrency", "1", "--name", "django-test")
    made.worker_output = process.stderr
    yield made


def test_the_return_value_becomes_the_result(batch: Batch) -> None:
    result = batch.get(batch.ok)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5 and result.errors == []
    assert result.worker_ids == ["django-test"] and result.attempts == 1
    assert result.enqueued_at <= result.started_at == result.last_attempted_at \
        <= result.finished_at
    record = batch.app.get_task(int(result.id))
    assert record.status == roadie.Status.SUCCESSFUL and record.result == 5
    batch.ok.refresh()  # the enqueued object reads the same
    assert batch.ok.status == TaskResultStatus.SUCCESSFUL and batch.ok.return_value == 5


def test_an_exception_fails_the_task_with_its_class_and_traceback(batch: Batch) -> None:
    result = batch.get(batch.failing)
    assert result.status == TaskResultStatus.FAILED and result.is_finished
    (error,) = result.errors
    assert error.exception_class_path == "shop.tasks.OutOfStock"
    assert error.exception_class is OutOfStock
    assert "raise OutOfStock(message)" in error.traceback
    assert "no stock of blue paint" in error.traceback
    with pytest.raises(ValueError, match="Task failed"):
        _ = result.return_value
    record = batch.app.get_task(int(result.id))
    assert record.status == roadie.Status.FAILED
    assert record.status_message == "shop.tasks.OutOfStock: no stock of blue paint"


def test_an_async_task_runs_on_the_workers_event_loop(batch: Batch) -> None:
    result = batch.get(batch.coroutine)
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 42


def test_the_context_has_djangos_fields_and_roadies_progress(batch: Batch) -> None:
    result = batch.get(batch.progress)
    assert result.return_value == {"attempt": 1, "result_id": result.id,
                                   "roadie_id": int(result.id), "workers": ["django-test"]}
    status = batch.app.get_task_status(int(result.id))
    assert (status["done"], status["total"], status["percent"]) == (4, 4, 100.0)
    assert status["message"] == "step 4"


def test_run_after_is_kept(batch: Batch) -> None:
    result = batch.get(batch.later)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.started_at >= batch.run_after


def test_higher_priorities_run_first_and_connections_are_closed_between_tasks(
        batch: Batch) -> None:
    labels = list(Event.objects.using(batch.alias).order_by("pk")
                  .values_list("label", flat=True))
    assert labels == ["priority 80", "priority 10", "priority -20"]
    for result in batch.priorities.values():
        # CONN_MAX_AGE = 0: the connection of the task before was closed when it ended
        assert batch.get(result).return_value["connected_at_start"] is False


def test_a_path_that_is_not_a_task_of_an_installed_app_is_refused(batch: Batch) -> None:
    refused = batch.app.get_task(batch.os_system.id)
    assert refused.status == roadie.Status.FAILED
    assert "'os.system' is not in an installed Django app" in refused.status_message
    assert "hacked" not in batch.worker_output
    plain = batch.app.get_task(batch.plain_function.id)
    assert plain.status == roadie.Status.FAILED
    assert "'shop.tasks.not_a_task' is a function, not a Django task" in plain.status_message


def test_a_queue_runs_only_on_workers_with_its_tag(batch: Batch) -> None:
    assert batch.get(batch.email).status == TaskResultStatus.READY  # the worker had no tag
    if batch.alias == "default":  # the mapping is the same on both databases
        run_worker(task_backends[batch.alias].url, "--tag", "queue:emails")
        result = batch.get(batch.email)
        assert result.status == TaskResultStatus.SUCCESSFUL
        assert result.return_value == "sent to ann@example.com"


def test_results_read_from_another_process(batch: Batch) -> None:
    ids = [batch.ok.id, batch.failing.id, batch.progress.id]
    output = manage("task_result", "--backend", batch.alias, *ids).stdout
    ok, failing, progress = (json.loads(line) for line in output.splitlines())
    assert ok == {"id": batch.ok.id, "status": "SUCCESSFUL", "task": "shop.tasks.add",
                  "return_value": 5, "errors": [], "worker_ids": ["django-test"],
                  "args": [2], "finished": True}
    assert failing["status"] == "FAILED"
    assert failing["errors"] == ["shop.tasks.OutOfStock"]
    assert progress["return_value"]["attempt"] == 1


def test_a_worker_without_django_settings_puts_django_tasks_back(alias: str) -> None:
    result = add.using(backend=alias).enqueue(1, 1)
    process = run_worker(task_backends[alias].url, django=False)
    assert "has no DJANGO_SETTINGS_MODULE" in process.stderr
    record = task_backends[alias].app.get_task(int(result.id))
    assert record.status == roadie.Status.NEW and record.attempts == 0
    assert "waiting for a worker with DJANGO_SETTINGS_MODULE set" in record.status_message
    assert record.run_after > dt.datetime.now(dt.timezone.utc)

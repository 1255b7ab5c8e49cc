"""Enqueueing and reading results in this process: how Django's task options map onto a roadie
task, validation, ``get_result`` errors, async enqueue, and the backend's configuration."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
import roadie
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from roadie_django import RoadieBackend
from roadie_django.compat import (
    InvalidTask,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_backends,
    task_enqueued,
)
from shop.tasks import add, double, send_email


class Noop(roadie.Executor):
    """An executor of another plugin than roadie-django."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        return roadie.Result.SUCCESS


def test_enqueue_adds_a_roadie_task_named_after_the_django_task(alias: str) -> None:
    enqueued: list[TaskResult] = []

    def receiver(sender: type, task_result: TaskResult, **kwargs: Any) -> None:
        enqueued.append(task_result)

    task_enqueued.connect(receiver)
    try:
        result = add.using(backend=alias).enqueue(2, b=3)
    finally:
        task_enqueued.disconnect(receiver)
    assert enqueued == [result]
    assert result.status == TaskResultStatus.READY
    assert result.id.isdigit() and result.backend == alias
    assert (result.args, result.kwargs) == ([2], {"b": 3})
    assert result.enqueued_at is not None and result.enqueued_at.tzinfo is not None
    assert result.worker_ids == [] and result.errors == [] and not result.is_finished
    with pytest.raises(ValueError, match="not finished"):
        _ = result.return_value

    record = task_backends[alias].app.get_task(int(result.id))
    assert record.executor == "roadie-django:task"
    assert record.name == "shop.tasks.add"
    assert record.status == roadie.Status.NEW
    assert record.context["task"] == "shop.tasks.add"
    assert (record.context["args"], record.context["kwargs"]) == ([2], {"b": 3})
    assert record.tags == frozenset() and record.priority == 0


def test_priority_run_after_and_queue_map_onto_roadie(alias: str) -> None:
    when = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(hours=1)
    result = send_email.using(backend=alias, priority=50, run_after=when).enqueue("a@b.c")
    record = task_backends[alias].app.get_task(int(result.id))
    assert record.priority == 50  # Django and roadie both run higher priorities first
    assert record.run_after == when
    assert record.tags == frozenset({"queue:emails"})  # workers with --tag queue:emails
    got = task_backends[alias].get_result(result.id)
    assert (got.task.priority, got.task.queue_name, got.task.run_after) == (50, "emails", when)
    low = add.using(backend=alias, priority=-100).enqueue(1, 1)
    assert task_backends[alias].app.get_task(int(low.id)).priority == -100


def test_async_functions_get_the_async_executor(alias: str) -> None:
    result = double.using(backend=alias).enqueue(21)
    assert task_backends[alias].app.get_task(int(result.id)).executor == \
        "roadie-django:async-task"


def test_the_backend_says_what_it_supports() -> None:
    backend = task_backends["default"]
    assert isinstance(backend, RoadieBackend)
    assert backend.supports_defer and backend.supports_async_task
    assert backend.supports_get_result and backend.supports_priority


def test_invalid_options_are_refused_with_djangos_errors() -> None:
    with pytest.raises(InvalidTask, match="Queue 'nope' is not valid"):
        add.using(queue_name="nope")
    with pytest.raises(InvalidTask, match="priority must be a whole number between -100"):
        add.using(priority=101)
    naive = dt.datetime(2030, 1, 1)
    with pytest.raises(InvalidTask, match="aware"):
        add.using(run_after=naive)


def test_arguments_are_normalised_as_json_and_others_refused(alias: str) -> None:
    result = add.using(backend=alias).enqueue((1, 2), b={"k": (3, b"x")})
    assert (result.args, result.kwargs) == ([[1, 2]], {"b": {"k": [3, "x"]}})
    assert task_backends[alias].get_result(result.id).kwargs == {"b": {"k": [3, "x"]}}
    with pytest.raises(TypeError, match="Unsupported type"):
        add.using(backend=alias).enqueue(object(), 1)


def test_get_result_of_unknown_ids_raises_does_not_exist(alias: str) -> None:
    backend = task_backends[alias]
    with pytest.raises(TaskResultDoesNotExist, match="no task has id 424242"):
        backend.get_result("424242")
    with pytest.raises(TaskResultDoesNotExist, match="not the id of a roadie task"):
        backend.get_result("not-a-number")
    backend.app.plugins.register_executor("tests:noop", Noop)
    other = backend.app.add_task("tests:noop", {})
    with pytest.raises(TaskResultDoesNotExist, match="executor 'tests:noop', not a Django"):
        backend.get_result(str(other.id))


def test_get_result_and_refresh_of_a_waiting_task(alias: str) -> None:
    result = add.using(backend=alias).enqueue(1, 2)
    got = add.using(backend=alias).get_result(result.id)
    assert got.status == TaskResultStatus.READY and got.args == [1, 2]
    assert got.enqueued_at == result.enqueued_at
    task_backends[alias].app.cancel_task(int(result.id))
    result.refresh()  # from the database: cancelled reads as FAILED, with roadie's error
    assert result.status == TaskResultStatus.FAILED
    assert [e.exception_class_path for e in result.errors] == ["roadie.errors.Cancelled"]
    assert result.errors[0].exception_class is roadie.Cancelled
    assert "cancelled by api" in result.errors[0].traceback


def test_aenqueue_and_aget_result_use_the_async_client(alias: str) -> None:
    async def scenario() -> tuple[TaskResult, TaskResult]:
        enqueued = await double.using(backend=alias).aenqueue(4)
        read = await task_backends[alias].aget_result(enqueued.id)
        await read.arefresh()
        await task_backends[alias].app.aio.close()
        return enqueued, read

    enqueued, read = asyncio.run(scenario())
    assert read.id == enqueued.id and read.status == TaskResultStatus.READY
    assert read.args == [4] and read.task.module_path == "shop.tasks.double"
    with pytest.raises(TaskResultDoesNotExist):
        asyncio.run(task_backends[alias].aget_result("999999"))


def test_enqueue_in_a_view_outside_a_transaction(alias: str) -> None:
    response = Client().get("/ping/", {"backend": alias})
    assert response.status_code == 200
    result = add.using(backend=alias).get_result(response.json()["task"])
    assert result.status == TaskResultStatus.READY and result.args == [1, 2]


def test_unknown_options_are_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"unknown key\(s\) nope; .* url, database"):
        RoadieBackend("bad", {"OPTIONS": {"nope": 1}})


def test_the_database_url_comes_from_djangos_databases() -> None:
    from django.conf import settings
    from djhelpers import PG_URL

    assert task_backends["default"].url == f"sqlite:///{settings.DATABASES['default']['NAME']}"
    assert task_backends["pg"].url == PG_URL
    assert task_backends["empty"].database is None  # a URL of its own: no transaction joined


def test_an_in_memory_database_is_a_check_error() -> None:
    backend = RoadieBackend("memory", {"OPTIONS": {"database": "memory"}})
    (error,) = backend.check()
    assert error.id == "roadie_django.E001"
    assert "in-memory SQLite database" in error.msg and "'memory'" in error.msg


def test_without_use_tz_times_are_naive_local_times(alias: str) -> None:
    from django.test import override_settings
    from django.utils import timezone

    with override_settings(USE_TZ=False, TIME_ZONE="Europe/Berlin"):
        due = timezone.now().astimezone(dt.timezone.utc) + dt.timedelta(hours=2)
        local = timezone.make_naive(due)  # what Django gives without USE_TZ
        result = add.using(backend=alias, run_after=local).enqueue(1, 1)
        got = task_backends[alias].get_result(result.id)
    assert timezone.is_naive(result.enqueued_at) and timezone.is_naive(got.enqueued_at)
    assert got.enqueued_at == result.enqueued_at
    assert task_backends[alias].app.get_task(int(result.id)).run_after == due

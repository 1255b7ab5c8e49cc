"""Enqueue inside ``transaction.atomic()``: the task is part of the transaction, on SQLite
and PostgreSQL. Committed, a worker runs it and sees the rows written with it; rolled back,
nothing is left.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from djhelpers import run_worker
from roadie_django.compat import (
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_backends,
    task_enqueued,
)
from shop.models import Order
from shop.tasks import add, ship
from shop.views import Refused


def enqueued_ids(action: Any) -> list[str]:
    """The ids of the tasks enqueued while ``action()`` runs (whatever it raises)."""
    ids: list[str] = []

    def receiver(sender: type, task_result: TaskResult, **kwargs: Any) -> None:
        ids.append(task_result.id)

    task_enqueued.connect(receiver)
    try:
        action()
    finally:
        task_enqueued.disconnect(receiver)
    return ids


def test_a_view_commits_the_order_and_its_task_together(alias: str) -> None:
    response = Client().post("/orders/", {"item": "blue paint", "backend": alias,
                                          "database": alias})
    assert response.status_code == 200
    result = ship.using(backend=alias).get_result(response.json()["task"])
    assert result.status == TaskResultStatus.READY
    run_worker(task_backends[alias].url)
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == "blue paint"  # the worker saw the order the view saved


def test_a_view_that_fails_leaves_neither_order_nor_task(alias: str) -> None:
    client = Client()

    def post() -> None:
        with pytest.raises(Refused):
            client.post("/orders/?fail=1", {"item": "red paint", "backend": alias,
                                            "database": alias})

    (task_id,) = enqueued_ids(post)
    assert not Order.objects.using(alias).exists()
    with pytest.raises(TaskResultDoesNotExist):
        task_backends[alias].get_result(task_id)
    assert task_backends[alias].app.list_tasks() == []


def test_a_task_is_invisible_until_its_transaction_commits(alias: str) -> None:
    backend = task_backends[alias]
    with transaction.atomic(using=alias):
        result = add.using(backend=alias).enqueue(20, 22)
        with pytest.raises(TaskResultDoesNotExist):  # roadie's own connection: not yet
            backend.get_result(result.id)
    assert backend.get_result(result.id).status == TaskResultStatus.READY
    run_worker(backend.url)
    assert backend.get_result(result.id).return_value == 42


def test_a_rolled_back_atomic_block_leaves_no_task(alias: str) -> None:
    def enqueue_then_fail() -> None:
        with pytest.raises(RuntimeError), transaction.atomic(using=alias):
            with transaction.atomic(using=alias):  # a savepoint: still the same transaction
                add.using(backend=alias).enqueue(1, 1)
            raise RuntimeError("roll back")

    (task_id,) = enqueued_ids(enqueue_then_fail)
    with pytest.raises(TaskResultDoesNotExist):
        task_backends[alias].get_result(task_id)
    assert task_backends[alias].app.list_tasks() == []

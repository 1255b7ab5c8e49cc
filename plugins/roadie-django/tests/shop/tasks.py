"""The test project's tasks (and one function that is not a task)."""

from __future__ import annotations

import asyncio
from typing import Any

from django.db import connections

try:
    from django.tasks import task
except ImportError:  # Django < 6
    from django_tasks import task

from shop.models import Event, Order


class OutOfStock(Exception):
    """A task's own exception."""


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def fail(message: str) -> None:
    raise OutOfStock(message)


@task
async def double(x: int) -> int:
    await asyncio.sleep(0.01)
    return x * 2


@task(takes_context=True)
def count(context: Any, steps: int) -> dict[str, Any]:
    for step in range(steps):
        context.progress(step + 1, steps, f"step {step + 1}")
    return {"attempt": context.attempt, "result_id": context.task_result.id,
            "roadie_id": context.roadie_task.id, "workers": context.task_result.worker_ids}


@task
def record(label: str, database: str) -> dict[str, Any]:
    """Note ``label`` as an Event; say whether a connection was open when it started."""
    connected = connections[database].connection is not None
    Event.objects.using(database).create(label=label)
    return {"label": label, "connected_at_start": connected}


@task
def ship(order_id: int, database: str) -> str:
    return Order.objects.using(database).get(pk=order_id).item


@task(queue_name="emails")
def send_email(to: str) -> str:
    return f"sent to {to}"


def not_a_task() -> None:
    """A plain function of an installed app: roadie-django refuses to run it."""

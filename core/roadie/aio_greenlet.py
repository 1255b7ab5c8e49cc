"""The greenlets of async attempts (see ``roadie.aio_runner``). A module of its own, imported
by a worker's first async attempt: greenlet loads libstdc++, about 1 MB that a worker running
no async attempt never needs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import greenlet

T = TypeVar("T")


class AttemptGreenlet(greenlet.greenlet):
    """The greenlet of one async attempt. While it awaits, ``current`` is the asyncio task
    that awaits for it (cancelling that task cancels what is awaited), and ``cancellable``
    whether a cancel request may do so."""

    current: asyncio.Task[Any] | None = None
    cancellable: bool = False


def current_attempt() -> AttemptGreenlet | None:
    """The greenlet of the async attempt this code runs in, if any."""
    current = greenlet.getcurrent()
    return current if isinstance(current, AttemptGreenlet) else None


def await_in_attempt(attempt: AttemptGreenlet, awaitable: Awaitable[T], cancellable: bool) -> T:
    """Hand ``awaitable`` to the task running ``attempt`` (the current greenlet) and wait."""
    value: T = attempt.parent.switch(awaitable, cancellable)
    return value


async def run_in_greenlet(glet: AttemptGreenlet) -> Any:
    """Run ``glet`` (made with the attempt's function) to its end, awaiting what it asks for
    (``await_value``) in this task. The greenlet shares this task's context, so that what it
    awaits sees the context variables the attempt set, as a thread's executor does."""
    glet.gr_context = greenlet.getcurrent().gr_context
    task = asyncio.current_task()
    value = glet.switch()
    while not glet.dead:
        awaitable, cancellable = value
        glet.current, glet.cancellable = task, cancellable
        try:
            result = await awaitable
        except BaseException as exc:
            glet.current = None
            value = glet.throw(exc)
        else:
            glet.current = None
            value = glet.switch(result)
    return value

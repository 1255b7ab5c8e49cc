"""The greenlets of async attempts (see ``roadie.aio_runner``). A module of its own, imported
by a worker's first async attempt: greenlet loads libstdc++, about 1 MB that a worker running
no async attempt never needs."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import greenlet

T = TypeVar("T")


@dataclass
class Await:
    """What an attempt's greenlet asks the loop to await for it."""

    awaitable: Awaitable[Any]
    context: contextvars.Context
    cancellable: bool


class AttemptGreenlet(greenlet.greenlet):
    """The greenlet of one async attempt; knows the future it currently waits on."""

    current: asyncio.Future[Any] | None = None
    cancellable: bool = False


def current_attempt() -> AttemptGreenlet | None:
    """The greenlet of the async attempt this code runs in, if any."""
    current = greenlet.getcurrent()
    return current if isinstance(current, AttemptGreenlet) else None


def await_in_attempt(attempt: AttemptGreenlet, awaitable: Awaitable[T], cancellable: bool) -> T:
    """Hand ``awaitable`` to the loop running ``attempt`` (the current greenlet) and wait."""
    request = Await(awaitable, contextvars.copy_context(), cancellable)
    value: T = attempt.parent.switch(request)
    return value


async def run_in_greenlet(fn: Callable[[], T]) -> T:
    """Run ``fn()`` in a greenlet of this loop, awaiting what it asks for (``await_value``)."""
    glet = AttemptGreenlet(fn)
    value = glet.switch()
    while not glet.dead:
        request: Await = value
        future = request.context.run(asyncio.ensure_future, request.awaitable)
        glet.current, glet.cancellable = future, request.cancellable
        try:
            result = await future
        except BaseException as exc:
            glet.current = None
            value = glet.throw(exc)
        else:
            glet.current = None
            value = glet.switch(result)
    return value

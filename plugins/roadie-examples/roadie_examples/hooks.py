"""This plugin's hook implementations: its context types, and a timing wrapper."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from typing import Any

import roadie

from roadie_examples.types import Batch

log = logging.getLogger("roadie_examples")


@roadie.hookimpl
def roadie_register_types(register: Callable[..., Any]) -> None:
    """Register ``Batch`` as ``roadie-examples:Batch`` (version 2)."""
    register(Batch)


@roadie.hookimpl(wrapper=True)
def roadie_execute_task(
    task: roadie.RunningTask, executor: roadie.Executor
) -> Generator[None, roadie.Result, roadie.Result]:
    """Time this plugin's tasks and put the duration in their status."""
    started = time.perf_counter()
    try:
        return (yield)
    finally:
        task.status.set("seconds", round(time.perf_counter() - started, 3))

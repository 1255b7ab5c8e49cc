"""Example executors: count, fail, echo, noop, serial, fanout, report, greet, import, wait,
split and part (a task tree)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import roadie

from roadie_examples.types import Batch


class Count(roadie.Executor):
    """Counts to ``n`` (default 20), ``delay`` seconds (default 0.05) per step, with progress."""

    crash_policy = roadie.CrashPolicy.RESUME

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        n = int(task.context.get("n", 20))
        delay = float(task.context.get("delay", 0.05))
        start = (task.last_checkpoint or {}).get("i", 0)
        for i in range(start, n):
            task.progress(i + 1, n, f"counted to {i + 1}")
            if (i + 1) % 10 == 0:
                task.checkpoint({"i": i + 1})
            task.wait_cancelled(delay)
        return roadie.Result.success(f"counted to {n}", value=n)


class Fail(roadie.Executor):
    """Raises, to show ``handle_exception``: its message becomes the task's status message."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        raise ValueError(task.context.get("reason", "this task fails on purpose"))

    def handle_exception(self, task: roadie.RunningTask, exc: BaseException) -> str:
        return f"fail example: {exc}"


class Echo(roadie.Executor):
    """Returns its context as the status message (and as the result value)."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        context: dict[str, Any] = task.context
        return roadie.Result.success(repr(context), value=context)


class Noop(roadie.Executor):
    """Does nothing at all: the benchmarks' task."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        return roadie.Result.SUCCESS


class Wait(roadie.Executor):
    """An async executor: awaits ``seconds`` (default 0.1), as a task waiting on I/O would.
    A cancel or a timeout ends it at its ``await``."""

    async def execute(self, task: roadie.RunningTask) -> roadie.Result:
        seconds = float(task.context.get("seconds", 0.1))
        task.progress(0, 1, "waiting")
        await asyncio.sleep(seconds)
        task.progress(1, 1, "waited")
        return roadie.Result.success(f"waited {seconds:g} s")


class Serial(roadie.Executor):
    """One at a time across every worker (Liferay's serial executor): sleeps ``seconds``."""

    isolation = roadie.Isolation.CLASS

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        task.wait_cancelled(float(task.context.get("seconds", 0.2)))
        task.raise_if_cancelled()
        return roadie.Result.success("done, alone")


class Fanout(roadie.Executor):
    """Splits ``items`` (default 40) into lightweight children, ``width`` at a time."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        items = range(int(task.context.get("items", 40)))
        delay = float(task.context.get("delay", 0.02))

        def square(i: int) -> int:
            roadie.current_task().raise_if_cancelled()  # type: ignore[union-attr]
            time.sleep(delay)
            return i * i

        results = task.map(square, items, width=int(task.context.get("width", 8)))
        return roadie.Result.success(f"sum of squares {sum(results)}", value=sum(results))


class Split(roadie.Executor):
    """Fans out: adds ``parts`` (default 12) persistent ``part`` subtasks that any node may
    run, waits for them without holding a thread, then sums their values (task trees).
    ``fail`` lists parts that fail; ``linger`` makes ``subtasks_done`` take that long."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        failing = set(task.context.get("fail", ()))
        seconds = float(task.context.get("seconds", 0.0))
        task.add_subtasks(
            {"executor": "roadie-examples:part", "name": f"part {i}",
             "context": {"value": i, "fail": i in failing, "seconds": seconds}}
            for i in range(int(task.context.get("parts", 12))))
        return roadie.Result.wait_for_subtasks()

    def subtasks_done(self, task: roadie.RunningTask,
                      subtasks: Sequence[roadie.TaskRecord]) -> roadie.Result:
        linger = float(task.context.get("linger", 0.0))
        if linger:
            task.progress(0, 1, "summing")
            task.wait_cancelled(linger)
        # subtasks (a roadie.Subtasks) reads them a page at a time on every pass
        if any(s.status != roadie.Status.SUCCESSFUL for s in subtasks):
            return super().subtasks_done(task, subtasks)
        total = sum(s.result for s in subtasks)
        task.progress(1, 1, "summed")
        return roadie.Result.success(f"sum of {len(subtasks)} parts: {total}", value=total)


class Part(roadie.Executor):
    """One part of ``split``: returns its ``value`` (or fails when ``fail`` is set)."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        task.wait_cancelled(float(task.context.get("seconds", 0.0)))
        task.raise_if_cancelled()
        if task.context.get("fail"):
            return roadie.Result.failed(f"part {task.context['value']} failed on purpose")
        return roadie.Result.success(value=task.context["value"])


class Report(roadie.Executor):
    """Processes a ``roadie_examples.types.Batch`` from its context and attaches a report."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        batch: Batch = task.context["batch"]
        lines = [f"{batch.unit} {i}" for i in range(batch.start, batch.start + batch.size)]
        task.progress(batch.size, batch.size)
        task.attach("report.txt", "\n".join(lines).encode(), media_type="text/plain")
        return roadie.Result.success(f"reported {batch.size} {batch.unit}")


class Greet(roadie.Executor):
    """Greets ``who`` in the locale of the caller who added the task (see hooks.py)."""

    GREETINGS = {"en": "hello", "fr": "bonjour", "de": "hallo"}

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        from roadie_examples.hooks import LOCALE

        word = self.GREETINGS.get(LOCALE.get(), "hello")
        return roadie.Result.success(f"{word} {task.context.get('who', 'world')}")


class RowsTranslator(roadie.StatusMessageTranslator):
    """Turns ``{"table": ..., "rows": n}`` messages into per-table counters and a total."""

    def translate(self, task: roadie.RunningTask, message: dict[str, Any],
                  status: roadie.TaskStatus) -> None:
        status.increment("rows", message.get("rows", 0))
        status.increment(f"rows.{message.get('table', '?')}", message.get("rows", 0))
        status.set("step", f"importing {message.get('table', '?')}")


class Import(roadie.Executor):
    """Pretends to import ``tables`` ({"name": rows}); its translator counts rows per table."""

    translator = RowsTranslator()

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        tables: dict[str, int] = task.context.get("tables", {"users": 30, "groups": 5})
        for table, rows in tables.items():
            for _ in range(rows):
                task.send_status({"table": table, "rows": 1})
        total = sum(tables.values())
        return roadie.Result.success(f"imported {total} rows from {len(tables)} tables")

"""Executors used by the tests (registered under the pseudo-distribution ``tests``)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import roadie

RUNS: list[tuple[int, float, float]] = []  # (task id, start, end), appended by Tracked
RUNS_LOCK = threading.Lock()


class Sleep(roadie.Executor):
    """Sleeps ``seconds`` (default 0.05), waking early on cancel."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        task.wait_cancelled(float(task.context.get("seconds", 0.05)))
        task.raise_if_cancelled()
        return roadie.Result.success("slept")


class SerialSleep(Sleep):
    """Sleep, one at a time."""

    isolation = roadie.Isolation.CLASS


class Boom(roadie.Executor):
    """Raises RuntimeError."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        raise RuntimeError(task.context.get("reason", "boom"))


class Refuse(roadie.Executor):
    """Returns a failed Result (no exception)."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        return roadie.Result.failed("refused politely")


class Flaky(roadie.Executor):
    """Fails with ConnectionError until attempt ``succeed_on``; retried with a short backoff."""

    retry = roadie.Retry(on=(ConnectionError,), max_attempts=3, backoff=0.05, factor=2)

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        if task.attempt < int(task.context.get("succeed_on", 2)):
            raise ConnectionError(f"flaky on attempt {task.attempt}")
        return roadie.Result.success(f"worked on attempt {task.attempt}")


class Spin(roadie.Executor):
    """Loops on safe points until cancelled (or ``limit`` seconds pass)."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        deadline = time.monotonic() + float(task.context.get("limit", 30))
        i = 0
        while time.monotonic() < deadline:
            i += 1
            task.progress(i, message="spinning")
            time.sleep(0.005)
        return roadie.Result.success("spun out")


class Timed(Spin):
    """A Spin with an executor time limit of 0.3 s."""

    timeout = 0.3


class Chatty(roadie.Executor):
    """Sends ``n`` progress updates as fast as it can."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        n = int(task.context.get("n", 10_000))
        for i in range(n):
            task.progress(i + 1, n)
        return roadie.Result.success(f"sent {n}")


class Tracked(roadie.Executor):
    """Records its run (start, end) in RUNS; sleeps ``seconds``."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        start = time.monotonic()
        time.sleep(float(task.context.get("seconds", 0.02)))
        with RUNS_LOCK:
            RUNS.append((task.id, start, time.monotonic()))
        return roadie.Result.SUCCESS


class SerialTracked(Tracked):
    """Tracked, one at a time."""

    isolation = roadie.Isolation.CLASS


class GroupTracked(Tracked):
    """Tracked, one at a time per group."""

    isolation = roadie.Isolation.GROUP


class Limited(Tracked):
    """Tracked, at most 3 at once on all nodes."""

    max_running = 3


class OwnerLimited(Tracked):
    """Tracked, at most 2 at once per owner."""

    isolation = roadie.Isolation.OWNER
    max_running = 2


class Rated(Tracked):
    """Tracked, at most 5 starts a second."""

    rate_limit = roadie.Rate(5, per=1)


class RatedPerGroup(Tracked):
    """Tracked, at most 2 starts a second per group, any number at once."""

    isolation = roadie.Isolation.GROUP
    max_running = 100
    rate_limit = roadie.Rate(2, per=1)


class BadReturn(roadie.Executor):
    """Returns something that is not a Result."""

    def execute(self, task: roadie.RunningTask) -> Any:
        return 42


class Translated(roadie.Executor):
    """Uses its own translator: turns {"rows": n} messages into a rows_done counter."""

    class Rows(roadie.StatusMessageTranslator):
        def translate(self, task: roadie.RunningTask, message: dict[str, Any],
                      status: roadie.TaskStatus) -> None:
            status.increment("rows_done", message.get("rows", 0))
            status.set("step", message.get("step", "?"))

    translator = Rows()

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        for step in ("read", "write"):
            task.send_status({"rows": 5, "step": step})
        return roadie.Result.success("translated")


class WhoAmI(roadie.Executor):
    """Returns what current_task() says, from a nested call."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        return roadie.Result.success(str(nested_current_id()))


def nested_current_id() -> int | None:
    current = roadie.current_task()
    return None if current is None else current.id


class Parent(roadie.Executor):
    """Fans out ``items`` children ``width`` wide; child number ``fail_at`` raises."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        fail_at = task.context.get("fail_at")
        delay = float(task.context.get("delay", 0.01))
        width = int(task.context.get("width", 8))

        def child(i: int) -> int:
            current = roadie.current_task()
            assert current is not None and current.id == task.id
            current.raise_if_cancelled()
            time.sleep(delay)
            current.raise_if_cancelled()
            if i == fail_at:
                raise ValueError(f"child {i} failed")
            return i

        children = [task.spawn(child, i, name=f"piece-{i}") for i in range(
            int(task.context.get("items", 100)))] if task.context.get("spawn") else None
        if children is not None:
            return roadie.Result.success(f"spawned {len(children)}")
        results = task.map(child, range(int(task.context.get("items", 100))), width=width)
        return roadie.Result.success(f"{len(results)} children")


class AsyncSleep(roadie.Executor):
    """Async: records its run (start, end) in RUNS; awaits ``seconds`` (default 0.5)."""

    async def execute(self, task: roadie.RunningTask) -> roadie.Result:
        start = time.monotonic()
        await asyncio.sleep(float(task.context.get("seconds", 0.5)))
        with RUNS_LOCK:
            RUNS.append((task.id, start, time.monotonic()))
        return roadie.Result.success("awaited")


class AsyncTimed(AsyncSleep):
    """AsyncSleep with an executor time limit of 0.3 s."""

    timeout = 0.3


class AsyncWork(roadie.Executor):
    """Async: progress, a checkpoint, an attachment, current_task(), and a failure on demand
    (retried once on ConnectionError); ``handle_exception`` is async too."""

    retry = roadie.Retry(on=(ConnectionError,), max_attempts=2, backoff=0.01)

    async def execute(self, task: roadie.RunningTask) -> roadie.Result:
        for i in range(3):
            task.progress(i + 1, 3, f"step {i + 1}")
            await asyncio.sleep(0.01)
        task.checkpoint({"step": 3})
        task.attach("notes.txt", f"attempt {task.attempt}".encode())
        if task.context.get("flaky") and task.attempt == 1:
            raise ConnectionError("first attempt fails")
        if task.context.get("fail"):
            raise ValueError("bad input")
        return roadie.Result.success(f"current={nested_current_id()}")

    async def handle_exception(self, task: roadie.RunningTask, exc: BaseException) -> str:
        await asyncio.sleep(0)
        return f"async handler: {exc}"


RENDEZVOUS: dict[str, asyncio.Event] = {}  # events on the worker's loop, by name


def rendezvous(name: str) -> asyncio.Event:
    return RENDEZVOUS.setdefault(name, asyncio.Event())


class AsyncChildren(roadie.Executor):
    """Async: coroutine children (``task.aio.map``, ``task.aio.spawn``), a thread map, an
    attachment and a subtask, all awaited. With ``wait_for``, each child awaits that
    rendezvous (which another task on the loop sets); with ``fail_at``, that child raises."""

    async def execute(self, task: roadie.RunningTask) -> roadie.Result:
        wait_for = task.context.get("wait_for")
        fail_at = task.context.get("fail_at")

        async def double(x: int) -> int:
            assert roadie.current_task() is task
            if wait_for:
                await rendezvous(wait_for).wait()
            await asyncio.sleep(float(task.context.get("seconds", 0.01)))
            if x == fail_at:
                raise ValueError(f"child {x} fails")
            return 2 * x

        late: list[str] = []

        async def background() -> None:
            await asyncio.sleep(0.05)
            late.append("done")

        task.aio.spawn(background)  # the attempt ends only once it has
        doubled = await task.aio.map(double, range(int(task.context.get("items", 6))), width=3)
        tripled = await task.aio.map(lambda x: 3 * x, range(3))
        await task.aio.attach("sum.txt", str(sum(doubled)).encode())
        sub = await task.aio.add_subtask("tests:sleep", {"seconds": 0}, name="child")
        return roadie.Result.success(f"{doubled} {tripled} subtask={sub.name}")


class AsyncSignal(roadie.Executor):
    """Async: sets the rendezvous ``name`` on the worker's loop."""

    async def execute(self, task: roadie.RunningTask) -> roadie.Result:
        await asyncio.sleep(0)
        rendezvous(task.context["name"]).set()
        return roadie.Result.success("signalled")


class Fanout(roadie.Executor):
    """Adds ``parts`` ``tests:part`` subtasks and waits for them; ``subtasks_done`` sums their
    values. ``until_cancelled``: before it waits, it spins without a safe point until it sees a
    cancel request, in its flag ("flag") or only in the database ("db")."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        failing = set(task.context.get("fail_first", ()))
        task.add_subtasks(
            {"executor": "tests:part", "name": f"part {i}",
             "context": {"value": i, "fail_first": i in failing,
                         "seconds": task.context.get("seconds", 0.0),
                         "gate": task.context.get("gate")}}
            for i in range(int(task.context.get("parts", 3))))
        mode = task.context.get("until_cancelled")
        if mode:
            task.progress(1, 2)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if mode == "flag" and task.cancelled:
                    break
                if mode == "db" and task.app.get_task(task.id).cancel_requested_at:
                    break
                time.sleep(0.01)
        return roadie.Result.wait_for_subtasks()

    def subtasks_done(self, task: roadie.RunningTask, subtasks: Any) -> roadie.Result:
        done = list(subtasks)
        if any(s.status != roadie.Status.SUCCESSFUL for s in done):
            return super().subtasks_done(task, done)
        total = sum(s.result for s in done)
        return roadie.Result.success(f"sum {total}", total)


class Part(roadie.Executor):
    """A subtask of ``fanout``: returns its ``value``; fails on its first attempt with
    ``fail_first``; with ``gate`` it waits until the file ``gate/<value>`` exists."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        from pathlib import Path

        gate = task.context.get("gate")
        while gate and not Path(gate, str(task.context["value"])).exists():
            task.wait_cancelled(0.01)
            task.raise_if_cancelled()
        task.wait_cancelled(float(task.context.get("seconds") or 0.0))
        task.raise_if_cancelled()
        if task.context.get("fail_first") and task.attempt == 1:
            return roadie.Result.failed(f"part {task.context['value']} fails once")
        return roadie.Result.success(value=task.context["value"])


def parts(task: roadie.RunningTask) -> list[dict[str, Any]]:
    """``parts`` (default 12) ``tests:part`` subtasks whose values are 1, 2, ..., parts; those
    whose value ``fail`` lists fail."""
    failing = set(task.context.get("fail", ()))
    return [{"executor": "tests:part", "name": f"part {i}",
             "context": {"value": i, "fail_first": i in failing}}
            for i in range(1, int(task.context.get("parts", 12)) + 1)]


class SumTwice(roadie.Executor):
    """Fans out into ``parts``; its fan-in reads ``subtasks`` twice, as issue 27 reports
    (once for the failed ones, once for the sum)."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        task.add_subtasks(parts(task))
        return roadie.Result.wait_for_subtasks()

    def subtasks_done(self, task: roadie.RunningTask, subtasks: Any) -> roadie.Result:
        failed = [s.id for s in subtasks if s.status != roadie.Status.SUCCESSFUL]
        if failed:
            return roadie.Result.failed(f"subtasks failed: {failed}")
        return roadie.Result.success(f"sum={sum(s.result for s in subtasks)}")


class AsyncSumTwice(roadie.Executor):
    """SumTwice as an async executor: ``async def execute`` and ``async def subtasks_done``."""

    async def execute(self, task: roadie.RunningTask) -> roadie.Result:
        await task.aio.add_subtasks(parts(task))
        return roadie.Result.wait_for_subtasks()

    async def subtasks_done(self, task: roadie.RunningTask, subtasks: Any) -> roadie.Result:
        failed = [s.id for s in subtasks if s.status != roadie.Status.SUCCESSFUL]
        if failed:
            return roadie.Result.failed(f"subtasks failed: {failed}")
        return roadie.Result.success(f"sum={sum(s.result for s in subtasks)}")


class Probe(roadie.Executor):
    """Fans out into ``parts``; its fan-in returns what ``subtasks`` showed when read in every
    way (length, positions, slices, two passes, reversed)."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        task.add_subtasks(parts(task))
        return roadie.Result.wait_for_subtasks()

    def subtasks_done(self, task: roadie.RunningTask, subtasks: Any) -> roadie.Result:
        return roadie.Result.success("probed", probe(subtasks))


def probe(subtasks: Any) -> dict[str, Any]:
    """What ``subtasks`` shows when read in every way, as plain values."""
    return {
        "type": type(subtasks).__name__,
        "is_subtasks": isinstance(subtasks, roadie.Subtasks),
        "len": len(subtasks),
        "first": subtasks[0].id,
        "last": subtasks[-1].id,
        "slice": [s.id for s in subtasks[2:5]],
        "once": [s.id for s in subtasks],
        "twice": [s.id for s in subtasks],
        "list": [s.id for s in list(subtasks)],
        "reversed": [s.id for s in reversed(subtasks)],
        "results": [s.result for s in subtasks],
    }


class Tree(roadie.Executor):
    """A tree of tasks from its context: with ``children`` (each a ``tests:tree`` context,
    with a ``name`` and an optional ``delay`` in seconds before it may start) it adds them as
    subtasks and waits for them; a leaf waits for its ``gate`` file, sleeps ``seconds``, then
    ends with its ``message`` (FAILED with ``fail``)."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        from pathlib import Path

        children = task.context.get("children") or []
        if children:
            task.add_subtasks(
                {"executor": "tests:tree", "name": child.get("name", "leaf"), "context": child,
                 **({"delay": child["delay"]} if child.get("delay") else {})}
                for child in children)
            return roadie.Result.wait_for_subtasks()
        gate = task.context.get("gate")
        while gate and not Path(gate).exists():
            task.wait_cancelled(0.01)
            task.raise_if_cancelled()
        task.wait_cancelled(float(task.context.get("seconds") or 0.0))
        task.raise_if_cancelled()
        message = str(task.context.get("message", ""))
        if task.context.get("fail"):
            return roadie.Result.failed(message)
        return roadie.Result.success(message)


ALL: dict[str, type[roadie.Executor]] = {
    "sleep": Sleep, "serial-sleep": SerialSleep, "boom": Boom, "refuse": Refuse,
    "flaky": Flaky, "spin": Spin, "timed": Timed, "chatty": Chatty, "tracked": Tracked,
    "serial": SerialTracked,
    "grouped": GroupTracked, "badreturn": BadReturn, "translated": Translated,
    "whoami": WhoAmI, "parent": Parent, "asleep": AsyncSleep, "atimed": AsyncTimed,
    "awork": AsyncWork, "achildren": AsyncChildren, "asignal": AsyncSignal,
    "fanout": Fanout, "part": Part, "sumtwice": SumTwice, "asumtwice": AsyncSumTwice,
    "probe": Probe, "limited": Limited, "owner-limited": OwnerLimited, "rated": Rated,
    "rated-group": RatedPerGroup, "tree": Tree,
}

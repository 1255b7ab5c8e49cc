"""Lightweight child tasks: fan-out, waiting for children, failures, cancel, live counts."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import roadie
from roadie import Status
from roadie.lightweight import ChildState
from roadie.testing import BackgroundWorker, run_task, wait_final, wait_for

# -- executors of this file, sharing state with the test thread through a "key" -------------


@dataclass
class Probe:
    """What one test's children report, and the gate they wait on."""

    gate: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    starts: dict[int, float] = field(default_factory=dict)
    ends: dict[int, float] = field(default_factory=dict)
    running: int = 0
    max_running: int = 0
    returned_at: float | None = None
    returned: threading.Event = field(default_factory=threading.Event)
    seen: dict[str, Any] = field(default_factory=dict)

    def enter(self, i: int) -> None:
        with self.lock:
            self.starts[i] = time.time()
            self.running += 1
            self.max_running = max(self.max_running, self.running)

    def leave(self, i: int) -> None:
        with self.lock:
            self.running -= 1
            self.ends[i] = time.time()

    def execute_returned(self) -> None:
        self.returned_at = time.time()
        self.returned.set()


PROBES: dict[str, Probe] = {}
_keys = itertools.count(1)


def new_probe() -> tuple[str, Probe]:
    key = f"probe-{next(_keys)}"
    PROBES[key] = probe = Probe()
    return key, probe


def wait_gate(probe: Probe) -> None:
    """Wait for the test to open the gate, at cancel-aware safe points."""
    current = roadie.current_task()
    assert current is not None
    while not probe.gate.wait(0.01):
        current.raise_if_cancelled()
    current.raise_if_cancelled()


class FanOut(roadie.Executor):
    """``task.map`` over ``items`` children, ``width`` wide. The first ``barrier`` children meet
    at a barrier (so that many must run at once); children from ``gate_from`` on wait for the
    test's gate."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        probe = PROBES[task.context["key"]]
        items = int(task.context["items"])
        gate_from = task.context.get("gate_from")
        barrier_size = task.context.get("barrier")
        barrier = threading.Barrier(barrier_size, timeout=10) if barrier_size else None

        def child(i: int) -> int:
            probe.enter(i)
            try:
                current = roadie.current_task()
                assert current is task
                if barrier is not None and i < barrier_size:
                    barrier.wait()
                if gate_from is not None and i >= gate_from:
                    wait_gate(probe)
                else:
                    time.sleep(0.002)
                current.raise_if_cancelled()
                return i * i
            finally:
                probe.leave(i)

        results = task.map(child, range(items), width=int(task.context["width"]))
        probe.seen["results"] = results
        probe.execute_returned()
        return roadie.Result.success(f"{len(results)} children")


class SpawnAndReturn(roadie.Executor):
    """Spawns ``items`` children that wait for the gate, then returns at once."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        probe = PROBES[task.context["key"]]

        def child(i: int) -> None:
            probe.enter(i)
            try:
                wait_gate(probe)
            finally:
                probe.leave(i)

        children = [task.spawn(child, i, name=f"waiter-{i}")
                    for i in range(int(task.context["items"]))]
        probe.seen["states"] = [c.state for c in children]
        probe.execute_returned()
        return roadie.Result.success("spawned and returned")


class Results(roadie.Executor):
    """child.result() returns values and re-raises a child's exception inside execute."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        probe = PROBES[task.context["key"]]

        def square(x: int) -> int:
            return x * x

        def broken(why: str) -> None:
            raise KeyError(why)

        good = task.spawn(square, 7, name="square")
        bad = task.spawn(broken, "no such row", name="broken")
        probe.seen["good"] = good.result(timeout=10)
        probe.seen["good_state"] = good.state
        try:
            bad.result(timeout=10)
        except KeyError as exc:
            probe.seen["caught"] = exc
        probe.seen["bad_state"] = bad.state
        probe.seen["bad_failed"] = bad.failed
        probe.seen["bad_exception"] = bad.exception()
        probe.seen["names"] = (good.name, bad.name)
        return roadie.Result.success("handled the failure")


class ChildStatus(roadie.Executor):
    """Children send status messages and progress on the parent's behalf."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        probe = PROBES[task.context["key"]]

        def child(i: int) -> int:
            current = roadie.current_task()
            assert current is not None
            current.send_status({"message": f"child {i} says hello"})
            if i == 2:
                current.progress(2, 4, message="half way, from a child")
                wait_gate(probe)
            return current.id

        ids = task.map(child, range(3), width=3, progress=False)
        probe.seen["ids"] = ids
        return roadie.Result.success("children talked")


EXECUTORS: dict[str, type[roadie.Executor]] = {
    "fanout": FanOut, "spawn-return": SpawnAndReturn, "child-results": Results,
    "child-status": ChildStatus,
}


@pytest.fixture(autouse=True)
def _children_executors(app: roadie.Roadie) -> Iterator[None]:
    for name, cls in EXECUTORS.items():
        app.plugins.register_executor(f"tests:{name}", cls)
    yield
    PROBES.clear()


def ts(when: Any) -> float:
    return float(when.timestamp())


def children_of(app: roadie.Roadie, task_id: int) -> dict[str, int] | None:
    return app.get_task_status(task_id).get("children")


# -- tests ------------------------------------------------------------------------------


def test_hundred_children_eight_wide_all_run_and_the_parent_ends_after_the_last(
        app: roadie.Roadie) -> None:
    key, probe = new_probe()
    run = run_task(app, "tests:fanout", {"key": key, "items": 100, "width": 8, "barrier": 8})
    task = run.task
    assert task.status is Status.SUCCESSFUL, task.status_message
    assert task.status_message == "100 children"
    assert sorted(probe.ends) == list(range(100))
    assert probe.seen["results"] == [i * i for i in range(100)]  # in order
    # the first 8 met at a barrier: 8 ran at once, and never more
    assert probe.max_running == 8
    last_child_end = max(probe.ends.values())
    assert probe.returned_at is not None and probe.returned_at >= last_child_end
    assert task.finished_at is not None and ts(task.finished_at) >= last_child_end
    assert run.status["children"] == {"runnable": 0, "closed": 100, "failed": 0}
    # map drives the generic progress
    assert run.status["done"] == 100 and run.status["total"] == 100
    assert run.status["percent"] == 100.0
    # children are never stored as tasks
    assert [t.id for t in app.list_tasks(limit=None)] == [task.id]
    assert app.store.count_tasks() == {Status.SUCCESSFUL: 1}
    assert roadie.current_task() is None


def test_counts_and_progress_are_visible_while_children_run(app: roadie.Roadie) -> None:
    key, probe = new_probe()
    # items 0-9 finish at once; 10-13 take the 4 slots and wait for the gate
    task = app.add_task("tests:fanout", {"key": key, "items": 20, "width": 4, "gate_from": 10})
    with BackgroundWorker(app, concurrency=1):
        wait_for(lambda: children_of(app, task.id) == {"runnable": 4, "closed": 10,
                                                        "failed": 0},
                 message="10 closed and 4 runnable children in the live status")
        live = app.get_task_status(task.id)
        assert live["done"] == 10 and live["total"] == 20 and live["percent"] == 50.0
        assert app.get_task(task.id).status is Status.IN_PROGRESS
        assert probe.max_running == 4
        probe.gate.set()
        final = wait_final(app, task.id)
    assert final.status is Status.SUCCESSFUL, final.status_message
    assert final.task_status["children"] == {"runnable": 0, "closed": 20, "failed": 0}
    assert final.task_status["done"] == 20 and final.task_status["percent"] == 100.0


def test_a_failing_child_of_map_fails_the_parent_naming_the_child(app: roadie.Roadie) -> None:
    task = run_task(app, "tests:parent", {"items": 100, "width": 8, "fail_at": 37,
                                          "delay": 0.001}).task
    assert task.status is Status.FAILED
    assert "child 37 failed" in task.status_message
    assert task.task_status["children"]["failed"] == 1
    assert task.task_status["children"]["runnable"] == 0
    assert task.error is not None and "ValueError: child 37 failed" in task.error
    assert "child[37]" in task.status_message, task.status_message


def test_a_failing_spawned_child_fails_a_parent_that_returned_success(
        app: roadie.Roadie) -> None:
    task = run_task(app, "tests:parent", {"items": 30, "spawn": True, "fail_at": 5,
                                          "delay": 0.001}).task
    assert task.status is Status.FAILED
    assert "'piece-5'" in task.status_message
    assert "ValueError: child 5 failed" in task.status_message
    assert "1 of 30 child tasks failed" in task.status_message
    assert task.error is not None and "ValueError" in task.error
    assert task.task_status["children"] == {"runnable": 0, "closed": 30, "failed": 1}


def test_cancelling_the_parent_cancels_the_remaining_children(app: roadie.Roadie) -> None:
    key, probe = new_probe()
    # children 0-19 finish; 20-27 wait for a gate that never opens; 28-99 never start
    task = app.add_task("tests:fanout", {"key": key, "items": 100, "width": 8,
                                         "gate_from": 20})
    with BackgroundWorker(app, concurrency=1):
        wait_for(lambda: children_of(app, task.id) == {"runnable": 8, "closed": 20,
                                                        "failed": 0},
                 message="20 children closed, 8 waiting")
        app.cancel_task(task.id)
        final = wait_final(app, task.id)
    assert final.status is Status.CANCELLED, final.status_message
    assert final.status_message.startswith("cancelled by api")
    assert len(probe.starts) == 28  # the rest never ran
    assert sorted(probe.ends) == list(range(28))  # every started child closed
    assert probe.running == 0
    assert not probe.returned.is_set()
    counts = final.task_status["children"]
    assert counts["runnable"] == 0
    assert counts["closed"] == 28
    assert counts["failed"] == 0  # closed by the cancel, not failed


def test_execute_returning_early_still_waits_for_the_children(app: roadie.Roadie) -> None:
    key, probe = new_probe()
    task = app.add_task("tests:spawn-return", {"key": key, "items": 6})
    with BackgroundWorker(app, concurrency=1):
        wait_for(probe.returned.is_set, message="execute to return")
        wait_for(lambda: children_of(app, task.id) == {"runnable": 6, "closed": 0,
                                                        "failed": 0},
                 message="6 runnable children in the live status")
        assert app.get_task(task.id).status is Status.IN_PROGRESS
        assert probe.seen["states"] == [ChildState.RUNNABLE] * 6
        probe.gate.set()
        final = wait_final(app, task.id)
    assert final.status is Status.SUCCESSFUL, final.status_message
    assert final.status_message == "spawned and returned"
    assert sorted(probe.ends) == list(range(6))
    assert probe.returned_at is not None
    assert min(probe.ends.values()) >= probe.returned_at
    assert final.finished_at is not None
    assert ts(final.finished_at) >= max(probe.ends.values())
    assert final.task_status["children"] == {"runnable": 0, "closed": 6, "failed": 0}


def test_cancel_while_waiting_for_children_after_execute_returned(app: roadie.Roadie) -> None:
    key, probe = new_probe()
    task = app.add_task("tests:spawn-return", {"key": key, "items": 3})
    with BackgroundWorker(app, concurrency=1):
        wait_for(probe.returned.is_set, message="execute to return")
        wait_for(lambda: children_of(app, task.id) == {"runnable": 3, "closed": 0,
                                                        "failed": 0},
                 message="3 runnable children")
        app.cancel_task(task.id)
        final = wait_final(app, task.id)
    assert sorted(probe.ends) == [0, 1, 2] and probe.running == 0
    assert final.task_status["children"] == {"runnable": 0, "closed": 3, "failed": 0}
    assert final.status is Status.CANCELLED, final.status_message
    assert final.status_message.startswith("cancelled by api")


def test_child_result_returns_and_re_raises(app: roadie.Roadie) -> None:
    key, probe = new_probe()
    task = run_task(app, "tests:child-results", {"key": key}).task
    assert probe.seen["good"] == 49
    assert probe.seen["good_state"] is ChildState.CLOSED
    assert isinstance(probe.seen["caught"], KeyError)
    assert probe.seen["caught"].args == ("no such row",)
    assert probe.seen["bad_state"] is ChildState.CLOSED
    assert probe.seen["bad_failed"] is True
    assert probe.seen["bad_exception"] is probe.seen["caught"]
    assert probe.seen["names"] == ("square", "broken")
    # by default a failed child fails the parent, even if execute handled the exception
    assert task.status is Status.FAILED
    assert "'broken'" in task.status_message and "KeyError" in task.status_message
    assert task.task_status["children"] == {"runnable": 0, "closed": 2, "failed": 1}


def test_children_report_status_on_the_parents_behalf(app: roadie.Roadie) -> None:
    key, probe = new_probe()
    task = app.add_task("tests:child-status", {"key": key})
    with BackgroundWorker(app, concurrency=1):
        live = wait_for(lambda: (lambda s: s if s.get("done") == 2 else None)(
            app.get_task_status(task.id)), message="a child's progress in the parent's status")
        assert live["total"] == 4 and live["percent"] == 50.0
        assert live["message"] == "half way, from a child"
        probe.gate.set()
        final = wait_final(app, task.id)
    assert final.status is Status.SUCCESSFUL, final.status_message
    assert probe.seen["ids"] == [task.id] * 3  # current_task() in a child is the parent
    said = {m.get("message") for m in final.recent_messages}
    assert {f"child {i} says hello" for i in range(3)} <= said
    assert final.task_status["children"] == {"runnable": 0, "closed": 3, "failed": 0}


"""Stateful fuzzing: hypothesis drives random sequences of add, cancel, retry (resume),
delete, worker start and stop, and a worker process crash (kill -9), against a real database;
after every step the invariants hold (``roadie.testing.check_invariants``) and no final status
changed but by an explicit retry."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
import roadie
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from roadie import models
from roadie.errors import InvalidTransition
from roadie.status import FINAL_STATUSES
from roadie.store import utcnow
from roadie.testing import BackgroundWorker, check_invariants, wait_for

from tests.processes import kill, start_worker

EXECUTORS = st.sampled_from([
    ("roadie-examples:noop", {}),
    ("roadie-examples:fail", {"reason": "fuzzed"}),
    ("roadie-examples:serial", {"seconds": 0.03}),
]) | st.integers(1, 12).map(lambda n: ("roadie-examples:count", {"n": n, "delay": 0.02}))
GRACE = 60.0  # no live worker ever looks dead under load; crashes are recovered by hand


class Fuzz(RuleBasedStateMachine):
    """One database, in-process workers (threads) and at most one worker process."""

    tasks = Bundle("tasks")

    def __init__(self, url: str, data_dir: Path) -> None:
        super().__init__()
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.app = roadie.Roadie(url, data_dir=data_dir, heartbeat_interval=0.2,
                                 heartbeat_grace=GRACE, status_interval=0.05,
                                 sqlite_poll_interval=0.02, postgres_poll_interval=0.2,
                                 pending_horizon=5.0)
        self.workers: list[BackgroundWorker] = []
        self.process: Any = None
        self.final: dict[int, roadie.Status] = {}  # the final status each task was seen in
        self.deleted: set[int] = set()

    # -- tasks --------------------------------------------------------------------------

    @rule(target=tasks, spec=EXECUTORS)
    def add(self, spec: tuple[str, dict[str, Any]]) -> int:
        return self.app.add_task(*spec).id

    @rule(target=tasks, specs=st.lists(EXECUTORS, min_size=2, max_size=25))
    def add_many(self, specs: list[tuple[str, dict[str, Any]]]) -> Any:
        return multiple(*(t.id for t in self.app.add_tasks(specs)))

    @rule(task=tasks)
    def cancel(self, task: int) -> None:
        if task in self.deleted:
            return
        try:
            self.app.cancel_task(task, by="fuzz")
        except InvalidTransition:
            assert self.app.get_task(task).status in FINAL_STATUSES

    @rule(task=tasks)
    def retry(self, task: int) -> None:
        if task in self.deleted:
            return
        try:
            self.app.resume_task(task)
        except InvalidTransition:
            assert self.app.get_task(task).status not in (roadie.Status.FAILED,
                                                           roadie.Status.CANCELLED)
        else:
            self.final.pop(task, None)  # an explicit retry may change a final status

    @rule(task=tasks)
    def delete(self, task: int) -> None:
        if task in self.deleted:
            return
        try:
            self.app.delete_task(task)
        except InvalidTransition:
            assert self.app.get_task(task).status is roadie.Status.IN_PROGRESS
        else:
            self.deleted.add(task)
            self.final.pop(task, None)

    # -- workers ------------------------------------------------------------------------

    @precondition(lambda self: len(self.workers) < 2)
    @rule(concurrency=st.integers(1, 3))
    def start_worker(self, concurrency: int) -> None:
        node = roadie.Roadie(self.app.url, settings=self.app.settings)
        self.workers.append(BackgroundWorker(node, concurrency=concurrency).start())

    @precondition(lambda self: self.workers)
    @rule(now=st.booleans())
    def stop_worker(self, now: bool) -> None:
        worker = self.workers.pop(0)
        worker.worker.stop(now=now)
        worker.stop(timeout=60)
        worker.worker.app.close()

    @precondition(lambda self: self.process is None)
    @rule()
    def start_worker_process(self) -> None:
        self.process = start_worker(
            self.app.url, self.data_dir, "--concurrency", "2",
            env={"ROADIE_HEARTBEAT_GRACE": str(GRACE)},
            log=self.data_dir / "process.log")

    @precondition(lambda self: self.process is not None)
    @rule()
    def crash_worker_process(self) -> None:
        """kill -9; then what another node does once heartbeat_grace has passed."""
        kill(self.process)
        pid, self.process = self.process.pid, None
        dead = [n.id for n in self.app.list_nodes() if n.pid == pid]
        with self.app.store.write() as conn:
            conn.execute(models.nodes.update().where(models.nodes.c.id.in_(dead))
                         .values(heartbeat_at=utcnow() - dt.timedelta(seconds=2 * GRACE)))
        self.app.recover_orphans()

    # -- after every step -----------------------------------------------------------------

    @invariant()
    def consistent(self) -> None:
        assert check_invariants(self.app) == []

    @invariant()
    def final_stays_final(self) -> None:
        for task in self.app.list_tasks(limit=None):
            seen = self.final.get(task.id)
            if seen is not None:
                assert task.status is seen, (task.id, seen, task.status, task.status_message)
            elif task.status in FINAL_STATUSES:
                self.final[task.id] = task.status

    def teardown(self) -> None:
        for worker in self.workers:
            worker.stop(timeout=60)
            worker.worker.app.close()
        if self.process is not None:
            kill(self.process)
            self.crashed_nodes_recovered()
        self.app.run_worker(concurrency=2, until_idle=True)  # nothing is stuck
        wait_for(lambda: all(t.completed for t in self.app.list_tasks(limit=None)),
                 timeout=60, message="every task to end")
        assert check_invariants(self.app) == []
        self.app.close()

    def crashed_nodes_recovered(self) -> None:
        with self.app.store.write() as conn:
            conn.execute(models.nodes.update().where(models.nodes.c.stopped_at.is_(None))
                         .values(heartbeat_at=utcnow() - dt.timedelta(seconds=2 * GRACE)))
        self.app.recover_orphans()


@pytest.mark.slow
def test_random_operations_keep_the_invariants(app: roadie.Roadie, tmp_path: Path) -> None:
    examples = int(os.environ.get("ROADIE_FUZZ_EXAMPLES", "5"))
    url = app.url
    app.close()
    run_state_machine_as_test(
        lambda: Fuzz(url, tmp_path / "data"),
        settings=settings(max_examples=examples, stateful_step_count=25, deadline=None,
                          suppress_health_check=list(HealthCheck), database=None),
    )

"""Test helpers for plugin authors, registered as a pytest plugin (``pytest11``).

Fixtures:

- ``roadie_app``: a ``Roadie`` on a fresh SQLite file in ``tmp_path``, with every installed plugin
  (yours too, once ``pip install -e .``-ed) and short intervals so tests run fast.
- ``roadie_recorder``: a ``HookRecorder`` registered on ``roadie_app`` that records every hook
  call in order.

Functions:

- ``run_task(app, executor, context, **add_task_args)``: add a task, run a worker until it ends,
  and return a ``TaskRun`` (the final record, its status attributes, its messages).
- ``wait_for(condition, timeout=...)``: poll a condition with a deadline (never a bare sleep).
- ``check_invariants(app)``: what is wrong with the database's tasks, locks and attempt log
  (an empty list when nothing is).
- ``postgres_test_url()``: the PostgreSQL database of the test run (``ROADIE_TEST_PG_URL``),
  one per worker when pytest-xdist runs the tests in parallel (``pytest -n 2``);
  ``for_xdist_worker(url)`` gives a database URL of your own the same treatment.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from roadie.app import Roadie
from roadie.hookspecs import hookimpl
from roadie.records import TaskRecord
from roadie.status import FINAL_STATUSES
from roadie.worker import Worker, WorkerStats

T = TypeVar("T")

FAST_SETTINGS: dict[str, Any] = {
    "heartbeat_interval": 0.2,
    "heartbeat_grace": 2.0,
    "status_interval": 0.05,
    "cancel_poll_interval": 0.1,
    "sqlite_poll_interval": 0.02,
    "postgres_poll_interval": 0.5,
    "pending_horizon": 10.0,
}


def make_app(url: str, data_dir: Path, **overrides: Any) -> Roadie:
    """A Roadie with test-friendly intervals (``FAST_SETTINGS``) and its schema in place."""
    settings = {**FAST_SETTINGS, **overrides}
    app = Roadie(url, data_dir=data_dir, auto_upgrade=True, **settings)
    app.store  # noqa: B018 - connect and create the schema now
    return app


def wait_for(condition: Callable[[], T], *, timeout: float = 20.0, interval: float = 0.02,
             message: str = "condition") -> T:
    """Call ``condition`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def check_invariants(app: Roadie, *, running_needs_live_node: bool = True) -> list[str]:
    """The broken invariants of ``app``'s database, one sentence each (empty: all hold).

    - a final task is completed, and no isolation lock is held by a final or missing task;
    - the attempt count matches the attempt log: one line per ended attempt, so as many
      lines as attempts, less the one that runs now for a task in progress;
    - a task in progress has a node, alive (heartbeat within ``heartbeat_grace``, not
      stopped) unless ``running_needs_live_node`` is False (a crash not yet recovered).
    """
    from roadie.status import Status

    snapshot = app.store.snapshot()  # one moment: workers may be busy meanwhile
    tasks = {t.id: t for t in snapshot.tasks}
    logged = snapshot.attempt_log_counts
    nodes = {n.id: n for n in snapshot.nodes}
    now = snapshot.at
    grace = app.settings.heartbeat_grace
    problems = []
    for task in tasks.values():
        final = task.status in FINAL_STATUSES
        if final != task.completed:
            problems.append(f"task {task.id} is {task.status.label} with completed="
                            f"{task.completed}")
        running = task.status is Status.IN_PROGRESS
        expected = task.attempts - (1 if running else 0)
        if logged.get(task.id, 0) != expected:
            problems.append(f"task {task.id} ({task.status.label}) has {task.attempts} "
                            f"attempt(s) but {logged.get(task.id, 0)} in the attempt log")
        if running:
            node = nodes.get(task.node or "")
            if node is None:
                problems.append(f"task {task.id} is in progress on unknown node {task.node}")
            elif running_needs_live_node and not node.is_alive(now, grace):
                problems.append(f"task {task.id} is in progress on node {node.name}, which "
                                f"is not alive")
    for key, task_id in snapshot.locks.items():
        holder = tasks.get(task_id)
        if holder is None or holder.status in FINAL_STATUSES:
            what = "a deleted task" if holder is None else f"{holder.status.label} task"
            problems.append(f"lock {key!r} is held by {what} {task_id}")
    for task_id in set(logged) - set(tasks):
        problems.append(f"the attempt log has lines of deleted task {task_id}")
    return problems


@dataclass
class TaskRun:
    """The outcome of ``run_task``."""

    task: TaskRecord
    stats: WorkerStats

    @property
    def status(self) -> dict[str, Any]:
        """The task's final status attributes."""
        return self.task.task_status

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The recent status messages, without their timestamps."""
        return [{k: v for k, v in m.items() if k != "at"} for m in self.task.recent_messages]


def run_task(app: Roadie, executor: str, context: dict[str, Any] | None = None, *,
             concurrency: int = 1, **add_task_args: Any) -> TaskRun:
    """Add one task and run a worker until nothing is left; return its final state."""
    task = app.add_task(executor, context or {}, **add_task_args)
    stats = app.run_worker(concurrency=concurrency, until_idle=True)
    return TaskRun(app.get_task(task.id), stats)


class BackgroundWorker:
    """A worker running in a thread of the test process; stop it with ``stop()``."""

    def __init__(self, app: Roadie, **options: Any) -> None:
        self.worker: Worker = app.worker(handle_signals=False, **options)
        self.stats: WorkerStats | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="roadie-test-worker", daemon=True)

    def _run(self) -> None:
        try:
            self.stats = self.worker.run()
        except BaseException as exc:
            self.error = exc

    def start(self) -> BackgroundWorker:
        """Start the thread."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> WorkerStats | None:
        """Stop claiming, let running tasks finish, and wait for the thread."""
        self.worker.stop()
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.stats

    def __enter__(self) -> BackgroundWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_final(app: Roadie, task_id: int, timeout: float = 30.0) -> TaskRecord:
    """Wait until a task has ended; return its record."""

    def ended() -> TaskRecord | None:
        task = app.get_task(task_id)
        return task if task.status in FINAL_STATUSES else None

    found = wait_for(ended, timeout=timeout, message=f"task {task_id} to end")
    assert found is not None
    return found


@dataclass
class HookCall:
    """One recorded hook call."""

    name: str
    kwargs: dict[str, Any]


@dataclass(eq=False)
class HookRecorder:
    """A plugin that records the hooks fired (names and arguments, in order)."""

    calls: list[HookCall] = field(default_factory=list)

    def names(self, task_id: int | None = None) -> list[str]:
        """The hook names, in order (of one task, if given)."""
        return [c.name for c in self.calls if task_id is None or _task_id(c) == task_id]

    def _record(self, name: str, **kwargs: Any) -> None:
        self.calls.append(HookCall(name, kwargs))

    @hookimpl
    def roadie_task_added(self, app: Roadie, task: TaskRecord) -> None:
        self._record("roadie_task_added", task=task)

    @hookimpl
    def roadie_before_task(self, task: Any) -> None:
        self._record("roadie_before_task", task=task)

    @hookimpl
    def roadie_restore_context(self, task: Any, captured: dict[str, Any]) -> None:
        self._record("roadie_restore_context", task=task, captured=captured)

    @hookimpl(wrapper=True)
    def roadie_execute_task(self, task: Any, executor: Any) -> Iterator[None]:
        self._record("roadie_execute_task", task=task, executor=executor)
        return (yield)

    @hookimpl
    def roadie_status_message(self, task: Any, message: dict[str, Any], status: Any) -> None:
        self._record("roadie_status_message", task=task, message=message)

    @hookimpl
    def roadie_task_finished(self, task: TaskRecord, result: Any) -> None:
        self._record("roadie_task_finished", task=task, result=result)

    @hookimpl
    def roadie_task_failed(self, task: TaskRecord, message: str, error: Any) -> None:
        self._record("roadie_task_failed", task=task, message=message, error=error)

    @hookimpl
    def roadie_task_cancelled(self, task: TaskRecord, message: str) -> None:
        self._record("roadie_task_cancelled", task=task, message=message)

    @hookimpl
    def roadie_task_orphaned(self, task: TaskRecord, node: str, outcome: str) -> None:
        self._record("roadie_task_orphaned", task=task, node=node, outcome=outcome)

    @hookimpl
    def roadie_worker_started(self, worker: Any) -> None:
        self._record("roadie_worker_started", worker=worker)

    @hookimpl
    def roadie_worker_stopping(self, worker: Any) -> None:
        self._record("roadie_worker_stopping", worker=worker)


def _task_id(call: HookCall) -> int | None:
    task = call.kwargs.get("task")
    return getattr(task, "id", None)


@pytest.fixture
def roadie_app(tmp_path: Path) -> Iterator[Roadie]:
    """A Roadie on a fresh SQLite file, with every installed plugin and fast intervals."""
    app = make_app(f"sqlite:///{tmp_path / 'roadie.db'}", tmp_path / "data")
    yield app
    app.close()


@pytest.fixture
def roadie_recorder(roadie_app: Roadie) -> HookRecorder:
    """A HookRecorder registered on ``roadie_app``."""
    recorder = HookRecorder()
    roadie_app.plugins.register(recorder, name="roadie-recorder")
    return recorder


_UPGRADED: set[str] = set()
DEFAULT_TEST_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def for_xdist_worker(url: str) -> str:
    """``url`` with the pytest-xdist worker's id added to its database name (``test`` ->
    ``test_gw1``) while tests run in parallel (``pytest -n N``), so that each worker empties
    and fills a database of its own; ``url`` as it is otherwise, or when it names that
    worker's database already (a worker's subprocesses inherit its environment)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return url
    import sqlalchemy as sa

    parsed = sa.engine.make_url(url)
    name = parsed.database or ""
    if name.endswith(f"_{worker}"):
        return url
    return parsed.set(database=f"{name}_{worker}").render_as_string(hide_password=False)


def postgres_test_url() -> str:
    """The PostgreSQL database the tests use: ``ROADIE_TEST_PG_URL`` (``test`` on
    127.0.0.1:5432 when unset), made per pytest-xdist worker (``for_xdist_worker``) and
    created when that one is missing. An unreachable server is left to the test to report."""
    base = os.environ.get("ROADIE_TEST_PG_URL", DEFAULT_TEST_PG_URL)
    url = for_xdist_worker(base)
    if url != base:
        _create_database(url)
    return url


def _create_database(url: str) -> None:
    """Create the database of ``url`` on its server when it does not exist (quietly nothing
    when the server cannot be reached)."""
    import sqlalchemy as sa

    target = sa.engine.make_url(url)
    try:
        engine = sa.create_engine(target.set(database="postgres"),
                                  isolation_level="AUTOCOMMIT",
                                  connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            found = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                                 {"name": target.database}).scalar()
            if not found:
                conn.execute(sa.text(f'CREATE DATABASE "{target.database}"'))
        engine.dispose()
    except sa.exc.OperationalError:
        pass


def _empty_postgres(url: str) -> None:
    """Empty roadie's tables at ``url``, or skip (fail under CI=true) when unreachable."""
    import sqlalchemy as sa

    from roadie.models import metadata

    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
        with engine.begin() as conn:
            exists = conn.execute(sa.text("select to_regclass('roadie_tasks')")).scalar()
        if exists and url not in _UPGRADED:  # an older schema from an earlier run
            from roadie.store import Store

            store = Store(url)
            try:
                store.upgrade()
            finally:
                store.dispose()
            _UPGRADED.add(url)
        with engine.begin() as conn:
            if exists:
                names = ", ".join(t.name for t in metadata.sorted_tables)
                conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        engine.dispose()
    except sa.exc.OperationalError as exc:
        message = f"PostgreSQL unreachable at {url}: {str(exc).splitlines()[0]}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(message)


@pytest.fixture(params=["sqlite", "postgres"])
def roadie_db_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Roadie]:
    """A Roadie with every installed plugin and fast intervals, once on a fresh SQLite file
    and once on the emptied PostgreSQL database at ``ROADIE_TEST_PG_URL`` (skipped when it is
    unreachable, failing when ``CI=true``)."""
    if request.param == "postgres":
        url = postgres_test_url()
        _empty_postgres(url)
    else:
        url = f"sqlite:///{tmp_path / 'roadie.db'}"
    app = make_app(url, tmp_path / "data")
    yield app
    app.close()

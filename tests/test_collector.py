"""The garbage collector while a worker runs (``Settings.tune_gc``): a worker in the main thread
tunes it and puts it back as it was; a worker in another thread, a process that tuned its own
collector, and ``tune_gc=False`` leave it alone."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
import roadie
from roadie import Status
from roadie.testing import BackgroundWorker, make_app, wait_final
from roadie.worker.collector import GEN0_THRESHOLD, PYTHON_THRESHOLDS

SEEN: list[tuple[tuple[int, int, int], int]] = []  # (thresholds, frozen objects) in execute


class CollectorState(roadie.Executor):
    """Notes the collector's thresholds and frozen objects as the task runs."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        SEEN.append((gc.get_threshold(), gc.get_freeze_count()))
        return roadie.Result.SUCCESS


@pytest.fixture(autouse=True)
def untuned_collector() -> Iterator[None]:
    """Each test starts with Python's collector as a fresh process has it, and leaves it so."""
    assert gc.get_threshold() == PYTHON_THRESHOLDS and gc.get_freeze_count() == 0
    SEEN.clear()
    yield
    gc.set_threshold(*PYTHON_THRESHOLDS)
    gc.unfreeze()


def _run_one(db_url: str, tmp_path: Path, *, in_thread: bool = False,
             **settings: object) -> tuple[tuple[int, int, int], int]:
    """Run one CollectorState task with a worker (in this, the main thread, or in another)
    and return what it saw."""
    app = make_app(db_url, tmp_path / "data", **settings)
    app.plugins.register_executor("tests:collector", CollectorState)
    try:
        task = app.add_task("tests:collector")
        if in_thread:
            with BackgroundWorker(app):
                assert wait_final(app, task.id).status is Status.SUCCESSFUL
        else:
            stats = app.run_worker(until_idle=True)
            assert stats.by_status == {"successful": 1}
    finally:
        app.close()
    assert len(SEEN) == 1
    return SEEN[0]


def test_a_worker_in_the_main_thread_tunes_the_collector_and_puts_it_back(
        db_url: str, tmp_path: Path) -> None:
    thresholds, frozen = _run_one(db_url, tmp_path)
    assert thresholds == (GEN0_THRESHOLD, *PYTHON_THRESHOLDS[1:])
    assert frozen > 0  # what existed as it started is out of the collector's reach
    # as it was once the worker returned
    assert gc.get_threshold() == PYTHON_THRESHOLDS
    assert gc.get_freeze_count() == 0


def test_tune_gc_off_leaves_the_collector_alone(db_url: str, tmp_path: Path) -> None:
    assert _run_one(db_url, tmp_path, tune_gc=False) == (PYTHON_THRESHOLDS, 0)


def test_the_setting_comes_from_the_environment(db_url: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROADIE_TUNE_GC", "off")
    assert _run_one(db_url, tmp_path) == (PYTHON_THRESHOLDS, 0)


def test_a_worker_in_another_thread_leaves_the_collector_alone(
        db_url: str, tmp_path: Path) -> None:
    # (the process is the application's: a web server beside a BackgroundWorker, say)
    assert _run_one(db_url, tmp_path, in_thread=True) == (PYTHON_THRESHOLDS, 0)


def test_a_collector_the_process_tuned_itself_is_left_alone(
        db_url: str, tmp_path: Path) -> None:
    gc.set_threshold(5000, 10, 10)
    assert _run_one(db_url, tmp_path) == ((5000, 10, 10), 0)
    assert gc.get_threshold() == (5000, 10, 10)


def test_a_disabled_collector_stays_disabled(db_url: str, tmp_path: Path) -> None:
    gc.disable()
    try:
        assert _run_one(db_url, tmp_path) == (PYTHON_THRESHOLDS, 0)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_failed_attempt_leaves_nothing_for_the_collector(app: roadie.Roadie) -> None:
    # a failed attempt's traceback holds its frames, and through them its task and context:
    # once its hooks have run, nothing of it may wait in a reference cycle (with the
    # collector off, anything left in one stays visible to gc.get_objects)
    tasks = app.add_tasks([("tests:boom", {}), ("tests:awork", {"fail": True}),
                           ("tests:flaky", {"succeed_on": 2})])
    gc.collect()
    gc.disable()
    try:
        stats = app.run_worker(until_idle=True)
        # (type(), not isinstance: that would set up a lazy proxy, such as Django's admin site)
        left = [o for o in gc.get_objects() if type(o) is roadie.RunningTask]
    finally:
        gc.enable()
    assert stats.by_status == {"failed": 2, "new": 1, "successful": 1}
    assert [app.get_task(t.id).status for t in tasks] == [
        Status.FAILED, Status.FAILED, Status.SUCCESSFUL]
    assert left == []

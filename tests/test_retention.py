"""Retention: ended tasks, their attempts and attachments go once old enough (on demand with
``prune``, or by workers with the ``retention`` setting); waiting and running tasks never."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import roadie
from click.testing import CliRunner
from roadie import Status
from roadie.cli import cli
from roadie.retention import parse_duration, parse_retention
from roadie.testing import BackgroundWorker, make_app, wait_final, wait_for

from tests.conftest import register_test_executors


def ended(app: roadie.Roadie) -> dict[str, int]:
    """The ended tasks left, by status label."""
    counts = app.store.count_tasks()
    return {s.label: n for s, n in counts.items() if s.is_final}


def test_parse_durations_and_retention() -> None:
    assert parse_duration("30d") == dt.timedelta(days=30)
    assert parse_duration("90m") == dt.timedelta(minutes=90)
    assert parse_duration("2.5") == dt.timedelta(seconds=2.5)
    assert parse_retention("") == {}
    assert parse_retention("12h") == dict.fromkeys(
        (Status.FAILED, Status.SUCCESSFUL, Status.CANCELLED), dt.timedelta(hours=12))
    assert parse_retention("successful=7d, failed=1w") == {
        Status.SUCCESSFUL: dt.timedelta(days=7), Status.FAILED: dt.timedelta(weeks=1)}
    with pytest.raises(ValueError, match="'30x' is not a duration"):
        parse_duration("30x")
    with pytest.raises(roadie.ConfigurationError, match="only ended tasks"):
        parse_retention("new=1d")
    with pytest.raises(roadie.ConfigurationError, match="unknown status 'done'"):
        parse_retention("done=1d")


def test_prune_deletes_old_ended_tasks_and_nothing_else(app: roadie.Roadie) -> None:
    ok = [app.add_task("roadie-examples:echo", {"x": i}) for i in range(3)]
    bad = app.add_task("tests:boom", {})
    cancelled = app.add_task("roadie-examples:echo", {"x": 9}, delay=3600)
    app.cancel_task(cancelled.id)
    delayed = app.add_task("roadie-examples:echo", {"x": 10}, delay=3600)
    gpu = app.add_task("roadie-examples:echo", {"x": 11}, tags=["gpu"], after=[ok[0].id])
    app.run_worker(concurrency=2, until_idle=True)
    app.add_attachment(ok[1].id, "report.txt", b"hello")
    assert ended(app) == {"successful": 3, "failed": 1, "cancelled": 1}

    assert app.prune("1h") == 0  # nothing that old
    assert app.prune("0s", statuses=["failed"]) == 1
    assert ended(app) == {"successful": 3, "cancelled": 1}
    with pytest.raises(roadie.TaskNotFound):
        app.get_task(bad.id)
    # ok[0] stays: a task that runs after it still waits (for a gpu node)
    assert app.prune(dt.timedelta(0)) == 3
    assert [t.id for t in app.list_tasks()] == [gpu.id, delayed.id, ok[0].id]
    assert app.store.attempts_of(ok[1].id) == []
    with pytest.raises(roadie.TaskNotFound):
        app.list_attachments(ok[1].id)
    with pytest.raises(ValueError, match="only ended tasks"):
        app.prune("0s", statuses=["new"])


def test_prune_spares_running_tasks(app: roadie.Roadie) -> None:
    spin = app.add_task("tests:spin", {"limit": 30})
    with BackgroundWorker(app, concurrency=1):
        wait_for(lambda: app.get_task(spin.id).status is Status.IN_PROGRESS,
                 message="the task to run")
        assert app.prune("0s") == 0
        app.cancel_task(spin.id)
        assert wait_final(app, spin.id).status is Status.CANCELLED
    assert app.prune("0s") == 1


def test_prune_command(app: roadie.Roadie, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROADIE_DATA_DIR", str(tmp_path / "data"))
    app.add_task("roadie-examples:echo", {})
    app.add_task("tests:boom", {})
    app.run_worker(concurrency=1, until_idle=True)
    runner = CliRunner()
    result = runner.invoke(cli, ["--url", app.url, "prune", "--older-than", "0s",
                                 "--status", "failed"])
    assert result.exit_code == 0, result.output
    assert "1 ended task(s) deleted" in result.output
    assert ended(app) == {"successful": 1}
    result = runner.invoke(cli, ["--url", app.url, "prune", "--older-than", "30x"])
    assert result.exit_code == 2 and "--older-than" in result.output
    assert "'30x' is not a duration" in result.output
    result = runner.invoke(cli, ["--url", app.url, "prune", "--older-than", "1d",
                                 "--status", "in-progress"])
    assert result.exit_code == 2 and "only ended tasks" in result.output


def test_workers_apply_the_retention_setting(db_url: str, tmp_path: Path) -> None:
    app = make_app(db_url, tmp_path / "data", retention="successful=0s",
                   retention_interval=0.1)
    register_test_executors(app)
    try:
        with BackgroundWorker(app, concurrency=2):
            done = [app.add_task("roadie-examples:echo", {"x": i}) for i in range(5)]
            failed = app.add_task("tests:boom", {})
            assert wait_final(app, failed.id).status is Status.FAILED
            wait_for(lambda: ended(app) == {"failed": 1},
                     message="the successful tasks to be deleted")
        assert [t.id for t in app.list_tasks()] == [failed.id]
        assert all(t.id < failed.id for t in done)
    finally:
        app.close()
    with pytest.raises(roadie.ConfigurationError, match="retention='30x'"):
        make_app(db_url, tmp_path / "data", retention="30x").worker()

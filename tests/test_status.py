"""Status messages, translators, live progress from any process, and watching."""

from __future__ import annotations

import re
from pathlib import Path

import roadie
import sqlalchemy as sa
from click.testing import CliRunner
from roadie import Status
from roadie.cli import cli
from roadie.testing import BackgroundWorker, make_app, run_task, wait_final, wait_for

from tests.conftest import register_test_executors
from tests.processes import start_worker, stop


def count_task_updates(app: roadie.Roadie) -> list[str]:
    """Record every statement that writes a running task's state: progress and the end
    (not the claim, not heartbeats)."""
    statements: list[str] = []

    @sa.event.listens_for(app.store.engine, "before_cursor_execute")
    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        text = " ".join(statement.split()).upper()
        heartbeat = re.match(r"UPDATE ROADIE_TASKS SET HEARTBEAT_AT=[^,]*? WHERE", text)
        if text.startswith("WITH ") and " ROWS AS (" in text:  # PostgreSQL's round: ends
            if parameters.get("outcomes", "[]") != "[]":  # (if any) and a claim
                statements.append(statement)
            return
        claim = "ATTEMPTS=(ROADIE_TASKS.ATTEMPTS +" in text or "ATTEMPTS = ATTEMPTS + 1" in text
        claim = claim or text.startswith("UPDATE ROADIE_TASKS SET CLAIMABLE=")  # due tasks
        if "UPDATE ROADIE_TASKS" in text and not heartbeat and not claim:
            statements.append(statement)

    return statements


def test_ten_thousand_updates_are_coalesced(db_url: str, tmp_path: Path) -> None:
    app = make_app(db_url, tmp_path / "data", status_interval=3600)
    register_test_executors(app)
    updates = count_task_updates(app)
    run = run_task(app, "tests:chatty", {"n": 10_000})
    assert run.task.status is Status.SUCCESSFUL
    assert run.status["done"] == 10_000 and run.status["percent"] == 100.0
    assert run.stats.progress_writes == 0  # nothing between the claim and the end...
    assert len(updates) == 1  # ...but the end itself, written once
    app.close()


def test_progress_writes_are_throttled(db_url: str, tmp_path: Path) -> None:
    app = make_app(db_url, tmp_path / "data", status_interval=0.05)
    register_test_executors(app)
    updates = count_task_updates(app)
    run = run_task(app, "roadie-examples:count", {"n": 40, "delay": 0.01})
    assert run.status["done"] == 40
    # 40 messages, but at most one write per task per flush tick, then the end
    assert 0 < run.stats.progress_writes < 40
    assert len(updates) == run.stats.progress_writes + 1
    app.close()


def test_translator_turns_messages_into_attributes(app: roadie.Roadie) -> None:
    run = run_task(app, "tests:translated")
    assert run.status["rows_done"] == 10
    assert run.status["step"] == "write"
    assert run.messages == [{"rows": 5, "step": "read"}, {"rows": 5, "step": "write"}]


def test_generic_progress_derives_percent_rate_and_eta(app: roadie.Roadie) -> None:
    run = run_task(app, "roadie-examples:count", {"n": 4, "delay": 0.01})
    assert run.status["percent"] == 100.0
    assert run.status["eta_seconds"] == 0
    assert run.status["rate"] > 0
    assert run.status["message"] == "counted to 4"


def test_recent_messages_are_bounded(db_url: str, tmp_path: Path) -> None:
    app = make_app(db_url, tmp_path / "data", max_status_messages=5)
    register_test_executors(app)
    run = run_task(app, "tests:chatty", {"n": 100})
    assert [m["done"] for m in run.messages] == [96, 97, 98, 99, 100]
    assert all(m["at"].tzinfo is not None for m in run.task.recent_messages)
    app.close()


def test_a_failed_task_keeps_what_it_last_said(app: roadie.Roadie) -> None:
    task = app.add_task("tests:timed", {})
    app.run_worker(concurrency=1, until_idle=True)
    done = app.get_task(task.id)
    assert done.status is Status.FAILED
    assert done.recent_messages[-1]["message"] == "spinning"


def test_unencodable_status_message_is_a_clear_error(app: roadie.Roadie) -> None:
    class Opaque:
        pass

    class Sends(roadie.Executor):
        def execute(self, task: roadie.RunningTask) -> roadie.Result:
            task.send_status({"thing": Opaque()})
            return roadie.Result.SUCCESS

    app.plugins.register_executor("tests:sends", Sends)
    task = run_task(app, "tests:sends").task
    assert task.status is Status.FAILED
    assert "status message of task" in task.status_message
    assert '["thing"]' in task.status_message


def test_another_process_runs_while_we_read_progress(app: roadie.Roadie, tmp_path: Path) -> None:
    task = app.add_task("roadie-examples:count", {"n": 400, "delay": 0.01})
    worker = start_worker(app.url, tmp_path / "data", "--concurrency", "1",
                          log=tmp_path / "worker.log")
    try:
        seen = wait_for(
            lambda: (lambda t: t if t.status is Status.IN_PROGRESS
                     and 0 < t.task_status.get("done", 0) < 400 else None)(app.get_task(task.id)),
            timeout=30, message="progress written by the worker process",
        )
        assert seen.task_status["total"] == 400
        later = wait_for(lambda: (lambda s: s if s.get("done", 0) > seen.task_status["done"]
                                  else None)(app.get_task_status(task.id)),
                         message="progress to advance")
        assert later["percent"] > 0
        assert wait_final(app, task.id).status is Status.SUCCESSFUL
        assert app.get_task_status(task.id)["done"] == 400
    finally:
        assert stop(worker) == 0, (tmp_path / "worker.log").read_text()


def test_watch_yields_changes_until_done(app: roadie.Roadie) -> None:
    task = app.add_task("roadie-examples:count", {"n": 20, "delay": 0.01})
    with BackgroundWorker(app, concurrency=1):
        snapshots = list(app.watch([task.id], timeout=30))
    assert snapshots[-1].status is Status.SUCCESSFUL
    assert snapshots[0].status in (Status.NEW, Status.IN_PROGRESS)
    statuses = [s.status for s in snapshots]
    assert Status.SUCCESSFUL in statuses
    dones = [s.task_status.get("done", 0) for s in snapshots]
    assert dones == sorted(dones) and dones[-1] == 20


def test_roadie_watch_cli_shows_bars_to_the_end(app: roadie.Roadie, tmp_path: Path,
                                                monkeypatch) -> None:
    monkeypatch.setenv("ROADIE_DATA_DIR", str(tmp_path / "data"))
    task = app.add_task("roadie-examples:count", {"n": 10, "delay": 0.02}, name="watched")
    with BackgroundWorker(app, concurrency=1):
        result = CliRunner().invoke(cli, ["--url", app.url, "watch", str(task.id),
                                          "--timeout", "30"])
    assert result.exit_code == 0, result.output
    assert f"#{task.id} watched" in result.output
    assert "100%" in result.output and "successful" in result.output


def test_demo_runs_example_tasks(db_url: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ROADIE_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(cli, ["--url", db_url, "demo"])
    assert result.exit_code == 0, result.output
    assert "fails on purpose" in result.output
    app = roadie.Roadie(db_url, data_dir=tmp_path / "data")
    statuses = [t.status for t in app.list_tasks()]
    assert statuses.count(Status.FAILED) == 1
    assert statuses.count(Status.SUCCESSFUL) == len(statuses) - 1
    app.close()

"""The command line, through click's runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import roadie
from click.testing import CliRunner
from roadie.cli import cli


@pytest.fixture
def run(app: roadie.Roadie, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ROADIE_DATA_DIR", str(tmp_path / "data"))
    for key, value in {"heartbeat_interval": "0.2", "status_interval": "0.05",
                       "sqlite_poll_interval": "0.02", "pending_horizon": "5"}.items():
        monkeypatch.setenv(f"ROADIE_{key.upper()}", value)
    runner = CliRunner()

    def invoke(*args: str) -> object:
        return runner.invoke(cli, ["--url", app.url, *args], catch_exceptions=False)

    return invoke


def test_url_after_the_subcommand(app: roadie.Roadie, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROADIE_DATA_DIR", str(tmp_path / "data"))
    task = app.add_task("roadie-examples:echo", {}, name="here")
    runner = CliRunner()
    for args in (["db", "upgrade", "--url", app.url], ["list", f"--url={app.url}"],
                 ["show", str(task.id), "--url", app.url]):
        result = runner.invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, (args, result.output)
    assert "here" in result.output
    assert "schema revision" in runner.invoke(cli, ["db", "upgrade", "--url", app.url]).output


def test_submit_list_show(run, app: roadie.Roadie) -> None:
    result = run("submit", "roadie-examples:echo", "--context", '{"who": "cli"}',
                 "--name", "from the cli", "--owner", "carol")
    assert result.exit_code == 0, result.output
    assert "task 1 added (new): roadie-examples:echo" in result.output
    listing = run("list")
    assert "from the cli" in listing.output and "new" in listing.output
    shown = run("show", "1")
    assert "carol" in shown.output and "{'who': 'cli'}" in shown.output


def test_worker_runs_and_show_prints_status(run, app: roadie.Roadie) -> None:
    run("submit", "roadie-examples:count", "--context", '{"n": 3, "delay": 0}')
    result = run("worker", "--until-idle", "--concurrency", "1")
    assert result.exit_code == 0, result.output
    assert "1 task(s) run" in result.output and "successful=1" in result.output
    shown = run("show", "1")
    assert "counted to 3" in shown.output
    assert "'percent': 100.0" in shown.output
    assert "recent status messages" in shown.output


def test_failed_task_shows_traceback(run, app: roadie.Roadie) -> None:
    run("submit", "roadie-examples:fail", "--context", '{"reason": "nope"}')
    run("worker", "--until-idle")
    shown = run("show", "1")
    assert "fail example: nope" in shown.output
    assert "Traceback" in shown.output and "ValueError: nope" in shown.output


def test_unknown_executor_is_one_line_and_nonzero(run) -> None:
    result = run("submit", "roadie-examples:cuont")
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert "error: unknown executor 'roadie-examples:cuont'. Did you mean" in result.output
    assert "Traceback" not in result.output


def test_bad_json_context(run) -> None:
    result = run("submit", "roadie-examples:echo", "--context", "{nope")
    assert result.exit_code == 2
    assert "not valid JSON" in result.output


@pytest.mark.parametrize("verb", ["show", "cancel", "delete", "retry", "attachments"])
def test_missing_id_is_a_clear_error(run, verb: str) -> None:
    result = run(verb, "999")
    assert result.exit_code == 1
    assert "error: task 999 does not exist" in result.output


def test_cancel_and_retry(run, app: roadie.Roadie) -> None:
    run("submit", "roadie-examples:echo")
    assert "task 1 cancelled" in run("cancel", "1").output
    assert app.get_task(1).status is roadie.Status.CANCELLED
    assert "waiting for a worker again" in run("retry", "1").output
    assert app.get_task(1).status is roadie.Status.NEW
    assert "task 1 deleted" in run("delete", "1").output


def test_plugins_lists_executors_hooks_and_builtins(run) -> None:
    result = run("plugins")
    assert result.exit_code == 0
    assert "roadie-examples" in result.output
    assert "count" in result.output and "roadie_register_types" in result.output
    assert "roadie.builtins.translator" in result.output


def test_db_upgrade(run, app: roadie.Roadie) -> None:
    result = run("db", "upgrade")
    assert result.exit_code == 0
    assert f"schema revision {app.store.schema_revision()[1]}" in result.output


def test_list_filters_by_status(run, app: roadie.Roadie) -> None:
    app.add_task("roadie-examples:echo", {}, name="first")
    second = app.add_task("roadie-examples:echo", {}, name="second")
    app.cancel_task(second.id)
    result = run("list", "--status", "cancelled")
    assert "second" in result.output and "first" not in result.output
    bad = run("list", "--status", "running")
    assert bad.exit_code == 1 and "use one of" in bad.output


def test_submit_json_roundtrip_into_context(run, app: roadie.Roadie) -> None:
    payload = {"rows": [1, 2, 3], "nested": {"a": None}}
    run("submit", "roadie-examples:echo", "--context", json.dumps(payload))
    assert app.get_task(1).context == payload

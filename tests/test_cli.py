"""The command line, through click's runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import roadie
from click.testing import CliRunner
from roadie.cli import cli
from roadie.testing import BackgroundWorker, wait_for


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


# -- executors -----------------------------------------------------------------------------


def row_of(output: str, executor: str) -> list[str]:
    """The cells of a table row whose first cell is ``executor``."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip("│┃ ").split("│")]
        if cells and cells[0] == executor:
            return cells
    raise AssertionError(f"no row for {executor} in:\n{output}")


def test_executors_lists_limits_and_counts(run, app: roadie.Roadie) -> None:
    app.run_worker(concurrency=1, until_idle=True)  # declares the limits for the CLI
    for _ in range(5):
        app.add_task("tests:limited", {})
    app.add_task("tests:rated", {})
    result = run("executors")  # a process without the tests plugin: the declared limits
    assert result.exit_code == 0, result.output
    assert row_of(result.output, "tests:limited") == ["tests:limited", "-", "5", "2", "0",
                                                      "max_running 3"]
    assert row_of(result.output, "tests:rated") == ["tests:rated", "-", "1", "0", "0",
                                                    "rate 5 per second"]
    assert row_of(result.output, "roadie-examples:count")[-1] == "-"


def test_executors_pause_and_resume(run, app: roadie.Roadie) -> None:
    app.add_task("tests:sleep", {})
    paused = run("executors", "pause", "tests:sleep")
    assert paused.exit_code == 0, paused.output
    assert paused.output.count("\n") == 1
    assert paused.output.startswith("executor tests:sleep: paused since ")
    assert "UTC by cli; 1 waiting, 0 held, 0 running" in paused.output
    state = {s.executor: s for s in app.list_executors()}["tests:sleep"]
    assert state.paused and state.paused_by == "cli"
    cells = row_of(run("executors").output, "tests:sleep")
    assert cells[1].startswith("paused since") and cells[1].endswith("by cli")
    resumed = run("executors", "resume", "tests:sleep")
    assert resumed.exit_code == 0
    assert resumed.output == "executor tests:sleep: not paused; 1 waiting, 0 held, 0 running\n"
    assert not {s.executor: s for s in app.list_executors()}["tests:sleep"].paused
    assert row_of(run("executors").output, "tests:sleep")[1] == "-"


@pytest.mark.parametrize("verb", ["pause", "resume"])
def test_executors_unknown_name_is_a_one_line_error(run, verb: str) -> None:
    result = run("executors", verb, "tests:nope")
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert result.output.startswith("error: no executor 'tests:nope'")
    assert "known: " in result.output and "Traceback" not in result.output


def test_nodes_check_exits_0_only_while_the_named_node_heartbeats(
        run, app: roadie.Roadie, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = run("nodes", "--check", "probe-me")
    assert missing.exit_code == 1 and "no node named 'probe-me'" in missing.output
    with BackgroundWorker(app, concurrency=1, name="probe-me"):
        wait_for(lambda: app.list_nodes(name="probe-me"), message="the node")
        alive = run("nodes", "--check", "probe-me")
        assert alive.exit_code == 0, alive.output
        assert "node 'probe-me' is alive" in alive.output
        both = run("nodes", "--check", "probe-me", "--check", "other")
        assert both.exit_code == 1 and "no node named 'other'" in both.output
    stopped = run("nodes", "--check", "probe-me")
    assert stopped.exit_code == 1 and "node 'probe-me' stopped at" in stopped.output
    # a worker that no longer heartbeats (its interval is an hour): once its heartbeat is
    # older than heartbeat_grace the node is dead, although it never stopped
    quiet = roadie.Roadie(app.url, settings=app.settings, heartbeat_interval=3600)
    monkeypatch.setenv("ROADIE_HEARTBEAT_GRACE", "0.5")
    try:
        with BackgroundWorker(quiet, concurrency=1, name="probe-me"):
            wait_for(lambda: app.list_nodes(name="probe-me"), message="the new node")
            dead = wait_for(lambda: (r := run("nodes", "--check", "probe-me")).exit_code and r,
                            message="the check to fail")
            assert "node 'probe-me' is dead: its last heartbeat is" in dead.output
            assert "over heartbeat_grace (0.5 s)" in dead.output
    finally:
        quiet.close()


def test_worker_name_from_the_environment(run, app: roadie.Roadie,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROADIE_NODE_NAME", "pod-7")
    assert run("worker", "--until-idle").exit_code == 0
    [node] = app.list_nodes(include_stopped=True, name="pod-7")
    assert node.stopped_at is not None


def test_every_command_of_the_cli_modules_is_reachable(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Each command a module of ``roadie/cli`` defines is a command of ``roadie`` or a
    subcommand of one (the root group imports a command's module when the command is looked
    up), and ``roadie --help`` lists every built-in one."""
    import importlib
    import pkgutil

    import click
    import roadie.cli
    from roadie.cli import BUILTIN_COMMANDS

    monkeypatch.setenv("ROADIE_DATA_DIR", str(tmp_path / "data"))
    ctx = click.Context(cli)
    reachable: list[click.Command] = []
    pending = [cli.get_command(ctx, name) for name in cli.list_commands(ctx)]
    while pending:
        command = pending.pop()
        assert command is not None
        reachable.append(command)
        if isinstance(command, click.Group):
            pending.extend(command.commands.values())
    for module in pkgutil.iter_modules(roadie.cli.__path__):
        for name, value in vars(importlib.import_module(f"roadie.cli.{module.name}")).items():
            if isinstance(value, click.Command):
                assert any(value is command for command in reachable), (module.name, name)
    output = CliRunner().invoke(cli, ["--help"]).output
    assert all(f"\n  {name} " in output for name in BUILTIN_COMMANDS)

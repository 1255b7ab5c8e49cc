"""The worker's log lines: ``roadie worker --log-format json`` writes one JSON object per line,
with the task fields; off a terminal the text format is one plain line per event."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import roadie
from roadie.jsonlog import JsonFormatter, LineFormatter

from tests.processes import worker_env


def test_worker_json_logs_name_task_executor_attempt_status_and_node(
        app: roadie.Roadie, tmp_path: Path) -> None:
    ok = app.add_task("roadie-examples:noop")
    failed = app.add_task("roadie-examples:fail", {})
    waited = app.add_task("roadie-examples:wait", {"seconds": 0.01})
    run = subprocess.run(
        [sys.executable, "-m", "roadie", "--url", app.url, "worker", "--until-idle",
         "--name", "json-node", "--log-format", "json"],
        env=worker_env(tmp_path / "data"), capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stderr.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message", "node"} <= set(line) for line in lines)
    about = {(line.get("task_id"), line.get("status")): line for line in lines}
    for task, status in ((ok, "successful"), (failed, "failed"), (waited, "successful")):
        started = about[(task.id, "started")]
        ended = about[(task.id, status)]
        for line in (started, ended):
            assert line["executor"] == task.executor
            assert line["attempt"] == 1
            assert line["node"] == "json-node"


def test_worker_text_logs_are_one_line_per_event_off_a_terminal(
        app: roadie.Roadie, tmp_path: Path) -> None:
    reason = "first line of a long reason " + "x" * 300 + "\nsecond line"
    failed = app.add_task("roadie-examples:fail", {"reason": reason})
    run = subprocess.run(  # stderr is a pipe, not a terminal
        [sys.executable, "-m", "roadie", "--url", app.url, "worker", "--until-idle"],
        env=worker_env(tmp_path / "data"), capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 [A-Z]+ roadie")
    assert lines and all(stamp.match(line) for line in lines), run.stderr
    ended = [line for line in lines if f"task {failed.id} failed" in line]
    assert len(ended) == 1
    assert "x" * 300 + "\\nsecond line" in ended[0]
    assert f"task_id={failed.id}" in ended[0] and "status=failed" in ended[0]


TEXT_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")
JSON_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00")


def run_worker_cli(app: roadie.Roadie, tmp_path: Path, *options: str) -> tuple[
        list[str], dt.datetime, dt.datetime]:
    """The lines a ``roadie worker --until-idle`` wrote on standard error (a pipe), and the
    times just before and after it ran."""
    before = dt.datetime.now(dt.timezone.utc)
    run = subprocess.run(
        [sys.executable, "-m", "roadie", "--url", app.url, "worker", "--until-idle", *options],
        env=worker_env(tmp_path / "data"), capture_output=True, text=True, timeout=120,
    )
    after = dt.datetime.now(dt.timezone.utc)
    assert run.returncode == 0, run.stderr
    return [line for line in run.stderr.splitlines() if line.strip()], before, after


def assert_between(when: dt.datetime, before: dt.datetime, after: dt.datetime) -> None:
    """``when`` (to the millisecond or finer) is within the worker's run."""
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= when <= after


def test_worker_text_lines_of_a_task_say_time_level_logger_message_and_fields(
        app: roadie.Roadie, tmp_path: Path) -> None:
    task = app.add_task("roadie-examples:noop")
    lines, before, after = run_worker_cli(app, tmp_path)
    fields = f"task_id={task.id} executor=roadie-examples:noop attempt=1"
    expected = [
        f"INFO roadie.events: task {task.id} started: roadie-examples:noop attempt 1 "
        f"[{fields} status=started]",
        # noop's result has no message
        f"INFO roadie.events: task {task.id} successful:  [{fields} status=successful]",
    ]
    about = [line for line in lines if f"task_id={task.id} " in line]
    assert [line.split(" ", 1)[1] for line in about] == expected, lines
    for line in about:
        stamp = line.split(" ", 1)[0]
        assert TEXT_TIME.fullmatch(stamp), line
        assert_between(dt.datetime.fromisoformat(stamp), before, after)


def test_worker_json_lines_of_a_task_keep_their_fields_in_order(
        app: roadie.Roadie, tmp_path: Path) -> None:
    task = app.add_task("roadie-examples:noop")
    lines, before, after = run_worker_cli(app, tmp_path, "--name", "json-node",
                                          "--log-format", "json")
    about = [parsed for parsed in map(json.loads, lines) if parsed.get("task_id") == task.id]
    expected = [
        (f"task {task.id} started: roadie-examples:noop attempt 1", "started"),
        (f"task {task.id} successful: ", "successful"),  # noop's result has no message
    ]
    assert len(about) == len(expected), lines
    for line, (text, status) in zip(about, expected, strict=True):
        assert list(line) == ["time", "level", "logger", "message", "task_id", "executor",
                              "attempt", "status", "node"]
        assert line == {"time": line["time"], "level": "info", "logger": "roadie.events",
                        "message": text, "task_id": task.id,
                        "executor": "roadie-examples:noop", "attempt": 1, "status": status,
                        "node": "json-node"}
        assert JSON_TIME.fullmatch(line["time"]), line
        assert_between(dt.datetime.fromisoformat(line["time"]), before, after)


def failed_record(created: float, **changes: Any) -> logging.LogRecord:
    """A ``roadie.events`` record of a failed task, made at ``created``."""
    return logging.makeLogRecord({
        "name": "roadie.events", "levelno": logging.WARNING, "levelname": "WARNING",
        "msg": "task %s failed: %s", "args": (7, "fail example: boom"), "created": created,
        "task_id": 7, "executor": "roadie-examples:fail", "attempt": 1, "status": "failed",
        **changes})


INSTANT = dt.datetime(2026, 11, 30, 19, 41, 2, tzinfo=dt.timezone.utc).timestamp()


def test_formatters_write_a_record_as_before() -> None:
    record = failed_record(INSTANT + 0.1175)
    assert LineFormatter().format(record) == (
        "2026-11-30T19:41:02.117+00:00 WARNING roadie.events: task 7 failed: fail example: "
        "boom [task_id=7 executor=roadie-examples:fail attempt=1 status=failed]")
    assert JsonFormatter("node-1").format(record) == (
        '{"time": "2026-11-30T19:41:02.117500+00:00", "level": "warning", "logger": '
        '"roadie.events", "message": "task 7 failed: fail example: boom", "task_id": 7, '
        '"executor": "roadie-examples:fail", "attempt": 1, "status": "failed", '
        '"node": "node-1"}')
    on_the_second = failed_record(INSTANT, node="other", executor=Path("a path"))
    assert json.loads(JsonFormatter("node-1").format(on_the_second))["time"] == (
        "2026-11-30T19:41:02+00:00")  # isoformat() leaves out a fraction of 0
    assert json.loads(JsonFormatter("node-1").format(on_the_second))["node"] == "other"
    assert json.loads(JsonFormatter().format(on_the_second))["executor"] == "a path"


@pytest.mark.parametrize("offset", [0.0, 0.0000004, 0.0000005, 0.0005, 0.0009999, 0.001,
                                    0.5, 0.9994999, 0.9995, 0.9999994, 0.9999995, 0.9999999])
def test_formatters_write_the_time_as_datetime_does(offset: float) -> None:
    text, json_format = LineFormatter(), JsonFormatter()
    # one formatter over times that go forwards, across seconds, and back (to 1970, and before)
    for created in [INSTANT + offset, INSTANT + 1 + offset, INSTANT + offset,
                    *(INSTANT + offset + step * 0.0371 for step in range(60)), offset, -1 - offset]:
        when = dt.datetime.fromtimestamp(created, dt.timezone.utc)
        record = failed_record(created)
        assert text.format(record).split(" ", 1)[0] == when.isoformat(timespec="milliseconds")
        assert json.loads(json_format.format(record))["time"] == when.isoformat()

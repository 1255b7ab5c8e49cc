"""``roadie worker --log-format json``: one JSON object per line, with the task fields."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import roadie

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

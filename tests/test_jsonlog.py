"""``roadie worker --log-format json``: one JSON object per line, with the task fields."""

from __future__ import annotations

import json
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

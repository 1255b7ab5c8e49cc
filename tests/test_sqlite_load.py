"""SQLite under many processes: 4 worker processes and 2 clients that add, cancel, resume and
delete at the same time. No "database is locked" (nor any other error) reaches a user, no task
is lost, and every task ends final."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

import pytest
import roadie
from roadie.testing import check_invariants, wait_for

from tests.processes import start_worker, stop, worker_env


def start_clients(url: str, data_dir: Path, seconds: float, count: int,
                  out: Path) -> list[tuple[subprocess.Popen[bytes], Path]]:
    """``count`` churn processes (tests/churn.py), each writing its report to ``out``."""
    clients = []
    for seed in range(count):
        report = out / f"client-{seed}.json"
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.churn", url, str(seconds), str(seed), str(report)],
            env=worker_env(data_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        clients.append((process, report))
    return clients


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_four_workers_and_two_clients_share_one_sqlite_file(app: roadie.Roadie,
                                                            tmp_path: Path) -> None:
    workers = [start_worker(app.url, tmp_path / "data", "--concurrency", "2",
                            log=tmp_path / f"worker-{i}.log") for i in range(4)]
    try:
        clients = start_clients(app.url, tmp_path / "data", 15, 2, tmp_path)
        reports = []
        for process, report in clients:
            _, err = process.communicate(timeout=120)
            assert process.returncode == 0, err.decode()
            reports.append(json.loads(report.read_text()))
        # SQLite reuses the id of the newest task once it is deleted: count adds and deletes
        added = collections.Counter(i for r in reports for i in r["added"])
        deleted = collections.Counter(i for r in reports for i in r["deleted"])
        wait_for(lambda: all(t.completed for t in app.list_tasks(limit=None)), timeout=120,
                 message="every task to end")
    finally:
        codes = [stop(w) for w in workers]
    logs = "".join((tmp_path / f"worker-{i}.log").read_text() for i in range(4))
    assert codes == [0, 0, 0, 0], logs
    assert [e for r in reports for e in r["errors"] + r["unavailable"]] == []
    assert "locked" not in logs and "Traceback" not in logs
    done = {op: sum(r["counts"].get(op, 0) for r in reports) for op in ("add", "cancel",
                                                                          "delete")}
    assert all(done.values()), reports
    stored = {t.id for t in app.list_tasks(limit=None)}
    assert all(added[i] - deleted[i] in (0, 1) for i in added)
    expected = {i for i in added if added[i] - deleted[i] == 1}
    assert stored == expected  # nothing lost, nothing left of a deleted task
    assert len(added) > 20
    assert check_invariants(app) == []

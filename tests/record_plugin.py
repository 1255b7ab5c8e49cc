"""A throwaway plugin whose executors record every run in a side table (for process tests)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

DIST = "roadie-recorded"
MODULE = "recorded_plugin"

SOURCE = '''
import os
import time

import sqlalchemy as sa

import roadie

_engines = {}


def _engine(url):
    if url not in _engines:
        _engines[url] = sa.create_engine(url, connect_args={"timeout": 30}
                                         if url.startswith("sqlite") else {})
    return _engines[url]


def record(task, phase, started):
    url = task.context["runs_url"]
    with _engine(url).begin() as conn:
        if url.startswith("postgresql"):  # the side table needs no durability
            conn.execute(sa.text("SET LOCAL synchronous_commit = off"))
        conn.execute(sa.text(
            "INSERT INTO test_runs (task_id, attempt, pid, phase, started, ended, note) "
            "VALUES (:t, :a, :p, :ph, :s, :e, :n)"),
            {"t": task.id, "a": task.attempt, "p": os.getpid(), "ph": phase, "s": started,
             "e": time.time(), "n": str((task.last_checkpoint or {}).get("i", 0))})


class Record(roadie.Executor):
    def execute(self, task):
        started = time.time()
        record(task, "start", started)
        deadline = time.monotonic() + float(task.context.get("seconds", 0.01))
        while time.monotonic() < deadline:
            task.raise_if_cancelled()
            time.sleep(0.005)
        record(task, "end", started)
        return roadie.Result.success("recorded")


class SerialRecord(Record):
    isolation = roadie.Isolation.CLASS


class GroupRecord(Record):
    isolation = roadie.Isolation.GROUP


class LimitedRecord(Record):
    max_running = 3
    crash_policy = roadie.CrashPolicy.RETRY


class RatedRecord(Record):
    rate_limit = roadie.Rate(50, per=1)


class RetryRecord(Record):
    crash_policy = roadie.CrashPolicy.RETRY
    max_crash_attempts = 3


class Resumable(roadie.Executor):
    crash_policy = roadie.CrashPolicy.RESUME
    max_crash_attempts = 5

    def execute(self, task):
        started = time.time()
        record(task, "start", started)
        n = int(task.context.get("n", 50))
        i = (task.last_checkpoint or {}).get("i", 0)
        while i < n:
            time.sleep(float(task.context.get("step", 0.02)))
            i += 1
            task.checkpoint({"i": i})
            task.progress(i, n)
        record(task, "end", started)
        resumed = (task.last_checkpoint or {}).get("i", 0)
        return roadie.Result.success(f"reached {n}, resumed from {resumed}")


class Noop(roadie.Executor):
    def execute(self, task):
        return roadie.Result.success("nothing to do")


class Fenced(roadie.Executor):
    """Every step makes each kind of write an attempt can make, signed with its pid."""

    crash_policy = roadie.CrashPolicy.RETRY

    def execute(self, task):
        pid = os.getpid()
        n = int(task.context.get("n", 50))
        for i in range(1, n + 1):
            time.sleep(float(task.context.get("step", 0.05)))
            task.attach("who.txt", f"{pid} {task.attempt} {i}".encode())
            if i % 10 == 0 and task.context.get("subtasks", True):
                task.add_subtask("roadie-recorded:noop", {"by": pid})
            task.checkpoint({"pid": pid, "attempt": task.attempt, "i": i})
            task.progress(i, n, message=f"pid {pid}")
        return roadie.Result.success(f"done by pid {pid} in attempt {task.attempt}")
'''

EXECUTORS = {
    "record": f"{MODULE}:Record",
    "serial": f"{MODULE}:SerialRecord",
    "grouped": f"{MODULE}:GroupRecord",
    "retry": f"{MODULE}:RetryRecord",
    "resumable": f"{MODULE}:Resumable",
    "noop": f"{MODULE}:Noop",
    "limited": f"{MODULE}:LimitedRecord",
    "rated": f"{MODULE}:RatedRecord",
    "fenced": f"{MODULE}:Fenced",
}


def create_runs_table(url: str) -> None:
    """Create (or empty) the side table ``test_runs`` in the database at ``url``."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS test_runs"))
        key = "SERIAL PRIMARY KEY" if url.startswith("postgresql") else \
            "INTEGER PRIMARY KEY AUTOINCREMENT"
        conn.execute(sa.text(
            f"CREATE TABLE test_runs (id {key}, task_id INTEGER, attempt INTEGER, pid INTEGER, "
            f"phase VARCHAR(10), started FLOAT, ended FLOAT, note VARCHAR(50))"))
    engine.dispose()


def runs(url: str, phase: str | None = None) -> list[dict[str, Any]]:
    """The recorded runs, in insertion order."""
    engine = sa.create_engine(url)
    query = "SELECT task_id, attempt, pid, phase, started, ended, note FROM test_runs"
    if phase:
        query += f" WHERE phase = '{phase}'"
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.text(query + " ORDER BY id"))]
    engine.dispose()
    return rows

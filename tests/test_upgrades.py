"""Upgrades with data, and version skew between a database's schema and a process's code.

For the schema of each earlier release (each migration before the head), a database is made
at that revision with Alembic and filled with SQL written for that revision's columns, with
the values that release wrote (its codec's bytes, its way of parking and blocking tasks):
tasks in every status it knows, subtasks and dependencies, schedules, attempts, attachments,
nodes and locks. Then `roadie db upgrade` runs (the command, in a process of its own), and
everything must read back the same through the API, waiting tasks run, ended ones can be
resumed, and the tasks of a node that is gone are recovered.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import roadie
import sqlalchemy as sa
from click.testing import CliRunner
from roadie import Status, models
from roadie.cli import cli
from roadie.store import Store, utcnow
from roadie.testing import (
    FAST_SETTINGS,
    BackgroundWorker,
    check_invariants,
    make_app,
    wait_final,
    wait_for,
)

HEAD = models.SCHEMA_HEAD
# every revision before the head, oldest first: the schemas that earlier releases left
RELEASES = ("0001", "i17_schedules", "i16_task_trees", "i12_claimable", "i12_sweep_indexes",
            "i27_key_heads", "i29_flow_control", "i31_partial_indexes")
# the columns of roadie_tasks each revision added (the rest of the releases added none)
TASK_COLUMNS = {
    "0001": ("name", "owner", "task_group", "executor", "plugins", "context", "captured",
             "status", "status_message", "completed", "result", "error", "attempts",
             "isolation_key", "priority", "run_after", "tags", "timeout", "node",
             "heartbeat_at", "cancel_requested_at", "cancel_requested_by", "checkpoint",
             "task_status", "messages", "created_at", "started_at", "finished_at",
             "updated_at"),
    "i17_schedules": ("schedule", "scheduled_for"),
    "i16_task_trees": ("parent_id", "fan_in", "has_dependents"),
    "i12_claimable": ("claimable",),
    "i29_flow_control": ("unique_key", "key_limit"),
}
# the bytes roadie 0.1.0's first codec wrote: typed values (here a zoned and a UTC datetime)
# in the registry's extension type 42, which later releases replaced by a compact form
OLD_CONTEXT = bytes.fromhex(
    "84a377686fa5776f726c64a47768656ec7312a93af726f616469653a6461746574696d650199cd07ea0b1409"
    "1e00000092a47a6f6e65ad4575726f70652f4265726c696ea573697a65739201cb4004000000000000a37261"
    "77c4020001")
OLD_MESSAGES = bytes.fromhex(
    "9182a26174c72a2a93af726f616469653a6461746574696d650199cd07ea0b14080001ce0003d0900093a566"
    "6978656400c0a76d657373616765ad636f706965642031206f662034")
PLUGINS = {"roadie-examples": "0.1.0"}
BLOCKED = dt.datetime(9999, 1, 1, tzinfo=dt.timezone.utc)  # run_after of a blocked dependent
DEAD, GONE = "0123456789abcdef", "fedcba9876543210"  # nodes: one stopped heartbeating, one left
REPORT = b"line 1\nline 2\n"


def pack(value: Any) -> bytes:
    """Plain values as every release encoded them (msgpack, nothing typed)."""
    packed: bytes = msgpack.packb(value)
    return packed


def test_every_earlier_schema_is_covered() -> None:
    """A new migration makes the one before it an earlier release: it must join RELEASES
    (with what its release wrote) so that upgrades from it are tested too."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(Path(models.__file__).parent / "migrations"))
    chain = [s.revision for s in ScriptDirectory.from_config(config).walk_revisions()][::-1]
    assert chain[-1] == HEAD
    assert tuple(chain[:-1]) == RELEASES


# -- a database at an earlier revision, filled as that release did --------------------------


def at_revision(url: str, revision: str) -> None:
    """Make the database at ``url`` hold roadie's schema at ``revision`` and nothing else."""
    from alembic import command

    store = Store(url)
    try:
        if store.is_postgres:
            drop_roadie_tables(store)
        with store.write() as conn:
            command.upgrade(store._alembic_config(conn), revision)
    finally:
        store.dispose()


def drop_roadie_tables(store: Store) -> None:
    with store.write() as conn:
        for table in sa.inspect(conn).get_table_names():
            if table.startswith("roadie_"):
                conn.execute(sa.text(f'DROP TABLE "{table}" CASCADE'))


@pytest.fixture
def pg_restored(db_url: str) -> Iterator[str]:
    """``db_url``; a PostgreSQL database is left at the head schema, empty, for other tests."""
    yield db_url
    if db_url.startswith("postgresql"):
        store = Store(db_url)
        try:
            drop_roadie_tables(store)
            store.upgrade()
        finally:
            store.dispose()


class OldRelease:
    """Writes rows as the release whose schema is at ``revision`` did: the columns of that
    revision only, and its values (times as its dialect stored them, JSON as text)."""

    def __init__(self, conn: sa.Connection, revision: str) -> None:
        self.conn = conn
        self.revision = revision
        self.sqlite = conn.dialect.name == "sqlite"
        self.columns = tuple(c for r, cols in TASK_COLUMNS.items() if self.has(r) for c in cols)

    def has(self, revision: str) -> bool:
        """Whether this release's schema includes ``revision``."""
        return RELEASES.index(revision) <= RELEASES.index(self.revision)

    def value(self, value: Any) -> Any:
        if isinstance(value, dt.datetime):  # SQLite: naive UTC text, as SQLAlchemy wrote it
            utc = value.astimezone(dt.timezone.utc)
            return utc.strftime("%Y-%m-%d %H:%M:%S.%f") if self.sqlite else utc
        if isinstance(value, (dict, list)):
            return json.dumps(value)
        return value

    def insert(self, table: str, row: dict[str, Any], *, returning: bool = False) -> Any:
        names = ", ".join(row)
        params = ", ".join(f":{name}" for name in row)
        sql = f"INSERT INTO {table} ({names}) VALUES ({params})"
        if returning:
            sql += " RETURNING id"
        result = self.conn.execute(sa.text(sql), {k: self.value(v) for k, v in row.items()})
        return result.scalar_one() if returning else None

    def task(self, **values: Any) -> int:
        """Insert a task with this release's columns (``values`` may use no later one)."""
        unknown = set(values) - set(self.columns)
        assert not unknown, f"{self.revision} has no column {unknown}"
        defaults = {"status": int(Status.NEW), "owner": None, "task_group": None,
                    "captured": None, "status_message": "",
                    "completed": False, "result": None, "error": None, "attempts": 0,
                    "isolation_key": None, "priority": 0, "tags": "", "timeout": None,
                    "node": None, "heartbeat_at": None, "cancel_requested_at": None,
                    "cancel_requested_by": None, "checkpoint": None, "task_status": None,
                    "messages": None, "started_at": None, "finished_at": None,
                    "schedule": None, "scheduled_for": None, "parent_id": None,
                    "fan_in": False, "has_dependents": False, "claimable": True}
        row = {c: values.get(c, defaults.get(c)) for c in self.columns}
        task_id: int = self.insert("roadie_tasks", row, returning=True)
        return task_id


def fill(conn: sa.Connection, revision: str, now: dt.datetime, data_dir: Path
         ) -> dict[str, Any]:
    """Tasks in every status ``revision`` knows, with what goes with them; returns the
    ids by name and what each should read back as after the upgrade."""
    old = OldRelease(conn, revision)
    t0 = now - dt.timedelta(hours=2)  # when the old release added most of them
    at = [t0 + dt.timedelta(minutes=i, microseconds=i * 1001) for i in range(30)]
    lost = now - dt.timedelta(hours=1)  # the last heartbeat of the dead node
    for node, name, stopped in ((DEAD, "old-host:41", None), (GONE, "old-host:40", at[2])):
        old.insert("roadie_nodes", {
            "id": node, "name": name, "host": "old-host", "pid": int(name[-2:]),
            "concurrency": 2, "plugins": PLUGINS,
            "executors": {"roadie-examples:echo": "not-isolated",
                          "roadie-examples:serial": "class"},
            "tags": [], "started_at": at[0], "heartbeat_at": lost if stopped is None else
            stopped, "stopped_at": stopped})
    tasks: dict[str, dict[str, Any]] = {}

    def task(name: str, **values: Any) -> int:
        values.setdefault("executor", "roadie-examples:echo")
        values.setdefault("plugins", PLUGINS)
        values.setdefault("context", pack({}))
        values.setdefault("run_after", values.get("created_at", t0))
        values.setdefault("created_at", t0)
        values.setdefault("updated_at", values["created_at"])
        tasks[name] = {"name": name, **values}
        tasks[name]["id"] = old.task(name=name, **values)
        return int(tasks[name]["id"])

    claimable = {"claimable": False} if old.has("i12_claimable") else {}
    task("waiting", owner="alice", task_group="site-1", priority=5, context=OLD_CONTEXT,
         captured=pack({"roadie-examples.locale": "fr"}), created_at=at[3])
    task("delayed", tags="gpu,linux", created_at=at[4],
         run_after=now + dt.timedelta(days=1), **claimable)
    # a serial task that ran on the dead node, holding its isolation lock, and one queued
    # behind it (parked: the claim's index leaves it out while the lock is held)
    serial = {"executor": "roadie-examples:serial", "isolation_key": "roadie-examples:serial",
              "context": pack({"seconds": 0})}
    orphan = task("orphan", status=int(Status.IN_PROGRESS), node=DEAD, heartbeat_at=lost,
                  attempts=1, created_at=at[5], started_at=at[6], updated_at=lost,
                  task_status=pack({"done": 1, "total": 4, "percent": 25.0}),
                  messages=OLD_MESSAGES, **serial)
    old.insert("roadie_locks", {"key": "roadie-examples:serial", "task_id": orphan,
                                "node": DEAD, "acquired_at": at[6]})
    task("queued", status=int(Status.QUEUED), created_at=at[7], **serial, **claimable)
    # a task whose crash policy resumes it from its last checkpoint
    task("checkpointed", executor="roadie-examples:count", status=int(Status.IN_PROGRESS),
         context=pack({"n": 12, "delay": 0}), checkpoint=pack({"i": 10}), node=DEAD,
         heartbeat_at=lost, attempts=1, created_at=at[8], started_at=at[9], updated_at=lost)
    attempts: dict[str, list[dict[str, Any]]] = {}

    def ended(name: str, status: Status, message: str, *, error: str | None = None,
              attempts_made: int = 1, **values: Any) -> int:
        created = at[10 + 3 * len(attempts)]
        started, finished = created + dt.timedelta(seconds=1), created + dt.timedelta(seconds=2)
        task_id = task(name, status=int(status), status_message=message,
                       completed=status.is_final, error=error, attempts=attempts_made,
                       node=GONE if attempts_made and status.is_final else None,
                       created_at=created,
                       started_at=started if attempts_made else None,
                       finished_at=finished if status.is_final else None,
                       updated_at=finished, **values)
        attempts[name] = [{"task_id": task_id, "attempt": 1, "node": GONE,
                           "status": int(status), "message": message, "error": error,
                           "started_at": started, "finished_at": finished}][:attempts_made]
        for row in attempts[name]:
            old.insert("roadie_attempts", row)
        return task_id

    ended("failed", Status.FAILED, "ValueError: no such customer",
          error="Traceback (most recent call last):\nValueError: no such customer",
          context=pack({"customer": 42}))
    succeeded = ended("succeeded", Status.SUCCESSFUL, "reported 2 lines",
                      result=pack({"lines": 2}), messages=OLD_MESSAGES,
                      task_status=pack({"done": 2, "total": 2, "percent": 100.0}))
    old.insert("roadie_attachments", {
        "task_id": succeeded, "name": "report.txt", "size": len(REPORT),
        "checksum": "sha256:" + hashlib.sha256(REPORT).hexdigest(),
        "media_type": "text/plain", "created_at": at[15]})
    folder = data_dir / "attachments" / str(succeeded)
    folder.mkdir(parents=True)
    (folder / "report.txt").write_bytes(REPORT)
    ended("cancelled", Status.CANCELLED, "cancelled by bob", attempts_made=0,
          cancel_requested_by="bob", cancel_requested_at=at[16])
    if old.has("i17_schedules"):
        slot = (now - dt.timedelta(days=1)).replace(hour=3, minute=0, second=0, microsecond=0)
        nightly = ended("nightly", Status.SUCCESSFUL, "{}", schedule="nightly",
                        scheduled_for=slot)
        rule = {"executor": "roadie-examples:echo", "origin": "api", "timezone": "UTC",
                "catch_up": "latest", "jitter": 0.0, "plugins": PLUGINS, "context": pack({}),
                "captured": None, "isolation_key": None, "priority": 0, "tags": "",
                "timeout": None, "owner": None, "task_group": None, "note": "",
                "created_at": at[1], "updated_at": at[20]}
        old.insert("roadie_schedules", {
            **rule, "name": "nightly", "cron": "0 3 * * *", "every": None, "overlap": True,
            "paused": False, "task_name": "nightly", "next_at": slot + dt.timedelta(days=2),
            "version": 3, "last_slot": slot, "last_task_id": nightly, "last_fired_by": GONE})
        old.insert("roadie_schedules", {
            **rule, "name": "hourly", "cron": None, "every": 3600.0, "overlap": False,
            "paused": True, "task_name": "hourly", "next_at": None, "version": 2,
            "last_slot": None, "last_task_id": None, "last_fired_by": None})
    if old.has("i16_task_trees"):
        # a parent waiting (no thread, no node) for its two subtasks, one of them done, and a
        # task added with after=[the other one], blocked until it succeeds
        parent = ended("parent", Status.WAITING, "waiting for 2 subtasks",
                       executor="roadie-examples:split", context=pack({"parts": 2}),
                       fan_in=True)
        ended("part 0", Status.SUCCESSFUL, "", executor="roadie-examples:part",
              context=pack({"value": 0, "fail": False, "seconds": 0.0}), result=pack(0),
              parent_id=parent)
        part = task("part 1", executor="roadie-examples:part", created_at=at[25],
                    context=pack({"value": 1, "fail": False, "seconds": 0.0}),
                    parent_id=parent, has_dependents=True)
        after = task("after part 1", created_at=at[26], run_after=BLOCKED,
                     status_message=f"waiting for tasks {part}", **claimable)
        old.insert("roadie_dependencies", {"task_id": after, "after_id": part})
    return {"tasks": tasks, "attempts": attempts}


def upgrade_with_the_cli(url: str, tmp_path: Path) -> None:
    """``roadie db upgrade``, as an operator runs it."""
    env = {**os.environ, "ROADIE_DATA_DIR": str(tmp_path / "cli")}
    done = subprocess.run([sys.executable, "-m", "roadie", "--url", url, "db", "upgrade"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert f"is at schema revision {HEAD}" in done.stdout


# -- what reads back -----------------------------------------------------------------------

DECODED = {"context": "context", "result": "result", "checkpoint": "checkpoint",
           "task_status": "task_status", "messages": "recent_messages",
           "captured": "captured"}
EMPTY = {"context": {}, "task_status": {}, "messages": [], "captured": {}}
FIELDS = {"task_group": "group"}


def expected_record(stored: dict[str, Any]) -> dict[str, Any]:
    """What the API should give for a task stored with ``stored``."""
    record: dict[str, Any] = {}
    for column, value in stored.items():
        if column in DECODED:
            decoded = roadie.TypeRegistry().decode(value) if value is not None else \
                EMPTY.get(column)
            record[DECODED[column]] = decoded
        elif column == "status":
            record["status"] = Status(value)
        elif column == "tags":
            record["tags"] = frozenset(t for t in value.split(",") if t)
        elif column in ("has_dependents", "claimable"):
            continue  # not part of what the API promises
        else:
            record[FIELDS.get(column, column)] = value
    for name, default in {"owner": None, "group": None, "status": Status.NEW,
                          "status_message": "", "completed": False, "attempts": 0,
                          "error": None, "node": None, "result": None, "checkpoint": None,
                          "task_status": {}, "recent_messages": [], "captured": {},
                          "schedule": None, "scheduled_for": None, "parent_id": None,
                          "fan_in": False, "unique_key": None, "timeout": None,
                          "heartbeat_at": None, "started_at": None, "finished_at": None,
                          "cancel_requested_at": None, "cancel_requested_by": None,
                          "priority": 0, "tags": frozenset()}.items():
        record.setdefault(name, default)
    return record


def read_back(record: roadie.TaskRecord, names: list[str]) -> dict[str, Any]:
    values = {name: getattr(record, name) for name in names}
    values["plugins"] = dict(record.plugins)
    return values


def check_reads_back_the_same(app: roadie.Roadie, filled: dict[str, Any]) -> None:
    tasks = filled["tasks"]
    assert {t.id for t in app.list_tasks()} == {t["id"] for t in tasks.values()}
    for name, stored in tasks.items():
        expected = expected_record(stored)
        assert read_back(app.get_task(stored["id"]), list(expected)) == expected, name
        assert app.attempts(stored["id"]) == [
            roadie.AttemptRecord(a["task_id"], a["attempt"], a["node"], Status(a["status"]),
                                 a["message"], a["error"], a["started_at"], a["finished_at"])
            for a in filled["attempts"].get(name, [])], name
    context = app.get_task(tasks["waiting"]["id"]).context
    assert context["when"] == dt.datetime(2026, 11, 20, 8, 30, tzinfo=dt.timezone.utc)
    assert context["when"].utcoffset() == dt.timedelta(hours=1)  # Europe/Berlin, kept
    assert context["raw"] == b"\x00\x01" and context["sizes"] == [1, 2.5]
    assert app.get_task_status(tasks["orphan"]["id"])["percent"] == 25.0
    reasons = {name: app.waiting_reason(app.get_task(stored["id"]))
               for name, stored in tasks.items()}
    assert reasons["queued"] == (f"queued: task {tasks['orphan']['id']} holds isolation key "
                                 f"'roadie-examples:serial'")  # the lock came through
    assert reasons["delayed"] is not None and reasons["delayed"].startswith(
        "waiting: runs after")
    assert app.get_task(tasks["orphan"]["id"]).recent_messages[0]["at"] == dt.datetime(
        2026, 11, 20, 8, 0, 1, 250000, tzinfo=dt.timezone.utc)
    succeeded = tasks["succeeded"]["id"]
    [attachment] = app.list_attachments(succeeded)
    assert (attachment.name, attachment.size, attachment.media_type) == (
        "report.txt", len(REPORT), "text/plain")
    with app.open_attachment(succeeded, "report.txt") as stream:
        assert stream.read() == REPORT
    nodes = {n.id: n for n in app.list_nodes(include_stopped=True)}
    assert set(nodes) == {DEAD, GONE} and nodes[GONE].stopped_at is not None
    assert dict(nodes[DEAD].executors)["roadie-examples:serial"] == "class"
    if "nightly" in tasks:
        schedules = {s.name: s for s in app.list_schedules()}
        assert set(schedules) == {"nightly", "hourly"}
        nightly, hourly = schedules["nightly"], schedules["hourly"]
        assert (nightly.cron, nightly.timezone, nightly.paused, nightly.last_task_id) == (
            "0 3 * * *", "UTC", False, tasks["nightly"]["id"])
        assert nightly.last_slot == tasks["nightly"]["scheduled_for"]
        assert (hourly.every, hourly.paused, hourly.overlap) == (
            dt.timedelta(hours=1), True, False)
        [made] = app.list_tasks(schedule="nightly")
        assert made.id == tasks["nightly"]["id"]
    if "parent" in tasks:
        parent = tasks["parent"]["id"]
        assert {t.name for t in app.list_tasks(parent_id=parent)} == {"part 0", "part 1"}
        assert [t.id for t in app.list_tasks(status=Status.WAITING)] == [parent]
        assert reasons["parent"] == "waiting for its subtasks to end"
        assert reasons["after part 1"] == f"waiting for tasks {tasks['part 1']['id']}"
    assert check_invariants(app, running_needs_live_node=False) == []


# -- the test ------------------------------------------------------------------------------


@pytest.mark.parametrize("revision", RELEASES)
def test_an_earlier_schema_with_data_upgrades(
        revision: str, pg_restored: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    url, data_dir = pg_restored, tmp_path / "data"
    at_revision(url, revision)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            filled = fill(conn, revision, utcnow(), data_dir)
    finally:
        engine.dispose()
    upgrade_with_the_cli(url, tmp_path)
    tasks = {name: stored["id"] for name, stored in filled["tasks"].items()}
    app = roadie.Roadie(url, data_dir=data_dir, auto_upgrade=False, **FAST_SETTINGS)
    try:
        check_reads_back_the_same(app, filled)
        with caplog.at_level(logging.WARNING, logger="roadie"), \
                BackgroundWorker(app, concurrency=2):
            run_what_waits(app, tasks)
            resume_what_ended(app, tasks, filled)
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
        assert check_invariants(app) == []
        delayed = app.get_task(tasks["delayed"])
        assert (delayed.status, delayed.attempts) == (Status.NEW, 0)
    finally:
        app.close()


def run_what_waits(app: roadie.Roadie, tasks: dict[str, int]) -> None:
    """The worker recovers the dead node's tasks, then runs every waiting task."""
    orphan = wait_final(app, tasks["orphan"])
    assert orphan.status is Status.FAILED and "stopped responding" in orphan.status_message
    lost = app.attempts(tasks["orphan"])
    assert [(a.attempt, a.node, a.status) for a in lost] == [(1, DEAD, Status.FAILED)]
    assert wait_final(app, tasks["queued"]).status is Status.SUCCESSFUL
    checkpointed = wait_final(app, tasks["checkpointed"])  # resumed at 10, counted to 12
    assert (checkpointed.status, checkpointed.result, checkpointed.attempts) == (
        Status.SUCCESSFUL, 12, 2)
    assert app.get_task_status(tasks["checkpointed"])["done"] == 12
    assert [a.status for a in app.attempts(tasks["checkpointed"])] == [
        Status.FAILED, Status.SUCCESSFUL]
    waiting = wait_final(app, tasks["waiting"])
    assert waiting.status is Status.SUCCESSFUL and waiting.result == waiting.context
    if "parent" in tasks:
        parent = wait_final(app, tasks["parent"])
        assert (parent.status, parent.status_message, parent.result) == (
            Status.SUCCESSFUL, "sum of 2 parts: 1", 1)
        part, after = wait_final(app, tasks["part 1"]), wait_final(app, tasks["after part 1"])
        assert after.status is Status.SUCCESSFUL and part.status is Status.SUCCESSFUL
        assert after.started_at is not None and part.finished_at is not None
        assert after.started_at >= part.finished_at


def resume_what_ended(app: roadie.Roadie, tasks: dict[str, int], filled: dict[str, Any]
                      ) -> None:
    """Failed and cancelled tasks, old or recovered just now, run again when resumed."""
    for name in ("failed", "cancelled", "orphan"):
        before = app.get_task(tasks[name])
        app.resume_task(tasks[name])
        again = wait_final(app, tasks[name])
        assert (again.status, again.attempts) == (Status.SUCCESSFUL, before.attempts + 1), name
        assert [a.attempt for a in app.attempts(tasks[name])] == list(
            range(1, again.attempts + 1)), name
    first = app.attempts(tasks["failed"])[0]
    assert (first.status, first.message) == (Status.FAILED, "ValueError: no such customer")


# -- version skew --------------------------------------------------------------------------

FUTURE = "i99_from_a_newer_roadie"


def pretend_a_newer_roadie_upgraded(url: str) -> None:
    """What a newer release's migration does: a column this code does not know, and a
    revision it has never heard of."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE roadie_tasks ADD COLUMN newer_column INTEGER"))
            conn.execute(sa.text(f"UPDATE {models.VERSION_TABLE} SET version_num = :v"),
                         {"v": FUTURE})
    finally:
        engine.dispose()


def newer_message(url: str) -> str:
    return (f"has roadie schema {FUTURE}, newer than this roadie's {HEAD} "
            f"(roadie {roadie.__version__}): upgrade roadie on this machine")


def run_cli(url: str, tmp_path: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--url", url, *args],
                              env={"ROADIE_DATA_DIR": str(tmp_path / "cli")})


def test_a_newer_schema_is_refused_naming_both_revisions(
        pg_restored: str, tmp_path: Path) -> None:
    url = pg_restored
    make_app(url, tmp_path / "data").close()
    pretend_a_newer_roadie_upgraded(url)
    for auto_upgrade in (None, True, False):  # SQLite upgrades itself by default: not this
        with pytest.raises(roadie.SchemaNewerError) as refused:
            roadie.Roadie(url, auto_upgrade=auto_upgrade).list_tasks()
        assert newer_message(url) in str(refused.value)
        assert (refused.value.revision, refused.value.head) == (FUTURE, HEAD)
        assert isinstance(refused.value, roadie.SchemaMismatchError)
        assert isinstance(refused.value, roadie.DatabaseError)
    for command in (["db", "upgrade"], ["worker", "--until-idle"], ["list"]):
        result = run_cli(url, tmp_path, *command)
        assert result.exit_code == 1, command
        assert result.output.startswith("error: database ") and newer_message(url) in \
            result.output, command
    store = Store(url)
    try:
        assert store.schema_revision() == (FUTURE, HEAD)  # not downgraded, not touched
    finally:
        store.dispose()


def test_an_older_schema_is_refused_naming_both_revisions(
        pg_restored: str, tmp_path: Path) -> None:
    url = pg_restored
    at_revision(url, "i27_key_heads")
    older = (f"has roadie schema i27_key_heads, older than this roadie's {HEAD} "
             f"(roadie {roadie.__version__}): run `roadie db upgrade`")
    with pytest.raises(roadie.SchemaOutdatedError, match=re.escape(older)) as refused:
        roadie.Roadie(url, auto_upgrade=False).list_tasks()
    assert (refused.value.revision, refused.value.head) == ("i27_key_heads", HEAD)
    if url.startswith("postgresql"):  # (SQLite upgrades itself by default)
        result = run_cli(url, tmp_path, "worker", "--until-idle")
        assert result.exit_code == 1 and older in result.output
    assert run_cli(url, tmp_path, "db", "upgrade").exit_code == 0
    assert roadie.Roadie(url, auto_upgrade=False).list_tasks() == []


@contextlib.contextmanager
def worker_running(app: roadie.Roadie) -> Iterator[tuple[BackgroundWorker, roadie.TaskRecord]]:
    """A worker in a thread, running a task of about half a second; stopped at the end
    whatever happened (the app is closed if the test failed)."""
    running = app.add_task("roadie-examples:count", {"n": 10, "delay": 0.05})
    worker = BackgroundWorker(app, concurrency=2).start()
    try:
        wait_for(lambda: app.get_task(running.id).status is Status.IN_PROGRESS)
        yield worker, running
    except BaseException:
        worker.worker.stop(now=True)
        app.close()
        raise


def test_a_worker_stops_when_its_database_is_upgraded_under_it(
        pg_restored: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The worker notices at its next heartbeat (or at its next statement the new schema
    refuses), stops claiming, lets its running task finish and write its outcome, and
    ends with the error; nothing is logged as a SQL error."""
    url = pg_restored
    app = make_app(url, tmp_path / "data")
    with worker_running(app) as (worker, running), \
            caplog.at_level(logging.WARNING, logger="roadie"):
        pretend_a_newer_roadie_upgraded(url)
        error = wait_for(lambda: worker.error, timeout=30, message="the worker to stop")
    try:
        assert isinstance(error, roadie.SchemaNewerError) and newer_message(url) in str(error)
        stopped = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert newer_message(url) in stopped[0] and "stops claiming" in stopped[0]
        assert not [m for m in stopped if "refused a statement" in m or "SQL" in m]
        assert all(r.exc_info is None for r in caplog.records)
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:  # (this code cannot read a newer schema's rows)
                row = conn.execute(sa.text("SELECT status, status_message FROM roadie_tasks "
                                           "WHERE id = :id"), {"id": running.id}).one()
        finally:
            engine.dispose()
        assert (row.status, row.status_message) == (int(Status.SUCCESSFUL), "counted to 10")
    finally:
        app.close()


def test_a_worker_stops_when_its_database_is_downgraded_under_it(
        pg_restored: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from alembic import command

    url = pg_restored
    app = make_app(url, tmp_path / "data")
    with worker_running(app) as (worker, running), \
            caplog.at_level(logging.WARNING, logger="roadie"):
        store = Store(url)
        try:
            with store.write() as conn:
                command.downgrade(store._alembic_config(conn), "i27_key_heads")
        finally:
            store.dispose()
        error = wait_for(lambda: worker.error, timeout=30, message="the worker to stop")
    try:
        assert isinstance(error, roadie.SchemaOutdatedError)
        assert "i27_key_heads, older than this roadie's" in str(error)
        assert all(r.exc_info is None for r in caplog.records)
        app.upgrade_schema()
        finished = app.get_task(running.id)
        assert (finished.status, finished.status_message) == (
            Status.SUCCESSFUL, "counted to 10")
        assert check_invariants(app) == []
    finally:
        app.close()

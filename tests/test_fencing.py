"""Fencing: every write of an attempt carries its token (node, attempt number); once the task
is taken over the database refuses them, so a worker that wakes from a pause changes nothing."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import roadie
import sqlalchemy as sa
from roadie import Status
from roadie.attachments import store_attachment
from roadie.errors import TakenOver
from roadie.records import AttachmentInfo
from roadie.running import RunningTask
from roadie.store import Claimable, Fence, NewTask, Outcome, utcnow
from roadie.testing import wait_final, wait_for

from tests.processes import start_worker, stop


def claim_one(app: roadie.Roadie, node: str) -> Any:
    can = Claimable(executors=["tests:sleep"], isolated={}, plugins=app.plugins.versions(),
                    tag_keys=[""])
    (record,) = app.store.claim(node, can, 1)
    return record


def test_every_write_of_a_stale_attempt_is_refused(app: roadie.Roadie) -> None:
    """Even when the same node claims the task again: the attempt number tells them apart."""
    task = app.add_task("tests:sleep", {"seconds": 0})
    first = claim_one(app, "node-a")
    assert app.store.take_over_orphan(first, Status.NEW, "node-a stopped responding")
    second = claim_one(app, "node-a")
    assert (first.attempts, second.attempts) == (1, 2)
    stale, current = Fence(task.id, "node-a", 1), Fence(task.id, "node-a", 2)
    store = app.store

    cancelled, lost = store.save_progress("node-a", {task.id: (None, None, b"stale")},
                                          {task.id: 1})
    assert lost == {task.id} and not cancelled
    assert store.heartbeat("node-a", {task.id: 1}) == {task.id}
    info = AttachmentInfo(task.id, "a.txt", 1, "sha256:x", "text/plain", utcnow())
    with pytest.raises(TakenOver, match=rf"task {task.id}: attempt 1 on node node-a was taken"):
        store.add_attachment(info, stale)
    sub = NewTask(executor="tests:sleep", plugins={}, context=b"\x80")
    with pytest.raises(TakenOver):
        store.insert_tasks([sub], parent=stale)
    outcome = Outcome(task.id, Status.SUCCESSFUL, "stale", attempt=1)
    assert store.settle("node-a", [(outcome, False)], None, 0).finished == []
    again = Outcome(task.id, Status.NEW, "stale retry", attempt=1)
    assert store.settle("node-a", [(again, False)], None, 0).finished == []

    now = app.get_task(task.id)
    assert (now.status, now.attempts, now.checkpoint_bytes) == (Status.IN_PROGRESS, 2, None)
    assert app.list_attachments(task.id) == [] and app.list_tasks(parent_id=task.id) == []

    # the current attempt writes freely
    assert store.save_progress("node-a", {task.id: (None, None, b"ok")}, {task.id: 2}) \
        == (set(), set())
    assert store.heartbeat("node-a", {task.id: 2}) == set()
    store.add_attachment(info, current)
    assert len(store.insert_tasks([sub], parent=current)) == 1
    done = Outcome(task.id, Status.SUCCESSFUL, "current", attempt=2)
    assert [r.id for r in store.settle("node-a", [(done, False)], None, 0).finished] == [task.id]
    assert [(a.attempt, a.status) for a in app.attempts(task.id)] == [
        (1, Status.FAILED), (2, Status.SUCCESSFUL)]


def test_a_stale_attempt_cannot_replace_newer_attachment_bytes(app: roadie.Roadie) -> None:
    """A worker paused while it uploads (its bytes read, its row not yet written) wakes after
    another attempt took the task over and attached the same name: the newer bytes stay, and
    the stale upload leaves no file behind."""
    task = app.add_task("tests:sleep", {"seconds": 0})
    first = claim_one(app, "node-a")
    stale, current = Fence(task.id, "node-a", 1), Fence(task.id, "node-b", 2)

    class TakenOverWhileReading(io.BytesIO):
        """The stale attempt's upload: at its end, the task is taken over and the new
        attempt attaches its own report."""

        def read(self, size: int | None = -1) -> bytes:
            chunk = super().read(size)
            if not chunk and app.get_task(task.id).attempts == 1:
                assert app.store.take_over_orphan(first, Status.NEW, "node-a stopped")
                assert claim_one(app, "node-b").attempts == 2
                store_attachment(app, task.id, "who.txt", b"attempt 2", fence=current)
            return chunk

    with pytest.raises(TakenOver):
        store_attachment(app, task.id, "who.txt", TakenOverWhileReading(b"attempt 1"),
                         fence=stale)
    with app.open_attachment(task.id, "who.txt") as f:
        assert f.read() == b"attempt 2"
    [info] = app.list_attachments(task.id)
    assert info.size == len(b"attempt 2")
    folder = Path(app.settings.data_dir) / "attachments" / str(task.id)
    assert sorted(p.name for p in folder.iterdir()) == ["who.txt"]


def pause_outside_a_write(process: subprocess.Popen[bytes], url: str) -> None:
    """SIGSTOP ``process`` at a moment it holds no lock. (A process paused inside a write
    transaction stops every writer of a SQLite file until it wakes; on PostgreSQL the server
    ends its session, but only after idle_in_transaction_session_timeout.)"""
    while True:
        process.send_signal(signal.SIGSTOP)
        if url.startswith("sqlite"):
            probe = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=0,
                                    isolation_level=None)
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.execute("ROLLBACK")
                return
            except sqlite3.OperationalError:
                pass
            finally:
                probe.close()
        else:  # no row lock of its left behind (the server would end it only after 60 s)
            engine = sa.create_engine(url)
            try:
                with engine.begin() as conn:
                    conn.execute(sa.text("SET LOCAL lock_timeout = '100ms'"))
                    conn.execute(sa.text("SELECT id FROM roadie_tasks FOR UPDATE"))
                return
            except sa.exc.OperationalError:
                pass
            finally:
                engine.dispose()
        process.send_signal(signal.SIGCONT)
        time.sleep(0.01)  # let it finish that write, then pause it again


def node_named(app: roadie.Roadie, name: str) -> str:
    return next(n.id for n in app.list_nodes(include_stopped=True) if n.name == name)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")


@pytest.mark.slow
@pytest.mark.parametrize("wake, hosts", [("while-second-runs", False),
                                         ("after-second-finished", False),
                                         ("while-second-runs", True)],
                         ids=["wake-while-second-runs", "wake-after-second-finished",
                              "wake-while-second-runs-in-a-host"])
def test_a_paused_worker_changes_nothing_after_a_takeover(
        app: roadie.Roadie, recorded: dict, tmp_path: Path, wake: str, hosts: bool) -> None:
    """SIGSTOP a worker mid-task past heartbeat_grace; a second worker takes the task over;
    SIGCONT the first while the second runs it, or after it finished. The outcome comes from
    the second only, and the first counts and logs its refused writes."""
    client = roadie.Roadie(app.url, settings=app.settings)
    site = [recorded["site"]]
    # (hosts do not add subtasks)
    task = client.add_task("roadie-recorded:fenced", {"n": 60, "step": 0.05,
                                                      "subtasks": not hosts})
    w1_log, w2_log = tmp_path / "w1.log", tmp_path / "w2.log"
    extra = ["--out-of-process"] if hosts else []
    # A host stops its task by itself once its worker is silent for heartbeat_grace (its
    # lease). The first worker's own grace is long, so that its host still runs the stale
    # attempt when the worker wakes (the second worker's, 2 s, decides the takeover).
    env = {"ROADIE_HEARTBEAT_GRACE": "120"} if hosts else {}
    first = start_worker(client.url, tmp_path / "data", "--concurrency", "1", "--name", "w1",
                         *extra, pythonpath=site, log=w1_log, env=env)
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: (client.get_task(task.id).task_status.get("done") or 0) >= 5,
                 timeout=60, message="the first attempt to make progress")
        pause_outside_a_write(first, client.url)
        paused_at = client.get_task(task.id)
        assert paused_at.node == node_named(client, "w1") and paused_at.attempts == 1
        second = start_worker(client.url, tmp_path / "data", "--concurrency", "1", "--name",
                              "w2", pythonpath=site, log=w2_log)
        wait_for(lambda: client.get_task(task.id).attempts == 2
                 and (client.get_task(task.id).task_status.get("done") or 0) >= 3, timeout=60,
                 message="the second worker to take the task over and make progress")
        if wake == "after-second-finished":
            wait_final(client, task.id, timeout=60)
            before = client.get_task(task.id)
        first.send_signal(signal.SIGCONT)
        wait_for(lambda: "refused" in w1_log.read_text(), timeout=30,
                 message="the first worker to log a refused write")
        done = wait_final(client, task.id, timeout=60)
        if wake == "after-second-finished":
            assert client.get_task(task.id).updated_at == before.updated_at
        if hosts:
            killed = [line for line in w1_log.read_text().splitlines()
                      if "killing its host process" in line]
            assert killed, w1_log.read_text()
            host_pid = int(killed[0].rsplit(" ", 1)[1])
            wait_for(lambda: not alive(host_pid), message="the stale host to be killed")
        # the first worker goes on working, and still runs the subtasks it may claim
        assert first.poll() is None
        wait_for(lambda: all(t.completed for t in client.list_tasks(parent_id=task.id)),
                 timeout=60, message="the subtasks to end")
    finally:
        first.send_signal(signal.SIGCONT)
        codes = [stop(first)] + ([stop(second)] if second is not None else [])
    assert codes == [0, 0], w1_log.read_text() + w2_log.read_text()
    second_pid = second.pid
    assert done.status is Status.SUCCESSFUL
    assert done.status_message == f"done by pid {second_pid} in attempt 2"
    assert done.attempts == 2 and done.node == node_named(client, "w2")
    assert done.checkpoint == {"pid": second_pid, "attempt": 2, "i": 60}
    assert done.task_status.get("message") == f"pid {second_pid}"
    with client.open_attachment(task.id, "who.txt") as f:
        assert f.read().decode() == f"{second_pid} 2 60"
    attempts = client.attempts(task.id)
    assert [(a.attempt, a.status) for a in attempts] == [(1, Status.FAILED),
                                                          (2, Status.SUCCESSFUL)]
    assert "stopped responding" in attempts[0].message
    assert "refused" in w1_log.read_text()
    client.close()


def test_a_progress_write_says_which_tasks_have_a_cancel_request(app: roadie.Roadie) -> None:
    """``save_progress`` writes many tasks at once (one statement on PostgreSQL): each only
    while its attempt is the node's, and it names those with a cancel request."""
    from roadie.store import Claimable

    tasks = app.add_tasks([("tests:sleep", {}) for _ in range(3)])
    can = Claimable(executors=["tests:sleep"], isolated={}, plugins={"tests": "0"},
                    tag_keys=[""])
    claimed = app.store.settle("node-a", [], can, 3).claimed
    assert [t.id for t in claimed] == [t.id for t in tasks]
    app.cancel_task(tasks[1].id, by="test")
    first, second, third = (t.id for t in tasks)
    cancelled, lost = app.store.save_progress(
        "node-a", {first: (b"\x80", None, None), second: (None, b"\x90", b"cp"),
                   third: (None, None, None)}, {first: 1, second: 1, third: 2})
    assert (cancelled, lost) == ({second}, {third})
    assert app.get_task(first).status_bytes == b"\x80"
    written = app.get_task(second)
    assert (written.messages_bytes, written.checkpoint_bytes) == (b"\x90", b"cp")


def test_a_refused_write_of_live_state_stops_only_the_attempt_it_was_for(
        app: roadie.Roadie, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker sends an attempt's live state; meanwhile that attempt ends with a retry and
    this worker claims the task again. The database refuses the old attempt's write, and the
    new attempt runs on (it was cancelled as 'taken over by another node', seen in CI)."""
    task = app.add_task("tests:sleep", {"seconds": 0})
    worker = app.worker(concurrency=1, handle_signals=False)
    old = RunningTask(app, claim_one(app, worker.id), sink=worker._progress)
    old.started = time.monotonic() - 60  # (not a young attempt: its state is written now)
    worker.running[task.id] = old
    old.progress(1, 2)
    save, claimed_again = app.store.save_progress, []

    def retried_meanwhile(*args: Any, **kwargs: Any) -> Any:
        retry = Outcome(task.id, Status.NEW, "retrying", attempt=1)
        app.store.settle(worker.id, [(retry, False)], None, 0)
        new = RunningTask(app, claim_one(app, worker.id), sink=worker._progress)
        worker.running[task.id] = new
        claimed_again.append(new)
        return save(*args, **kwargs)

    monkeypatch.setattr(app.store, "save_progress", retried_meanwhile)
    worker.flush_progress()
    (new,) = claimed_again
    assert new.attempt == 2 and not new.cancelled and not new.taken_over
    assert worker.stats.refused_writes == 0
    assert app.get_task(task.id).task_status == {}  # the old attempt's state was not written

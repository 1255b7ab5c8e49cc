"""Executors in host processes: same API across the boundary, faults contained, hard limits."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import roadie
from roadie.testing import make_app, wait_for

from tests import host_plugin

pytestmark = pytest.mark.slow


@pytest.fixture
def hosty(make_plugin: object, db_url: str, tmp_path: Path) -> roadie.Roadie:
    make_plugin(host_plugin.DIST, {f"{host_plugin.MODULE}.py": host_plugin.SOURCE},  # type: ignore[operator]
                host_plugin.EXECUTORS, hooks=host_plugin.MODULE)
    app = make_app(db_url, tmp_path / "data", cancel_grace=1.0)
    yield app
    app.close()


def run_in_thread(app: roadie.Roadie, **options: object) -> tuple[object, threading.Thread]:
    worker = app.worker(concurrency=2, handle_signals=False, **options)  # type: ignore[arg-type]
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return worker, thread


def finished(app: roadie.Roadie, task_id: int) -> roadie.TaskRecord | None:
    record = app.get_task(task_id)
    return record if record.status.is_final else None


def test_same_api_in_a_warm_host(hosty: roadie.Roadie) -> None:
    from hosty_plugin import Point

    first = hosty.add_task("hosty:where", {"point": Point(1, 2)})
    second = hosty.add_task("hosty:where", {})
    steps = hosty.add_task("hosty:steps", {})
    retrying = hosty.add_task("hosty:retrying", {})
    hosty.run_worker(concurrency=1, until_idle=True)
    one, two = hosty.get_task(first.id), hosty.get_task(second.id)
    assert one.status == roadie.Status.SUCCESSFUL, one.status_message
    pid = int(one.status_message.split()[1])
    assert pid != os.getpid()
    assert one.status_message == two.status_message  # the same warm host ran both
    assert (one.result.x, one.result.y) == (2, 3)
    assert one.task_status["done"] == 1
    record = hosty.get_task(steps.id)
    assert record.status == roadie.Status.SUCCESSFUL, record.status_message
    assert record.status_message == "resumed at 3"
    assert record.attempts == 2
    with hosty.open_attachment(steps.id, "report.txt") as f:
        assert f.read() == b"from step 3: [0, 1, 4, 9]"
    again = hosty.get_task(retrying.id)
    assert again.status == roadie.Status.SUCCESSFUL and again.attempts == 2


def test_a_crashing_host_fails_only_its_task(hosty: roadie.Roadie) -> None:
    crash = hosty.add_task("hosty:abort", {})
    retried = hosty.add_task("hosty:abort-once", {})
    later = [hosty.add_task("hosty:noop", {}) for _ in range(3)]
    hosty.run_worker(concurrency=2, until_idle=True)
    record = hosty.get_task(retried.id)
    assert (record.status, record.attempts) == (roadie.Status.SUCCESSFUL, 2)
    assert record.status_message == "checkpoint None"
    assert "exit code 3" in hosty.attempts(retried.id)[0].message
    record = hosty.get_task(crash.id)
    assert record.status == roadie.Status.FAILED
    assert "host process died (killed by signal SIGABRT)" in record.status_message
    for task in later:
        assert hosty.get_task(task.id).status == roadie.Status.SUCCESSFUL


def test_hard_timeout_and_hard_cancel(hosty: roadie.Roadie) -> None:
    stuck = hosty.add_task("hosty:sleep", {}, timeout=0.5)
    cancelled = hosty.add_task("hosty:stuck", {})
    polite = hosty.add_task("hosty:polite", {})
    worker, thread = run_in_thread(hosty)
    try:
        # past its last safe point in the host (a cancel that comes while the host is still
        # starting stops the task before it runs, with nothing to kill)
        wait_for(lambda: hosty.get_task_status(cancelled.id).get("done") == 1)
        hosty.cancel_task(cancelled.id)
        record = wait_for(lambda: finished(hosty, stuck.id))
        assert record.status == roadie.Status.FAILED
        assert "timed out after 0.5 s" in record.status_message
        record = wait_for(lambda: finished(hosty, cancelled.id))
        assert record.status == roadie.Status.CANCELLED, record.status_message
        assert "host process was killed" in record.status_message
        wait_for(lambda: hosty.get_task_status(polite.id).get("done") == 1)
        hosty.cancel_task(polite.id)
        record = wait_for(lambda: finished(hosty, polite.id))
        assert record.status == roadie.Status.CANCELLED
        assert "killed" not in record.status_message  # it stopped at its safe point
        assert worker.hosts.host_pids()  # type: ignore[attr-defined]
    finally:
        worker.stop()  # type: ignore[attr-defined]
        thread.join(30)


def test_memory_limit(make_plugin: object, db_url: str, tmp_path: Path) -> None:
    make_plugin(host_plugin.DIST, {f"{host_plugin.MODULE}.py": host_plugin.SOURCE},  # type: ignore[operator]
                host_plugin.EXECUTORS, hooks=host_plugin.MODULE)
    app = make_app(db_url, tmp_path / "data", max_host_memory_mb=200)
    try:
        hog = app.add_task("hosty:hog", {})
        after = app.add_task("hosty:noop", {})
        app.run_worker(concurrency=1, until_idle=True)
        record = app.get_task(hog.id)
        assert record.status == roadie.Status.FAILED
        assert "max_host_memory_mb=200" in record.status_message
        assert app.get_task(after.id).status == roadie.Status.SUCCESSFUL
    finally:
        app.close()


def test_every_executor_in_hosts_with_out_of_process(app: roadie.Roadie) -> None:
    task = app.add_task("tests:sleep", {"seconds": 0.01})
    app.run_worker(concurrency=1, until_idle=True, out_of_process=True)
    assert app.get_task(task.id).status == roadie.Status.SUCCESSFUL


def children_of(pid: int) -> set[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def hosts_of(pid: int) -> set[int]:
    """The live host processes of the worker ``pid``: those its template hosts forked (and
    any it started itself)."""
    templates = templates_of(pid)
    forked = {host for template in templates for host in children_of(template)}
    return forked | (children_of(pid) - templates)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_kill_9_of_a_worker_leaves_no_host(hosty: roadie.Roadie, db_url: str,
                                           tmp_path: Path, make_plugin: object) -> None:
    from tests.processes import kill, start_worker

    busy = [hosty.add_task("hosty:sleep", {}) for _ in range(2)]
    victim = start_worker(db_url, tmp_path / "data", "--concurrency", "2",
                          pythonpath=[make_plugin.site])  # type: ignore[attr-defined]
    try:
        wait_for(lambda: all(hosty.get_task(t.id).status == roadie.Status.IN_PROGRESS
                             for t in busy))
        hosts = wait_for(lambda: hosts_of(victim.pid) if len(hosts_of(victim.pid)) == 2
                         else None)
    finally:
        kill(victim)
    wait_for(lambda: not any(alive(pid) for pid in hosts), message="hosts gone")
    wait_for(lambda: hosty.recover_orphans() or all(
        hosty.get_task(t.id).status.is_final for t in busy))
    for task in busy:
        record = wait_for(lambda task=task: finished(hosty, task.id))
        assert record.status == roadie.Status.FAILED
        assert "stopped responding" in record.status_message


def test_a_host_that_loses_its_worker_stops(hosty: roadie.Roadie, db_url: str,
                                            tmp_path: Path, make_plugin: object) -> None:
    """The lease: a paused worker says nothing, so its host stops the task and exits."""
    import signal

    from tests.processes import kill, start_worker

    task = hosty.add_task("hosty:stuck", {})
    victim = start_worker(db_url, tmp_path / "data", "--concurrency", "1",
                          pythonpath=[make_plugin.site],  # type: ignore[attr-defined]
                          env={"ROADIE_CANCEL_GRACE": "0.5"})
    try:
        wait_for(lambda: hosty.get_task_status(task.id).get("done") == 1)
        (host,) = hosts_of(victim.pid)
        victim.send_signal(signal.SIGSTOP)
        wait_for(lambda: not alive(host), message="the host stops on its own")
    finally:
        victim.send_signal(signal.SIGCONT)
        kill(victim)


def test_hosts_are_recycled_after_max_tasks(make_plugin: object, db_url: str,
                                            tmp_path: Path) -> None:
    make_plugin(host_plugin.DIST, {f"{host_plugin.MODULE}.py": host_plugin.SOURCE},  # type: ignore[operator]
                host_plugin.EXECUTORS, hooks=host_plugin.MODULE)
    app = make_app(db_url, tmp_path / "data", max_tasks_per_host=2)
    try:
        tasks = [app.add_task("hosty:where", {}, priority=-i) for i in range(3)]
        app.run_worker(concurrency=1, until_idle=True)
        pids = [app.get_task(t.id).status_message for t in tasks]
        assert pids[0] == pids[1] != pids[2]
    finally:
        app.close()


def test_a_host_started_from_a_thread_that_ended_keeps_serving(hosty: roadie.Roadie) -> None:
    """Linux's PR_SET_PDEATHSIG fires when the *thread* that forked a host ends: hosts are
    forked by the pool's own long-lived thread, so a short-lived caller cannot kill them."""
    task = hosty.add_task("hosty:where", {})
    worker = hosty.worker(concurrency=1, until_idle=True, handle_signals=False)
    got: list[object] = []
    caller = threading.Thread(target=lambda: got.append(worker.hosts.acquire(None)))
    caller.start()
    caller.join()
    wait_for(lambda: not Path(f"/proc/self/task/{caller.native_id}").exists(),
             message="the calling thread to be gone")
    (host,) = got
    worker.hosts.release(host)  # type: ignore[arg-type]
    assert alive(host.pid)  # type: ignore[attr-defined]
    worker.run()
    record = hosty.get_task(task.id)
    assert record.status == roadie.Status.SUCCESSFUL, record.status_message
    assert record.status_message == f"pid {host.pid}"  # type: ignore[attr-defined]


def templates_of(pid: int) -> set[int]:
    """The live template hosts of the worker ``pid``."""
    found = set()
    for child in children_of(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # (it ended)
        if b"--template" in command:
            found.add(child)
    return found


def test_a_worker_starts_its_template_host_before_its_first_task(hosty: roadie.Roadie
                                                                 ) -> None:
    """A worker whose executors run in hosts starts the template host of their environment
    as it starts (one, however many tasks come), and its first task's host is forked from
    it."""
    worker, thread = run_in_thread(hosty)
    try:
        (template,) = wait_for(lambda: templates_of(os.getpid()),
                               message="the worker's template host, before any task")
        tasks = [hosty.add_task("hosty:where", {}) for _ in range(3)]
        for task in tasks:
            record = wait_for(lambda task=task: finished(hosty, task.id))
            assert record.status == roadie.Status.SUCCESSFUL, record.status_message
            assert int(record.status_message.split()[1]) in children_of(template)
        assert templates_of(os.getpid()) == {template}
    finally:
        worker.stop()  # type: ignore[attr-defined]
        thread.join(30)


def test_async_executors_in_a_host(hosty: roadie.Roadie) -> None:
    quick = hosty.add_task("hosty:async-where", {})
    stuck = hosty.add_task("hosty:async-stuck", {})
    worker, thread = run_in_thread(hosty)
    try:
        record = wait_for(lambda: finished(hosty, quick.id))
        assert record.status == roadie.Status.SUCCESSFUL, record.status_message
        assert record.status_message != f"pid {os.getpid()}"
        assert record.task_status["done"] == 1
        wait_for(lambda: hosty.get_task_status(stuck.id).get("done") == 1)
        hosty.cancel_task(stuck.id)
        record = wait_for(lambda: finished(hosty, stuck.id))
        assert record.status == roadie.Status.CANCELLED, record.status_message
        assert "killed" not in record.status_message  # ended at its await, in the host
    finally:
        worker.stop()  # type: ignore[attr-defined]
        thread.join(30)


def test_subtasks_from_an_executor_in_a_host(hosty: roadie.Roadie) -> None:
    """A host adds subtasks (through its worker, with its plugin's types), waits without a
    thread, and its subtasks_done reads them back in a host."""
    from hosty_plugin import Point

    parent = hosty.add_task("hosty:tree", {})
    hosty.run_worker(concurrency=2, until_idle=True)
    record = hosty.get_task(parent.id)
    assert record.status == roadie.Status.SUCCESSFUL, record.status_message
    total, _, pid = record.status_message.removeprefix("sum ").partition(" in pid ")
    assert int(total) == 3 + 2 + 4 + 6 and int(pid) != os.getpid()
    assert isinstance(record.result, Point) and record.result.x == 15
    subtasks = hosty.list_tasks(parent_id=parent.id)
    assert sorted(s.name for s in subtasks) == [f"leaf {i}" for i in range(4)]
    assert all(s.status == roadie.Status.SUCCESSFUL for s in subtasks)
    assert [a.status for a in hosty.attempts(parent.id)] == [roadie.Status.WAITING,
                                                             roadie.Status.SUCCESSFUL]


def test_a_fan_in_in_a_host_reads_its_subtasks_twice(hosty: roadie.Roadie) -> None:
    """Issue 27 in a host: the host's ``subtasks`` reads its pages from the worker on every
    pass, counts through it, and reads single records by position."""
    parent = hosty.add_task("hosty:tree-twice", {})
    hosty.run_worker(concurrency=2, until_idle=True)
    record = hosty.get_task(parent.id)
    assert record.status == roadie.Status.SUCCESSFUL, record.status_message
    assert record.status_message == "sum=7"  # the leaves' x: 1, 1, 2, 3
    names = [f"leaf {i}" for i in range(4)]
    seen = record.result
    assert seen["pid"] != os.getpid() and seen["is_subtasks"] and seen["len"] == 4
    assert (seen["first"], seen["last"], seen["slice"]) == (names[0], names[-1], names[1:3])
    assert seen["once"] == seen["twice"] == names
    assert seen["reversed"] == names[::-1]


def test_ctrl_c_reaches_the_worker_not_its_hosts(hosty: roadie.Roadie, db_url: str,
                                                 tmp_path: Path, make_plugin: object) -> None:
    """A terminal's Ctrl-C signals the whole foreground process group: hosts live in their
    own session, so only the worker sees it, lets the running task finish, and stops them."""
    import signal

    from tests.processes import kill, start_worker

    task = hosty.add_task("hosty:nap", {"seconds": 1.0})
    worker = start_worker(db_url, tmp_path / "data", "--concurrency", "1", new_session=True,
                          pythonpath=[make_plugin.site])  # type: ignore[attr-defined]
    try:
        wait_for(lambda: hosty.get_task_status(task.id).get("done") == 1)
        (host,) = hosts_of(worker.pid)
        os.killpg(worker.pid, signal.SIGINT)
        assert worker.wait(60) == 0
    finally:
        kill(worker)
    record = hosty.get_task(task.id)
    assert record.status == roadie.Status.SUCCESSFUL, record.status_message
    assert record.status_message == f"pid {host}"
    wait_for(lambda: not alive(host), message="the host to be gone")

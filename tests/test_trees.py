"""Task trees (issue 16): persistent subtasks, a parent waiting without a thread, fan-in,
dependencies (``after``), cancel and delete of a tree, crash during ``subtasks_done``."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import roadie
from roadie import Status
from roadie.testing import wait_for

from tests.processes import kill, start_worker, stop


def ended(app: roadie.Roadie, task_id: int) -> roadie.TaskRecord | None:
    record = app.get_task(task_id)
    return record if record.status.is_final else None


def test_fan_out_sums_subtasks_with_one_worker_thread(app: roadie.Roadie,
                                                      tmp_path: Path) -> None:
    """12 subtasks on a worker process with ONE thread: the waiting parent never holds it
    (if it did, no subtask could run and the tree would never end)."""
    parent = app.add_task("roadie-examples:split", {"parts": 12, "seconds": 0.1})
    worker = start_worker(app.url, tmp_path / "data", "--concurrency", "1",
                          log=tmp_path / "w.log")
    try:
        waiting = wait_for(lambda: app.get_task(parent.id).status == Status.WAITING
                           and app.get_task_status(parent.id), message="the parent to wait")
        assert waiting["subtasks_total"] == 12
        assert 0 <= waiting["subtasks_percent"] <= 100
        assert app.waiting_reason(app.get_task(parent.id)) == "waiting for its subtasks to end"
        done = wait_for(lambda: ended(app, parent.id), timeout=60,
                        message="the tree to end")
    finally:
        stop(worker)
    assert done.status == Status.SUCCESSFUL, done.status_message
    assert done.result == sum(range(12))
    subtasks = app.list_tasks(parent_id=parent.id)
    assert len(subtasks) == 12
    assert all(s.parent_id == parent.id and s.status == Status.SUCCESSFUL for s in subtasks)
    assert [a.status for a in app.attempts(parent.id)] == [Status.WAITING, Status.SUCCESSFUL]


def test_a_failed_subtask_fails_the_parent_and_is_named(app: roadie.Roadie) -> None:
    parent = app.add_task("roadie-examples:split", {"parts": 25, "fail": [3]})
    app.run_worker(concurrency=2, until_idle=True)
    done = app.get_task(parent.id)
    assert done.status == Status.FAILED
    (bad,) = app.list_tasks(parent_id=parent.id, status="failed")
    assert f"task {bad.id} 'part 3' failed" in done.status_message
    assert "1 of 25 subtasks did not succeed" in done.status_message


def test_after_orders_tasks_across_two_worker_processes(app: roadie.Roadie,
                                                        tmp_path: Path) -> None:
    first = app.add_task("roadie-examples:part", {"value": 1, "seconds": 0.3})
    second = app.add_task("roadie-examples:part", {"value": 2}, after=[first.id])
    third = app.add_task("roadie-examples:echo", {}, after=[first.id, second])
    assert second.status == Status.NEW
    assert second.status_message == f"waiting for tasks {first.id}"
    assert app.waiting_reason(app.get_task(third.id)) == \
        f"waiting for tasks {first.id}, {second.id}"
    workers = [start_worker(app.url, tmp_path / "data", "--concurrency", "2",
                            log=tmp_path / f"w{i}.log") for i in range(2)]
    try:
        wait_for(lambda: ended(app, third.id), timeout=60, message="the chain to end")
    finally:
        for worker in workers:
            stop(worker)
    a, b, c = (app.get_task(t.id) for t in (first, second, third))
    assert [t.status for t in (a, b, c)] == [Status.SUCCESSFUL] * 3
    assert a.finished_at and b.started_at and b.finished_at and c.started_at
    assert b.started_at >= a.finished_at and c.started_at >= b.finished_at


def test_a_failed_dependency_cancels_its_dependents(app: roadie.Roadie) -> None:
    first = app.add_task("roadie-examples:fail", {})
    second = app.add_task("roadie-examples:echo", {}, after=[first.id])
    third = app.add_task("roadie-examples:echo", {}, after=[second.id])
    app.run_worker(concurrency=1, until_idle=True)
    assert app.get_task(first.id).status == Status.FAILED
    for task, cause in ((second, first), (third, second)):
        record = app.get_task(task.id)
        assert record.status == Status.CANCELLED
        assert f"task {cause.id}" in record.status_message
    late = app.add_task("roadie-examples:echo", {}, after=[first.id])
    assert late.status == Status.CANCELLED and f"task {first.id}" in late.status_message


def test_unknown_ids_and_cycles_are_refused(app: roadie.Roadie) -> None:
    first = app.add_task("roadie-examples:echo", {})
    with pytest.raises(roadie.DependencyError, match="task 999, which does not exist"):
        app.add_task("roadie-examples:echo", {}, after=[first.id, 999])
    # a task can only run after tasks added before it: its own (future) id is unknown
    with pytest.raises(roadie.DependencyError, match=f"{first.id + 1}.*no cycle"):
        app.add_task("roadie-examples:echo", {}, after=[first.id + 1])
    with pytest.raises(roadie.DependencyError, match="ints"):
        app.add_task("roadie-examples:echo", {}, after=["x"])  # type: ignore[list-item]
    assert len(app.list_tasks()) == 1


def test_cancel_and_delete_a_waiting_tree(app: roadie.Roadie, tmp_path: Path) -> None:
    parent = app.add_task("roadie-examples:split", {"parts": 4, "seconds": 60})
    worker = start_worker(app.url, tmp_path / "data", "--concurrency", "1",
                          log=tmp_path / "w.log")
    try:
        wait_for(lambda: app.get_task(parent.id).status == Status.WAITING and any(
            s.status == Status.IN_PROGRESS for s in app.list_tasks(parent_id=parent.id)),
            timeout=30, message="a waiting parent with a running subtask")
        with pytest.raises(roadie.InvalidTransition, match="tree=True"):
            app.delete_task(parent.id)
        assert app.cancel_task(parent.id).status == Status.CANCELLED
        wait_for(lambda: all(s.status == Status.CANCELLED
                             for s in app.list_tasks(parent_id=parent.id)),
                 timeout=30, message="every subtask cancelled")
    finally:
        stop(worker)
    app.delete_task(parent.id, tree=True)
    assert app.list_tasks() == []


def test_kill_9_during_subtasks_done_applies_the_crash_policy(app: roadie.Roadie,
                                                              tmp_path: Path) -> None:
    parent = app.add_task("roadie-examples:split", {"parts": 3, "linger": 60})
    victim = start_worker(app.url, tmp_path / "data", "--concurrency", "2",
                          log=tmp_path / "victim.log")
    try:
        wait_for(lambda: (r := app.get_task(parent.id)).status == Status.IN_PROGRESS
                 and r.fan_in, timeout=60, message="subtasks_done to run")
    finally:
        kill(victim)
    rescuer = start_worker(app.url, tmp_path / "data", "--concurrency", "1",
                           log=tmp_path / "rescuer.log")
    try:
        done = wait_for(lambda: ended(app, parent.id), timeout=60,
                        message="the crash policy to end the parent")
    finally:
        stop(rescuer)
    assert done.status == Status.FAILED
    assert "stopped responding" in done.status_message or "is gone" in done.status_message


def test_cli_shows_lists_and_deletes_a_tree(app: roadie.Roadie, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner
    from roadie.cli import cli

    monkeypatch.setenv("ROADIE_DATA_DIR", str(tmp_path / "data"))
    parent = app.add_task("roadie-examples:split", {"parts": 3, "fail": [1]})
    app.run_worker(concurrency=1, until_idle=True)

    def run(*args: str) -> str:
        result = CliRunner().invoke(cli, ["--url", app.url, *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    shown = run("show", str(parent.id))
    assert "subtasks: 3 of 3 ended (100%): 1 failed, 2 successful" in shown
    assert "part 1" in shown
    assert run("list", "--parent", str(parent.id)).count("roadie-examples:part") == 3
    assert "deleted with its subtasks" in run("delete", "--tree", str(parent.id))
    assert app.list_tasks() == []


def in_thread(app: roadie.Roadie, concurrency: int = 2) -> tuple[roadie.Worker, threading.Thread]:
    worker = app.worker(concurrency=concurrency, handle_signals=False)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return worker, thread


@pytest.mark.parametrize("seen_in", ["flag", "db"])
def test_a_cancel_before_the_parent_waits_ends_it_cancelled(app: roadie.Roadie,
                                                            seen_in: str) -> None:
    """The cancel arrives while execute still runs and it returns wait_for_subtasks anyway
    (whether the worker has seen the request yet or only the database has it)."""
    parent = app.add_task("tests:fanout", {"parts": 2, "seconds": 60,
                                           "until_cancelled": seen_in})
    worker, thread = in_thread(app)
    try:
        wait_for(lambda: app.get_task_status(parent.id).get("done") == 1)
        app.cancel_task(parent.id, by="tester")
        record = wait_for(lambda: ended(app, parent.id), message="the parent to end")
        assert record.status == Status.CANCELLED, record.status_message
        assert record.status_message.startswith("cancelled by tester at ")
        subtasks = wait_for(lambda: (s := app.list_tasks(parent_id=parent.id))
                            and all(t.status.is_final for t in s) and s)
        assert [s.status for s in subtasks] == [Status.CANCELLED] * 2
    finally:
        worker.stop()
        thread.join(30)


def test_a_fan_in_a_crash_left_behind_is_released_by_the_sweep(
        app: roadie.Roadie, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fan-in is a second transaction after a subtask's end: if it fails (the node dies in
    between), the ends stand and the recovery sweep releases the parent."""
    parent = app.add_task("tests:fanout", {"parts": 3})

    def lost(*_args: object) -> None:
        raise roadie.DatabaseError("the connection was lost")

    monkeypatch.setattr(app.store.trees, "_wake_parents", lost)
    stats = app.run_worker(concurrency=2, until_idle=True)
    assert stats.finished == 4  # the parent's first attempt and 3 subtasks: all recorded
    assert app.get_task(parent.id).status == Status.WAITING
    assert all(s.status == Status.SUCCESSFUL for s in app.list_tasks(parent_id=parent.id))
    monkeypatch.undo()
    app.recover_orphans()
    assert app.get_task(parent.id).status == Status.NEW
    app.run_worker(concurrency=2, until_idle=True)
    record = app.get_task(parent.id)
    assert (record.status, record.status_message) == (Status.SUCCESSFUL, "sum 3")


def test_a_dependent_a_crash_left_blocked_is_released_by_the_sweep(
        app: roadie.Roadie, monkeypatch: pytest.MonkeyPatch) -> None:
    """Releasing the tasks that wait for one that ended is a second transaction too: if it
    fails, the recovery sweep finds the blocked task whose prerequisite succeeded."""
    first = app.add_task("tests:tracked", {"seconds": 0})
    second = app.add_task("tests:tracked", {"seconds": 0}, after=[first.id])

    def lost(*_args: object) -> None:
        raise roadie.DatabaseError("the connection was lost")

    monkeypatch.setattr(app.store.trees, "_release_dependents", lost)
    app.run_worker(concurrency=1, until_idle=True)
    assert app.get_task(first.id).status == Status.SUCCESSFUL
    assert app.get_task(second.id).status == Status.NEW  # still blocked
    monkeypatch.undo()
    app.recover_orphans()
    app.run_worker(concurrency=1, until_idle=True)
    assert app.get_task(second.id).status == Status.SUCCESSFUL


def test_resume_after_fan_in_reruns_subtasks_done_only(app: roadie.Roadie) -> None:
    """The rule: resuming a parent whose fan-in ran does not run execute again (no second set
    of subtasks); it waits for subtasks that have not ended (resume those first) and then
    runs subtasks_done again."""
    parent = app.add_task("tests:fanout", {"parts": 3, "fail_first": [1]})
    app.run_worker(concurrency=2, until_idle=True)
    record = app.get_task(parent.id)
    assert record.status == Status.FAILED and "'part 1' failed" in record.status_message

    assert app.resume_task(parent.id).status == Status.NEW  # every subtask ended: fan-in next
    app.run_worker(concurrency=2, until_idle=True)
    assert app.get_task(parent.id).status == Status.FAILED
    assert len(app.list_tasks(parent_id=parent.id)) == 3

    (bad,) = app.list_tasks(parent_id=parent.id, status="failed")
    app.resume_task(bad.id)
    assert app.resume_task(parent.id).status == Status.WAITING  # part 1 runs again first
    app.run_worker(concurrency=2, until_idle=True)
    record = app.get_task(parent.id)
    assert (record.status, record.status_message) == (Status.SUCCESSFUL, "sum 3")
    assert len(app.list_tasks(parent_id=parent.id)) == 3
    assert [a.status for a in app.attempts(parent.id)] == [
        Status.WAITING, Status.FAILED, Status.FAILED, Status.SUCCESSFUL]


def test_watch_follows_the_subtasks_of_a_waiting_parent(app: roadie.Roadie,
                                                        tmp_path: Path) -> None:
    """A waiting parent's row does not change while its subtasks end; watch yields it anew
    at each end anyway (its status counts them), so progress bars move."""
    gate = tmp_path / "gate"
    gate.mkdir()
    parent = app.add_task("tests:fanout", {"parts": 3, "gate": str(gate)})
    worker, thread = in_thread(app)
    seen: list[int] = []
    try:
        for record in app.watch([parent.id], interval=0.05, timeout=30):
            if record.status == Status.WAITING:
                status = app.get_task_status(parent.id)
                if "subtasks_ended" not in status:
                    continue  # its last subtask ended since: it is no longer waiting
                seen.append(status["subtasks_ended"])
                assert status["subtasks_total"] == 3
                (gate / str(seen[-1])).touch()  # let the next subtask end
    finally:
        worker.stop()
        thread.join(30)
    assert {0, 1, 2} <= set(seen)  # (3 too, if it looked between the last end and the wake)
    assert app.get_task(parent.id).status == Status.SUCCESSFUL


@pytest.mark.parametrize("executor", ["tests:sumtwice", "tests:asumtwice"])
def test_a_fan_in_reads_its_subtasks_twice(app: roadie.Roadie, executor: str) -> None:
    """Issue 27: ``subtasks`` read once for the failed ones and again for the sum gave
    "sum=0" (a generator is empty the second time); sync and async fan-ins alike."""
    parent = app.add_task(executor, {"parts": 12})
    app.run_worker(concurrency=2, until_idle=True)
    record = app.get_task(parent.id)
    assert (record.status, record.status_message) == (Status.SUCCESSFUL,
                                                      f"sum={sum(range(1, 13))}")
    assert len(app.list_tasks(parent_id=parent.id)) == 12


def test_a_fan_in_that_reads_twice_still_names_the_failed(app: roadie.Roadie) -> None:
    parent = app.add_task("tests:sumtwice", {"parts": 12, "fail": [4, 9]})
    app.run_worker(concurrency=2, until_idle=True)
    failed = sorted(s.id for s in app.list_tasks(parent_id=parent.id, status="failed"))
    record = app.get_task(parent.id)
    assert len(failed) == 2
    assert (record.status, record.status_message) == (Status.FAILED,
                                                      f"subtasks failed: {failed}")


def test_subtasks_done_gets_a_sequence_it_can_read_in_every_way(app: roadie.Roadie) -> None:
    parent = app.add_task("tests:probe", {"parts": 12})
    app.run_worker(concurrency=2, until_idle=True)
    record = app.get_task(parent.id)
    assert record.status == Status.SUCCESSFUL, record.status_message
    ids = sorted(s.id for s in app.list_tasks(parent_id=parent.id))
    seen = record.result
    assert (seen["type"], seen["is_subtasks"], seen["len"]) == ("Subtasks", True, 12)
    assert (seen["first"], seen["last"], seen["slice"]) == (ids[0], ids[-1], ids[2:5])
    assert seen["once"] == seen["twice"] == seen["list"] == ids
    assert seen["reversed"] == ids[::-1]
    assert seen["results"] == list(range(1, 13))


def test_subtasks_read_in_pages_as_a_sequence(app: roadie.Roadie,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """``roadie.Subtasks`` outside a fan-in, with pages of 5 over 12 subtasks: every way of
    reading it agrees with a list, no read fetches more than a page, and len() fetches no
    record (it counts)."""
    parent = app.add_task("tests:sumtwice", {"parts": 12, "fail": [3]})
    app.run_worker(concurrency=2, until_idle=True)
    expected = sorted(app.list_tasks(parent_id=parent.id), key=lambda s: s.id)
    subtasks = roadie.Subtasks(app, parent.id, page=5)
    fetched: list[int] = []
    page = app._subtask_page

    def counted(*args: int) -> list[roadie.TaskRecord]:
        records = page(*args)
        fetched.append(len(records))
        return records

    monkeypatch.setattr(app, "_subtask_page", counted)
    assert len(subtasks) == 12 and bool(subtasks)
    assert fetched == []
    assert list(subtasks) == list(subtasks) == expected
    assert fetched == [5, 5, 2, 0] * 2 and max(fetched) <= subtasks.page
    assert list(reversed(subtasks)) == expected[::-1]
    for index in (0, 4, 5, 11, -1, -5, -12):
        assert subtasks[index] == expected[index]
    for bad in (12, -13):
        with pytest.raises(IndexError):
            subtasks[bad]
    for cut in (slice(None), slice(2, 9), slice(3, 12, 4), slice(-4, None), slice(None, -7),
                slice(None, None, -1), slice(10, 1, -3), slice(20, 30), slice(5, 5)):
        assert subtasks[cut] == expected[cut], cut
    assert subtasks.index(expected[7]) == 7 and expected[7] in subtasks
    assert subtasks.index(expected[7], 2, 9) == 7
    with pytest.raises(ValueError):
        subtasks.index(expected[7], 8)
    assert sum(s.status == Status.FAILED for s in subtasks) == 1
    assert "Subtasks of task" in repr(subtasks)
    lonely = roadie.Subtasks(app, app.add_task("tests:part", {"value": 0}).id)
    assert len(lonely) == 0 and list(lonely) == [] and lonely[:3] == []
    with pytest.raises(IndexError):
        lonely[0]
    with pytest.raises(ValueError, match="page"):
        roadie.Subtasks(app, parent.id, page=0)

"""Flow control: concurrency limits, rate limits, unique tasks and paused executors (in one
process, on both databases; tests/test_flow_processes.py runs them across processes)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterable

import pytest
import roadie
from roadie import Status
from roadie.testing import BackgroundWorker, wait_final, wait_for

from tests import executors


def most_at_once(spans: Iterable[tuple[float, float]]) -> int:
    """The largest number of ``(start, end)`` spans that overlap at one moment."""
    spans = list(spans)
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def most_in_window(times: Iterable[dt.datetime], seconds: float) -> int:
    """The largest number of ``times`` in any window of ``seconds`` (half-open)."""
    ordered = sorted(times)
    peak = first = 0
    for last, when in enumerate(ordered):
        while (when - ordered[first]).total_seconds() >= seconds:
            first += 1
        peak = max(peak, last - first + 1)
    return peak


def drain(app: roadie.Roadie, ids: Iterable[int], *, concurrency: int = 8,
          timeout: float = 60) -> list[roadie.TaskRecord]:
    """Run a worker until the tasks ``ids`` have ended; returns them."""
    worker = BackgroundWorker(app, concurrency=concurrency).start()
    try:
        return [wait_final(app, task_id, timeout=timeout) for task_id in ids]
    finally:
        worker.stop()


# -- max_running --------------------------------------------------------------------------

def test_max_running_is_never_exceeded_and_is_used(app: roadie.Roadie) -> None:
    executors.RUNS.clear()
    tasks = [app.add_task("tests:limited", {"seconds": 0.15}) for _ in range(12)]
    ended = drain(app, [t.id for t in tasks])
    assert {t.status for t in ended} == {Status.SUCCESSFUL}
    assert most_at_once((start, end) for _, start, end in executors.RUNS) == 3
    attempts = [a for t in ended for a in app.attempts(t.id)]
    assert most_at_once((a.started_at, a.finished_at) for a in attempts
                        if a.started_at is not None) <= 3  # the attempt log agrees
    assert app.store.held_locks() == {}


def test_a_limit_applies_per_isolation_key(app: roadie.Roadie) -> None:
    executors.RUNS.clear()
    tasks = [app.add_task("tests:owner-limited", {"seconds": 0.15}, owner=owner)
             for owner in ("ann", "bob") for _ in range(5)]
    drain(app, [t.id for t in tasks])
    owner_of = {t.id: t.owner for t in tasks}
    for owner in ("ann", "bob"):
        spans = [(s, e) for task_id, s, e in executors.RUNS if owner_of[task_id] == owner]
        assert len(spans) == 5
        assert most_at_once(spans) == 2
    assert most_at_once((s, e) for _, s, e in executors.RUNS) > 2  # the keys ran side by side


def test_tasks_over_the_limit_wait_queued_and_say_why(app: roadie.Roadie) -> None:
    tasks = [app.add_task("tests:limited", {"seconds": 1.0}) for _ in range(4)]
    worker = BackgroundWorker(app, concurrency=8).start()
    try:
        wait_for(lambda: sum(app.get_task(t.id).status is Status.IN_PROGRESS
                             for t in tasks) == 3, timeout=30, message="three running")
        waiting = [app.get_task(t.id) for t in tasks
                   if app.get_task(t.id).status is not Status.IN_PROGRESS]
        assert [t.status for t in waiting] == [Status.QUEUED]
        reason = app.waiting_reason(waiting[0]) or ""
        assert "3 of 3 running" in reason and "max_running 3" in reason
        assert wait_final(app, waiting[0].id, timeout=30).status is Status.SUCCESSFUL
    finally:
        worker.stop()


def test_a_more_urgent_task_takes_a_waiting_place(app: roadie.Roadie) -> None:
    """With every slot waiting for a worker, a more urgent task is among the next to run."""
    early = [app.add_task("tests:limited", {"seconds": 0}) for _ in range(5)]
    urgent = app.add_task("tests:limited", {"seconds": 0}, priority=10)
    assert app.get_task(urgent.id).status is Status.NEW
    assert sum(app.get_task(t.id).status is Status.NEW for t in early) == 2  # 3 places
    drain(app, [t.id for t in [*early, urgent]], concurrency=1)
    order = sorted(app.list_tasks(executor="tests:limited", limit=None),
                   key=lambda t: t.started_at or dt.datetime.max)
    assert order[0].id == urgent.id


def test_a_limit_composes_with_retries_delays_and_priorities(app: roadie.Roadie) -> None:
    executors.RUNS.clear()
    delayed = app.add_task("tests:limited", {"seconds": 0.05}, delay=0.3)
    rest = [app.add_task("tests:limited", {"seconds": 0.1}, priority=p) for p in range(6)]
    ended = drain(app, [delayed.id, *(t.id for t in rest)])
    assert {t.status for t in ended} == {Status.SUCCESSFUL}
    assert most_at_once((s, e) for _, s, e in executors.RUNS) <= 3
    assert all(t.attempts == 1 for t in ended)


# -- rate_limit ----------------------------------------------------------------------------

def test_a_rate_limit_holds_in_every_window_without_failing_or_counting(
        app: roadie.Roadie) -> None:
    tasks = [app.add_task("tests:rated", {"seconds": 0}) for _ in range(12)]
    worker = BackgroundWorker(app, concurrency=4).start()
    try:
        wait_for(lambda: sum(app.get_task(t.id).status is Status.SUCCESSFUL
                             for t in tasks) >= 5, timeout=30, message="the first starts")
        held = [t for t in (app.get_task(t.id) for t in tasks) if not t.status.is_final]
        assert held, "the rate let every task start at once"
        reasons = [app.waiting_reason(t) or "" for t in held]
        assert any("rate limit (5 per second)" in r for r in reasons), reasons
        ended = [wait_final(app, t.id, timeout=30) for t in tasks]
    finally:
        worker.stop()
    assert {t.status for t in ended} == {Status.SUCCESSFUL}
    assert all(t.attempts == 1 for t in ended)  # waiting for the rate is not an attempt
    starts = [t.started_at for t in ended if t.started_at is not None]
    assert most_in_window(starts, 1.0) == 5, sorted(starts)
    assert (max(starts) - min(starts)).total_seconds() >= 2.0  # 12 at 5 a second


def test_a_rate_applies_per_isolation_key(app: roadie.Roadie) -> None:
    tasks = [app.add_task("tests:rated-group", {"seconds": 0}, group=group)
             for group in ("g1", "g2") for _ in range(4)]
    ended = drain(app, [t.id for t in tasks], concurrency=4)
    for group in ("g1", "g2"):
        starts = [t.started_at for t in ended if t.group == group and t.started_at]
        assert len(starts) == 4
        assert most_in_window(starts, 1.0) == 2


# -- unique tasks --------------------------------------------------------------------------

def test_an_open_task_with_the_same_unique_key_is_returned(app: roadie.Roadie) -> None:
    first = app.add_task("tests:sleep", {"seconds": 0}, unique_key="sync:42")
    again = app.add_task("tests:sleep", {"seconds": 5}, unique_key="sync:42")
    assert again.id == first.id and again.unique_key == "sync:42"
    assert again.context == {"seconds": 0}  # the first task's, unchanged
    other_key = app.add_task("tests:sleep", {}, unique_key="sync:43")
    other_executor = app.add_task("tests:chatty", {}, unique_key="sync:42")
    assert len({first.id, other_key.id, other_executor.id}) == 3
    assert len(app.list_tasks(executor="tests:sleep")) == 2


def test_a_unique_key_is_free_again_once_its_task_has_ended(app: roadie.Roadie) -> None:
    first = app.add_task("tests:sleep", {"seconds": 0}, unique_key="k")
    drain(app, [first.id])
    second = app.add_task("tests:sleep", {"seconds": 0}, unique_key="k")
    assert second.id != first.id and second.status is Status.NEW
    cancelled = app.cancel_task(second.id)
    assert cancelled.status is Status.CANCELLED
    third = app.add_task("tests:sleep", {"seconds": 0}, unique_key="k")
    assert third.id not in (first.id, second.id)
    with pytest.raises(roadie.InvalidTransition, match=f"task {third.id}"):
        app.resume_task(second.id)  # two open tasks with one key: refused, naming the other
    app.cancel_task(third.id)
    assert app.resume_task(second.id).status is Status.NEW


def test_add_tasks_takes_unique_keys_within_and_across_batches(app: roadie.Roadie) -> None:
    existing = app.add_task("tests:sleep", {"seconds": 0}, unique_key="a")
    added = app.add_tasks([
        {"executor": "tests:sleep", "context": {"i": 0}, "unique_key": "a"},
        {"executor": "tests:sleep", "context": {"i": 1}, "unique_key": "b"},
        {"executor": "tests:sleep", "context": {"i": 2}, "unique_key": "b"},
        {"executor": "tests:sleep", "context": {"i": 3}},
    ] + [{"executor": "tests:sleep", "context": {"i": i}} for i in range(4, 40)])
    assert added[0].id == existing.id
    assert added[1].id == added[2].id and added[1].context == {"i": 1}
    assert len({t.id for t in added}) == 39  # one existing, one for "b", 37 without a key
    assert len(app.list_tasks(executor="tests:sleep", limit=None)) == 39


def test_concurrent_adds_of_one_unique_key_make_one_task(app: roadie.Roadie) -> None:
    ids: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def add() -> None:
        try:
            start.wait()
            for _ in range(10):
                ids.append(app.add_task("tests:sleep", {}, unique_key="once").id)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=add) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(ids) == 80 and len(set(ids)) == 1
    assert len(app.list_tasks(executor="tests:sleep")) == 1


def test_the_async_client_takes_unique_keys(app: roadie.Roadie) -> None:
    async def add_twice() -> tuple[roadie.TaskRecord, roadie.TaskRecord]:
        first = await app.aio.add_task("tests:sleep", {}, unique_key="aio")
        return first, await app.aio.add_task("tests:sleep", {}, unique_key="aio")

    first, second = asyncio.run(add_twice())
    assert first.id == second.id and second.unique_key == "aio"


def test_a_bad_unique_key_is_refused_clearly(app: roadie.Roadie) -> None:
    with pytest.raises(ValueError, match="unique_key of a tests:sleep task"):
        app.add_task("tests:sleep", {}, unique_key="")
    with pytest.raises(ValueError, match="at most 255"):
        app.add_task("tests:sleep", {}, unique_key="x" * 256)


# -- pausing -------------------------------------------------------------------------------

def test_a_paused_executor_starts_nothing_until_resumed(app: roadie.Roadie) -> None:
    state = app.pause_executor("tests:sleep")
    assert state.paused and state.executor == "tests:sleep"
    held = app.add_task("tests:sleep", {"seconds": 0})  # adding still works
    worker = BackgroundWorker(app, concurrency=2).start()
    try:
        other = app.add_task("tests:chatty", {})
        assert wait_final(app, other.id).status is Status.SUCCESSFUL  # the worker claims
        assert app.get_task(held.id).status is Status.NEW
        reason = app.waiting_reason(app.get_task(held.id)) or ""
        assert "executor tests:sleep is paused" in reason
        assert "roadie executors resume tests:sleep" in reason
        assert not app.resume_executor("tests:sleep").paused
        assert wait_final(app, held.id).status is Status.SUCCESSFUL
    finally:
        worker.stop()


def test_a_pause_reaches_a_running_worker_and_lets_running_tasks_finish(
        app: roadie.Roadie) -> None:
    worker = BackgroundWorker(app, concurrency=2).start()
    try:
        running = app.add_task("tests:sleep", {"seconds": 1.0})
        wait_for(lambda: app.get_task(running.id).status is Status.IN_PROGRESS, timeout=20)
        app.pause_executor("tests:sleep")
        # within a second every worker leaves it out: a task added after that waits
        wait_for(lambda: app.get_task(running.id).status is Status.SUCCESSFUL, timeout=20)
        late = app.add_task("tests:sleep", {"seconds": 0})
        marker = app.add_task("tests:chatty", {})
        wait_final(app, marker.id)
        assert app.get_task(late.id).status is Status.NEW
        app.resume_executor("tests:sleep")
        assert wait_final(app, late.id).status is Status.SUCCESSFUL
    finally:
        worker.stop()


def test_a_pause_survives_restarts_and_is_listed(app: roadie.Roadie) -> None:
    app.pause_executor("tests:sleep", by="ops")
    app.add_task("tests:sleep", {})
    again = roadie.Roadie(app.url, settings=app.settings)
    try:
        states = {s.executor: s for s in again.list_executors()}
        assert states["tests:sleep"].paused and states["tests:sleep"].paused_by == "ops"
        assert states["tests:sleep"].waiting == 1
    finally:
        again.close()
    states = {s.executor: s for s in app.list_executors()}
    assert states["tests:limited"].max_running == 3 and states["tests:limited"].limits == \
        "max_running 3"
    assert states["tests:rated"].rate_limit == roadie.Rate(5, per=1)
    assert not states["tests:limited"].paused


def test_pausing_an_unknown_executor_says_which_exist(app: roadie.Roadie) -> None:
    with pytest.raises(roadie.UnknownExecutor, match=r"tests:nope.*known: .*tests:sleep"):
        app.pause_executor("tests:nope")


def test_a_worker_with_only_paused_executors_is_idle(app: roadie.Roadie) -> None:
    app.pause_executor("tests:sleep")
    app.add_task("tests:sleep", {})
    stats = app.run_worker(concurrency=1, until_idle=True)
    assert stats.claimed == 0


# -- the limits' values --------------------------------------------------------------------

@pytest.mark.parametrize("count, per", [(0, 1), (-1, 1), (1.5, 1), (1, 0), (1, -2)])
def test_a_bad_rate_is_refused(count: object, per: object) -> None:
    with pytest.raises(ValueError, match="Rate"):
        roadie.Rate(count, per=per)  # type: ignore[arg-type]


def test_a_bad_max_running_is_refused_when_adding(app: roadie.Roadie) -> None:
    class Bad(roadie.Executor):
        max_running = 0

    app.plugins.register_executor("tests:bad-limit", Bad)
    with pytest.raises(ValueError, match=r"Bad\.max_running must be None or a whole number"):
        app.add_task("tests:bad-limit", {})


def test_an_environments_executor_carries_its_limits() -> None:
    """The stand-in of an executor probed in an environment has the limits its class has."""
    from roadie.envs.discovery import env_executor
    from roadie.limits import limits_of

    stand_in = env_executor("env-a", "dist:export", {
        "isolation": "owner", "max_running": 3, "rate_limit": [100, 60]})
    assert limits_of(stand_in).max_running == 3
    assert stand_in.rate_limit == roadie.Rate(100, per=60)
    plain = env_executor("env-a", "dist:plain", {"isolation": "not-isolated"})
    assert not limits_of(plain).controlled

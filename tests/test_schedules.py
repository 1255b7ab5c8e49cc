"""Schedules: cron and interval rules, DST, catch-up, overlap, pause, bad input, and firing
exactly once per slot across real worker processes (a kill -9 mid-firing included)."""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import math
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import roadie
import sqlalchemy as sa
from roadie import Status
from roadie.schedules import LATE_AFTER, MAX_CATCH_UP, plan_firing
from roadie.testing import BackgroundWorker, make_app, wait_for

from tests.processes import kill, start_worker, stop

UTC = dt.timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)  # type: ignore[misc]


class Clock:
    """A controlled clock for ``app.clock``."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> dt.datetime:
        self.now += dt.timedelta(**delta)
        return self.now


def clocked(app: roadie.Roadie, start: dt.datetime) -> Clock:
    clock = Clock(start)
    app.clock = clock
    return clock


def local_days(tasks: list[roadie.TaskRecord]) -> collections.Counter[dt.date]:
    return collections.Counter(t.scheduled_for.astimezone(BERLIN).date() for t in tasks)


def walk(app: roadie.Roadie, clock: Clock, until: dt.datetime,
         step: dt.timedelta) -> list[roadie.TaskRecord]:
    """Move the clock in steps, firing at each (what workers do), and collect the tasks."""
    made = []
    while clock.now < until:
        clock.now += step
        made += app.fire_schedules()
    return made


# -- rules, without a database -------------------------------------------------------------


def slots(rule: roadie.Cron, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    found = []
    for slot in rule.slots_after(start):
        if slot >= end:
            return found
        found.append(slot)
    return found


def test_cron_dst_rule() -> None:
    """A daily 02:30 job runs once on the spring-forward day (at 03:00, when the clock jumps)
    and once on the fall-back day (the first 02:30); an hourly job runs in every real hour."""
    daily = roadie.Cron("30 2 * * *", timezone="Europe/Berlin")
    hourly = roadie.Cron("30 * * * *", timezone="Europe/Berlin")
    spring = slots(daily, at(2026, 3, 27, 12), at(2026, 3, 31, 12))
    assert [s.astimezone(BERLIN).strftime("%m-%d %H:%M %Z") for s in spring] == [
        "03-28 02:30 CET", "03-29 03:00 CEST", "03-30 02:30 CEST", "03-31 02:30 CEST"]
    autumn = slots(daily, at(2026, 10, 23, 12), at(2026, 10, 27, 12))
    assert [s.astimezone(BERLIN).strftime("%m-%d %H:%M %Z") for s in autumn] == [
        "10-24 02:30 CEST", "10-25 02:30 CEST", "10-26 02:30 CET", "10-27 02:30 CET"]
    per_day = collections.Counter(
        s.astimezone(BERLIN).date() for s in slots(hourly, at(2026, 3, 28, 23),
                                                     at(2026, 3, 29, 22)))
    assert per_day[dt.date(2026, 3, 29)] == 23
    per_day = collections.Counter(
        s.astimezone(BERLIN).date() for s in slots(hourly, at(2026, 10, 24, 22),
                                                     at(2026, 10, 25, 23)))
    assert per_day[dt.date(2026, 10, 25)] == 25
    # starting inside the repeated hour never goes back in time
    assert daily.next_after(at(2026, 10, 25, 1, 10)) == at(2026, 10, 26, 1, 30)
    assert hourly.next_after(at(2026, 10, 25, 1, 10)) == at(2026, 10, 25, 1, 30)


def test_every_is_aligned_to_the_epoch() -> None:
    assert roadie.Every(60).next_after(at(2026, 5, 1, 10, 0, 12)) == at(2026, 5, 1, 10, 1)
    assert roadie.Every(dt.timedelta(minutes=15)).next_after(at(2026, 5, 1, 10, 0)) == \
        at(2026, 5, 1, 10, 15)
    assert roadie.Every(minutes=1, seconds=30).seconds == 90
    assert roadie.Every(0.5).next_after(at(2026, 5, 1, 10)) == \
        at(2026, 5, 1, 10) + dt.timedelta(seconds=0.5)


@pytest.mark.parametrize(("make", "words"), [
    (lambda: roadie.Cron("61 * * * *"), ["'61 * * * *'", "minute 61 is out of range (0-59)"]),
    (lambda: roadie.Cron("0 24 * * *"), ["'0 24 * * *'", "hour 24 is out of range (0-23)"]),
    (lambda: roadie.Cron("0 0 32 * *"), ["day-of-month 32 is out of range (1-31)"]),
    (lambda: roadie.Cron("0 0 * 13 *"), ["month 13 is out of range (1-12)"]),
    (lambda: roadie.Cron("0 0 * * 9"), ["day-of-week 9 is out of range (0-7)"]),
    (lambda: roadie.Cron("*/0 * * * *"), ["minute step '0'"]),
    (lambda: roadie.Cron("x * * * *"), ["minute field 'x' is not valid"]),
    (lambda: roadie.Cron("* * * *"), ["'* * * *'", "4 field(s)", "needs 5"]),
    (lambda: roadie.Cron("0 3 * * *", timezone="Mars/Olympus"),
     ["unknown time zone 'Mars/Olympus'"]),
    (lambda: roadie.Every(0), ["every=0", "at least 0.1 seconds"]),
    (lambda: roadie.Every(-5), ["every=-5"]),
    (lambda: roadie.Every(math.nan), ["every=nan"]),
    (lambda: roadie.Every("10"), ["every='10'", "number of seconds or a timedelta"]),
    (lambda: roadie.Every(True), ["every=True"]),
    (lambda: roadie.Every(10, catch_up="sometimes"), ["catch_up='sometimes'", "skip, latest"]),
    (lambda: roadie.Every(10, jitter=-1), ["jitter=-1"]),
    (lambda: roadie.Every(10, run_after=1), ["unknown task option(s) run_after"]),
])
def test_bad_rules_are_clear_errors(make: Callable[[], object], words: list[str]) -> None:
    with pytest.raises(roadie.ScheduleError) as info:
        make()
    for word in words:
        assert word in str(info.value)


def test_a_long_downtime_catches_up_the_newest_slots_only() -> None:
    start = at(2026, 5, 1)
    now = start + dt.timedelta(days=2, seconds=0.5)  # 172,800 slots of every=1 missed
    plan = plan_firing(roadie.Every(1), start, now, catch_up="all")
    on_time = int(LATE_AFTER)  # the slots of the last LATE_AFTER seconds are not missed
    assert plan.slots == [now.replace(microsecond=0) - dt.timedelta(seconds=i)
                          for i in range(MAX_CATCH_UP + on_time - 1, -1, -1)]
    assert plan.next_at == now.replace(microsecond=0) + dt.timedelta(seconds=1)
    assert "more than" in plan.note and "catch_up='all' fired 100" in plan.note
    skip = plan_firing(roadie.Every(1), start, now, catch_up="skip")
    assert skip.slots == plan.slots[-on_time:]


# -- through the API, with a controlled clock (SQLite and PostgreSQL) ----------------------


def test_dst_days_fire_once(app: roadie.Roadie) -> None:
    clock = clocked(app, at(2026, 3, 27, 12))
    app.add_schedule("nightly", "tests:sleep", cron="30 2 * * *", timezone="Europe/Berlin")
    app.add_schedule("hourly", "tests:sleep", cron="30 * * * *", timezone="Europe/Berlin")
    made = walk(app, clock, at(2026, 3, 31, 12), dt.timedelta(minutes=30))
    nightly = [t for t in made if t.schedule == "nightly"]
    assert local_days(nightly) == {dt.date(2026, 3, d): 1 for d in (28, 29, 30, 31)}
    assert [t.scheduled_for for t in nightly][1] == at(2026, 3, 29, 1)  # 03:00 CEST
    assert local_days([t for t in made if t.schedule == "hourly"])[dt.date(2026, 3, 29)] == 23

    clock.now = at(2026, 10, 23, 12)
    app.resume_schedule("nightly")  # from now on (nothing is caught up across the gap)
    app.resume_schedule("hourly")
    made = walk(app, clock, at(2026, 10, 27, 12), dt.timedelta(minutes=30))
    nightly = [t for t in made if t.schedule == "nightly"]
    assert local_days(nightly) == {dt.date(2026, 10, d): 1 for d in (24, 25, 26, 27)}
    assert local_days([t for t in made if t.schedule == "hourly"])[dt.date(2026, 10, 25)] == 25
    assert len(app.list_tasks(schedule="nightly", limit=None)) == 8
    record = app.get_task(nightly[1].id)
    assert (record.schedule, record.scheduled_for) == ("nightly", at(2026, 10, 25, 0, 30))


def test_catch_up_policies(app: roadie.Roadie) -> None:
    clock = clocked(app, at(2026, 5, 1, 12, 0, 30))
    for policy in ("skip", "latest", "all"):
        app.add_schedule(policy, "tests:sleep", every=60, catch_up=policy)
    assert app.fire_schedules() == []
    clock.advance(hours=1)  # one hour without any worker: 60 slots missed
    made = app.fire_schedules()
    by = collections.defaultdict(list)
    for task in made:
        by[task.schedule].append(task.scheduled_for)
    assert "skip" not in by
    assert by["latest"] == [at(2026, 5, 1, 13, 0)]
    assert by["all"] == [at(2026, 5, 1, 12, 1) + dt.timedelta(minutes=i) for i in range(60)]
    for info in app.list_schedules():
        assert info.next_at == at(2026, 5, 1, 13, 1)
        assert "60 slot(s)" in info.note and f"catch_up={info.catch_up!r}" in info.note
    assert app.fire_schedules() == []  # nothing twice

    # a slot a few seconds late is no missed slot: it fires whatever the policy
    clock.now = at(2026, 5, 1, 13, 1, 5)
    assert {t.schedule for t in app.fire_schedules()} == {"skip", "latest", "all"}

    # "all" is bounded: the newest MAX_CATCH_UP missed slots (and the one still on time)
    clock.advance(hours=3)
    made = [t.scheduled_for for t in app.fire_schedules() if t.schedule == "all"]
    assert made == [at(2026, 5, 1, 16, 1) - dt.timedelta(minutes=i)
                    for i in range(MAX_CATCH_UP, -1, -1)]


def test_pause_and_resume(app: roadie.Roadie) -> None:
    clock = clocked(app, at(2026, 5, 1, 12, 0, 0, 500))
    app.add_schedule("tick", "tests:sleep", every=10, catch_up="all")
    clock.advance(seconds=10)
    assert len(app.fire_schedules()) == 1
    info = app.pause_schedule("tick")
    assert (info.paused, info.state, info.next_at) == (True, "paused", None)
    clock.advance(minutes=5)
    assert app.fire_schedules() == []
    info = app.resume_schedule("tick")
    assert info.state == "active" and info.next_at == at(2026, 5, 1, 12, 5, 20)
    assert app.fire_schedules() == []  # the paused slots are not caught up
    clock.advance(seconds=10)
    assert [t.scheduled_for for t in app.fire_schedules()] == [at(2026, 5, 1, 12, 5, 20)]
    assert len(app.list_tasks(schedule="tick")) == 2
    with pytest.raises(roadie.ScheduleNotFound, match="no schedule named 'tock'"):
        app.pause_schedule("tock")


def test_overlap_false_skips_while_the_previous_task_runs(app: roadie.Roadie) -> None:
    clock = clocked(app, at(2026, 5, 1, 12, 0, 0, 500))
    app.add_schedule("report", "tests:sleep", every=60, overlap=False)
    clock.advance(minutes=1)
    (first,) = app.fire_schedules()
    clock.advance(minutes=1)
    assert app.fire_schedules() == []  # the first task has not run yet
    assert f"previous task {first.id} has not ended" in app.get_schedule("report").note
    app.cancel_task(first.id)
    clock.advance(minutes=1)
    (second,) = app.fire_schedules()
    assert second.scheduled_for == at(2026, 5, 1, 12, 3)


def test_add_options_and_errors(app: roadie.Roadie) -> None:
    clock = clocked(app, at(2026, 5, 1, 12, 0, 0, 500))
    info = app.add_schedule("nightly", "tests:sleep", {"seconds": 0}, cron="0 3 * * *",
                            timezone="Europe/Berlin", owner="ops", priority=5, tags=["x"],
                            jitter=30)
    assert info.next_local == dt.datetime(2026, 5, 2, 3, tzinfo=BERLIN)
    assert (info.owner, info.priority, info.tags, info.task_name) == ("ops", 5, {"x"}, "nightly")
    assert info.description == "cron '0 3 * * *' in Europe/Berlin"
    with pytest.raises(roadie.ScheduleError, match="exists already"):
        app.add_schedule("nightly", "tests:sleep", every=60)
    info = app.add_schedule("nightly", "tests:sleep", {"seconds": 0}, every=60, replace=True,
                            owner="ops", priority=5, jitter=30)
    assert info.every == dt.timedelta(seconds=60) and info.next_at == at(2026, 5, 1, 12, 1)
    with pytest.raises(roadie.ScheduleError, match="exactly one of"):
        app.add_schedule("both", "tests:sleep", cron="* * * * *", every=5)
    with pytest.raises(roadie.ScheduleError, match="exactly one of"):
        app.add_schedule("neither", "tests:sleep")
    with pytest.raises(roadie.ScheduleError, match="minute 61 is out of range"):
        app.add_schedule("bad", "tests:sleep", cron="61 * * * *")
    with pytest.raises(roadie.ScheduleError, match="cron schedules only"):
        app.add_schedule("bad", "tests:sleep", every=5, timezone="Europe/Berlin")
    with pytest.raises(roadie.UnknownExecutor, match="tests:slep"):
        app.add_schedule("bad", "tests:slep", every=5)
    assert [s.name for s in app.list_schedules()] == ["nightly"]
    clock.advance(minutes=1)
    (task,) = app.fire_schedules()
    assert task.run_after >= task.scheduled_for  # jitter delays the task, not the slot
    assert task.context == {"seconds": 0} and task.owner == "ops" and task.priority == 5
    now = app.run_schedule_now("nightly")
    assert now.schedule == "nightly" and now.status == Status.NEW
    app.remove_schedule("nightly")
    assert app.list_schedules() == []
    assert len(app.list_tasks(schedule="nightly")) == 2  # its tasks stay


def test_a_slot_fires_once_even_from_a_stale_read(app: roadie.Roadie) -> None:
    """Two nodes that read the same due schedule: the database lets one of them fire."""
    clock = clocked(app, at(2026, 5, 1, 12, 0, 0, 500))
    app.add_schedule("tick", "tests:sleep", every=1)
    clock.advance(seconds=1)
    (row,) = app.store.schedules.due(clock.now, ["tests:sleep"])
    slot = [(at(2026, 5, 1, 12, 0, 1), at(2026, 5, 1, 12, 0, 1))]
    first = app.store.schedules.fire(row, slot, at(2026, 5, 1, 12, 0, 2), "", node="a",
                                     now=clock.now)
    second = app.store.schedules.fire(row, slot, at(2026, 5, 1, 12, 0, 2), "", node="b",
                                      now=clock.now)
    assert first is not None and len(first) == 1 and second is None
    # even past the compare-and-set, the unique index refuses a second task for the slot
    with app.store.write() as conn:
        again = app.store.schedules._insert_tasks(conn, row, slot, clock.now, None)
    assert again == []
    assert len(app.list_tasks(schedule="tick")) == 1


def test_missing_executor_is_listed_and_does_not_fire(app: roadie.Roadie,
                                                      tmp_path: Path) -> None:
    clocked(app, at(2026, 5, 1, 12, 0, 0, 500))
    app.add_schedule("tick", "tests:sleep", every=1)
    other = make_app(app.url, tmp_path / "other")  # a process without the tests executors
    other.clock = lambda: at(2026, 5, 1, 12, 5)
    (info,) = other.list_schedules()
    assert info.state == "broken"
    assert "tests:sleep is not installed here and no running worker has it" in info.problem
    assert other.fire_schedules() == []
    assert app.list_tasks(schedule="tick") == []
    other.remove_schedule("tick")
    assert app.list_schedules() == []
    other.close()


class Ticker(roadie.Executor):
    """Declares its schedule with the class attribute."""

    schedule = roadie.Every(seconds=1, context={"seconds": 0})

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        return roadie.Result.success(f"tick {task.context}")


def test_declared_schedule_is_synced_and_fired_by_a_worker(app: roadie.Roadie) -> None:
    app.plugins.register_executor("tests:ticker", Ticker)
    worker = BackgroundWorker(app, concurrency=1).start()
    try:
        wait_for(lambda: len([t for t in app.list_tasks(schedule="tests:ticker")
                              if t.status == Status.SUCCESSFUL]) >= 2,
                 message="two tasks of the declared schedule ran")
    finally:
        worker.stop()
    (info,) = app.list_schedules()
    assert (info.name, info.origin, info.executor) == ("tests:ticker", "executor", "tests:ticker")
    with pytest.raises(roadie.ScheduleError, match="pause it instead"):
        app.remove_schedule("tests:ticker")
    app.pause_schedule("tests:ticker")


# -- real worker processes -----------------------------------------------------------------


def slots_of(app: roadie.Roadie, name: str) -> list[dt.datetime]:
    return sorted(t.scheduled_for for t in app.list_tasks(schedule=name, limit=None))


def assert_each_second_once(found: list[dt.datetime]) -> None:
    assert len(found) == len(set(found)), "a slot fired twice"
    gaps = [b - a for a, b in itertools.pairwise(found)]
    assert all(g == dt.timedelta(seconds=1) for g in gaps), f"a slot was skipped: {found}"


@pytest.mark.slow
def test_three_workers_fire_each_slot_once(app: roadie.Roadie, tmp_path: Path) -> None:
    app.add_schedule("tick", "roadie-examples:noop", every=1)
    workers = [start_worker(app.url, tmp_path / "data", "--concurrency", "1",
                            log=tmp_path / f"w{i}.log") for i in range(3)]
    try:
        wait_for(lambda: len(app.list_nodes()) == 3, timeout=60, message="3 workers")
        begun = len(slots_of(app, "tick"))
        wait_for(lambda: len(slots_of(app, "tick")) >= begun + 6, timeout=60,
                 message="6 more slots with 3 workers")
    finally:
        for process in workers:
            stop(process)
    found = slots_of(app, "tick")
    assert_each_second_once(found)
    fired_by = {t.status for t in app.list_tasks(schedule="tick", limit=None)}
    assert Status.FAILED not in fired_by


STALL_SOURCE = '''
import os
import time

from roadie.store import schedules as schedulestore

_insert_tasks = schedulestore.ScheduleStore._insert_tasks


def _stalling(self, conn, row, slots, now, decoder):
    tasks = _insert_tasks(self, conn, row, slots, now, decoder)
    trigger = os.environ.get("STALL_TRIGGER")
    if trigger and tasks and os.path.exists(trigger):
        os.remove(trigger)
        with open(os.environ["STALL_MARKER"], "w") as marker:
            marker.write(tasks[-1].scheduled_for.isoformat())
        time.sleep(300)  # inside the firing transaction, until killed
    return tasks


schedulestore.ScheduleStore._insert_tasks = _stalling
'''


@pytest.mark.slow
def test_kill_9_of_the_firing_worker(app: roadie.Roadie, tmp_path: Path,
                                     make_plugin: Callable[..., Path]) -> None:
    """A worker killed in the middle of its firing transaction: its slot is fired by another
    worker, once, and no slot is skipped."""
    site = make_plugin("roadie-stall", {"roadie_stall.py": STALL_SOURCE}, {},
                       hooks="roadie_stall")
    trigger, marker = tmp_path / "trigger", tmp_path / "marker"
    app.add_schedule("tick", "roadie-examples:noop", every=1)
    firing = start_worker(app.url, tmp_path / "data", "--concurrency", "1", pythonpath=[site],
                          env={"STALL_TRIGGER": str(trigger), "STALL_MARKER": str(marker)},
                          log=tmp_path / "firing.log")
    others = [start_worker(app.url, tmp_path / "data", "--concurrency", "1",
                           log=tmp_path / f"w{i}.log") for i in range(2)]
    try:
        wait_for(lambda: len(app.list_nodes()) == 3, timeout=60, message="3 workers")
        trigger.touch()
        # the marker's text, not its existence: the file appears before its text is written
        wait_for(lambda: marker.exists() and marker.read_text(), timeout=60,
                 message="the worker stalls while firing")
        kill(firing)
        stalled = dt.datetime.fromisoformat(marker.read_text())
        wait_for(lambda: any(s >= stalled + dt.timedelta(seconds=3) for s in slots_of(app, "tick")),
                 timeout=60, message="slots after the kill")
    finally:
        kill(firing)
        for process in others:
            stop(process)
    found = slots_of(app, "tick")
    assert stalled in found
    assert_each_second_once(found)


def test_schema_has_the_unique_slot_index(app: roadie.Roadie) -> None:
    names = {i["name"]: i for i in sa.inspect(app.store.engine).get_indexes("roadie_tasks")}
    assert names["roadie_tasks_schedule_slot"]["unique"]


def test_cli(app: roadie.Roadie) -> None:
    from click.testing import CliRunner
    from roadie.cli import cli

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, ["--url", app.url, "schedules", *args])
        return result.exit_code, result.output

    assert "no schedules" in run()[1]
    code, out = run("add", "nightly", "roadie-examples:noop", "--cron", "30 2 * * *",
                    "--timezone", "Europe/Berlin", "--context", '{"n": 1}', "--no-overlap")
    assert code == 0 and "cron '30 2 * * *' in Europe/Berlin, next at" in out
    assert run("add", "tick", "roadie-examples:noop", "--every", "5")[0] == 0
    code, out = run("add", "bad", "roadie-examples:noop", "--cron", "61 * * * *")
    assert code == 1 and "error: invalid cron expression '61 * * * *': minute 61" in out
    code, out = run()
    assert code == 0 and "nightly" in out and "every 5 s" in out and "active" in out
    assert "CET" in out or "CEST" in out  # the next fire time in the schedule's zone
    assert run("pause", "tick") == (0, "schedule tick paused\n")
    assert "paused" in run()[1]
    assert run("resume", "tick")[0] == 0
    code, out = run("run-now", "nightly")
    assert code == 0 and "for schedule nightly" in out
    (task,) = app.list_tasks(schedule="nightly")
    assert task.context == {"n": 1}
    assert run("remove", "tick") == (0, "schedule tick removed\n")
    code, out = run("remove", "tick")
    assert code == 1 and "no schedule named 'tick'" in out
    assert [s.name for s in app.list_schedules()] == ["nightly"]

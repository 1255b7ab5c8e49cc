"""The overview's per-minute rollup and ``Roadie.stats`` (on SQLite and PostgreSQL): its counts
equal the task table's, with failures, cancels and retries; retention prunes it; its
percentiles and windows."""

from __future__ import annotations

import collections
import datetime as dt
import re

import pytest
import roadie
import sqlalchemy as sa
from roadie import Status, models
from roadie.rollup import (
    MAX_WINDOW,
    Rollup,
    bucket_of,
    check_window,
    minute_of,
    percentile,
    step_of,
)
from roadie.rollup_columns import ROLLUP_BUCKETS
from roadie.store import utcnow
from roadie.testing import BackgroundWorker, wait_final, wait_for

ENDED = {Status.SUCCESSFUL: "succeeded", Status.FAILED: "failed",
         Status.CANCELLED: "cancelled"}


def rollup_rows(app: roadie.Roadie, table: sa.Table = models.minutes,
                ) -> list[dict[str, object]]:
    M = table
    with app.store.read() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(M).where(M.c.executor != "*"))]


def test_the_rollup_counts_what_the_task_table_holds(app: roadie.Roadie) -> None:
    ids = [app.add_task("tests:sleep", {"seconds": 0.01}).id for _ in range(6)]
    ids += [app.add_task("tests:boom", {}).id for _ in range(3)]
    ids += [app.add_task("tests:refuse", {}).id for _ in range(2)]
    ids += [app.add_task("tests:flaky", {"succeed_on": 2}).id for _ in range(2)]  # a retry
    ids += [app.add_task("tests:flaky", {"succeed_on": 9}).id]  # fails 3 times
    later = utcnow() + dt.timedelta(hours=1)
    waiting = [app.add_task("tests:sleep", {}, run_after=later).id for _ in range(2)]
    for task_id in waiting:  # cancelled before they ever start
        app.cancel_task(task_id)
    spin = app.add_task("tests:spin", {}).id
    worker = BackgroundWorker(app, concurrency=4).start()
    try:
        # (started: IN_PROGRESS alone may be a task claimed ahead, not started yet)
        wait_for(lambda: app.get_task(spin).started_at is not None, timeout=30,
                 message="the spinning task to start")
        app.cancel_task(spin)  # cancelled while it runs
        tasks = [wait_final(app, task_id, timeout=60) for task_id in ids + waiting + [spin]]
    finally:
        worker.stop()  # (it writes its last counts as it stops)

    expected: collections.Counter[tuple[dt.datetime, str, str]] = collections.Counter()
    started: collections.Counter[str] = collections.Counter()
    for task in tasks:
        assert task.finished_at is not None
        expected[minute_of(task.finished_at), task.executor, ENDED[task.status]] += 1
        started[task.executor] += len(app.attempts(task.id))
    counted: collections.Counter[tuple[dt.datetime, str, str]] = collections.Counter()
    counted_started: collections.Counter[str] = collections.Counter()
    runs: collections.Counter[str] = collections.Counter()
    for row in rollup_rows(app):
        at, executor = row["at"], str(row["executor"])
        assert isinstance(at, dt.datetime)
        for name in ENDED.values():
            if row[name]:
                counted[at.astimezone(dt.timezone.utc), executor, name] += int(row[name])  # type: ignore[call-overload]
        counted_started[executor] += int(row["started"])  # type: ignore[call-overload]
        runs[executor] += sum(int(row[f"run_{i}"])  # type: ignore[call-overload]
                              for i in range(ROLLUP_BUCKETS))
    assert counted == expected
    assert counted_started == started
    assert started["tests:flaky"] == 2 * 2 + 3 and started["tests:sleep"] == 6
    assert runs == started  # every attempt that ran has its run time
    by_hour: collections.Counter[tuple[object, object, str]] = collections.Counter()
    for row in rollup_rows(app):
        at = row["at"]
        assert isinstance(at, dt.datetime)
        for name in models.ROLLUP_COUNTS + models.ROLLUP_HISTOGRAMS:
            by_hour[at.replace(minute=0), row["executor"], name] += int(row[name])  # type: ignore[call-overload]
    hours: collections.Counter[tuple[object, object, str]] = collections.Counter()
    for row in rollup_rows(app, models.hours):
        for name in models.ROLLUP_COUNTS + models.ROLLUP_HISTOGRAMS:
            hours[row["at"], row["executor"], name] += int(row[name])  # type: ignore[call-overload]
    assert +hours == +by_hour  # the hours hold what their minutes hold
    week = app.stats(window=7 * 86400)  # (read from the hours)
    assert week.step == 3600
    assert sum(b.succeeded for b in week.buckets) == 8
    assert sum(b.started for b in week.buckets) == sum(started.values())

    stats = app.stats(window=3600)
    total = collections.Counter({name: sum(getattr(b, name) for b in stats.buckets)
                                 for name in ("started", "succeeded", "failed", "cancelled")})
    assert total == collections.Counter(
        started=sum(started.values()), succeeded=8, failed=6, cancelled=3)
    by_name = {e.executor: e for e in stats.executors}
    assert by_name["tests:boom"].failed_last_hour == 3
    assert by_name["tests:flaky"].failed_last_hour == 1
    sleep = by_name["tests:sleep"]
    assert (sleep.waiting, sleep.running) == (0, 0)
    assert sleep.run_p50_ms is not None and sleep.run_p95_ms is not None
    assert 1 <= sleep.run_p50_ms <= sleep.run_p95_ms
    assert sleep.wait_p50_ms is not None
    day = {e.executor: e for e in app.stats(window=86400).executors}  # (times from the hours)
    assert (day["tests:sleep"].run_p50_ms, day["tests:sleep"].wait_p95_ms) == (
        sleep.run_p50_ms, sleep.wait_p95_ms)
    document = stats.as_json()
    assert set(document) == {"buckets", "executors"}
    assert set(document["executors"][0]) == {
        "executor", "waiting", "running", "failed_last_hour", "wait_p50_ms", "wait_p95_ms",
        "run_p50_ms", "run_p95_ms"}


def test_stats_count_waiting_and_running_tasks_and_sample_the_depth(
        app: roadie.Roadie) -> None:
    for _ in range(3):
        app.add_task("tests:sleep", {})
    stats = app.stats(window=600)
    assert {e.executor: (e.waiting, e.running) for e in stats.executors}["tests:sleep"] == (3, 0)
    assert stats.depth[-1].waiting == 3
    minute = minute_of(utcnow())
    assert app.store.sample_depth(minute) is True
    assert app.store.sample_depth(minute) is False  # one sample a minute, whoever takes it
    samples = app.stats(window=600).depth
    assert [(s.at, s.waiting) for s in samples[:-1]] == [(minute, 3)]
    assert len(stats.buckets) == 10 and stats.step == 60
    assert all(b.started == 0 for b in stats.buckets)


def test_retention_prunes_the_rollup(app: roadie.Roadie) -> None:
    now = minute_of(utcnow())
    old, kept = now - dt.timedelta(days=40), now - dt.timedelta(days=2)
    app.store.add_rollup([{"at": old, "executor": "tests:sleep", "succeeded": 4},
                          {"at": kept, "executor": "tests:sleep", "succeeded": 2},
                          {"at": kept, "executor": "tests:sleep", "succeeded": 1}])
    assert sorted((r["at"], r["succeeded"]) for r in rollup_rows(app)) == [(old, 4), (kept, 3)]
    assert len(rollup_rows(app, models.hours)) == 2
    app.prune("30d")
    assert [(r["at"], r["succeeded"]) for r in rollup_rows(app)] == [(kept, 3)]
    assert [r["succeeded"] for r in rollup_rows(app, models.hours)] == [3]
    app.prune("1d")  # a week of the overview is kept whatever the retention
    assert [(r["at"], r["succeeded"]) for r in rollup_rows(app)] == [(kept, 3)]


def test_buckets_and_percentiles() -> None:
    assert [bucket_of(s) for s in (0, 0.0005, 0.001, 0.0015, 0.002, 1.0, -3, 1e9)] == [
        0, 0, 1, 1, 2, 10, 0, ROLLUP_BUCKETS - 1]
    histogram = [0] * ROLLUP_BUCKETS
    assert percentile(histogram, 0.5) is None
    histogram[bucket_of(0.1)] = 100  # 100 ms: bucket [64, 128)
    p50 = percentile(histogram, 0.5)
    assert p50 is not None and 64 <= p50 <= 128
    histogram[bucket_of(10.0)] = 100  # and as many of 10 s
    p95 = percentile(histogram, 0.95)
    assert p95 is not None and 8192 <= p95 <= 16384
    assert step_of(3600) == 60 and step_of(86400) == 600 and step_of(MAX_WINDOW) == 3600
    assert step_of(2 * 86400) == 3600  # (beyond a day: the hourly rollup)


class KeptRows:
    """A stand-in for the store: keeps what a flush would write."""

    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []

    def add_rollup(self, rows: list[dict[str, object]]) -> None:
        self.rows.extend(rows)


def test_a_flush_counts_each_start_and_end_in_its_minute_and_executor() -> None:
    """Starts and ends of two executors, interleaved, across minute boundaries (the fold
    reuses a row for runs of one executor's minute), with odd durations: each counted in the
    row of its own minute and executor, in its own bucket."""
    rollup = Rollup()
    expected: dict[tuple[dt.datetime, str], collections.Counter[str]] = {}
    base = dt.datetime(2026, 12, 7, 10, 58, 59, 999_000, tzinfo=dt.timezone.utc)
    durations = [0.0, 0.0004, 0.003, -1.0, float("nan"), 1e9, 2.5]
    for i in range(400):
        executor = "tests:a" if i % 3 else "tests:b"
        at = base + dt.timedelta(milliseconds=7 * i * i)  # runs of one minute, then gaps
        seconds = durations[i % len(durations)]
        counts = expected.setdefault((minute_of(at), executor), collections.Counter())
        if i % 2:
            rollup.started(executor, at, seconds)
            counts["started"] += 1
            counts[f"wait_{bucket_of(seconds)}"] += 1
        else:
            status = (Status.SUCCESSFUL, Status.FAILED, Status.CANCELLED, Status.NEW)[i // 2 % 4]
            ran = None if i % 5 == 0 else seconds
            rollup.ended_many([(executor, status, at, ran)])
            if status in ENDED:
                counts[ENDED[status]] += 1
            if ran is not None:
                counts[f"run_{bucket_of(ran)}"] += 1
    kept = KeptRows()
    assert rollup.flush(kept) == len(expected) > 6  # type: ignore[arg-type]
    got = {(row["at"], row["executor"]): collections.Counter(
        {k: v for k, v in row.items() if k not in ("at", "executor") and v})
        for row in kept.rows}
    assert got == expected
    assert not rollup and rollup.flush(kept) == 0  # type: ignore[arg-type]


@pytest.mark.parametrize("window", ["soon", "59", MAX_WINDOW + 1, -5, "1.5", True, None])
def test_a_bad_window_says_what_is_allowed(window: object) -> None:
    with pytest.raises(ValueError, match="window"):
        check_window(window)
    assert check_window("3600") == 3600


# -- the web app: /api/stats, /overview, /executors -----------------------------------------


def test_the_stats_api_the_overview_and_the_executors_page(app: roadie.Roadie) -> None:
    from tests.test_web_api import AUTH, TOKEN, client_for, login

    ids = [app.add_task("tests:sleep", {"seconds": 0}).id for _ in range(4)]
    ids += [app.add_task("tests:boom", {}).id for _ in range(2)]
    app.run_worker(concurrency=2, until_idle=True)
    for task_id in ids:
        wait_final(app, task_id)
    with client_for(app, token=TOKEN) as web:
        assert web.get("/api/stats").status_code == 401
        document = web.get("/api/stats?window=600", headers=AUTH).json()
        assert set(document) == {"buckets", "executors"}
        assert len(document["buckets"]) == 10
        assert sum(b["succeeded"] for b in document["buckets"]) == 4
        assert sum(b["failed"] for b in document["buckets"]) == 2
        boom = next(e for e in document["executors"] if e["executor"] == "tests:boom")
        assert boom["failed_last_hour"] == 2 and boom["run_p50_ms"] is not None
        for bad in ("abc", "59", "604801", "1e3", ""):
            response = web.get(f"/api/stats?window={bad}", headers=AUTH)
            assert response.status_code == 400, bad
            assert "window" in response.json()["error"]
        login(web)
        page = web.get("/overview").text
        nav = page[page.index("<nav"):page.index("</nav>")]
        assert nav.index("/overview") < nav.index('href="/"')  # first in the navigation
        titles = re.findall(r'role="img" aria-labelledby="([^"]+)"', page)
        assert titles == ["chart-throughput-title", "chart-depth-title", "chart-times-title"]
        assert "4 succeeded, 2 failed" in page
        assert page.count("<summary>Show as table</summary>") == 3
        assert "<polyline" in page and "<script" not in page.split("</head>")[1]
        for key in ("24h", "7d"):
            assert "role=\"img\"" in web.get(f"/overview?range={key}").text
        fragment = web.get("/overview/charts?range=1h")
        assert fragment.status_code == 200 and "<html" not in fragment.text
        executors = web.get("/executors").text
        row = executors[executors.index('data-executor="tests:boom"'):]
        row = row[:row.index("</tr>")]
        assert 'data-field="failed-last-hour">2<' in row
        assert re.search(r'data-field="run-p50">[0-9.]+ (ms|s)<', row)


def test_the_overview_says_so_when_nothing_ran(app: roadie.Roadie) -> None:
    from tests.test_web_api import client_for

    with client_for(app) as web:
        page = web.get("/overview").text
        assert "no task started in this window" in page
        assert "now 0 waiting and 0 running" in page

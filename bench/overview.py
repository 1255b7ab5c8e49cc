"""The overview at scale: ``/api/stats`` and ``/overview`` with 1,000,000 tasks (issue 33).

For each backend, on a fresh database (retention off):

- fill, in set-based SQL: ``--rows`` tasks of 8 executors, created over the last 7 days
  (95.9 % ended: successful, failed, cancelled; 4 % waiting; 100 running), and the per-minute
  rollup the workers would have written for them (its counts from the tasks, one row per
  minute and executor, with wait and run histograms spread over several buckets), plus a depth
  sample a minute; then ``ANALYZE`` (and a ``VACUUM`` on PostgreSQL);
- measure: the time of ``GET /api/stats?window=W`` and ``GET /overview?range=R`` for an hour,
  a day and 7 days, each request served in this process through Starlette's ASGI test client
  (so: the server's time plus well under a millisecond of the client), ``--repeat`` times,
  interleaved, median and worst; targets 100 ms on PostgreSQL and 300 ms on SQLite;
- show the plan of the count of open tasks per executor (PostgreSQL's EXPLAIN, SQLite's
  EXPLAIN QUERY PLAN): an index walk of the open tasks, not a scan of the table.

    python bench/overview.py [--rows 1000000] [--repeat 15] [--backend sqlite|postgres|both]

PostgreSQL: database ``roadie_bench_i33`` (``ROADIE_BENCH_OVERVIEW_PG``), dropped and created
again.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import roadie
import sqlalchemy as sa
from _databases import fresh_postgres
from _results import table, write_section
from roadie import models

warnings.filterwarnings("ignore", message=".*httpx.*")
from starlette.testclient import TestClient  # noqa: E402

PG_URL = os.environ.get("ROADIE_BENCH_OVERVIEW_PG",
                        "postgresql://postgres@127.0.0.1:5432/roadie_bench_i33")
SECTION = "Overview: /api/stats and /overview with a million tasks"
EXECUTORS = 8
TARGET_MS = {"postgres": 100.0, "sqlite": 300.0}
WINDOWS = (("1h", 3600), ("24h", 86400), ("7d", 7 * 86400))
SPAN = 7 * 86400 - 120  # seconds over which the tasks were created


@dataclass
class Figures:
    """One backend's measurements (milliseconds)."""

    backend: str
    rows: int
    load: float = 0.0
    fill_seconds: float = 0.0
    rollup_rows: int = 0
    times: dict[str, list[float]] = field(default_factory=dict)
    plan: str = ""


def fresh_database(backend: str, tmp: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp / 'overview.db'}"
    return fresh_postgres(PG_URL)


def fill(app: roadie.Roadie, rows: int) -> tuple[float, int]:
    """The tasks and their rollup, in set-based SQL; (seconds, rollup rows)."""
    pg = app.store.is_postgres
    # task i (1..rows): created (SPAN * i / rows) seconds after the start, ran 0-7 s later
    if pg:
        series = "generate_series(1, :rows) AS s(i)"
        prefix = ""
        created = ("(CAST(:start AS timestamptz) + (CAST(s.i AS bigint) * :span / :rows) "
                   "* interval '1 second')")

        def plus(expr: str, seconds: str) -> str:
            return f"({expr} + ({seconds}) * interval '1 second')"
        minute = "date_trunc('minute', finished_at)"
        plugins, context = "'{}'::json", "'\\x80'::bytea"
    else:
        series = "s"
        prefix = ("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s "
                  "WHERE i < :rows) ")
        created = "datetime(:start, '+' || (s.i * :span / :rows) || ' seconds')"

        def plus(expr: str, seconds: str) -> str:
            return f"datetime({expr}, '+' || ({seconds}) || ' seconds')"
        minute = "strftime('%Y-%m-%d %H:%M:00.000000', finished_at)"
        plugins, context = "'{}'", "x'80'"
    # statuses by i % 100: 0-3 waiting (NEW), 4 failed, 5 cancelled on every other, rest
    # successful; the newest 100 tasks run
    status = ("CASE WHEN s.i > :rows - 100 THEN 1 WHEN s.i % 100 < 4 THEN 0 "
              "WHEN s.i % 100 = 4 THEN 2 WHEN s.i % 200 = 5 THEN 5 ELSE 3 END")
    insert = (
        prefix + "INSERT INTO roadie_tasks (executor, plugins, context, status, completed, "
        "run_after, created_at, started_at, finished_at, updated_at, claimable, attempts) "
        f"SELECT 'bench:e' || (s.i % {EXECUTORS}), {plugins}, {context}, st, st IN (2, 3, 5), "
        "c, c, CASE WHEN st IN (0) THEN NULL ELSE " + plus("c", "s.i % 3") + " END, "
        "CASE WHEN st IN (2, 3, 5) THEN " + plus("c", "3 + s.i % 5") + " END, c, true, "
        "CASE WHEN st = 0 THEN 0 ELSE 1 END "
        f"FROM (SELECT s.i, {created} AS c, {status} AS st FROM {series}) AS s "
        "ORDER BY s.i")
    if not pg:  # (the recursive CTE's name is s inside the subquery too)
        insert = insert.replace(f"FROM {series}) AS s", "FROM s) AS s")
    waits = ", ".join(f"wait_{b}, run_{b}" for b in range(4, 12))
    sums = ", ".join(f"SUM(CASE WHEN id % 8 = {b - 4} THEN 1 ELSE 0 END), "
                     f"SUM(CASE WHEN id % 8 = {(b + 3) % 8} THEN 1 ELSE 0 END)"
                     for b in range(4, 12))
    rollup = (
        "INSERT INTO roadie_minutes (at, executor, started, succeeded, failed, cancelled, "
        f"{waits}) SELECT {minute} AS m, executor, COUNT(*), "
        "SUM(CASE WHEN status = 3 THEN 1 ELSE 0 END), SUM(CASE WHEN status = 2 THEN 1 ELSE 0 "
        f"END), SUM(CASE WHEN status = 5 THEN 1 ELSE 0 END), {sums} FROM roadie_tasks "
        "WHERE finished_at IS NOT NULL GROUP BY m, executor")
    depth = (
        "INSERT INTO roadie_minutes (at, executor, waiting, running) "
        f"SELECT DISTINCT {minute} AS m, '*', 40000, 100 FROM roadie_tasks "
        "WHERE finished_at IS NOT NULL")
    hours = ", ".join(["started", "succeeded", "failed", "cancelled"]
                      + [f"wait_{b}, run_{b}" for b in range(4, 12)])
    hour = ("date_trunc('hour', at)" if pg
            else "strftime('%Y-%m-%d %H:00:00.000000', at)")
    hourly = (f"INSERT INTO roadie_hours (at, executor, {hours}, waiting, running) "
              f"SELECT {hour} AS h, executor, "
              + ", ".join(f"SUM({c.strip()})" for c in hours.split(","))
              + ", MAX(waiting), MAX(running) FROM roadie_minutes GROUP BY h, executor")
    import datetime as dt

    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=SPAN + 60)
    params = {"rows": rows, "span": SPAN,
              "start": start if pg else start.strftime("%Y-%m-%d %H:%M:%S")}
    began = time.perf_counter()
    with app.store.write() as conn:
        conn.execute(sa.text(insert), params)
        conn.execute(sa.text(rollup))
        conn.execute(sa.text(depth))
        conn.execute(sa.text(hourly))
        count = conn.execute(sa.text("SELECT COUNT(*) FROM roadie_minutes")).scalar() or 0
    if pg:
        with app.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(sa.text("VACUUM ANALYZE roadie_tasks"))
            c.execute(sa.text("VACUUM ANALYZE roadie_minutes"))
            c.execute(sa.text("VACUUM ANALYZE roadie_hours"))
    else:
        with app.store.write() as conn:
            conn.execute(sa.text("ANALYZE"))
    return time.perf_counter() - began, int(count)


def plan(app: roadie.Roadie) -> str:
    """The plan of the open tasks' count per executor (``executor_counts``)."""
    T = models.tasks
    query = (sa.select(T.c.executor, sa.func.count())
             .where(sa.text(f"roadie_tasks.{models.OPEN_BY_EXECUTOR}")).group_by(T.c.executor))
    sql = str(query.compile(app.store.engine, compile_kwargs={"literal_binds": True}))
    with app.store.read() as conn:
        if app.store.is_postgres:
            lines = conn.execute(sa.text("EXPLAIN (ANALYZE, COSTS OFF) " + sql)).scalars()
            return "; ".join(line.strip() for line in lines)
        return "; ".join(str(r[-1]) for r in conn.execute(sa.text("EXPLAIN QUERY PLAN " + sql)))


def measure(backend: str, rows: int, repeat: int, tmp: Path) -> Figures:
    figures = Figures(backend, rows, load=os.getloadavg()[0])
    app = roadie.Roadie(fresh_database(backend, tmp), retention="")
    app.upgrade_schema()
    from roadie.web import create_app

    try:
        figures.fill_seconds, figures.rollup_rows = fill(app, rows)
        print(f"  filled {rows:,} tasks and {figures.rollup_rows:,} rollup rows in "
              f"{figures.fill_seconds:.1f} s", flush=True)
        figures.plan = plan(app)
        with TestClient(create_app(app)) as client:
            paths = [(f"/api/stats {key}", f"/api/stats?window={seconds}")
                     for key, seconds in WINDOWS]
            paths += [(f"/overview {key}", f"/overview?range={key}") for key, _ in WINDOWS]
            paths += [("/executors", "/executors")]
            for _, path in paths:  # warm up (the first request builds the app's caches)
                assert client.get(path).status_code == 200, path
            for _ in range(repeat):
                for name, path in paths:
                    began = time.perf_counter()
                    response = client.get(path)
                    took = (time.perf_counter() - began) * 1000
                    assert response.status_code == 200, (path, response.text[:200])
                    figures.times.setdefault(name, []).append(took)
    finally:
        app.close()
    return figures


def report(results: list[Figures]) -> str:
    rows = []
    for f in results:
        for name, times in f.times.items():
            median = statistics.median(times)
            rows.append([f.backend, name, f"{median:.1f} ms", f"{max(times):.1f} ms",
                         f"{TARGET_MS[f.backend]:.0f} ms",
                         "yes" if median <= TARGET_MS[f.backend] else "**no**"])
    text = table(["backend", "request", "median", "worst", "target", "met"], rows)
    for f in results:
        text += (f"\n\n{f.backend}: {f.rows:,} tasks, {f.rollup_rows:,} rollup rows, filled in "
                 f"{f.fill_seconds:.1f} s; load average {f.load:.1f} when it started. "
                 f"Open tasks per executor: `{f.plan}`")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15, help="requests per path")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--no-write", action="store_true", help="print only, keep RESULTS.md")
    args = parser.parse_args()
    backends = ["postgres", "sqlite"] if args.backend == "both" else [args.backend]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            print(f"{backend}: {args.rows:,} tasks", flush=True)
            results.append(measure(backend, args.rows, args.repeat, Path(tmp)))
    text = report(results)
    print()
    print(text)
    if not args.no_write:
        write_section(SECTION, text + "\n\n" + NOTES)


NOTES = """\
The times are of whole requests served in the benchmark's process (Starlette's test client:
routing, the reads, the page's SVG and template, the JSON), one request at a time. What a
request reads does not grow with the task table: the throughput series and the histograms
come from the rollup (one row per minute and executor, and one per hour and executor: a
window longer than a day reads the hours, 168 rows per executor for 7 days), and the waiting
and running counts from a partial index of the open tasks (`roadie_tasks_open_executor`,
`status IN (0, 1, 4)`), whose size is the queue's, not the table's."""


if __name__ == "__main__":
    main()

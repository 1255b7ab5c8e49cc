"""Retention: does pruning many old finished tasks stall claiming? (issue 12)

For each backend, on a fresh database:

- fill: ``--rows`` ended tasks (SUCCESSFUL, finished 60 days ago and earlier, one second
  apart), each with one attempt row, copied in set-based SQL from a real no-op task that a
  worker ran (PostgreSQL: ``generate_series``, then ``VACUUM ANALYZE``; SQLite: a recursive
  CTE), and timed;
- baseline: the drain of ``--tasks`` no-op tasks (``bench:stamp``, added with
  ``app.add_tasks``) by ``app.run_worker(concurrency=2, until_idle=True)``, from the call to
  its return;
- while pruning: the same drain again, with ``app.prune(timedelta(days=30))`` started in
  another thread just before it; the prune's time and rate are measured to its end.

Each task's executor records ``perf_counter()`` when it starts; the longest gap between two
consecutive starts (while the prune ran, for the second drain) says whether claiming stalled.

    python bench/prune.py [--rows N] [--tasks 5000] [--backend sqlite|postgres|both]

PostgreSQL: database ``roadie_bench`` (see throughput.py), dropped and created again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import roadie
import sqlalchemy as sa
from _results import table, write_section
from roadie import models
from roadie.retention import BATCH
from throughput import CHUNK, NOOP, STAMP, StampExecutor, count_successful, fresh_database

DEFAULT_ROWS = {"postgres": 1_000_000, "sqlite": 200_000}
AGE = dt.timedelta(days=60)  # the newest filled task ended this long ago
OLDER_THAN = dt.timedelta(days=30)  # what the prune deletes
SECTION = "Retention: pruning while claiming"
# columns the fill sets itself; every other column of roadie_tasks is the real task's value
TIMES = {"run_after": 2, "created_at": 2, "started_at": 1, "heartbeat_at": 1,
         "finished_at": 0, "updated_at": 0}  # seconds before the task's end


@dataclass
class Figures:
    """What one backend measured (times in seconds, from ``perf_counter``)."""

    backend: str
    rows: int
    tasks: int
    load: float = 0.0
    fill_seconds: float = 0.0
    pruned: int = 0
    prune_seconds: float = 0.0
    baseline: float = 0.0
    pruning: float = 0.0
    gap_baseline: float = 0.0
    gap_pruning: float = 0.0
    starts_while_pruning: int = 0
    prune_after_drain: float = 0.0  # > 0: the prune went on this long after the drain ended
    notes: list[str] = field(default_factory=list)

    def row(self) -> list[str]:
        """This backend's row of the table."""
        return [self.backend, f"{self.pruned:,}", f"{self.prune_seconds:.1f} s",
                f"{self.pruned / self.prune_seconds:,.0f}/s", f"{self.baseline:,.0f}/s",
                f"{self.pruning:,.0f}/s", f"{self.pruning / self.baseline:.2f}x",
                f"{self.gap_baseline * 1000:.0f} / {self.gap_pruning * 1000:.0f} ms",
                f"{self.load:.1f}"]


def seconds_before(store_is_postgres: bool, offset: str) -> str:
    """SQL for the time ``offset`` (an SQL integer expression) seconds before ``:base``."""
    if store_is_postgres:
        return f"CAST(:base AS timestamptz) - ({offset}) * interval '1 second'"
    # SQLite keeps naive UTC text, 'YYYY-MM-DD HH:MM:SS.ffffff'
    return f"datetime(:base, '-' || ({offset}) || ' seconds') || '.000000'"


def fill(app: roadie.Roadie, rows: int) -> float:
    """Add ``rows`` old ended tasks with one attempt each, copied from a real no-op task that
    a worker ran; returns the seconds the inserts took. The model task is deleted after."""
    model = app.add_task(NOOP, {})
    app.run_worker(concurrency=1, until_idle=True)
    if app.get_task(model.id).status != roadie.Status.SUCCESSFUL:
        sys.exit(f"the model task ended {app.get_task(model.id).status.label}")
    pg = app.store.is_postgres
    base = dt.datetime.now(dt.timezone.utc) - AGE
    columns = [c.name for c in models.tasks.c if c.name != "id"]
    values = [seconds_before(pg, f":rows - s.i + {TIMES[c]}") if c in TIMES else f"m.{c}"
              for c in columns]
    series = ("generate_series(1, :rows) AS s(i)" if pg else "s")
    insert_tasks = (
        ("" if pg else "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s "
                       "WHERE i < :rows) ")
        + f"INSERT INTO roadie_tasks ({', '.join(columns)}) "
        + f"SELECT {', '.join(values)} FROM roadie_tasks AS m, {series} WHERE m.id = :model "
        + "ORDER BY s.i")
    insert_attempts = (
        "INSERT INTO roadie_attempts (task_id, attempt, node, status, message, error, "
        "started_at, finished_at) SELECT t.id, a.attempt, a.node, a.status, a.message, a.error, "
        "t.started_at, t.finished_at FROM roadie_tasks AS t, roadie_attempts AS a "
        "WHERE a.task_id = :model AND t.id > :model ORDER BY t.id")
    params = {"rows": rows, "model": model.id,
              "base": base if pg else base.strftime("%Y-%m-%d %H:%M:%S")}
    started = time.perf_counter()
    with app.store.write() as conn:
        conn.execute(sa.text(insert_tasks), params)
        conn.execute(sa.text(insert_attempts), params)
        conn.execute(sa.text("DELETE FROM roadie_attempts WHERE task_id = :model"), params)
        conn.execute(sa.text("DELETE FROM roadie_tasks WHERE id = :model"), params)
    seconds = time.perf_counter() - started
    if pg:
        with app.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE roadie_tasks"))
            conn.execute(sa.text("VACUUM ANALYZE roadie_attempts"))
    return seconds


def drain(app: roadie.Roadie, n: int) -> tuple[float, float, float, list[float]]:
    """Add ``n`` tasks that record their start, then run one worker (two threads) until idle:
    (rate in tasks/s, drain start, drain end, the sorted start times)."""
    for offset in range(0, n, CHUNK):
        # t0 = 0: StampExecutor records perf_counter() itself, when the task starts
        app.add_tasks([{"executor": STAMP, "context": {"t0": 0.0}}] * min(CHUNK, n - offset))
    StampExecutor.stamps.clear()
    started = time.perf_counter()
    stats = app.run_worker(concurrency=2, until_idle=True)
    ended = time.perf_counter()
    if stats.finished != n or len(StampExecutor.stamps) != n:
        sys.exit(f"the drain finished {stats.finished} tasks, {len(StampExecutor.stamps)} "
                 f"started; expected {n}")
    return n / (ended - started), started, ended, sorted(StampExecutor.stamps)


def longest_gap(starts: list[float], since: float = 0.0, until: float = float("inf")) -> float:
    """The longest time between two consecutive starts, both within ``since``-``until``."""
    inside = [s for s in starts if since <= s <= until]
    return max((b - a for a, b in itertools.pairwise(inside)), default=0.0)


def measure(backend: str, rows: int, n: int) -> Figures:
    """Fill, drain without pruning, then drain while pruning, on a fresh database."""
    figures = Figures(backend, rows, n, load=os.getloadavg()[0])
    with tempfile.TemporaryDirectory(prefix="roadie-bench-", ignore_cleanup_errors=True) as tmp:
        url = fresh_database(backend, Path(tmp))
        app = roadie.Roadie(url, data_dir=tmp, auto_upgrade=True)
        app.plugins.register_executor(STAMP, StampExecutor)
        try:
            figures.fill_seconds = fill(app, rows)
            print(f"  {backend}: filled {rows:,} ended tasks in {figures.fill_seconds:.1f} s "
                  f"({rows / figures.fill_seconds:,.0f}/s)", flush=True)

            figures.baseline, _, _, starts = drain(app, n)
            figures.gap_baseline = longest_gap(starts)
            print(f"  {backend}: drain without pruning {figures.baseline:,.0f}/s, longest "
                  f"start gap {figures.gap_baseline * 1000:.0f} ms", flush=True)

            outcome: dict[str, float | int | BaseException] = {}

            def run_prune() -> None:
                outcome["start"] = time.perf_counter()
                try:
                    outcome["pruned"] = app.prune(OLDER_THAN)
                except BaseException as exc:  # reported by the main thread
                    outcome["error"] = exc
                outcome["end"] = time.perf_counter()

            pruner = threading.Thread(target=run_prune, name="bench-prune")
            pruner.start()
            figures.pruning, d_start, d_end, starts = drain(app, n)
            pruner.join()
            if "error" in outcome:
                raise RuntimeError("the prune failed") from outcome["error"]
            p_start, p_end = float(outcome["start"]), float(outcome["end"])
            figures.pruned = int(outcome["pruned"])
            figures.prune_seconds = p_end - p_start
            figures.prune_after_drain = p_end - d_end
            figures.gap_pruning = longest_gap(starts, p_start, p_end)
            figures.starts_while_pruning = sum(p_start <= s <= p_end for s in starts)
            left = app.store.count_tasks()
            if (figures.pruned != rows or count_successful(app) != 2 * n
                    or sum(left.values()) != 2 * n):
                sys.exit(f"{backend}: pruned {figures.pruned:,} of {rows:,}; left {left}")
            when = (f"ended {figures.prune_after_drain:.1f} s after the drain"
                    if figures.prune_after_drain > 0 else
                    f"ended {-figures.prune_after_drain:.1f} s BEFORE the drain ended "
                    f"({figures.starts_while_pruning:,} of {n:,} starts while it ran, "
                    f"{figures.starts_while_pruning / (p_end - max(p_start, d_start)):,.0f}/s)")
            figures.notes.append(
                f"{backend}: fill {figures.fill_seconds:.1f} s; the prune started "
                f"{(d_start - p_start) * 1000:.0f} ms before the drain and {when}")
            print(f"  {backend}: drain while pruning {figures.pruning:,.0f}/s "
                  f"({figures.pruning / figures.baseline:.2f}x), longest start gap "
                  f"{figures.gap_pruning * 1000:.0f} ms; pruned {figures.pruned:,} in "
                  f"{figures.prune_seconds:.1f} s ({figures.pruned / figures.prune_seconds:,.0f}"
                  f"/s), {when}", flush=True)
        finally:
            app.close()
    return figures


def report(results: list[Figures]) -> str:
    header = ["backend", "rows pruned", "prune time", "prune rate", "drain, baseline",
              "drain while pruning", "ratio", "longest start gap, baseline / pruning",
              "load at start"]
    return table(header, [f.row() for f in results])


def notes(results: list[Figures], n: int) -> str:
    """What was measured, for RESULTS.md."""
    return "\n".join([
        f"Per backend, on a fresh database (SQLite file in a temp dir; PostgreSQL 127.0.0.1, "
        f"database `roadie_bench`): the rows pruned were ended tasks (SUCCESSFUL, finished 60 "
        f"days ago and earlier, one second apart, each with one attempt row), copied in one "
        f"`INSERT ... SELECT` (PostgreSQL `generate_series`, then `VACUUM ANALYZE`; SQLite a "
        f"recursive CTE) from a real no-op task a worker had run. Then two drains of {n:,} "
        f"no-op tasks (`{STAMP}`, added with `app.add_tasks`; its executor, throughput.py's "
        f"`StampExecutor`, only records `perf_counter()` when it starts) by "
        f"`app.run_worker(concurrency=2, until_idle=True)`, from the call to its return: first "
        f"alone (baseline), then with `app.prune(timedelta(days=30))` (batches of {BATCH:,} "
        f"tasks, each its own transaction) started in another thread of the same process just "
        f"before the drain. Prune time and rate: from "
        f"its call to its return. Longest start gap: the longest time between two consecutive "
        f"task starts, over the whole baseline drain and over the starts while the prune ran.",
        "",
        "Details: " + "; ".join(note for f in results for note in f.notes) + ".",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=None,
                        help="old ended tasks to prune (default: 1,000,000 on PostgreSQL, "
                             "200,000 on SQLite)")
    parser.add_argument("--tasks", type=int, default=5000, help="tasks per drain")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--no-write", action="store_true", help="print only, keep RESULTS.md")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    results = []
    for backend in backends:
        rows = args.rows or DEFAULT_ROWS[backend]
        print(f"{backend}: prune {rows:,} ended tasks while draining {args.tasks:,}", flush=True)
        results.append(measure(backend, rows, args.tasks))
    text = report(results)
    print()
    print(text)
    if not args.no_write:
        write_section(SECTION, text + "\n\n" + notes(results, args.tasks))


if __name__ == "__main__":
    main()

"""Profile the drain of no-op tasks: where a worker spends its time per task.

Adds N no-op tasks in batches to a fresh database (as ``throughput.py`` does), then drains
them with ``app.run_worker(concurrency=2, until_idle=True)``, printing each statement kind's
count and time per task. Ways to look further inside:

    python bench/profile_drain.py --backend sqlite --cprofile
        cProfile in the claim loop and in each worker thread (wall-clock time, so waits on the
        database count), merged, top functions printed per task. cProfile slows Python code
        down: read the shares, not the totals.

    py-spy record --idle --threads -f raw -o drain.txt -- python bench/profile_drain.py --no-sql-log
    python bench/profile_drain.py --summarize drain.txt
        py-spy samples (low overhead); ``--summarize`` sums the samples of the drain only
        (worker threads and the claim loop), by function, inclusive and self.

    python bench/profile_drain.py --backend postgres --no-sql-log --tasks 6000 --thread-cpu
        CPU time per task of the claim loop and of each worker thread (``time.thread_time``),
        and of the whole process: with the GIL, process CPU per task close to wall time per
        task means one core is the limit, and the claim loop's share says where to look.

    python bench/profile_drain.py --backend postgres --what-if prefetch --what-if no-pre-ping
        Measures a proposed change by patching this process only (nothing in core/ changes):
        see WHAT_IFS.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import functools
import pstats
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import roadie
import sqlalchemy as sa
from roadie.worker import Worker
from roadie.worker.claim_loop import ClaimLoop
from throughput import CHUNK, NOOP, empty_tasks, fresh_database

DRAIN_THREADS = ("roadie-worker-", "MainThread")
RUNNABLE_INDEX = ("CREATE INDEX bench_runnable ON roadie_tasks (priority DESC, id) "
                  "WHERE status IN (0, 4)")
WHAT_IFS = {
    "no-pre-ping": "no pool_pre_ping (one SELECT 1 less per connection checkout)",
    "runnable-index": "a partial index (priority DESC, id) WHERE status IN (0, 4), and the claim "
                      "query's status values inlined so that SQLite can use it (adds nothing "
                      "once core has its own such index)",
    "prefetch": "the claim loop keeps up to 2 x concurrency tasks claimed (a small local queue)",
    "no-reread": "app.after_finish does nothing (no ending hooks, and no re-read of the task "
                 "where core still does one): what that step costs",
}


def apply_what_ifs(app: roadie.Roadie, names: list[str]) -> None:
    """Patch this process to behave as a proposed change would (for measuring only)."""
    engine = app.store.engine
    if "no-pre-ping" in names:
        engine.pool._pre_ping = False  # type: ignore[attr-defined]
    if "runnable-index" in names:
        with engine.begin() as conn:
            conn.exec_driver_sql(RUNNABLE_INDEX)

        @sa.event.listens_for(engine, "before_cursor_execute", retval=True)
        def inline_status(_conn: Any, _cursor: Any, sql: str, params: Any, *_rest: Any) -> Any:
            marker = "roadie_tasks.status IN (?, ?)"
            if app.store.is_sqlite and marker in sql and "ORDER BY roadie_tasks.priority" in sql:
                assert tuple(params[:2]) == (0, 4), params
                return sql.replace(marker, "roadie_tasks.status IN (0, 4)"), params[2:]
            return sql, params
    if "prefetch" in names:
        start_threads = Worker._start_threads

        def start_then_prefetch(self: Worker) -> None:
            start_threads(self)
            self.concurrency *= 2  # threads are started: the claim loop now fills a queue

        Worker._start_threads = start_then_prefetch  # type: ignore[method-assign]
    if "no-reread" in names:
        app.after_finish = lambda *_args: None  # type: ignore[method-assign]


def profile_threads(profiles: list[cProfile.Profile]) -> None:
    """Run the claim loop and each worker thread under its own cProfile (this process only)."""

    def wrap(method: Any) -> Any:
        @functools.wraps(method)
        def profiled(self: ClaimLoop, *args: Any) -> Any:
            profile = cProfile.Profile()
            profiles.append(profile)
            profile.enable()
            try:
                return method(self, *args)
            finally:
                profile.disable()

        return profiled

    ClaimLoop.thread_main = wrap(ClaimLoop.thread_main)  # type: ignore[method-assign]
    ClaimLoop.run = wrap(ClaimLoop.run)  # type: ignore[method-assign]


def time_threads(cpu: dict[str, float]) -> None:
    """Record in ``cpu`` each drain thread's CPU time when it ends (this process only)."""

    def wrap(method: Any) -> Any:
        @functools.wraps(method)
        def timed(self: ClaimLoop, *args: Any) -> Any:
            start = time.thread_time()
            try:
                return method(self, *args)
            finally:
                cpu[threading.current_thread().name] = time.thread_time() - start

        return timed

    ClaimLoop.thread_main = wrap(ClaimLoop.thread_main)  # type: ignore[method-assign]
    ClaimLoop.run = wrap(ClaimLoop.run)  # type: ignore[method-assign]


def drain(backend: str, n: int, use_cprofile: bool, top: int, what_ifs: list[str],
          log_sql: bool = True, thread_cpu: bool = False) -> None:
    profiles: list[cProfile.Profile] = []
    if use_cprofile:
        profile_threads(profiles)
    cpu: dict[str, float] = {}
    if thread_cpu:
        time_threads(cpu)
    with tempfile.TemporaryDirectory(prefix="roadie-profile-") as tmp:
        app = roadie.Roadie(fresh_database(backend, Path(tmp)), data_dir=tmp, auto_upgrade=True)
        try:
            app.add_task(NOOP, {})
            empty_tasks(app)
            apply_what_ifs(app, what_ifs)
            for offset in range(0, n, CHUNK):
                app.add_tasks([{"executor": NOOP} for _ in range(min(CHUNK, n - offset))])
            sql = SqlLog(app.store.engine) if log_sql else None
            started, process_started = time.perf_counter(), time.process_time()
            stats = app.run_worker(concurrency=2, until_idle=True)
            seconds = time.perf_counter() - started
            process_seconds = time.process_time() - process_started
        finally:
            app.close()
    changes = f" with {', '.join(what_ifs)}" if what_ifs else ""
    print(f"{backend}{changes}: drained {stats.finished} tasks in {seconds:.1f} s "
          f"({stats.finished / seconds:,.0f}/s, {stats.claims} claims)")
    if cpu:
        per_task = {name: 1e6 * value / stats.finished for name, value in cpu.items()}
        print(f"CPU per task: process {1e6 * process_seconds / stats.finished:.0f} µs "
              f"(wall {1e6 * seconds / stats.finished:.0f} µs); "
              + ", ".join(f"{name} {value:.0f} µs" for name, value in sorted(per_task.items())))
    if sql is not None:
        print("database round trips (timed in this process, from the call to its return):")
        sql.report(stats.finished, seconds)
    if profiles:
        merged = pstats.Stats(profiles[0])
        for profile in profiles[1:]:
            merged.add(profile)
        print_per_task(merged, stats.finished, top)


class SqlLog:
    """Counts and times the statements, commits and pings that ``engine`` runs from now on
    (this process only; the time includes waiting for the GIL after the server answered).
    Listening makes the worker's hot statements go through SQLAlchemy instead of straight to
    the driver (roadie.store.engine.driver_tuples): use --no-sql-log to time the real drain."""

    def __init__(self, engine: sa.Engine) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.seconds: collections.Counter[str] = collections.Counter()
        sa.event.listen(engine, "before_cursor_execute", self._before)
        sa.event.listen(engine, "after_cursor_execute", self._after)
        dialect = engine.dialect
        for method, kind in (("do_commit", "COMMIT"), ("do_ping", "ping (pool_pre_ping)")):
            setattr(dialect, method, self._timed(getattr(dialect, method), kind))

    def _timed(self, call: Any, kind: str) -> Any:
        def timed(*args: Any) -> Any:
            started = time.perf_counter()
            try:
                return call(*args)
            finally:
                self.counts[kind] += 1
                self.seconds[kind] += time.perf_counter() - started

        return timed

    @staticmethod
    def kind(sql: str) -> str:
        words = sql.split()
        if "pg_notify" in sql:
            return "SELECT pg_notify"
        if words[0] == "SELECT" and "ORDER BY roadie_tasks.priority" in sql:
            return "SELECT runnable tasks (claim)"
        if words[0] == "SELECT" and "count(*)" in sql:
            return "SELECT count(*)"
        if words[0] == "UPDATE" and "RETURNING" in sql and "started_at" in sql.split("WHERE")[0]:
            return "UPDATE roadie_tasks (claim, RETURNING)"
        if words[0] == "UPDATE" and "finished_at" in sql:
            return "UPDATE roadie_tasks (finish)"
        return " ".join(words[:3] if words[0] in ("SELECT", "INSERT", "DELETE") else words[:2])

    def _before(self, conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def _after(self, conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        kind = self.kind(sql)
        self.counts[kind] += 1
        self.seconds[kind] += time.perf_counter() - conn.info.pop("bench_started")

    def report(self, tasks: int, seconds: float) -> None:
        print(f"{'per task':>8} {'ms/task':>8} {'% of drain':>10}  statement")
        for kind, count in self.counts.most_common():
            if count / tasks >= 0.005:
                spent = self.seconds[kind]
                print(f"{count / tasks:8.2f} {1000 * spent / tasks:8.3f} "
                      f"{100 * spent / seconds:9.1f}%  {kind}")


def print_per_task(merged: pstats.Stats, tasks: int, top: int) -> None:
    """The functions with the most cumulative time, in ms per task (summed over threads)."""
    rows = []
    for (path, line, name), (_cc, calls, own, cumulative, _callers) in merged.stats.items():  # type: ignore[attr-defined]
        rows.append((cumulative, own, calls, f"{short(path)}:{line}({name})"))
    rows.sort(reverse=True)
    print(f"{'cum ms/task':>11} {'own ms/task':>11} {'calls/task':>10}  function")
    for cumulative, own, calls, where in rows[:top]:
        print(f"{1000 * cumulative / tasks:11.3f} {1000 * own / tasks:11.3f} "
              f"{calls / tasks:10.1f}  {where}")


def short(path: str) -> str:
    for marker in ("site-packages/", "core/", "lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def summarize(raw: Path, top: int) -> None:
    """Sum py-spy raw samples (``--threads``) of the drain threads by function."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    frame = re.compile(r"^(?P<name>[^ ]+) \((?P<file>[^:]+)(?::(?P<line>\d+))?\)$")
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = stack.split(";")
        if not frames or not any(t in frames[0] for t in DRAIN_THREADS):
            continue
        if not any("roadie/worker/" in f for f in frames):  # the main thread before the drain
            continue
        count = int(count_text)
        total += count
        names = []
        for text in frames[1:]:
            match = frame.match(text.strip())
            names.append(f"{match['name']} ({short(match['file'])})" if match else text)
        for name in set(names):
            inclusive[name] += count
        if names:
            own[names[-1]] += count
    print(f"{total} samples in the drain threads")
    print("inclusive:")
    for name, count in inclusive.most_common(top):
        print(f"  {100 * count / total:5.1f}%  {name}")
    print("self:")
    for name, count in own.most_common(top):
        print(f"  {100 * count / total:5.1f}%  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--cprofile", action="store_true", help="profile with cProfile")
    parser.add_argument("--top", type=int, default=40, help="how many functions to print")
    parser.add_argument("--summarize", type=Path, help="summarize a py-spy raw file and exit")
    parser.add_argument("--what-if", action="append", default=[], choices=sorted(WHAT_IFS),
                        help="measure a proposed change (repeatable): " + "; ".join(
                            f"{k}: {v}" for k, v in WHAT_IFS.items()))
    parser.add_argument("--no-sql-log", action="store_true",
                        help="do not count and time the statements (they cost a little)")
    parser.add_argument("--thread-cpu", action="store_true",
                        help="print the CPU time per task of each drain thread")
    args = parser.parse_args()
    if args.summarize:
        summarize(args.summarize, args.top)
    else:
        drain(args.backend, args.tasks, args.cprofile, args.top, args.what_if,
              log_sql=not args.no_sql_log, thread_cpu=args.thread_cpu)


if __name__ == "__main__":
    main()

"""What status messages cost a running task, and how many database writes they cause.

Each variant is one task whose executor runs the same loop of N steps (default 100,000) and
times it from inside ``execute``:

- baseline: the loop alone;
- progress: ``task.progress(i + 1, n)`` at each step (the generic progress, default translator);
- send_status: ``task.send_status({"step": i + 1, "phase": "copy"})`` at each step.

The overhead per call is (loop time - baseline loop time) / N. Each task runs alone under
``app.run_worker(concurrency=1, until_idle=True)``; the worker's ``WorkerStats.progress_writes``
(throttled live-state writes) and the write statements the database received are reported.

    python bench/status.py [--calls 100000] [--backend sqlite|postgres|both] [--repeat 3]
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import roadie
import sqlalchemy as sa
from _results import table, write_section
from throughput import fresh_database


class Loop(roadie.Executor):
    """Runs ``context["n"]`` steps of ``step`` and records how long the loop took."""

    timings: ClassVar[dict[str, float]] = {}
    variant = "baseline"

    def step(self, task: roadie.RunningTask, done: int, total: int) -> None:
        pass

    profile: ClassVar[cProfile.Profile | None] = None  # set by --profile

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        n = task.context["n"]
        step = self.step
        if self.profile is not None and self.variant != "baseline":
            self.profile.enable()
        started = time.perf_counter()
        for i in range(n):
            step(task, i + 1, n)
        self.timings[self.variant] = time.perf_counter() - started
        if self.profile is not None:
            self.profile.disable()
        return roadie.Result.SUCCESS


class Progress(Loop):
    variant = "progress"

    def step(self, task: roadie.RunningTask, done: int, total: int) -> None:
        task.progress(done, total)


class SendStatus(Loop):
    variant = "send_status"

    def step(self, task: roadie.RunningTask, done: int, total: int) -> None:
        task.send_status({"step": done, "phase": "copy"})


VARIANTS = {cls.variant: cls for cls in (Loop, Progress, SendStatus)}


def count_writes(engine: sa.Engine) -> collections.Counter[str]:
    """Count the write statements ``engine`` runs from now on, by table."""
    counts: collections.Counter[str] = collections.Counter()

    @sa.event.listens_for(engine, "before_cursor_execute")
    def statement(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        words = sql.split()
        if words and words[0] in ("INSERT", "UPDATE", "DELETE"):
            table_name = words[2] if words[0] != "UPDATE" else words[1]
            counts[f"{words[0]} {table_name}"] += 1
            if words[0] == "UPDATE" and "task_status" in sql and "heartbeat_at" in sql:
                counts["progress"] += 1

    return counts


def measure(backend: str, calls: int, repeat: int) -> list[dict[str, Any]]:
    """One row per variant: the run with the shortest loop among ``repeat`` rounds (the
    variants take turns in each round, so a busy moment of the machine hits them alike)."""
    runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="roadie-bench-") as tmp:
        app = roadie.Roadie(fresh_database(backend, Path(tmp)), data_dir=tmp, auto_upgrade=True)
        try:
            for variant, cls in VARIANTS.items():
                app.plugins.register_executor(f"bench:{variant}", cls)
            counts = count_writes(app.store.engine)
            for variant in [v for _ in range(repeat) for v in VARIANTS]:
                task = app.add_task(f"bench:{variant}", {"n": calls})
                before = counts.copy()
                started = time.perf_counter()
                stats = app.run_worker(concurrency=1, until_idle=True)
                run_seconds = time.perf_counter() - started
                writes = counts - before
                record = app.get_task(task.id)
                if record.status != roadie.Status.SUCCESSFUL:
                    raise SystemExit(f"{variant}: task ended {record.status.label}: "
                                     f"{record.status_message}")
                runs[variant].append({
                    "backend": backend, "variant": variant,
                    "loop": Loop.timings[variant], "run": run_seconds,
                    "progress_writes": stats.progress_writes,
                    "all_writes": sum(v for k, v in writes.items() if k != "progress"),
                    "status": record.task_status,
                })
                print(f"  {backend} {variant}: loop {Loop.timings[variant]:.2f} s, "
                      f"progress_writes {stats.progress_writes}", flush=True)
        finally:
            app.close()
    rows = [min(found, key=lambda run: run["loop"]) for found in runs.values()]
    baseline = rows[0]["loop"]
    for row in rows:
        row["per_call_us"] = 1e6 * (row["loop"] - baseline) / calls
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000, help="loop steps per task")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best is kept")
    parser.add_argument("--no-write", action="store_true", help="print only, keep RESULTS.md")
    parser.add_argument("--profile", action="store_true",
                        help="profile the calls with cProfile, print the top functions; no write")
    args = parser.parse_args()
    if args.profile:
        Loop.profile = cProfile.Profile()
        args.no_write = True
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]

    rows = []
    for backend in backends:
        rows.extend(measure(backend, args.calls, args.repeat))
    header = ["backend", "variant", "loop time", "overhead per call", "task run (worker)",
              "progress_writes", "writes/s of run", "all write statements"]
    text = table(header, [
        [r["backend"], r["variant"], f"{r['loop']:.3f} s",
         "—" if r["variant"] == "baseline" else f"{r['per_call_us']:.1f} µs",
         f"{r['run']:.2f} s", str(r["progress_writes"]),
         f"{r['progress_writes'] / r['run']:.1f}", str(r["all_writes"])]
        for r in rows
    ])
    print()
    print(text)
    if Loop.profile is not None:
        calls = args.calls * (len(VARIANTS) - 1) * len(backends)
        print(f"\ncProfile of the progress and send_status calls ({calls:,} calls; cProfile "
              "slows them down, read the shares):")
        pstats.Stats(Loop.profile).sort_stats("tottime").print_stats(25)
    if args.no_write:
        return
    notes = (
        f"One task per variant and round, {args.calls:,} loop steps, {args.repeat} rounds with "
        "the variants taking turns, the round with the shortest loop kept; default settings "
        "(live state "
        "written at most every `status_interval` = 0.25 s). \"loop time\" is timed inside "
        "`execute`; \"overhead per call\" is (loop time - baseline loop time) / steps. "
        "\"task run\" is `app.run_worker(concurrency=1, until_idle=True)` from call to return. "
        "\"progress_writes\" is `WorkerStats.progress_writes` (throttled writes of the live "
        "status); \"all write statements\" counts every INSERT/UPDATE/DELETE the database received "
        "during the run (claim, progress, heartbeat, finish, node rows)."
    )
    final = next((r["status"] for r in rows if r["variant"] == "progress"), {})
    write_section("Status messages", "\n\n".join([
        notes, text, f"Final live status of the progress task: `{final}`"]))


if __name__ == "__main__":
    main()

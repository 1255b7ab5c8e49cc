"""Async executors: 1,000 tasks that each await a 100 ms sleep, on the event loop against the
thread pool.

For each backend, on a fresh database, in one run:

- async: ``N`` tasks of ``roadie-examples:wait`` (``await asyncio.sleep(0.1)``) drained by one
  worker with 2 threads and ``async_concurrency`` 200, from ``run_worker`` to its return;
- thread pool: ``N`` tasks of ``roadie-examples:count`` with ``n=1, delay=0.1`` (one progress
  update, then a 100 ms wait on a thread) drained by one worker with 200 threads.

Target (issue 18): at least 1,500 async tasks/s on SQLite and PostgreSQL.

    python bench/async_tasks.py [--tasks 1000] [--backend sqlite|postgres|both] [--no-write]

PostgreSQL: database ``roadie_bench_async`` on 127.0.0.1:5432 (user postgres), dropped and
created again for each run; ROADIE_BENCH_ASYNC_PG points elsewhere.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import roadie
import sqlalchemy as sa
from _results import table, write_section

PG_URL = os.environ.get("ROADIE_BENCH_ASYNC_PG",
                        "postgresql://postgres@127.0.0.1:5432/roadie_bench_async")
SLOTS = 200


def fresh_database(backend: str, tmp: Path) -> str:
    """The URL of an empty database for ``backend``."""
    if backend == "sqlite":
        return f"sqlite:///{tmp / 'roadie.db'}"
    url = sa.make_url(PG_URL)
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{url.database}"')
    return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


@dataclass
class Drain:
    """One drain: its rate, the worker's claiming rounds, and the CPU time it cost."""

    rate: float
    rounds: int
    cpu_ms: float  # CPU time of this process (every thread) per task

    def __str__(self) -> str:
        return f"{self.rate:.0f} tasks/s ({self.rounds} rounds, {self.cpu_ms:.2f} ms CPU/task)"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def drain(backend: str, n: int, executor: str, context: dict, **worker: int) -> Drain:
    """One drain of ``n`` tasks on a fresh database."""
    with tempfile.TemporaryDirectory(prefix="roadie-bench-async-") as tmp:
        app = roadie.Roadie(fresh_database(backend, Path(tmp)), data_dir=tmp,
                            auto_upgrade=True)
        try:
            app.add_tasks([{"executor": executor, "context": context} for _ in range(n)])
            started, cpu = time.perf_counter(), cpu_seconds()
            stats = app.run_worker(until_idle=True, **worker)
            seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
            assert stats.by_status == {"successful": n}, stats.by_status
            return Drain(n / seconds, stats.claims, 1000 * cpu / n)
        finally:
            app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    rows, lines = [], []
    for backend in backends:
        aio = drain(backend, args.tasks, "roadie-examples:wait", {"seconds": 0.1},
                    concurrency=2, async_concurrency=SLOTS)
        threads = drain(backend, args.tasks, "roadie-examples:count", {"n": 1, "delay": 0.1},
                        concurrency=SLOTS)
        line = (f"{backend}: async {aio} (2 threads + {SLOTS} async slots), "
                f"thread pool {threads} ({SLOTS} threads), load {os.getloadavg()[0]:.1f}")
        print(line, flush=True)
        lines.append(line)
        rows.append([backend, str(args.tasks), f"{aio.rate:.0f}", f"{aio.cpu_ms:.2f}",
                     f"{threads.rate:.0f}", f"{threads.cpu_ms:.2f}",
                     "yes" if aio.rate >= 1500 else "NO"])
    content = "\n\n".join([
        table(["backend", "tasks", f"async ({SLOTS} slots) /s", "async CPU ms/task",
               f"{SLOTS} threads /s", "threads CPU ms/task", "async ≥ 1,500/s"], rows),
        f"Conditions: one worker process; each task awaits (async) or waits on its thread "
        f"(thread pool) 100 ms, so {SLOTS} at once bound the drain at {SLOTS * 10} tasks/s. "
        "CPU ms/task is the worker process's CPU time (all threads) per task: the cost of the "
        "machinery, much less sensitive than the rate to what else runs on the machine. The "
        "machine (2 cores) is shared with other engineers' test runs (see the load averages): "
        "compare the two drains of one run, not figures across runs.",
        "```\n" + "\n".join(lines) + "\n```",
    ])
    if not args.no_write:
        write_section("Async executors", content)


if __name__ == "__main__":
    main()

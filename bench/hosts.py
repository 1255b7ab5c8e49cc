"""Host processes: no-op drain through warm hosts against in process, cold start, memory.

For each backend, on a fresh database, in one run:

- in process: ``N`` no-op tasks (``roadie-examples:noop``) drained by one worker with two
  threads (``run_worker(concurrency=2, until_idle=True)``), from the call to its return;
- warm hosts: the same ``N`` tasks drained by a worker with ``out_of_process=True`` whose two
  hosts were started before the clock starts (so the figure is the warm path);
- per-task overhead: (hosted drain time - in-process drain time) / N, in µs of wall time;
- host cold start: spawn to "ready" of a host process (``python -m roadie.hosts.main``), the
  median of 10 starts;
- memory per host: resident set size of a warm host after the drain.

Targets (issue 13): warm-host drain at least half of the in-process drain; cold start under
500 ms.

    python bench/hosts.py [--tasks 2000] [--backend sqlite|postgres|both] [--no-write]

PostgreSQL: database ``roadie_bench_hosts`` on 127.0.0.1:5432 (user postgres), dropped and
created again for each run; ROADIE_BENCH_HOSTS_PG points elsewhere.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import roadie
import sqlalchemy as sa
from _results import table, write_section
from roadie.hosts.pool import HostProcess

NOOP = "roadie-examples:noop"
PG_URL = os.environ.get("ROADIE_BENCH_HOSTS_PG",
                        "postgresql://postgres@127.0.0.1:5432/roadie_bench_hosts")


@dataclass
class Figures:
    backend: str
    tasks: int
    in_process: float = 0.0  # tasks/s
    hosted: float = 0.0  # tasks/s
    overhead_us: float = 0.0
    hosted_ok: int = 0


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


def add(app: roadie.Roadie, n: int) -> None:
    for start in range(0, n, 1000):
        app.add_tasks([{"executor": NOOP} for _ in range(min(1000, n - start))])


def successful(app: roadie.Roadie) -> int:
    return app.store.count_tasks().get(roadie.Status.SUCCESSFUL, 0)


def measure(backend: str, n: int) -> Figures:
    """Drain figures for one backend."""
    figures = Figures(backend, n)
    with tempfile.TemporaryDirectory(prefix="roadie-bench-hosts-") as tmp:
        url = fresh_database(backend, Path(tmp))
        app = roadie.Roadie(url, data_dir=tmp, auto_upgrade=True)
        add(app, n)
        started = time.perf_counter()
        app.run_worker(concurrency=2, until_idle=True)
        in_process = time.perf_counter() - started
        assert successful(app) == n, "the in-process drain did not run every task"
        add(app, n)
        worker = app.worker(concurrency=2, until_idle=True, out_of_process=True)
        warm = [worker.hosts.acquire(None) for _ in range(2)]  # start both hosts first
        for host in warm:
            worker.hosts.release(host)
        started = time.perf_counter()
        worker.run()
        hosted = time.perf_counter() - started
        figures.hosted_ok = successful(app) - n
        app.close()
    figures.in_process = n / in_process
    figures.hosted = n / hosted
    figures.overhead_us = (hosted - in_process) / n * 1e6
    return figures


def cold_starts(count: int = 10) -> tuple[list[float], float]:
    """Spawn-to-ready times (ms) of ``count`` hosts, and a fresh host's RSS (MB)."""
    app = roadie.Roadie("sqlite://", auto_upgrade=False)
    from roadie.hosts.pool import HostPool

    pool = HostPool(app, sink=None, all_executors=True)  # type: ignore[arg-type]
    times, rss = [], 0.0
    for _ in range(count):
        host = HostProcess(None, sys.executable, pool._environ(None))
        host.wait_ready(60)
        times.append(host.start_ms)
        rss = max(rss, host.rss_mb())
        host.close()
    return times, rss


def warm_rss(backend: str) -> float:
    """RSS (MB) of a host after it ran 200 no-op tasks (kept warm, then measured)."""
    with tempfile.TemporaryDirectory(prefix="roadie-bench-hosts-") as tmp:
        url = fresh_database(backend, Path(tmp))
        app = roadie.Roadie(url, data_dir=tmp, auto_upgrade=True)
        add(app, 200)
        worker = app.worker(concurrency=1, until_idle=True, out_of_process=True)
        host = worker.hosts.acquire(None)
        worker.hosts.release(host)
        closing = worker.hosts.close
        measured: list[float] = []
        worker.hosts.close = (  # type: ignore[method-assign]
            lambda: (measured.append(host.rss_mb()), closing()))
        worker.run()
        app.close()
        return measured[0] if measured else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    rows, lines = [], []
    for backend in backends:
        figures = measure(backend, args.tasks)
        ratio = figures.hosted / figures.in_process
        line = (f"{backend}: in process {figures.in_process:.0f}/s, warm hosts "
                f"{figures.hosted:.0f}/s ({ratio:.2f}x), overhead {figures.overhead_us:.0f} µs "
                f"per task")
        print(line, flush=True)
        lines.append(line)
        rows.append([backend, str(args.tasks), f"{figures.in_process:.0f}",
                     f"{figures.hosted:.0f}", f"{ratio:.2f}", f"{figures.overhead_us:.0f}",
                     "yes" if ratio >= 0.5 else "NO"])
    starts, fresh = cold_starts()
    warm = warm_rss(backends[0])
    start_line = (f"host cold start: median {statistics.median(starts):.0f} ms, min "
                  f"{min(starts):.0f}, max {max(starts):.0f} (10 starts); RSS {fresh:.0f} MB "
                  f"fresh, {warm:.0f} MB after 200 tasks")
    print(start_line)
    lines.append(start_line)
    content = "\n\n".join([
        table(["backend", "tasks", "in process /s", "warm hosts /s", "ratio",
               "overhead µs/task", "≥ 0.5x"], rows),
        f"Host cold start (spawn to ready, `python -m roadie.hosts.main`): median "
        f"**{statistics.median(starts):.0f} ms** (min {min(starts):.0f}, max "
        f"{max(starts):.0f}; target < 500 ms: "
        f"{'met' if statistics.median(starts) < 500 else 'NOT met'}). Memory per host: "
        f"{fresh:.0f} MB resident when fresh, {warm:.0f} MB after 200 no-op tasks.",
        "Conditions: one worker, two threads, `roadie-examples:noop`; the two hosts are "
        "started before the clock starts; the machine is shared with other engineers' test "
        "runs (see the load average above), so compare the two drains of one run, not "
        "figures across runs.",
        "```\n" + "\n".join(lines) + "\n```",
    ])
    if not args.no_write:
        write_section("Host processes", content)


if __name__ == "__main__":
    main()

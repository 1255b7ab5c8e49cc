"""How late schedules fire: an ``every=1`` schedule with several worker processes.

For each backend, on a fresh database: add a schedule ``every=1`` for ``roadie-examples:noop``,
start ``--workers`` real worker processes (``python -m roadie worker``, default settings), let
them run ``--seconds``, stop them, and read the tasks the schedule made. Reports the firing lag
(``created_at - scheduled_for``: slot time to the committed task), the start lag
(``started_at - scheduled_for``: slot time to a worker starting the task), and checks that
every slot between the first and the last fired exactly once.

    python bench/schedules.py [--seconds 60] [--workers 3] [--backend sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import roadie
from _results import table, write_section
from throughput import fresh_database


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(backend: str, seconds: float, workers: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="roadie-bench-schedules-") as tmp:
        url = fresh_database(backend, Path(tmp))
        app = roadie.Roadie(url, auto_upgrade=True, data_dir=Path(tmp) / "data")
        app.add_schedule("tick", "roadie-examples:noop", every=1)
        env = {**os.environ, "ROADIE_DATA_DIR": str(Path(tmp) / "data")}
        command = [sys.executable, "-m", "roadie", "--url", url, "worker", "--concurrency", "2"]
        processes = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL) for _ in range(workers)]
        deadline = time.monotonic() + 60
        while len(app.list_nodes()) < workers and time.monotonic() < deadline:
            time.sleep(0.2)
        started = roadie.store.utcnow()
        time.sleep(seconds)
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(60)
        tasks = [t for t in app.list_tasks(schedule="tick", limit=None)
                 if t.scheduled_for is not None and t.scheduled_for >= started]
        app.close()
    slots = sorted(t.scheduled_for for t in tasks if t.scheduled_for is not None)
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    fire = [(t.created_at - t.scheduled_for).total_seconds() * 1000 for t in tasks
            if t.scheduled_for is not None]
    start = [(t.started_at - t.scheduled_for).total_seconds() * 1000 for t in tasks
             if t.started_at is not None and t.scheduled_for is not None]
    return {
        "backend": backend, "slots": len(slots), "duplicates": len(slots) - len(set(slots)),
        "skipped": sum(round(g / dt.timedelta(seconds=1)) - 1 for g in gaps),
        "fire_p50": statistics.median(fire), "fire_p99": percentile(fire, 0.99),
        "fire_max": max(fire), "start_p50": statistics.median(start),
        "start_p99": percentile(start, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    rows = []
    for backend in backends:
        load = os.getloadavg()[0]
        figures = measure(backend, args.seconds, args.workers)
        print(figures, f"(load {load:.1f})")
        rows.append([
            backend, str(figures["slots"]), str(figures["duplicates"]), str(figures["skipped"]),
            f"{figures['fire_p50']:.1f} / {figures['fire_p99']:.1f} / {figures['fire_max']:.1f}",
            f"{figures['start_p50']:.1f} / {figures['start_p99']:.1f}", f"{load:.1f}",
        ])
    text = table(["backend", "slots", "fired twice", "skipped", "firing lag p50 / p99 / max ms",
                  "start lag p50 / p99 ms", "load at start"], rows)
    text += (
        f"\n\nOne schedule `every=1` (`roadie-examples:noop`), {args.workers} worker processes "
        f"(`roadie worker --concurrency 2`, default settings), {args.seconds:g} s per backend. "
        "Firing lag: the slot's time to the moment the winning worker begins the firing "
        "transaction (`created_at - scheduled_for`: how precisely the firing thread wakes); "
        "start lag: the slot's time to a worker starting the task (`started_at - "
        "scheduled_for`: the firing transaction, the wake-up of a claim loop and the claim "
        "included). Every worker wakes at the slot; one wins the compare-and-set, the others "
        "find nothing to do. The machine is shared with other developers' test runs: the load "
        "average is in the table."
    )
    print(text)
    if not args.no_write:
        write_section("Schedules", text)


if __name__ == "__main__":
    main()

"""Task trees: a parent adding 100,000 subtasks in batches, and what the fan-in costs.

One parent (run by an in-process worker with one thread) adds N subtasks of
``roadie-examples:noop`` from a generator with ``task.add_subtasks`` (batches of
``roadie.trees.BATCH``), then returns ``Result.wait_for_subtasks()``. The subtasks carry a tag
no worker here has, so they stay NEW and only the add is measured. Reported: the add rate,
the peak resident memory of the process during the add (VmHWM, reset just before), the same
for N/10 subtasks (bounded memory: the two peaks should be alike), and the fan-in:

- probe: the event one subtask's end causes while the others are open (one index probe);
- wake: the same event for the last subtask (the parent becomes claimable);
- subtasks_done: the default fan-in reading all N records a page at a time.

The subtasks are marked SUCCESSFUL with one UPDATE (a benchmark shortcut) before the wake.

    python bench/trees.py [--subtasks 100000] [--backend sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import ClassVar

import roadie
import sqlalchemy as sa
import throughput
from _results import table, write_section
from roadie.store.trees import _stub

throughput.PG_URL = os.environ.get("ROADIE_BENCH_PG",
                                   "postgresql://postgres@127.0.0.1:5432/roadie_bench_i16")


class Tree(roadie.Executor):
    """Adds ``n`` subtasks from a generator, then waits for them."""

    added: ClassVar[dict[str, float]] = {}

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        n = int(task.context["n"])
        reset_peak()
        start = time.perf_counter()
        task.add_subtasks({"executor": "roadie-examples:noop", "tags": ["elsewhere"],
                           "context": {"i": i}} for i in range(n))
        Tree.added = {"seconds": time.perf_counter() - start, "peak_mb": peak_mb()}
        return roadie.Result.wait_for_subtasks()


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(backend: str, n: int) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        url = throughput.fresh_database(backend, Path(tmp))
        app = roadie.Roadie(url)
        app.upgrade_schema()
        app.plugins.register_executor("bench:tree", Tree)
        figures = []
        for size in (n // 10, n):
            parent = app.add_task("bench:tree", {"n": size})
            app.run_worker(concurrency=1, until_idle=True)
            assert app.get_task(parent.id).status == roadie.Status.WAITING
            figures.append((size, dict(Tree.added), parent.id))
        size, _added, parent_id = figures[-1]
        trees = app.store.trees
        probe = []
        for _ in range(20):
            start = time.perf_counter()
            trees.settled([_stub(0, roadie.Status.SUCCESSFUL, parent_id, False)])
            probe.append((time.perf_counter() - start) * 1000)
        with app.store.write() as conn:
            conn.execute(sa.text("UPDATE roadie_tasks SET status = 3, completed = true "
                                 "WHERE parent_id = :p"), {"p": parent_id})
        start = time.perf_counter()
        trees.settled([_stub(0, roadie.Status.SUCCESSFUL, parent_id, False)])
        wake = (time.perf_counter() - start) * 1000
        assert app.get_task(parent_id).status == roadie.Status.NEW
        start = time.perf_counter()
        app.run_worker(concurrency=1, until_idle=True)
        done_s = time.perf_counter() - start
        final = app.get_task(parent_id)
        assert final.status == roadie.Status.SUCCESSFUL, final.status_message
        app.close()
    small, big = figures[0][1], figures[1][1]
    return [backend, f"{size:,}", f"{size / big['seconds']:,.0f}/s",
            f"{small['peak_mb']:.0f} MB ({figures[0][0]:,})", f"{big['peak_mb']:.0f} MB",
            f"{statistics.median(probe):.2f}", f"{wake:.2f}", f"{done_s:.1f} s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subtasks", type=int, default=100_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    rows = [run(b, args.subtasks) for b in backends]
    text = table(["backend", "subtasks", "add rate", "peak RSS, N/10", "peak RSS, N",
                  "fan-in probe ms (p50)", "fan-in wake ms", "subtasks_done"], rows)
    print(text)
    if not args.no_write:
        write_section("Task trees", text + "\n\n" + NOTE)


NOTE = """\
One parent adds the subtasks from a generator with `task.add_subtasks` (batches of 1,000;
only one batch is in memory), inside an in-process worker with one thread. Peak RSS is the
process's VmHWM during the add, reset just before it: the N/10 and N peaks being alike shows
the add runs in bounded memory. Fan-in: the event one subtask's end causes (one probe of the
partial index of open subtasks, whether 99,999 are still open or none), and the default
`subtasks_done` reading every record a page at a time. The machine is shared with seven other
engineers' test runs (see the load average): compare figures within one run."""

if __name__ == "__main__":
    main()

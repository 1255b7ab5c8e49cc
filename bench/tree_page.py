"""The web app's page of a parent with 10,000 subtasks: the tree and timeline stay capped.

A parent (run by an in-process worker) adds N subtasks of ``roadie-examples:noop`` with a tag
no worker here has, so they stay NEW; then half of them are marked SUCCESSFUL with one
attempt row each (a benchmark shortcut). The page ``GET /tasks/{id}`` is then read through
Starlette's test client, in rounds that interleave three pages: a task with no subtask, a
parent of 10 subtasks made the same way, and the parent of N. Reported: the time per page
(p50, p95, measured around the request in this process) and the HTML's size.

    python bench/tree_page.py [--subtasks 10000] [--rounds 20] [--backend sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import roadie
import sqlalchemy as sa
import throughput
from _results import table, write_section
from roadie import models

throughput.PG_URL = os.environ.get("ROADIE_BENCH_PG",
                                   "postgresql://postgres@127.0.0.1:5432/roadie_bench_tree_page")
warnings.filterwarnings("ignore", message=".*httpx.*")


class Parent(roadie.Executor):
    """Adds ``n`` subtasks that no worker here takes, then waits for them."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        task.add_subtasks({"executor": "roadie-examples:noop", "tags": ["elsewhere"],
                           "name": f"part {i}", "context": {"i": i}}
                          for i in range(int(task.context["n"])))
        return roadie.Result.wait_for_subtasks()


def half_done(app: roadie.Roadie, parent_id: int) -> None:
    """Mark the older half of the subtasks SUCCESSFUL, each with one attempt row."""
    ids = app.store.trees.subtask_ids(parent_id, limit=10**9)
    done = ids[: len(ids) // 2]
    now = dt.datetime.now(dt.timezone.utc)
    with app.store.write() as conn:
        for start in range(0, len(done), 500):
            chunk = done[start:start + 500]
            conn.execute(sa.text("UPDATE roadie_tasks SET status = 3, completed = :t, "
                                 "attempts = 1, started_at = :s, finished_at = :f "
                                 "WHERE id IN (" + ",".join(map(str, chunk)) + ")"),
                         {"t": True, "s": now, "f": now + dt.timedelta(seconds=1)})
            conn.execute(models.attempts.insert(), [
                {"task_id": i, "attempt": 1, "node": "bench", "status": 3, "message": "",
                 "started_at": now, "finished_at": now + dt.timedelta(seconds=1)}
                for i in chunk])


def run(backend: str, n: int, rounds: int) -> list[list[str]]:
    from roadie.web import create_app
    from starlette.testclient import TestClient

    with tempfile.TemporaryDirectory() as tmp:
        url = throughput.fresh_database(backend, Path(tmp))
        app = roadie.Roadie(url)
        app.upgrade_schema()
        app.plugins.register_executor("bench:parent", Parent)
        plain = app.add_task("roadie-examples:noop", {}, tags=["elsewhere"])
        small = app.add_task("bench:parent", {"n": 10})
        big = app.add_task("bench:parent", {"n": n})
        app.run_worker(concurrency=1, until_idle=True)
        for parent in (small, big):
            assert app.get_task(parent.id).status == roadie.Status.WAITING
            half_done(app, parent.id)
        pages = {"no subtask": plain.id, "10 subtasks": small.id, f"{n:,} subtasks": big.id}
        times: dict[str, list[float]] = {name: [] for name in pages}
        sizes: dict[str, int] = {}
        with TestClient(create_app(app)) as client:
            for task_id in pages.values():  # warm up: templates, plans, connections
                client.get(f"/tasks/{task_id}")
            for _ in range(rounds):
                for name, task_id in pages.items():
                    start = time.perf_counter()
                    response = client.get(f"/tasks/{task_id}")
                    times[name].append((time.perf_counter() - start) * 1000)
                    assert response.status_code == 200
                    sizes[name] = len(response.content)
        app.close()
    rows = []
    for name, values in times.items():
        values.sort()
        p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
        rows.append([backend, name, f"{statistics.median(values):.1f}", f"{p95:.1f}",
                     f"{sizes[name] / 1024:.0f} KiB"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subtasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    rows = [row for b in backends for row in run(b, args.subtasks, args.rounds)]
    text = table(["backend", "task page of", "ms p50", "ms p95", "HTML"], rows)
    print(text)
    if not args.no_write:
        write_section("Web app: a parent's page with its tree and timeline", text + "\n\n" + NOTE)


NOTE = """\
`GET /tasks/{id}` through Starlette's test client, timed around the request in the same
process, rounds interleaving the three pages. The parents' subtasks are half NEW, half
SUCCESSFUL with one attempt each. The tree lists at most 200 subtasks (links lead to the
filtered list for the rest) and the timeline draws the parent and its first 100 subtasks, so
the page reads a bounded number of rows: one grouped count of the subtasks by status, 200 ids
from the parent index, their rows, one grouped count of their own subtasks, and the attempts
of 101 tasks in one query. The machine is shared (see the load average): compare figures
within one run."""

if __name__ == "__main__":
    main()

"""Behind a transaction pooler (issue 32): enqueue-to-start latency of a worker process through
PgBouncer in transaction mode, with ``listen_url`` (a direct connection for LISTEN) and without
(polling every ``postgres_poll_interval``), beside the same worker on a direct connection.

For each case, on a fresh database: one ``roadie worker`` process (2 threads) with the case's
settings, idle; then this process adds ``--tasks`` no-op tasks one at a time (through the same
pooler or not), ``--gap`` seconds apart, after 20 to warm up. A task's latency is its
``started_at`` (stamped by the worker when it claims it) minus its ``created_at`` (stamped here
when it is added), both from this machine's clock. Also: ``--polls`` reads of one task
(``app.get_task``) in a loop through each path, the client that failed from the sixth call on
before ``pooler = "transaction"``. Cases alternate ``--rounds`` times.

Targets (issue 32): p50 ≤ 5 ms with ``listen_url``, and ≤ ``postgres_poll_interval`` + 5 ms
without.

    python bench/pooler.py [--tasks 200] [--gap 0.02] [--polls 1000] [--rounds 3] [--no-write]

PostgreSQL: database ``roadie_bench_pooler`` on 127.0.0.1:5432 (user postgres), dropped and made
again for each case (ROADIE_BENCH_POOLER_PG points elsewhere); PgBouncer: Debian's package,
started on a free port by this script.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.pgbouncer, tests.processes

import roadie  # noqa: E402
from _databases import fresh_postgres  # noqa: E402
from _results import table, write_section  # noqa: E402
from roadie.testing import make_app, wait_for  # noqa: E402

from tests.pgbouncer import bouncer_for  # noqa: E402
from tests.processes import start_worker, stop  # noqa: E402

PG_URL = os.environ.get("ROADIE_BENCH_POOLER_PG",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/roadie_bench_pooler")
POLL = 2.0  # postgres_poll_interval, the default
WARMUP = 20
PYTHONPATH = os.pathsep.join([str(Path(roadie.__file__).resolve().parents[1]), str(ROOT)])


def fresh_database() -> None:
    fresh_postgres(PG_URL)


def measure(url: str, settings: dict[str, str], args: argparse.Namespace
            ) -> tuple[list[float], float]:
    """(enqueue-to-start latencies in ms, get_task reads per second) of one case."""
    data = Path(tempfile.mkdtemp(prefix="roadie-bench-pooler-"))
    app = make_app(url, data, pooler=settings.get("ROADIE_POOLER", "none"),
                   postgres_poll_interval=POLL)
    env = {**settings, "ROADIE_POSTGRES_POLL_INTERVAL": str(POLL), "PYTHONPATH": PYTHONPATH}
    worker: subprocess.Popen[bytes] = start_worker(url, data, "--concurrency", "2", env=env,
                                                   log=data / "worker.log")
    try:
        wait_for(lambda: app.list_nodes(), timeout=60, message="the worker to start")
        ids = []
        for count in (WARMUP, args.tasks):
            ids = []
            for _ in range(count):
                time.sleep(args.gap)
                ids.append(app.add_task("roadie-examples:noop", {}).id)
            wait_for(lambda ids=ids: all(
                t.completed for t in app.store.list_tasks(ids=ids, limit=None)),
                timeout=120, message="the tasks to end")
        latencies = [(t.started_at - t.created_at).total_seconds() * 1000
                     for t in app.store.list_tasks(ids=ids, limit=None) if t.started_at]
        start = time.perf_counter()
        for _ in range(args.polls):
            app.get_task(ids[0])
        reads = args.polls / (time.perf_counter() - start)
    finally:
        stop(worker)
        app.close()
    return latencies, reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.02)
    parser.add_argument("--polls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    found: dict[str, list[tuple[list[float], float]]] = {}
    problems: list[str] = []
    fresh_database()  # (the pooler checks that it can reach it)
    with bouncer_for(PG_URL) as bouncer:
        pooled = bouncer.url()
        cases = {
            "direct": (PG_URL, {}),
            "PgBouncer, listen_url": (pooled, {"ROADIE_POOLER": "transaction",
                                               "ROADIE_LISTEN_URL": PG_URL}),
            "PgBouncer, polling": (pooled, {"ROADIE_POOLER": "transaction"}),
        }
        for round_number in range(args.rounds):
            for name, (url, settings) in cases.items():
                # dropping the database ends PgBouncer's idle server connections to it, which
                # it logs ("got packet 'E' from server when not linked"): only the lines logged
                # during a case count
                fresh_database()
                logged = len(bouncer.problems())
                latencies, reads = measure(url, settings, args)
                problems.extend(bouncer.problems()[logged:])
                found.setdefault(name, []).append((latencies, reads))
                print(f"round {round_number + 1} {name:22} p50 "
                      f"{statistics.median(latencies):7.1f} ms, p99 "
                      f"{statistics.quantiles(latencies, n=100)[98]:7.1f} ms, get_task "
                      f"{reads:6.0f}/s", flush=True)
    for line in problems:
        print("pgbouncer:", line, flush=True)
    rows = []
    for name, runs in found.items():
        every = [ms for latencies, _ in runs for ms in latencies]
        p50s = [statistics.median(latencies) for latencies, _ in runs]
        target = POLL * 1000 + 5 if name == "PgBouncer, polling" else 5.0
        rows.append([name, f"{statistics.median(every):.1f} ms",
                     f"{min(p50s):.1f} to {max(p50s):.1f} ms",
                     f"{statistics.quantiles(every, n=100)[98]:.1f} ms",
                     f"{statistics.median([r for _, r in runs]):,.0f}/s",
                     "-" if name == "direct" else
                     f"{'yes' if statistics.median(every) <= target else 'NO'} (≤ {target:g} ms)"])
    text = "\n".join([
        f"One `roadie worker` process (2 threads), idle; {args.tasks} no-op tasks added one at "
        f"a time {args.gap * 1000:g} ms apart (after {WARMUP} to warm up); latency = the "
        "task's `started_at` (the worker's claim) minus its `created_at` (the add). "
        f"`postgres_poll_interval` {POLL:g} s. {args.rounds} interleaved rounds; get_task: "
        f"{args.polls} reads of one task in a loop through the same path.", "",
        table(["path", "latency p50", "p50 per round", "p99", "get_task", "target met"],
              rows), "",
        f"PgBouncer 1.18 in transaction mode logged {len(problems)} warnings or errors during "
        "the cases (its log lines when the database was dropped and made again between two "
        "cases left out).",
    ])
    print("\n" + text)
    if not args.no_write:
        write_section("Behind a transaction pooler", text)


if __name__ == "__main__":
    main()

"""Async executors: tasks that each await a sleep, drained on the event loop, before and after a
change, beside PgQueuer, in one interleaved run.

Cases, each on a fresh database, per backend:

- async: ``--tasks`` (1,000) tasks of ``roadie-examples:wait`` (``await asyncio.sleep(0.1)``)
  drained by one worker with 2 threads and ``async_concurrency`` 200, from ``run_worker`` to
  its return; the physical limit is 200 / 0.1 s = 2,000/s. Target (issue 31): at least
  1,800/s on both databases and 1.2x PgQueuer's async entrypoint with 200 concurrent tasks;
- deep: the same at ``--deep`` (4,000) tasks, where start-up and the first and last
  generations weigh less: how near the limit the steady state comes;
- fan-out: ``--fanout`` (10,000) tasks that each await 1 s, ``async_concurrency`` 2,000 (a
  webhook fan-out): the rate, the worker process's peak RSS and the memory per waiting task
  (peak RSS less the RSS before the drain, over the 2,000 tasks waiting at once);
- thread pool (the last state only): the 1,000 tasks of ``roadie-examples:count``
  (``n=1, delay=0.1``) on 200 threads.

Each drain runs in a process of its own, so that states of roadie (``--state NAME=PATH``, a
folder holding an exported ``core`` and ``plugins``, see bench/README.md) can be interleaved:
round by round, state by state. PgQueuer (``bench/peer_scripts/sleep_pgqueuer.py``, the peers' own
virtualenv: PEER_PY) runs the same two workloads in each round on PostgreSQL.

    python bench/async_tasks.py [--tasks 1000] [--deep 4000] [--fanout 10000] [--rounds 3]
        [--backend sqlite|postgres|both] [--state A=/tmp/pa-A --state B=/tmp/pa-B] [--no-write]

PostgreSQL: database ``roadie_bench_async`` on 127.0.0.1:5432 (user postgres), dropped and
created again for each drain; ROADIE_BENCH_ASYNC_PG points elsewhere. PEER_PG: PgQueuer's
database (its public schema is dropped).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _databases import fresh_postgres
from _results import table, write_section

PG_URL = os.environ.get("ROADIE_BENCH_ASYNC_PG",
                        "postgresql://postgres@127.0.0.1:5432/roadie_bench_async")
PEER_PY = os.environ.get("PEER_PY", "/work/peer-venv/bin/python")
PEER_PG = os.environ.get("PEER_PG", "postgresql://postgres@127.0.0.1:5432/peer_bench")
SLOTS = 200
FANOUT_SLOTS = 2000
HERE = Path(__file__).resolve().parent
# Where the time goes (issue 31, seventh round), from timelines of single drains (run_worker's
# steps, each round's settle, each attempt's start and end, slots busy per millisecond),
# py-spy of the loop's thread and the garbage collector's callbacks; shared 2-core machine
BREAKDOWN = """Where the time goes (eighth round, on another machine than the seventh
round's: its plain Python loops are faster, 0.65 s for 10 M additions against 0.79 s, yet an
async task costs more CPU, 0.34-0.40 ms against 0.25 ms: compare figures of one run only).
PostgreSQL, 200 slots, from timelines of single drains (each attempt's start and end, the
worker's steps, each thread's CPU time) and profiles of the loop's thread and the claim
loop's:

- CPU per attempt, by thread: the event loop 0.23-0.27 ms (the lifecycle and its hooks, the
  two status messages of the example executor, the live state's encoding, the greenlet's
  three switches, asyncio's task and timer), the claim loop about 0.1 ms (the settle round's
  rows and records, the ending hooks); the rest of its time the claim loop waits on the
  database, without the interpreter lock. The installed plugins (Prometheus,
  OpenTelemetry, Django) cost about 2 % of the rate: a virtualenv with roadie and
  roadie-examples alone drained 3,000 tasks at 1,738-1,770/s against 1,710-1,731/s.
- The generations spread: the first generation's 200 starts take 20-45 ms of the loop; every
  generation after it starts as the previous one ends, with the attempts' jitter (an attempt
  takes 102-106 ms for its 100 ms sleep, up to 120 ms while the loop is busy), until after
  about ten generations the starts are spread evenly over the whole 100 ms. That is the
  steady state of any pool of slots and costs nothing while tasks wait, but the last
  generation then ends over up to 100 ms with fewer and fewer slots busy: about half a
  generation lost at the end of a drain, whatever its depth.
- So a drain of 1,000 (five generations) loses at its ends: 45-80 ms from run_worker to the
  first start (the node's registration about 30 ms with its connection, the first claim
  15-30 ms), the last generation's tail, and 20-40 ms from the last end to the return (the last
  round, the check that nothing is left, the shutdown's writes). 1,800/s would need 555 ms
  for 1,000 tasks, where the sleeps alone take 500.
- The first attempt imports what the hooks need when first called: prometheus_client (about
  25 ms here) and greenlet (about 4 ms), so the second start comes 20-30 ms after the first.
  Importing them before the drain moved the first generation 20-30 ms earlier but not the
  drain's end (4 interleaved pairs: 1,426-1,468/s against 1,405-1,503/s), and an idle worker
  would carry them (about 3 MB): not kept.
- Tried again, not kept: claiming up to 256 ahead instead of prefetch's 128 (the second
  generation's slots refilled sooner, p90 3-7 ms against 12-15 ms, but the drains' rates
  stayed within the noise: 1,459-1,508/s against 1,405-1,505/s, 3 interleaved pairs).
- Memory per waiting task in the fan-out: 25 KB on PostgreSQL, 32 KB on SQLite (the table;
  PgQueuer's whole process peaks at 65 MB). The greenlet is 6 KB of it or more:
  2,000 greenlets switched out at the depth of a plain call cost 6.0 KB each, and each
  C-level call on the stack where they wait (a generator resumed, a call through ``*args``)
  about 0.9 KB more; the rest is the attempt's objects (its task and record, its asyncio task
  and timer, its status and messages).
- The deeper the queue, the less the ends weigh: at 4,000 tasks (the table) the drain
  reaches 83-89 % of the limit on both databases, and PgQueuer 82-85 %."""
PLUGINS = ["roadie-examples", "roadie-django", "roadie-prometheus", "roadie-opentelemetry"]


def fresh_database(backend: str, tmp: Path) -> str:
    """The URL of an empty database for ``backend``."""
    if backend == "sqlite":
        return f"sqlite:///{tmp / 'roadie.db'}"
    return fresh_postgres(PG_URL)


def rss_mb() -> float:
    """This process's resident memory now, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timeline() -> dict[str, list[float]]:
    """When each attempt starts and ends (``time.perf_counter``), noted by wrapping the
    worker's ``ClaimLoop._run_one`` (about a microsecond a task; the same in every state)."""
    from roadie.worker import claim_loop

    marks: dict[str, list[float]] = {"starts": [], "ends": []}
    run_one = claim_loop.ClaimLoop._run_one

    def noted(self: Any, *args: Any, **kwargs: Any) -> Any:
        marks["starts"].append(time.perf_counter())
        try:
            return run_one(self, *args, **kwargs)
        finally:
            marks["ends"].append(time.perf_counter())

    claim_loop.ClaimLoop._run_one = noted  # type: ignore[method-assign]
    return marks


def child(backend: str, n: int, executor: str, context: dict, threads: int,
          async_slots: int) -> dict[str, float | str]:
    """One drain of ``n`` tasks on a fresh database, in this process (``--child``)."""
    import roadie

    marks = timeline()

    with tempfile.TemporaryDirectory(prefix="roadie-bench-async-") as tmp:
        app = roadie.Roadie(fresh_database(backend, Path(tmp)), data_dir=tmp,
                            auto_upgrade=True)
        try:
            for first in range(0, n, 1000):
                app.add_tasks([{"executor": executor, "context": context}
                               for _ in range(min(1000, n - first))])
            before = rss_mb()
            started, cpu = time.perf_counter(), cpu_seconds()
            stats = app.run_worker(until_idle=True, concurrency=threads,
                                   async_concurrency=async_slots)
            seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
            assert stats.by_status == {"successful": n}, stats.by_status
        finally:
            app.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ms = [1000 * (min(marks["starts"]) - started), 1000 * (max(marks["starts"]) - started),
          1000 * (max(marks["ends"]) - started)]
    return {"rate": n / seconds, "rounds": stats.claims, "cpu_ms": 1000 * cpu / n,
            "first_start": ms[0], "last_start": ms[1], "last_end": ms[2],
            "returned": 1000 * seconds,
            "rss_before": before, "rss_peak": peak, "roadie": str(Path(roadie.__file__).parent)}


@dataclass
class Case:
    """A workload: its executor, context and slots."""

    name: str
    executor: str
    context: dict
    threads: int
    async_slots: int


def run_roadie(state: str, path: str | None, backend: str, case: Case, n: int
               ) -> dict[str, float | str] | None:
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            [f"{path}/core"] + [f"{path}/plugins/{p}" for p in PLUGINS]
            + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    args = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(
        [backend, n, case.executor, case.context, case.threads, case.async_slots])]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600,
                          cwd=HERE.parent)
    if proc.returncode != 0:
        print(f"  {state} {backend} {case.name} FAILED: {proc.stderr.strip()[-500:]}",
              flush=True)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_pgqueuer(n: int, seconds: float, slots: int) -> dict[str, float] | None:
    if not os.access(PEER_PY, os.X_OK):
        return None
    script = HERE / "peer_scripts" / "sleep_pgqueuer.py"
    proc = subprocess.run([PEER_PY, str(script), str(n), str(seconds), str(slots)],
                          env={**os.environ, "PEER_PG": PEER_PG},
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        print(f"  pgqueuer FAILED: {proc.stderr.strip()[-500:]}", flush=True)
        return None
    line = proc.stdout.strip().splitlines()[-1]
    fields = dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)
    return {"rate": float(fields["sleep_drain"].removesuffix("/s")),
            "rss_peak": float(fields["peak_rss"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--fanout", type=int, default=10000, help="0: no fan-out case")
    parser.add_argument("--deep", type=int, default=4000, help="0: no deep case")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--state", action="append", default=[],
                        help="NAME=PATH of an exported roadie (core/ and plugins/); repeatable")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*json.loads(args.child))))
        return
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    states: list[tuple[str, str | None]] = [
        (s.split("=", 1)[0], s.split("=", 1)[1] or None) for s in args.state] or [("this", None)]
    cases = [Case("async", "roadie-examples:wait", {"seconds": 0.1}, 2, SLOTS)]
    if args.deep:
        cases.append(Case("deep", "roadie-examples:wait", {"seconds": 0.1}, 2, SLOTS))
    if args.fanout:
        cases.append(Case("fan-out", "roadie-examples:wait", {"seconds": 1.0}, 2, FANOUT_SLOTS))
    threads = Case("threads", "roadie-examples:count", {"n": 1, "delay": 0.1}, SLOTS, 1)
    sizes = {"async": args.tasks, "deep": args.deep, "fan-out": args.fanout}
    got: dict[tuple[str, str, str], list[dict]] = {}
    lines: list[str] = []

    def note(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    note(f"load {os.getloadavg()[0]:.1f} at start")
    for round_no in range(1, args.rounds + 1):
        for backend in backends:
            for case in cases:
                n = sizes[case.name]
                for state, path in states:
                    result = run_roadie(state, path, backend, case, n)
                    if result is not None:
                        got.setdefault((state, backend, case.name), []).append(result)
                        note(f"round {round_no} {backend} {case.name} {state}: "
                             f"{result['rate']:.0f}/s, {result['cpu_ms']:.2f} ms CPU/task, "
                             f"{result['rounds']} rounds, RSS {result['rss_before']:.0f} -> "
                             f"peak {result['rss_peak']:.0f} MB; ms from run_worker: first "
                             f"start {result['first_start']:.0f}, last start "
                             f"{result['last_start']:.0f}, last end {result['last_end']:.0f}, "
                             f"return {result['returned']:.0f}; load "
                             f"{os.getloadavg()[0]:.1f}")
            result = run_roadie(states[-1][0], states[-1][1], backend, threads, args.tasks)
            if result is not None:
                got.setdefault((states[-1][0], backend, "threads"), []).append(result)
                note(f"round {round_no} {backend} threads {states[-1][0]}: "
                     f"{result['rate']:.0f}/s, {result['cpu_ms']:.2f} ms CPU/task")
        if not args.no_peers and "postgres" in backends:
            for case in cases:
                n = sizes[case.name]
                peer = run_pgqueuer(n, case.context["seconds"], case.async_slots)
                if peer is not None:
                    got.setdefault(("PgQueuer", "postgres", case.name), []).append(peer)
                    note(f"round {round_no} postgres {case.name} PgQueuer: "
                         f"{peer['rate']:.0f}/s, peak RSS {peer['rss_peak']:.0f} MB, "
                         f"load {os.getloadavg()[0]:.1f}")

    def median(key: tuple[str, str, str], field: str) -> float | None:
        values = [r[field] for r in got.get(key, []) if field in r]
        return statistics.median(values) if values else None

    rows = []
    peer = median(("PgQueuer", "postgres", "async"), "rate")
    for backend in backends:
        for state, _ in states:
            rate = median((state, backend, "async"), "rate")
            if rate is None:
                continue
            spread = [r["rate"] for r in got[(state, backend, "async")]]
            deep = median((state, backend, "deep"), "rate")
            peer_deep = median(("PgQueuer", "postgres", "deep"), "rate")
            fan = got.get((state, backend, "fan-out"), [])
            fan_rate = median((state, backend, "fan-out"), "rate")
            per_task = (statistics.median((r["rss_peak"] - r["rss_before"]) * 1024
                                          / FANOUT_SLOTS for r in fan) if fan else None)
            rows.append([
                backend, state, f"{rate:.0f} ({min(spread):.0f}-{max(spread):.0f})",
                f"{median((state, backend, 'async'), 'cpu_ms'):.2f}",
                f"{rate / peer:.2f}x" if peer and backend == "postgres" else "",
                "yes" if rate >= 1800 and (backend != "postgres" or not peer
                                           or rate >= 1.2 * peer) else "NO",
                (f"{deep:.0f}" + (f" ({deep / peer_deep:.2f}x)" if peer_deep
                                  and backend == "postgres" else "")) if deep else "",
                f"{fan_rate:.0f}" if fan_rate else "",
                f"{median((state, backend, 'fan-out'), 'rss_peak'):.0f}" if fan else "",
                f"{per_task:.1f}" if per_task is not None else ""])
    if peer:
        fan_peer = median(("PgQueuer", "postgres", "fan-out"), "rate")
        fan_rss = median(("PgQueuer", "postgres", "fan-out"), "rss_peak")
        deep_peer = median(("PgQueuer", "postgres", "deep"), "rate")
        rows.append(["postgres", "PgQueuer", f"{peer:.0f}", "", "1.00x", "",
                     f"{deep_peer:.0f}" if deep_peer else "",
                     f"{fan_peer:.0f}" if fan_peer else "",
                     f"{fan_rss:.0f}" if fan_rss else "", ""])
    content = "\n\n".join([
        table(["backend", "state", f"async ({SLOTS} slots) /s, median (range)",
               "async CPU ms/task", "vs PgQueuer", "≥ 1,800/s and ≥ 1.2x PgQueuer",
               f"async, {args.deep:,} tasks /s (vs PgQueuer)",
               f"fan-out ({FANOUT_SLOTS} slots, 1 s) /s", "fan-out peak RSS MB",
               "KB per waiting task"], rows),
        f"Conditions: each drain in a process of its own on a fresh database, interleaved "
        f"over {args.rounds} round(s) ({', '.join(s for s, _ in states)}"
        f"{', PgQueuer' if peer else ''}); {args.tasks} tasks that each await 100 ms with "
        f"{SLOTS} async slots (limit {SLOTS * 10}/s), the same at {args.deep} tasks, and "
        f"{args.fanout} that each await 1 s "
        f"with {FANOUT_SLOTS} (limit {FANOUT_SLOTS}/s). Rate: from `run_worker` to its "
        "return (PgQueuer: `PgQueuer.run(mode=drain, max_concurrent_tasks=...)`, its default "
        "batch size). CPU ms/task: the worker process's CPU time per task. KB per waiting "
        "task: (peak RSS - RSS before the drain) / slots. The machine (2 cores) is shared "
        "with other engineers' runs: compare figures of one run.",
        "```\n" + "\n".join(lines) + "\n```",
        BREAKDOWN,
    ])
    if not args.no_write:
        write_section("Async executors", content)


if __name__ == "__main__":
    main()

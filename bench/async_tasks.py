"""Async executors: tasks that each await a sleep, drained on the event loop, before and after a
change, beside PgQueuer, in one interleaved run.

Cases, each on a fresh database, per backend:

- async: ``--tasks`` (1,000) tasks of ``roadie-examples:wait`` (``await asyncio.sleep(0.1)``)
  drained by one worker with 2 threads and ``async_concurrency`` 200, from ``run_worker`` to
  its return; the physical limit is 200 / 0.1 s = 2,000/s. Target (issue 31): at least
  1,800/s on both databases and 1.2x PgQueuer's async entrypoint with 200 concurrent tasks;
- fan-out: ``--fanout`` (10,000) tasks that each await 1 s, ``async_concurrency`` 2,000 (a
  webhook fan-out): the rate, the worker process's peak RSS and the memory per waiting task
  (peak RSS less the RSS before the drain, over the 2,000 tasks waiting at once);
- thread pool (the last state only): the 1,000 tasks of ``roadie-examples:count``
  (``n=1, delay=0.1``) on 200 threads.

Each drain runs in a process of its own, so that states of roadie (``--state NAME=PATH``, a
folder holding an exported ``core`` and ``plugins``, see bench/README.md) can be interleaved:
round by round, state by state. PgQueuer (``bench/peer_scripts/sleep_pgqueuer.py``, the peers' own
virtualenv: PEER_PY) runs the same two workloads in each round on PostgreSQL.

    python bench/async_tasks.py [--tasks 1000] [--fanout 10000] [--rounds 3]
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
BREAKDOWN = """Where the time goes (seventh round; this machine is faster per core than the sixth
round's: a loop of 10 M additions takes 0.79 s here, 1.96 s there). PostgreSQL, 200 slots,
from timelines and profiles of single drains:

- The steady state is near the limit: once the first generation ends, 195-200 of the 200
  slots are busy (over a drain of 2,000 tasks, 90 % of the time from the first start to the
  last end), and an attempt lasts 104-105 ms for its 100 ms sleep. The rounds, one every
  25-50 ms, keep about 128 tasks claimed ahead.
- What a drain of 1,000 loses is at its ends: 25-45 ms from run_worker to the first start
  (the node's registration 10-14 ms, half of it compiling 4 statements; the first claim of
  200 13-18 ms with its session's connection), the first generation's 200 starts spread over
  about 40 ms (the loop's work per start, hooks and all), the same spread in the last
  generation, and about 15 ms of shutdown. So 1,000 tasks take at least about 585 ms here
  (1,700/s), where 1,800/s needs 555.
- The deeper the queue, the less the ends weigh. Before this round's change, one
  interleaved run, 1,000 / 2,000 / 4,000 tasks: roadie 1,391-1,519 / 1,643-1,686 /
  1,755-1,824/s; PgQueuer 1,452-1,565 / 1,585-1,663 / 1,720-1,779/s. PgQueuer reaches
  86-89 % of the physical limit at 4,000 tasks: 1.2x PgQueuer is above the limit there.
- The garbage collector: the attempts leave no cyclic garbage (3,319 unreachable objects
  after 500 tasks, 3,412 after 8,000, all from start-up), yet its walks of the attempts in
  flight cost a third of the fan-out's CPU (0.31 -> 0.21 ms a task with collection off), and
  six full collections of about 0.1 s each held the loop for 0.64-0.71 s of a 6.5 s fan-out.
- Tried, not kept: a GIL switch interval of 0.5 or 1 ms (no change, again); claiming up to
  256 ahead instead of prefetch's 128 (1,483 against 1,474/s, 4 interleaved rounds).

What changed this round: a worker that owns its process tunes the collector while it runs
(tune_gc: what exists at its start is frozen, young collections every 10,000 allocations;
docs/operations.md); and the gather rule of the first generation no longer lets finished
attempts wait the full 20 ms while the tasks claimed ahead by the first guess run out."""
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
    if args.fanout:
        cases.append(Case("fan-out", "roadie-examples:wait", {"seconds": 1.0}, 2, FANOUT_SLOTS))
    threads = Case("threads", "roadie-examples:count", {"n": 1, "delay": 0.1}, SLOTS, 1)
    got: dict[tuple[str, str, str], list[dict]] = {}
    lines: list[str] = []

    def note(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    note(f"load {os.getloadavg()[0]:.1f} at start")
    for round_no in range(1, args.rounds + 1):
        for backend in backends:
            for case in cases:
                n = args.tasks if case.name == "async" else args.fanout
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
                n = args.tasks if case.name == "async" else args.fanout
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
                f"{fan_rate:.0f}" if fan_rate else "",
                f"{median((state, backend, 'fan-out'), 'rss_peak'):.0f}" if fan else "",
                f"{per_task:.1f}" if per_task is not None else ""])
    if peer:
        fan_peer = median(("PgQueuer", "postgres", "fan-out"), "rate")
        fan_rss = median(("PgQueuer", "postgres", "fan-out"), "rss_peak")
        rows.append(["postgres", "PgQueuer", f"{peer:.0f}", "", "1.00x", "",
                     f"{fan_peer:.0f}" if fan_peer else "",
                     f"{fan_rss:.0f}" if fan_rss else "", ""])
    content = "\n\n".join([
        table(["backend", "state", f"async ({SLOTS} slots) /s, median (range)",
               "async CPU ms/task", "vs PgQueuer", "≥ 1,800/s and ≥ 1.2x PgQueuer",
               f"fan-out ({FANOUT_SLOTS} slots, 1 s) /s", "fan-out peak RSS MB",
               "KB per waiting task"], rows),
        f"Conditions: each drain in a process of its own on a fresh database, interleaved "
        f"over {args.rounds} round(s) ({', '.join(s for s, _ in states)}"
        f"{', PgQueuer' if peer else ''}); {args.tasks} tasks that each await 100 ms with "
        f"{SLOTS} async slots (limit {SLOTS * 10}/s), and {args.fanout} that each await 1 s "
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

"""Host processes: no-op drain through warm hosts against in process, cold start, memory.

For each backend, in one run, each drain on a fresh database:

- in process: ``N`` no-op tasks (``roadie-examples:noop``) drained by one worker with two
  threads (``run_worker(concurrency=2, until_idle=True)``), from the call to its return;
- warm hosts: the same ``N`` tasks drained by a worker with ``out_of_process=True`` whose two
  hosts were started before the clock starts (so the figure is the warm path);
- the two drains alternate ``--repeat`` times (default 2) and the best of each counts, so a
  burst of load from other processes does not decide the ratio;
- per-task overhead: (hosted drain time - in-process drain time) / N, in µs of wall time;
- host cold start: request to "ready" of a new host of one worker's pool (the way a worker
  starts one: forked from the environment's template host where the platform can fork), the
  median of 10 starts after the first; the first host's start, which includes starting the
  template (``python -m roadie.hosts.main --template``: a Python start plus the imports of
  roadie and the plugins), is reported apart;
- memory per host: resident set size of a warm host after the drain.

Targets: warm-host drain at least half of the in-process drain (issue 13); cold start under
300 ms (issue 31).

    python bench/hosts.py [--tasks 2000] [--repeat 2] [--backend sqlite|postgres|both]
                          [--no-write]

``--cold-only --against ROOT [--rounds 5]`` measures only the cold starts, alternating between
this checkout's roadie and the one in ``ROOT/core`` (an exported tree, e.g.
``git archive COMMIT core | tar -x -C /tmp/base`` then ``--against /tmp/base``), each round
in fresh processes, and writes the section "Host cold start, before and after".

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
from typing import Any

import roadie
from _databases import fresh_postgres
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
    return fresh_postgres(PG_URL)


def add(app: roadie.Roadie, n: int) -> None:
    for start in range(0, n, 1000):
        app.add_tasks([{"executor": NOOP} for _ in range(min(1000, n - start))])


def successful(app: roadie.Roadie) -> int:
    return app.store.count_tasks().get(roadie.Status.SUCCESSFUL, 0)


def drain(backend: str, n: int, hosted: bool) -> float:
    """Seconds to drain ``n`` no-op tasks on a fresh database, in process or in warm hosts."""
    with tempfile.TemporaryDirectory(prefix="roadie-bench-hosts-") as tmp:
        url = fresh_database(backend, Path(tmp))
        app = roadie.Roadie(url, data_dir=tmp, auto_upgrade=True)
        add(app, n)
        worker = app.worker(concurrency=2, until_idle=True, out_of_process=hosted)
        if hosted:
            warm = [worker.hosts.acquire(None) for _ in range(2)]  # start both hosts first
            for host in warm:
                worker.hosts.release(host)
        started = time.perf_counter()
        worker.run()
        seconds = time.perf_counter() - started
        done = successful(app)
        app.close()
    assert done == n, f"the {'hosted' if hosted else 'in-process'} drain ran {done} of {n}"
    return seconds


def measure(backend: str, n: int, repeat: int) -> Figures:
    """Drain figures for one backend: the best of ``repeat`` alternating drains each."""
    figures = Figures(backend, n)
    in_process, hosted = [], []
    for _ in range(repeat):
        in_process.append(drain(backend, n, hosted=False))
        hosted.append(drain(backend, n, hosted=True))
    figures.hosted_ok = n
    figures.in_process = n / min(in_process)
    figures.hosted = n / min(hosted)
    figures.overhead_us = (min(hosted) - min(in_process)) / n * 1e6
    return figures


def cold_starts(count: int = 10) -> tuple[float, list[float], float]:
    """The first host's start (ms, with its template's), the request-to-ready times (ms) of
    ``count`` more hosts, and a fresh host's RSS (MB): each host made as a worker's pool
    makes one (on its starter thread), then closed before the next."""
    app = roadie.Roadie("sqlite://", auto_upgrade=False)
    from roadie.hosts.pool import HostPool

    pool = HostPool(app, sink=None, all_executors=True)  # type: ignore[arg-type]
    times, rss = [], 0.0
    try:
        for _ in range(count + 1):
            took, used = one_host(pool)
            times.append(took)
            rss = max(rss, used)
    finally:
        pool.close()
    return times[0], times[1:], rss


def one_host(pool: Any) -> tuple[float, float]:
    """Request to ready (ms) of a new host of ``pool`` (made on its starter thread, as a
    worker makes one) and its RSS (MB); closed afterwards."""
    started = time.perf_counter()
    host: HostProcess = pool._starter.submit(lambda: pool._spawn(None)).result()
    host.wait_ready(60)
    took = (time.perf_counter() - started) * 1000
    used = host.rss_mb()
    host.close()
    return took, used


def early_start() -> tuple[float | None, float | None]:
    """As a worker starts one when its executors run in hosts (``start_templates``, before
    any task): the template host's start (ms), and the first host's request to ready (ms)
    once the template is up; (None, None) for a roadie without template hosts, (template,
    None) for one that does not start them early."""
    app = roadie.Roadie("sqlite://", auto_upgrade=False)
    from roadie.hosts.pool import HostPool

    pool = HostPool(app, sink=None, all_executors=True)  # type: ignore[arg-type]
    try:
        if not hasattr(pool, "template_ms"):
            return None, None
        if not hasattr(pool, "start_templates"):
            one_host(pool)
            return pool.template_ms[0], None
        pool.start_templates([roadie.Executor])
        pool._starter.submit(lambda: None).result()  # the template is up
        return pool.template_ms[0], one_host(pool)[0]
    finally:
        pool.close()


def worker_first() -> float:
    """A fresh worker (SQLite, every executor in hosts: ``out_of_process=True``) that finds
    one no-op task waiting: its claim to its end (ms), mostly the wait for the first host."""
    with tempfile.TemporaryDirectory(prefix="roadie-bench-hosts-") as tmp:
        app = roadie.Roadie(f"sqlite:///{Path(tmp) / 'roadie.db'}", data_dir=tmp)
        task = app.add_task(NOOP, {})
        app.run_worker(concurrency=1, until_idle=True, out_of_process=True)
        record = app.get_task(task.id)
        app.close()
    assert record.status == roadie.Status.SUCCESSFUL, record.status_message
    assert record.started_at is not None and record.finished_at is not None
    return (record.finished_at - record.started_at).total_seconds() * 1000


def cold_ab(trees: list[str], rounds: int) -> list[str]:
    """Cold starts of the roadie in each of ``trees`` (exported trees' ``core``) and of this
    checkout's, alternating in fresh processes; the lines of the section."""
    import json
    import subprocess

    here = str(Path(__file__).resolve().parents[1] / "core")
    labels = {core: f"before ({Path(core).parent})" for core in trees}
    labels[here] = "after (this checkout)"
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in labels.values()}
    loads = []
    for _ in range(rounds):
        for core, label in labels.items():
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                [core, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
            out = subprocess.run([sys.executable, __file__, "--cold-json"], env=env,
                                 check=True, capture_output=True, text=True).stdout
            figures = json.loads(out.strip().splitlines()[-1])
            runs[label].append(figures)
            loads.append(os.getloadavg()[0])
            print(f"  {label}: first {figures['first']:.0f} ms, median of the next 10 "
                  f"{statistics.median(figures['rest']):.0f} ms, template "
                  f"{figures['template']}, first after an early start {figures['early']}, "
                  f"a worker's first task {figures['worker']:.0f} ms "
                  f"({figures['roadie']}), load {loads[-1]:.1f}", flush=True)

    def median_of(found: list[dict[str, Any]], key: str) -> str:
        values = [f[key] for f in found if f.get(key) is not None]
        return f"{statistics.median(values):.0f} ms" if values else "-"

    rows, medians = [], {}
    for label, found in runs.items():
        rest = [t for f in found for t in f["rest"]]
        medians[label] = statistics.median(rest)
        rows.append([label, median_of(found, "template"), median_of(found, "first"),
                     median_of(found, "early"), f"**{median_of(found, 'worker')}**",
                     f"**{medians[label]:.0f} ms**",
                     f"{min(rest):.0f}-{max(rest):.0f} ms",
                     f"{statistics.median(f['rss'] for f in found):.0f} MB"])
    after = labels[here]
    workers = {label: statistics.median(f["worker"] for f in found)
               for label, found in runs.items()}
    ratios = "; ".join(f"after/{label}: next hosts {medians[after] / medians[label]:.3f}x, "
                       f"a new worker's first task {workers[after] / workers[label]:.3f}x"
                       for label in runs if label != after)
    verdict = "met" if max(medians[after], workers[after]) < 300 else "NOT met"
    return [
        table(["", "template host's start (median)", "first host, template started on "
               "demand (median)", "first host, template started with the worker (median)",
               "a new worker's first task, claim to end (median)",
               f"next hosts (median of {10 * rounds})", "range of the next hosts",
               "fresh host RSS"], rows),
        f"Ratios ({ratios}). Target < 300 ms for a new worker's first task and for the next "
        f"hosts: "
        f"{verdict}. Load average during the run: {min(loads):.1f}-{max(loads):.1f}.",
        f"{rounds} rounds, the trees alternating, each round a fresh process per tree that "
        f"makes 11 hosts one after the other through a `HostPool` (as a worker does, on its "
        f"starter thread), each closed before the next, then one more pool whose template "
        f"is started as a worker starts it (`start_templates`, before any task) and its first "
        f"host once that template is up, then a new worker (SQLite, `out_of_process=True`) "
        f"that finds one no-op task waiting: the task's claim to its end (its `started_at` to "
        f"`finished_at`), mostly the wait for its host. Without template hosts (main), every "
        f"host is a new `python -m roadie.hosts.main`. With them, the first host of a pool "
        f"starts the environment's template host (`--template`: a Python start, roadie's and the "
        f"plugins' imports; part of the first host's figure when started on demand), and "
        f"every host is forked from it. A worker whose executors run in hosts starts its "
        f"templates as it starts, so its first task waits only for what is left of the "
        f"template's start when it arrives (nothing when it comes later than the template's "
        f"start after the worker's), then a fork.",
    ]


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
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--cold-only", action="store_true")
    parser.add_argument("--against", action="append",
                        help="an exported tree (with core/) to compare with (repeatable)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cold-json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cold_json:
        import json

        first, rest, fresh = cold_starts()
        template, early = early_start()
        print(json.dumps({"first": first, "rest": rest, "rss": fresh, "template": template,
                          "early": early, "worker": worker_first(),
                          "roadie": str(Path(roadie.__file__).parents[1])}))
        return
    if args.cold_only:
        roots = args.against or [str(Path(__file__).resolve().parents[1])]
        lines = cold_ab([str(Path(root) / "core") for root in roots], args.rounds)
        print("\n\n".join(lines))
        if not args.no_write:
            write_section("Host cold start, before and after", "\n\n".join(lines))
        return
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    rows, lines = [], []
    for backend in backends:
        figures = measure(backend, args.tasks, args.repeat)
        ratio = figures.hosted / figures.in_process
        line = (f"{backend}: in process {figures.in_process:.0f}/s, warm hosts "
                f"{figures.hosted:.0f}/s ({ratio:.2f}x), overhead {figures.overhead_us:.0f} µs "
                f"per task")
        print(line, flush=True)
        lines.append(line)
        rows.append([backend, str(args.tasks), f"{figures.in_process:.0f}",
                     f"{figures.hosted:.0f}", f"{ratio:.2f}", f"{figures.overhead_us:.0f}",
                     "yes" if ratio >= 0.5 else "NO"])
    first, starts, fresh = cold_starts()
    warm = warm_rss(backends[0])
    start_line = (f"host cold start: median {statistics.median(starts):.0f} ms, min "
                  f"{min(starts):.0f}, max {max(starts):.0f} (10 starts after the first, "
                  f"which took {first:.0f} ms with its template's start); RSS {fresh:.0f} MB "
                  f"fresh, {warm:.0f} MB after 200 tasks")
    print(start_line)
    lines.append(start_line)
    content = "\n\n".join([
        table(["backend", "tasks", "in process /s", "warm hosts /s", "ratio",
               "overhead µs/task", "≥ 0.5x"], rows),
        f"Host cold start (request to ready of a new host of a worker's pool, forked from "
        f"its environment's template host): median "
        f"**{statistics.median(starts):.0f} ms** (min {min(starts):.0f}, max "
        f"{max(starts):.0f}; target < 300 ms: "
        f"{'met' if statistics.median(starts) < 300 else 'NOT met'}); the first host of the "
        f"pool, which starts the template (a Python start and the imports): {first:.0f} ms. "
        f"Memory per host: "
        f"{fresh:.0f} MB resident when fresh, {warm:.0f} MB after 200 no-op tasks.",
        f"Conditions: default settings; one worker, two threads, `roadie-examples:noop`; each "
        f"drain on a fresh database; the two hosts are started before the clock starts; "
        f"best of {args.repeat} alternating drains each; the machine is shared with other "
        f"engineers' test runs (see the load average above), so compare the two drains of one "
        f"run, not figures across runs.",
        "```\n" + "\n".join(lines) + "\n```",
    ])
    if not args.no_write:
        write_section("Host processes", content)


if __name__ == "__main__":
    main()

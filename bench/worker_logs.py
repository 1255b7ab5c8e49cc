"""What `roadie worker`'s log lines cost: CPU per task of a worker process that drains a
queue, with the CLI's logging (text to a file, or JSON) and without any (``run_worker`` from
Python), before and after a change.

Each round, for each workload (``sync``: ``roadie-examples:noop`` tasks on 2 threads;
``async``: ``roadie-examples:wait`` tasks of 0.1 s, 200 async slots), each tree and each mode,
one after the other: a fresh PostgreSQL database gets the tasks (from another process), then a
fresh worker process drains it with ``--until-idle``, and its CPU time (user + system, from
``getrusage(RUSAGE_CHILDREN)``, start and stop included) is divided by the tasks. Modes:

- ``text``: ``python -m roadie --url URL worker --until-idle -c 2 --async-concurrency 200``,
  standard error to a file (one plain line per event, two lines a task);
- ``json``: the same with ``--log-format json``;
- ``off``: ``roadie.Roadie(URL).run_worker(concurrency=2, until_idle=True,
  async_concurrency=200)`` from a small script, no logging configured: the log cost is
  ``text`` (or ``json``) minus ``off``.

With ``--against ROOT`` (an exported tree, ``git archive COMMIT core plugins | tar -x -C
ROOT``), every measurement is also made with that tree's ``core/`` and first-party
``plugins/`` first on ``PYTHONPATH``, the trees alternating. Both trees are compiled to
bytecode first, as pip installs a package.

    python bench/worker_logs.py [--rounds 3] [--sync 6000] [--async 2000] [--against ROOT]
                                [--no-write]

PostgreSQL: database ``roadie_bench_logs`` on 127.0.0.1:5432 (user postgres), dropped and
created again for each drain; ROADIE_BENCH_LOGS_PG points elsewhere.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _databases import fresh_postgres
from _results import table, write_section
from _trees import ROOT, compile_tree, environ

PG_URL = os.environ.get("ROADIE_BENCH_LOGS_PG",
                        "postgresql://postgres@127.0.0.1:5432/roadie_bench_logs")
MODES = ("text", "json", "off")

ADD = """
import json, sys
import roadie
app = roadie.Roadie(sys.argv[1], auto_upgrade=True)
app.add_tasks([(sys.argv[2], json.loads(sys.argv[3]))] * int(sys.argv[4]))
app.close()
"""

PYTHON_WORKER = """
import sys
import roadie
roadie.Roadie(sys.argv[1]).run_worker(concurrency=2, until_idle=True, async_concurrency=200)
"""

WORKLOADS = {"sync": ("roadie-examples:noop", "null"),
             "async": ("roadie-examples:wait", '{"seconds": 0.1}')}



def drain_cpu(workload: str, tasks: int, mode: str, env: dict[str, str], tmp: Path
              ) -> tuple[float, int]:
    """CPU seconds of one worker process draining ``tasks`` tasks, and the lines it logged."""
    url = fresh_postgres(PG_URL)
    executor, context = WORKLOADS[workload]
    subprocess.run([sys.executable, "-c", ADD, url, executor, context, str(tasks)], env=env,
                   check=True, timeout=300)
    if mode == "off":
        command = [sys.executable, "-c", PYTHON_WORKER, url]
    else:
        command = [sys.executable, "-m", "roadie", "--url", url, "worker", "--until-idle",
                   "-c", "2", "--async-concurrency", "200"]
        if mode == "json":
            command += ["--log-format", "json"]
    log = tmp / "worker.log"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("w") as stderr:
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr, check=True,
                       timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    with log.open() as lines:
        return cpu, sum(1 for _ in lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sync", type=int, default=6000, help="noop tasks a drain")
    parser.add_argument("--async", dest="async_tasks", type=int, default=2000,
                        help="wait tasks a drain")
    parser.add_argument("--against", help="an exported tree (with core/, plugins/) to compare")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    counts = {"sync": args.sync, "async": args.async_tasks}
    trees: list[tuple[str, Path | None]] = [("this checkout", None)]
    if args.against:
        trees.insert(0, ("before", Path(args.against).resolve()))
    for _, tree in trees:
        compile_tree(tree or ROOT)
    per_task: dict[tuple[str, str, str], list[float]] = {}
    lines: dict[tuple[str, str], int] = {}
    loads = []
    with tempfile.TemporaryDirectory(prefix="roadie-bench-logs-") as tmp_name:
        tmp = Path(tmp_name)
        for index in range(args.rounds):
            order = trees if index % 2 == 0 else trees[::-1]
            for workload, tasks in counts.items():
                for label, tree in order:
                    for mode in MODES:
                        cpu, logged = drain_cpu(workload, tasks, mode, environ(tree, tmp), tmp)
                        per_task.setdefault((workload, label, mode), []).append(
                            cpu / tasks * 1000)
                        lines[(workload, mode)] = logged
                        loads.append(os.getloadavg()[0])
                        print(f"  round {index + 1} {workload} {label} {mode}: "
                              f"{cpu / tasks * 1000:.3f} ms/task, {logged} lines "
                              f"(load {loads[-1]:.1f})", flush=True)
    rows = []
    for workload in counts:
        off = [statistics.median(per_task[(workload, label, "off")]) for label, _ in trees]
        for mode in MODES:
            medians = [statistics.median(per_task[(workload, label, mode)])
                       for label, _ in trees]
            row = [workload, mode, str(lines[(workload, mode)])]
            row += [f"{m:.3f}" + ("" if mode == "off" else f" (log {(m - o) * 1000:+.0f} us)")
                    for m, o in zip(medians, off, strict=True)]
            if len(trees) == 2:  # round by round: the load drifts less within a round
                before, after = (per_task[(workload, label, mode)] for label, _ in trees)
                changes = sorted((b - a) * 1000 for a, b in zip(before, after, strict=True))
                row.append(f"{statistics.median(changes):+.0f} us "
                           f"({changes[0]:+.0f} to {changes[-1]:+.0f})")
            rows.append(row)
    header = ["workload", "mode", "lines", *(f"CPU ms/task, {label}" for label, _ in trees)]
    if len(trees) == 2:
        header.append("change a task (median, range of the rounds')")
    content = "\n\n".join([
        table(header, rows),
        f"Median of {args.rounds} rounds (load average {min(loads):.1f}-{max(loads):.1f}); "
        f"{args.sync:,} `roadie-examples:noop` tasks a sync drain, {args.async_tasks:,} "
        f"`roadie-examples:wait` tasks (0.1 s) an async drain; each drain a fresh PostgreSQL "
        f"database and a fresh worker process, its CPU (start and stop included) over the "
        f"tasks. text/json: `roadie worker --until-idle -c 2 --async-concurrency 200`, "
        f"standard error to a file; off: `run_worker` from Python, no logging; log: the "
        f"mode's CPU per task minus off's. "
        + (f"Before: `{args.against}` (core and plugins) first on PYTHONPATH, the trees "
           f"alternating. " if args.against else ""),
    ])
    print(content)
    if not args.no_write:
        write_section("Worker log lines", content)


if __name__ == "__main__":
    main()

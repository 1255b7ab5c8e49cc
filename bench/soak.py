"""Soak: a long mixed load with faults, and the invariants checked at the end.

    python bench/soak.py [--minutes 10] [--workers 3] [--clients 2] [--kill-every 30]
                         [--backend postgres|postgres-pooler|sqlite] [--drain-timeout 1800]
                         [--no-write]

Worker processes (`roadie worker`) drain while client processes (tests/churn.py) add tasks one
by one and in batches, cancel, retry and delete them. Every `--kill-every` seconds a random
worker is killed with SIGKILL and a new one started; half-way through, the database server is
restarted (PostgreSQL: a throwaway cluster of its own, made with initdb on a free port, never
the shared server; SQLite has no server: no restart). When the load stops, the workers drain
what is left, and the script checks that every task ended, that no task was lost (each id a
client added and did not delete is stored; nothing else is), that no client saw an error other
than the database being down during its restart, and `roadie.testing.check_invariants`.
``postgres-pooler`` runs the same through a PgBouncer of its own in transaction mode in front
of the throwaway cluster (``ROADIE_POOLER=transaction``; workers LISTEN on a direct connection,
``ROADIE_LISTEN_URL``); the restart is the server's, behind the pooler. The backlog (tasks not
final) is sampled every 30 s and reported.
If the drain does not end within `--drain-timeout` seconds, it reports what is left (tasks by
status, a few of them, the worker processes and nodes) and fails. On failure the worker and
client logs (and the PostgreSQL server's log) are kept, and their folder printed.
Writes its backend's part of section "Soak" of RESULTS.md, keeping the other backend's.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.churn, tests.pgcluster, tests.processes

import roadie  # noqa: E402
from _results import CODE_AT_START, RESULTS, command, machine, table, write_section  # noqa: E402
from roadie import Roadie, Status  # noqa: E402
from roadie.testing import check_invariants, make_app, wait_for  # noqa: E402

from tests.pgbouncer import bouncer_for  # noqa: E402
from tests.pgcluster import throwaway_cluster  # noqa: E402
from tests.processes import kill, start_worker, stop, worker_env  # noqa: E402

SETTINGS = {"ROADIE_HEARTBEAT_INTERVAL": "1.0", "ROADIE_HEARTBEAT_GRACE": "5.0",
            "ROADIE_STATUS_INTERVAL": "0.25", "ROADIE_SQLITE_POLL_INTERVAL": "0.1",
            "ROADIE_POSTGRES_POLL_INTERVAL": "1.0"}
# worker and client processes import the roadie this one did (PYTHONPATH=core: this checkout's)
PYTHONPATH = os.pathsep.join([str(Path(roadie.__file__).resolve().parents[1]), str(ROOT)])
NOT_FINAL = (Status.NEW, Status.QUEUED, Status.IN_PROGRESS, Status.WAITING)
# the subsections of "Soak", in this order
BACKENDS = {"postgres": "PostgreSQL", "postgres-pooler": "PostgreSQL through PgBouncer",
            "sqlite": "SQLite"}
BACKLOG_EVERY = 30.0  # seconds between two samples of the backlog


def leftover(app: Roadie, workers: list[subprocess.Popen[bytes]]) -> dict:
    """What is left when the drain times out: the tasks not final by status, the two oldest
    of each status, the worker processes (exit code None: running) and the nodes the database
    knows."""
    counts = {s: n for s, n in app.store.count_tasks().items() if s in NOT_FINAL and n}
    oldest = [t for s, n in counts.items()
              for t in app.list_tasks(status=s, limit=2, offset=max(0, n - 2))]
    now = dt.datetime.now(dt.UTC)
    return {
        "not_final": {s.label: n for s, n in counts.items()},
        "oldest": [{"id": t.id, "executor": t.executor, "status": t.status.label,
                    "node": t.node, "status_message": t.status_message,
                    "waiting_reason": app.waiting_reason(t)} for t in oldest],
        "worker_processes": [{"pid": w.pid, "exit_code": w.poll()} for w in workers],
        "nodes": [{"id": n.id, "name": n.name, "pid": n.pid,
                   "heartbeat_age": round((now - n.heartbeat_at).total_seconds(), 1),
                   "alive": n.is_alive(now, app.settings.heartbeat_grace)}
                  for n in app.list_nodes()],
    }


def soak(url: str, work: Path, args: argparse.Namespace, restart: object | None,
         settings: dict[str, str] | None = None) -> dict:
    rng = random.Random(args.seed)
    env = {**SETTINGS, **(settings or {}), "PYTHONPATH": PYTHONPATH}
    app = make_app(url, work / "data", heartbeat_interval=1.0, heartbeat_grace=5.0,
                   pooler=env.get("ROADIE_POOLER", "none"),
                   listen_url=env.get("ROADIE_LISTEN_URL", ""))
    logs: list[Path] = []

    def new_worker() -> subprocess.Popen[bytes]:
        log = work / f"worker-{len(logs)}.log"
        logs.append(log)
        return start_worker(url, work / "data", "--concurrency", "2", env=env, log=log)

    seconds = args.minutes * 60
    workers = [new_worker() for _ in range(args.workers)]
    clients = []
    for seed in range(args.clients):
        report = work / f"client-{seed}.json"
        clients.append((subprocess.Popen(
            [sys.executable, "-m", "tests.churn", url, str(seconds), str(seed), str(report)],
            env={**worker_env(work / "data"), **env}, cwd=ROOT), report))
    started = time.monotonic()
    kills, restarted, downtime = 0, False, 0.0
    next_kill = started + args.kill_every
    backlog: list[tuple[float, int | None]] = []  # (seconds since the start, tasks not final)
    restart_window: list[dt.datetime | None] = [None, None]  # when the server went down, up
    next_sample = started
    try:
        while time.monotonic() - started < seconds:
            time.sleep(1)
            now = time.monotonic()
            if now >= next_sample:
                next_sample = now + BACKLOG_EVERY
                backlog.append((now - started, not_final(app)))
            if now >= next_kill:
                next_kill = now + args.kill_every
                victim = rng.randrange(len(workers))
                kill(workers[victim])
                workers[victim] = new_worker()
                kills += 1
                print(f"{now - started:5.0f} s: killed a worker ({kills})", flush=True)
            if restart is not None and not restarted and now - started >= seconds / 2:
                down = time.monotonic()
                restart_window[0] = dt.datetime.now(dt.timezone.utc)
                restart.stop()  # type: ignore[attr-defined]
                time.sleep(3)
                restart.start()  # type: ignore[attr-defined]
                restart_window[1] = dt.datetime.now(dt.timezone.utc)
                downtime = time.monotonic() - down
                restarted = True
                print(f"{now - started:5.0f} s: restarted the database ({downtime:.1f} s down)",
                      flush=True)
        reports = []
        for process, report in clients:
            process.wait(timeout=300)
            reports.append(json.loads(report.read_text()))
        load_end = time.monotonic()
        backlog.append((load_end - started, not_final(app)))
        app.close()
        left = None
        try:
            wait_for(lambda: not any(app.store.count_tasks().get(s) for s in NOT_FINAL),
                     timeout=args.drain_timeout, interval=2.0, message="every task to end")
        except AssertionError:
            left = leftover(app, workers)
            print("the drain timed out; left:", json.dumps(left, indent=2), flush=True)
        drain = time.monotonic() - load_end
    finally:
        codes = [stop(w) for w in workers]
    added = collections.Counter(i for r in reports for i in r["added"])
    deleted = collections.Counter(i for r in reports for i in r["deleted"])
    tasks = app.list_tasks(limit=None)
    stored = {t.id for t in tasks}
    # SQLite reuses the id of the newest task once it is deleted: count adds and deletes
    expected = {i for i in added if added[i] - deleted[i] == 1}
    wrong_counts = [i for i in added if added[i] - deleted[i] not in (0, 1)]
    problems = check_invariants(app, running_needs_live_node=False)
    text = "".join(log.read_text(errors="replace") for log in logs)
    refused = sum(int(n) for n in re.findall(r"refused_writes=(\d+)", text))
    refused_lines = text.count("the database refused its")
    statuses = collections.Counter(t.status.label for t in tasks)
    ops = collections.Counter()
    for r in reports:
        ops.update(r["counts"])
    app.close()
    return {
        "seconds": seconds, "workers": args.workers, "clients": args.clients, "kills": kills,
        "restart": f"{downtime:.1f} s down" if restarted else "none",
        "added": sum(added.values()), "stored": len(stored), "ops": dict(ops),
        "statuses": dict(statuses), "drain": drain, "drain_timed_out": left,
        "lost": sorted(expected - stored)[:20], "unexpected": sorted(stored - expected)[:20],
        "wrong_counts": wrong_counts[:20],
        "client_errors": [e for r in reports for e in r["errors"]][:20],
        "unavailable": sum(len(r.get("unavailable", [])) for r in reports),
        "refused_writes": max(refused, refused_lines), "invariants": problems[:20],
        "worker_exit_codes": codes, "backlog": backlog,
        "restart_window": [w.isoformat() if w else None for w in restart_window],
        "stuck": [t.id for t in tasks if t.status in (Status.NEW, Status.QUEUED,
                                                     Status.IN_PROGRESS)][:20],
    }


POOLER_RETRY = 20.0  # PgBouncer retries a failed server login after 15 s (server_login_retry)


def outside(lines: list[str], window: list[str | None]) -> list[str]:
    """PgBouncer's log lines that are not from the server's restart (``window``: when it went
    down and came back) or the pooler's next ``POOLER_RETRY`` seconds."""
    if not all(window):
        return lines
    down = dt.datetime.fromisoformat(str(window[0]))
    up = dt.datetime.fromisoformat(str(window[1])) + dt.timedelta(seconds=POOLER_RETRY)
    kept = []
    for line in lines:
        try:
            when = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").replace(
                tzinfo=dt.timezone.utc)
        except ValueError:
            kept.append(line)
            continue
        if not down <= when <= up:
            kept.append(line)
    return kept


def not_final(app: Roadie) -> int | None:
    """How many tasks have not ended (None while the database is down)."""
    try:
        counts = app.store.count_tasks()
    except roadie.DatabaseError:
        return None
    return sum(counts.get(s, 0) for s in NOT_FINAL)


def kept_part(title: str) -> str:
    """The part ``### title`` of section "Soak" of RESULTS.md, or ""."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    section = re.search(r"^## Soak[ \t]*\n.*?(?=^## |\Z)", text, re.M | re.S)
    part = section and re.search(rf"^### {re.escape(title)}\n.*?(?=^### |\Z)",
                                 section.group(0), re.M | re.S)
    return part.group(0).strip() if part else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--kill-every", type=float, default=30.0)
    parser.add_argument("--backend", choices=list(BACKENDS), default="postgres")
    parser.add_argument("--seed", type=int, default=1)
    # the drain is mostly the serial tasks (one at a time across all workers, ~30/s) that
    # piled up during the load: 588 s and 895 s in two 10-minute PostgreSQL runs
    parser.add_argument("--drain-timeout", type=float, default=1800.0,
                        help="seconds the workers get to end every task after the load")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="roadie-soak-"))  # kept on failure: the logs
    print(f"worker and client logs in {work}", flush=True)
    if args.backend == "postgres":
        with throwaway_cluster() as cluster:
            try:
                result = soak(cluster.url, work, args, cluster)
            finally:
                shutil.copy(cluster.log, work / "server.log")
    elif args.backend == "postgres-pooler":
        with throwaway_cluster() as cluster, bouncer_for(cluster.url) as bouncer:
            try:
                result = soak(bouncer.url(), work, args, cluster, {
                    "ROADIE_POOLER": "transaction", "ROADIE_LISTEN_URL": cluster.url})
                result["pooler_problems"] = outside(bouncer.problems(),
                                                    result["restart_window"])[:20]
            finally:
                shutil.copy(cluster.log, work / "server.log")
                (work / "pgbouncer.log").write_text(bouncer.log())
    else:
        result = soak(f"sqlite:///{work / 'soak.db'}", work, args, None)
    left = result["drain_timed_out"]
    ok = not (result["lost"] or result["unexpected"] or result["wrong_counts"]
              or result["client_errors"] or result["invariants"] or result["stuck"] or left
              or result.get("pooler_problems"))
    print(json.dumps(result, indent=2))
    if ok:
        shutil.rmtree(work)
    else:
        print(f"FAILED; the logs are kept in {work}", flush=True)
    drain = f"{result['drain']:.1f} s"
    if left:
        drain = (f"timed out after {args.drain_timeout:g} s, not final: "
                 + ", ".join(f"{k} {v}" for k, v in left["not_final"].items()))
    rows = [
        ["duration of the load", f"{result['seconds'] / 60:g} min"],
        ["worker processes (2 threads each)", str(result["workers"])],
        ["client processes", str(result["clients"])],
        ["kill -9 of a worker", f"{result['kills']} (every {args.kill_every:g} s)"],
        ["database restart", result["restart"]],
        ["tasks added", str(result["added"])],
        ["client operations", ", ".join(f"{k} {v}" for k, v in sorted(result["ops"].items()))],
        ["tasks at the end, by status",
         ", ".join(f"{k} {v}" for k, v in sorted(result["statuses"].items()))],
        ["drain after the load stopped", drain],
        ["writes refused by fencing", str(result["refused_writes"])],
        ["client calls while the database was down", str(result["unavailable"])],
        ["client errors otherwise", str(len(result["client_errors"]))],
        ["lost / unexpected / stuck tasks",
         f"{len(result['lost'])} / {len(result['unexpected'])} / {len(result['stuck'])}"],
        ["invariants broken", str(len(result["invariants"]))],
        ["backlog (tasks not final) every 30 s of the load",
         " ".join("down" if n is None else str(n) for _, n in result["backlog"])],
        *([["PgBouncer warnings and errors (apart from the restart)",
            str(len(result["pooler_problems"]))]]
          if "pooler_problems" in result else []),
        ["verdict", "all invariants hold" if ok else "FAILED (see the JSON printed)"],
    ]
    if not args.no_write:
        stamp = dt.datetime.now().astimezone().isoformat(timespec="seconds")
        ours = (f"### {BACKENDS[args.backend]}\n\n_{stamp} · {machine()} · {CODE_AT_START} · "
                f"`{command()}`_\n\n" + table(["what", "figure"], rows))
        parts = [ours if name == args.backend else kept_part(title)
                 for name, title in BACKENDS.items()]
        write_section("Soak", "\n\n".join([
            "Invariants checked at the end: every task final; each id a client added and did "
            "not delete is stored, and nothing else; no client error but the database being "
            "down; `roadie.testing.check_invariants` (final tasks completed, no lock held by a "
            "final or missing task, attempt counts equal to the attempt log). One part per "
            "backend, each from its own run.",
            *(part for part in parts if part)]))
    return 0 if ok else 1


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())

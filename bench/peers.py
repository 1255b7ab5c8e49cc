"""roadie side by side with its peers (issue 7), in one run on this machine.

Interleaved in one run, per round: roadie on PostgreSQL (``throughput.measure('postgres', n)``),
then PgQueuer (plain async entrypoint, and with the work handed to a thread), procrastinate,
oban-py and their latency scripts, then the batch enqueue of roadie and PgQueuer as
``batch_adds.py`` measures it (each in a fresh process); then the async group (issue 31):
1,000 tasks that each ``await asyncio.sleep(0.1)``, 200 at once (roadie ``async_tasks.run_roadie``,
PgQueuer, oban-py), and single adds from 50 concurrent callers (roadie ``await
app.aio.add_task`` from 50 coroutines and ``app.add_task`` from 50 threads, ``client_adds.py``
in its own process; PgQueuer ``enqueue`` from 50 coroutines on an asyncpg pool); then roadie on
SQLite (``throughput.measure('sqlite', n)``) and huey with SQLite storage. The peers run from
``../shared/peer-bench`` (outside this repository) and from ``bench/peer_scripts`` (oban-py,
PgQueuer's sleep drain, concurrent adds and batch) in their own virtualenv, one subprocess each
with a timeout; their one-line outputs are parsed (and printed). Then one table per backend and
a line per target of the issue (met / not met, with the ratio).

    python bench/peers.py [--tasks 5000] [--rounds 1] [--peer-python /work/peer-venv/bin/python]

Environment: PEER_PY (the peers' python), PEER_BENCH (the peer-bench folder), PEER_PG (the peers'
database, emptied by each peer run; default ``postgresql://postgres@127.0.0.1:5432/peer_bench``),
ROADIE_BENCH_PG, ROADIE_BENCH_ASYNC_PG, ROADIE_BENCH_CLIENT_PG and ROADIE_BENCH_BATCH_PG
(roadie's, see throughput.py, async_tasks.py, client_adds.py and batch_adds.py). With R rounds
each figure is the median.

oban-py 0.7.0 declares Python >= 3.12; on a 3.11 machine install it with
``pip install --ignore-requires-python oban`` and replace its one 3.12-only statement (the
``type Result[T] = ...`` alias in ``oban/job.py``, used in annotations only) by
``Result = typing.Union[Cancel, Snooze, Record, T, None]`` with a ``TypeVar``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import async_tasks
import batch_adds
import psycopg
import throughput
from _databases import fresh_postgres
from _results import table, write_section

PEER_DIR = Path(os.environ.get("PEER_BENCH",
                               Path(__file__).resolve().parents[2] / "shared" / "peer-bench"))
LOCAL_PEERS = Path(__file__).resolve().parent / "peer_scripts"  # oban-py, async measures
PEER_PY = os.environ.get("PEER_PY", "/work/peer-venv/bin/python")
PEER_PG = os.environ.get("PEER_PG", "postgresql://postgres@127.0.0.1:5432/peer_bench")
PEER_PACKAGES = ["asyncpg", "huey", "oban", "pgqueuer", "procrastinate", "psycopg",
                 "psycopg-binary", "psycopg-pool", "redis", "rq"]
BATCH_REPEATS = 3  # batch enqueue (batch_adds.py): batches per process, the median
ASYNC_TASKS = 1000  # the async sleep drain: tasks, each awaiting 0.1 s
ASYNC_SLOTS = 200  # at once
ADDS = 3000  # single adds from concurrent callers
ADD_CLIENTS = 50
BENCH_TIMEOUT = 240  # seconds, one peer drain script
LATENCY_TIMEOUT = 90  # seconds, one peer latency script (200 tasks, 20 ms apart)
LATENCY_TASKS = 200

BENCH_LINE = re.compile(r"^(?P<system>\S+) enqueue_single=(?P<single>\d+)/s"
                        r"(?: enqueue_batch=(?P<batch>\d+)/s)? drain=(?P<drain>\d+)/s"
                        r"(?: \(results stored (?P<stored>\d+)\))?")
SLEEP_LINE = re.compile(r"^(?P<system>\S+) sleep_drain=(?P<rate>\d+)/s")
ADDS_LINE = re.compile(r"^(?P<system>\S+) concurrent_adds=(?P<rate>\d+)/s")
ROADIE_ADDS_LINE = re.compile(
    r"^roadie-pg concurrent_adds aio=(?P<aio>\d+)/s sync=(?P<sync>\d+)/s")
LATENCY_LINE = re.compile(r"^(?P<system>\S+) latency n=(?P<n>\d+) "
                          r"p50=(?P<p50>[\d.]+)ms p99=(?P<p99>[\d.]+)ms")

# rows of the tables: (backend, system key, label)
SYSTEMS = [
    ("PostgreSQL", "roadie-pg", "roadie"),
    ("PostgreSQL", "pgqueuer", "PgQueuer (async entrypoint)"),
    ("PostgreSQL", "pgqueuer-sync", "PgQueuer (work handed to a thread)"),
    ("PostgreSQL", "procrastinate", "procrastinate"),
    ("PostgreSQL", "oban", "oban-py (queue limit 10)"),
    ("SQLite", "roadie-sqlite", "roadie"),
    ("SQLite", "huey-sqlite", "huey (SqliteHuey)"),
]
METRICS = ["single", "batch", "drain", "p50", "p99", "sleep", "adds", "adds_sync"]
# rows of the async table (issue 31): (system key, label)
ASYNC_SYSTEMS = [
    ("roadie-pg", "roadie"),
    ("pgqueuer", "PgQueuer (async entrypoint)"),
    ("oban", "oban-py"),
]


@dataclass
class System:
    """What one system measured over the rounds (None: not measured by its script)."""

    values: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})
    problems: list[str] = field(default_factory=list)

    def add(self, metric: str, value: float | str | None) -> None:
        if value is not None:
            self.values[metric].append(float(value))

    def get(self, metric: str) -> float | None:
        got = self.values[metric]
        return statistics.median(got) if got else None


results = {key: System() for _, key, _ in SYSTEMS}
raw: list[str] = []  # every raw line, in run order


def log(line: str) -> None:
    print(line, flush=True)
    raw.append(line)


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


# --- roadie ---------------------------------------------------------------------------------

def run_roadie(backend: str, key: str, n: int) -> None:
    log(f"[roadie {backend}] throughput.measure({backend!r}, {n}) ({load()})")
    try:
        f = throughput.measure(backend, n)
    except SystemExit as exc:  # measure() exits when a drain or a wait goes wrong
        results[key].problems.append(f"failed: {exc}")
        log(f"  roadie {backend} FAILED: {exc}")
        return
    except Exception as exc:  # e.g. the database is not reachable
        results[key].problems.append(f"failed: {type(exc).__name__}: {exc}".splitlines()[0])
        log(f"  roadie {backend} FAILED: {type(exc).__name__}: {exc}")
        return
    s = results[key]
    s.add("single", f.enqueue_single)
    if backend != "postgres":  # PostgreSQL's batch: batch_enqueue() (batch_adds.py)
        s.add("batch", f.enqueue_batch)
    s.add("drain", f.drain)
    s.add("p50", f.latency(0.5))
    s.add("p99", f.latency(0.99))
    log(f"roadie-{backend} enqueue_single={f.enqueue_single:.0f}/s "
        f"enqueue_batch={f.enqueue_batch:.0f}/s drain={f.drain:.0f}/s "
        f"latency n={len(f.latencies)} p50={f.latency(0.5):.1f}ms p99={f.latency(0.99):.1f}ms")


# --- peers ----------------------------------------------------------------------------------

def peer_skip_reason(needs_pg: bool) -> str | None:
    """Why the peers cannot run here (None if they can)."""
    if not (os.path.isfile(PEER_PY) and os.access(PEER_PY, os.X_OK)):
        return f"skipped: peer python {PEER_PY} not found"
    if not PEER_DIR.is_dir():
        return f"skipped: peer scripts {PEER_DIR} not found"
    if needs_pg:
        try:
            psycopg.connect(PEER_PG, connect_timeout=5).close()
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return f"skipped: PostgreSQL {PEER_PG} not reachable ({first})"
    return None


def run_peer(args: list[str], timeout: int) -> tuple[str | None, str]:
    """Run one peer script (from ``bench/peer_scripts`` if it is there, else the peer-bench
    folder); (its last stdout line, '') or (None, why it failed)."""
    cmd = [PEER_PY, *args]
    log(f"[peer] {shlex.join(args)} ({load()})")
    started = time.perf_counter()
    where = LOCAL_PEERS if (LOCAL_PEERS / args[0]).is_file() else PEER_DIR
    try:
        proc = subprocess.run(cmd, cwd=where, env={**os.environ, "PEER_PG": PEER_PG},
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"  timed out after {timeout} s")
        return None, f"timed out after {timeout} s"
    except OSError as exc:
        log(f"  could not start: {exc}")
        return None, f"could not start: {exc}"
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    elapsed = time.perf_counter() - started
    if proc.returncode != 0 or not lines:
        errors = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        why = errors[-1].strip() if errors else f"exit status {proc.returncode}, no output"
        log(f"  FAILED (exit {proc.returncode}, {elapsed:.1f} s): {why}")
        return None, f"failed: {why}"
    log(f"{lines[-1]}    ({elapsed:.1f} s)")
    return lines[-1], ""


def peer_line(s: System, args: list[str], timeout: int, pattern: re.Pattern[str],
              skip: str | None, label: str = "") -> re.Match[str] | None:
    """Run a peer script and match its last line with ``pattern``; None, with the problem
    noted in ``s``, when it is skipped, fails or says something else (``label``: what the
    problem names, e.g. "latency ")."""
    if skip:
        s.problems.append(skip)
        return None
    line, why = run_peer(args, timeout)
    if line is None:
        s.problems.append(f"{label}{why}")
        return None
    m = pattern.match(line)
    if not m:
        s.problems.append(f"unparsed {label}output: {line!r}")
    return m


def peer_bench(key: str, args: list[str], n: int, skip: str | None) -> None:
    s = results[key]
    m = peer_line(s, args, BENCH_TIMEOUT, BENCH_LINE, skip)
    if m is None:
        return
    s.add("single", m["single"])
    if key != "pgqueuer":  # PgQueuer's batch: batch_enqueue() (batch_adds.py)
        s.add("batch", m["batch"])
    s.add("drain", m["drain"])
    if m["stored"] is not None and int(m["stored"]) != n:
        s.problems.append(f"only {m['stored']} of {n} results stored")


def peer_rate(key: str, metric: str, pattern: re.Pattern[str], args: list[str],
              skip: str | None) -> None:
    """One figure of a peer script's line (the sleep drain, concurrent adds)."""
    s = results[key]
    m = peer_line(s, args, BENCH_TIMEOUT, pattern, skip, label=f"{metric}: ")
    if m is not None:
        s.add(metric, m["rate"])


def batch_enqueue(n: int, roadie_first: bool, skip: str | None) -> None:
    """The batch enqueue of roadie and PgQueuer as ``bench/batch_adds.py`` measures it (issue
    31): ``n`` tasks in one ``app.add_tasks`` call against one PgQueuer ``enqueue`` of lists,
    each in a fresh process on an emptied table, the median of BATCH_REPEATS batches."""
    def roadie_batch() -> None:
        log(f"[roadie postgres] batch_adds.py: {BATCH_REPEATS} x app.add_tasks of {n:,} "
            f"({load()})")
        rate, text = batch_adds.measure_roadie(n, BATCH_REPEATS)
        log(text)
        if rate is None:
            results["roadie-pg"].problems.append(f"batch enqueue failed: {text}")
        results["roadie-pg"].add("batch", rate)

    def pgqueuer_batch() -> None:
        if skip:
            return
        log(f"[peer] batch_pgqueuer.py {n} {BATCH_REPEATS} ({load()})")
        rate, text = batch_adds.measure_pgqueuer(n, BATCH_REPEATS, PEER_PY, PEER_PG)
        log(text)
        if rate is None:
            results["pgqueuer"].problems.append(f"batch enqueue failed: {text}")
        results["pgqueuer"].add("batch", rate)

    for step in (roadie_batch, pgqueuer_batch) if roadie_first else (pgqueuer_batch,
                                                                      roadie_batch):
        step()


def roadie_sleep_drain() -> None:
    """``async_tasks.py``'s drain in a fresh process (``run_roadie``; its ``drain`` of this
    process went with its interleaved states)."""
    log(f"[roadie postgres] async_tasks.py: {ASYNC_TASKS} x await sleep(0.1), "
        f"async_concurrency {ASYNC_SLOTS} ({load()})")
    case = async_tasks.Case("sleep", "roadie-examples:wait", {"seconds": 0.1}, 2, ASYNC_SLOTS)
    try:
        got = async_tasks.run_roadie("this", None, "postgres", case, ASYNC_TASKS)
    except (SystemExit, Exception) as exc:
        got, why = None, str(exc)
    else:
        why = "see the line above"
    if got is None:
        results["roadie-pg"].problems.append(f"sleep drain failed: {why}")
        log(f"  FAILED: {why}")
        return
    results["roadie-pg"].add("sleep", float(got["rate"]))
    log(f"roadie-postgres sleep_drain={float(got['rate']):.0f}/s "
        f"({float(got['cpu_ms']):.2f} ms CPU per task)")


def roadie_concurrent_adds() -> None:
    """``bench/client_adds.py`` in a fresh process, as each peer runs: in this one, what the
    earlier measurements left (threads, pools) slowed both of roadie's figures about 2.5x."""
    args = [str(Path(__file__).with_name("client_adds.py")), "--tasks", str(ADDS),
            "--clients", str(ADD_CLIENTS), "--rounds", "1", "--no-write"]
    log(f"[roadie postgres] client_adds.py {shlex.join(args[1:])} ({load()})")
    try:
        proc = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                              timeout=BENCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        results["roadie-pg"].problems.append("concurrent adds timed out")
        return
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    m = ROADIE_ADDS_LINE.match(lines[-1]) if lines else None
    if proc.returncode != 0 or m is None:
        why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        results["roadie-pg"].problems.append(f"concurrent adds failed: {why}")
        log(f"  FAILED: {why}")
        return
    results["roadie-pg"].add("adds", m["aio"])
    results["roadie-pg"].add("adds_sync", m["sync"])
    log(lines[-1])


def peer_latency(key: str, script: str, skip: str | None) -> None:
    s = results[key]
    m = peer_line(s, [script, str(LATENCY_TASKS)], LATENCY_TIMEOUT, LATENCY_LINE, skip,
                  label="latency ")
    if m is None:
        return
    s.add("p50", m["p50"])
    s.add("p99", m["p99"])
    if int(m["n"]) != LATENCY_TASKS:
        s.problems.append(f"latency: only {m['n']} of {LATENCY_TASKS} tasks started")


def peer_versions() -> str:
    if not os.access(PEER_PY, os.X_OK):
        return "(peer python not found)"
    try:
        out = subprocess.run([PEER_PY, "-m", "pip", "freeze"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(pip freeze failed: {exc})"

    def name(req: str) -> str:
        return re.split(r"[=@ <>~!]", req, maxsplit=1)[0].lower().replace("_", "-")

    wanted = [ln.strip() for ln in out.splitlines() if name(ln.strip()) in PEER_PACKAGES]
    return ", ".join(wanted) or "(none of the peer packages installed)"


# --- one run --------------------------------------------------------------------------------

def postgres_group(n: int, roadie_first: bool) -> None:
    skip = peer_skip_reason(needs_pg=True)
    if skip:
        log(f"[peers on PostgreSQL] {skip}")
    peers: list[Callable[[], None]] = [
        lambda: peer_bench("pgqueuer", ["bench_pgqueuer.py", str(n)], n, skip),
        lambda: peer_bench("pgqueuer-sync", ["bench_pgqueuer.py", str(n), "sync"], n, skip),
        # latency_procrastinate.py installs no schema: it runs on the one bench_procrastinate.py
        # just created (each PgQueuer script empties the database first)
        lambda: peer_bench("procrastinate", ["bench_procrastinate.py", str(n)], n, skip),
        lambda: peer_latency("procrastinate", "latency_procrastinate.py", skip),
        lambda: peer_latency("pgqueuer", "latency_pgqueuer.py", skip),
        lambda: peer_bench("oban", ["bench_oban.py", str(n)], n, skip),
    ]
    steps = [lambda: run_roadie("postgres", "roadie-pg", n), *peers]
    if not roadie_first:
        steps = [*peers, steps[0]]
    for step in steps:
        step()
    batch_enqueue(n, roadie_first, skip)


def async_group(roadie_first: bool) -> None:
    """The async sleep drain and the concurrent single adds, roadie and peers alternated."""
    skip = peer_skip_reason(needs_pg=True)
    sleep = [
        roadie_sleep_drain,
        lambda: peer_rate("pgqueuer", "sleep", SLEEP_LINE,
                          ["sleep_pgqueuer.py", str(ASYNC_TASKS), "0.1", str(ASYNC_SLOTS)], skip),
        lambda: peer_rate("oban", "sleep", SLEEP_LINE,
                          ["bench_oban.py", str(ASYNC_TASKS), "sleep", str(ASYNC_SLOTS)], skip),
    ]
    adds = [
        roadie_concurrent_adds,
        lambda: peer_rate("pgqueuer", "adds", ADDS_LINE,
                          ["adds_pgqueuer.py", str(ADDS), str(ADD_CLIENTS)], skip),
    ]
    for steps in (sleep, adds):
        for step in steps if roadie_first else reversed(steps):
            step()


def sqlite_group(n: int, roadie_first: bool) -> None:
    skip = peer_skip_reason(needs_pg=False)
    if skip:
        log(f"[peers on SQLite] {skip}")
    steps: list[Callable[[], None]] = [
        lambda: run_roadie("sqlite", "roadie-sqlite", n),
        lambda: peer_bench("huey-sqlite", ["bench_huey.py", str(n), "sqlite"], n, skip),
    ]
    for step in steps if roadie_first else reversed(steps):
        step()


# --- report ---------------------------------------------------------------------------------

def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    return f"{value:.1f} ms" if unit == "ms" else f"{value:,.0f}/s"


def tables() -> dict[str, str]:
    out = {}
    for backend in ("PostgreSQL", "SQLite"):
        header = ["system", "enqueue 1 by 1", "enqueue batch", "drain (1 proc, 2 thr)",
                  "latency p50", "latency p99", "notes"]
        rows = []
        for b, key, label in SYSTEMS:
            if b != backend:
                continue
            s = results[key]
            rows.append([label, fmt(s.get("single"), "/s"), fmt(s.get("batch"), "/s"),
                         fmt(s.get("drain"), "/s"), fmt(s.get("p50"), "ms"),
                         fmt(s.get("p99"), "ms"), "; ".join(dict.fromkeys(s.problems))])
        out[backend] = table(header, rows)
    rows = []
    for key, label in ASYNC_SYSTEMS:
        s = results[key]
        adds = fmt(s.get("adds"), "/s")
        if key == "roadie-pg":
            adds = (f"{adds} (`app.aio`); {fmt(s.get('adds_sync'), '/s')} (sync `add_task`, "
                    f"{ADD_CLIENTS} threads)")
        rows.append([label, fmt(s.get("sleep"), "/s"), adds if key != "oban" else "—"])
    out["async"] = table(["system (PostgreSQL)",
                          f"{ASYNC_TASKS:,} x await sleep(0.1), {ASYNC_SLOTS} at once",
                          f"single adds, {ADD_CLIENTS} concurrent callers"], rows)
    return out


def targets() -> list[str]:
    def get(key: str, metric: str) -> float | None:
        return results[key].get(metric)

    def at_least(what: str, ours: float | None, theirs: float | None, peer: str,
                 factor: float = 1.0) -> str:
        if ours is None or theirs is None:
            return f"- {what}: not measured (roadie {fmt(ours, '/s')}, {peer} {fmt(theirs, '/s')})"
        verdict = "met" if ours >= factor * theirs else "NOT met"
        return (f"- {what}: {verdict} — roadie {ours:,.0f}/s vs {peer} {theirs:,.0f}/s "
                f"({ours / theirs:.2f}x)")

    lines = [
        at_least("PostgreSQL drain ≥ PgQueuer with thread hand-off", get("roadie-pg", "drain"),
                 get("pgqueuer-sync", "drain"), "PgQueuer (thread)"),
        at_least("PostgreSQL batch enqueue ≥ PgQueuer's", get("roadie-pg", "batch"),
                 get("pgqueuer", "batch"), "PgQueuer"),
    ]
    p50, p99, peer_p50 = get("roadie-pg", "p50"), get("roadie-pg", "p99"), get("pgqueuer", "p50")
    if p50 is None or p99 is None:
        lines.append("- PostgreSQL latency p50 ≤ 2 ms, p99 ≤ 10 ms: not measured")
    else:
        versus = f"; PgQueuer p50 {peer_p50:.1f} ms" if peer_p50 else ""
        met = "met" if p50 <= 2 and p99 <= 10 else "NOT met"
        lines.append(f"- PostgreSQL latency p50 ≤ 2 ms, p99 ≤ 10 ms: {met} — roadie p50 "
                     f"{p50:.1f} ms, p99 {p99:.1f} ms{versus}")
    lines.append(at_least("SQLite drain ≥ 1.5x huey's", get("roadie-sqlite", "drain"),
                          get("huey-sqlite", "drain"), "huey", factor=1.5))
    lines += [
        at_least("PostgreSQL async sleep drain ≥ 1.2x PgQueuer's (issue 31)",
                 get("roadie-pg", "sleep"), get("pgqueuer", "sleep"), "PgQueuer", factor=1.2),
        at_least("PostgreSQL async sleep drain ≥ 1,800/s (issue 31)",
                 get("roadie-pg", "sleep"), 1800.0, "the target"),
        at_least(f"{ADD_CLIENTS} concurrent `await app.aio.add_task` ≥ 1.2x PgQueuer's enqueue "
                 "on an asyncpg pool (issue 31)", get("roadie-pg", "adds"),
                 get("pgqueuer", "adds"), "PgQueuer", factor=1.2),
        at_least(f"{ADD_CLIENTS} concurrent `await app.aio.add_task` ≥ the sync `add_task` from "
                 f"{ADD_CLIENTS} threads (issue 31)", get("roadie-pg", "adds"),
                 get("roadie-pg", "adds_sync"), "sync"),
    ]
    return lines


def main() -> None:
    global PEER_PY
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5000, help="tasks per drain measurement")
    parser.add_argument("--rounds", type=int, default=1, help="rounds (figures: the median)")
    parser.add_argument("--peer-python", default=PEER_PY,
                        help="the peers' virtualenv python (env PEER_PY)")
    parser.add_argument("--no-write", action="store_true", help="print only, keep RESULTS.md")
    args = parser.parse_args()
    PEER_PY = args.peer_python
    with contextlib.suppress(psycopg.Error):  # (the peers' scripts empty it, not make it)
        fresh_postgres(PEER_PG)
    n = args.tasks

    started = time.perf_counter()
    log(f"peers: {PEER_DIR}, python {PEER_PY}, PEER_PG={PEER_PG}; {n} tasks, "
        f"{args.rounds} round(s)")
    for r in range(1, args.rounds + 1):
        log(f"--- round {r}")
        roadie_first = r % 2 == 1  # alternate who goes first, to spread drift over rounds
        postgres_group(n, roadie_first)
        async_group(roadie_first)
        sqlite_group(n, roadie_first)
    elapsed = time.perf_counter() - started
    versions = peer_versions()

    tabs = tables()
    goal = targets()
    print()
    for backend, text in tabs.items():
        print(f"{backend}\n{text}\n")
    print("Targets (issues 12 and 31):\n" + "\n".join(goal))
    print(f"\npeer packages: {versions}\nwhole run {elapsed:.0f} s")
    if args.no_write:
        return

    cmd = shlex.join(["python", "bench/peers.py", *sys.argv[1:]])
    agg = "the median of the rounds" if args.rounds > 1 else "one round"
    notes = "\n".join([
        f"Command: `PEER_PG={PEER_PG} {cmd}` from the repository root with the project's "
        f"virtualenv; peers run by `{PEER_PY}` from `{PEER_DIR}` (their scripts, unchanged), "
        f"(and `bench/peer_scripts`), "
        f"roadie in this process through `bench/throughput.py`'s `measure()` (database "
        f"`roadie_bench`; SQLite in a temp dir). {n:,} no-op tasks per drain, {args.rounds} "
        f"round(s) interleaved (per round: roadie PostgreSQL, PgQueuer, PgQueuer with thread "
        f"hand-off, procrastinate, its latency, PgQueuer's latency, oban-py, the batch "
        f"enqueue of roadie and PgQueuer (`batch_adds.py`, database `ROADIE_BENCH_BATCH_PG` "
        f"for roadie's); the async sleep "
        f"drain of roadie, PgQueuer and oban-py; the concurrent single adds of roadie (async, "
        f"then sync) and PgQueuer; roadie SQLite, huey SQLite; later rounds alternate who goes "
        f"first); figures are {agg}. Whole run {elapsed:.0f} s; load average at each step in "
        f"the raw lines.",
        "",
        f"Peer packages (pip freeze of the peer virtualenv): {versions}",
        "",
        "### PostgreSQL",
        "",
        tabs["PostgreSQL"],
        "",
        "### SQLite",
        "",
        tabs["SQLite"],
        "",
        "### Async: a sleep drain and concurrent single adds (PostgreSQL)",
        "",
        tabs["async"],
        "",
        "### Targets (issues 12 and 31)",
        "",
        *goal,
        "",
        "How each is measured (one worker process, two threads or concurrency 2 everywhere):",
        "",
        "- enqueue 1 by 1: one add per call (roadie `app.add_task`; PgQueuer `enqueue`; "
        "procrastinate `defer`; huey calling the task).",
        f"- enqueue batch: PostgreSQL roadie and PgQueuer as `bench/batch_adds.py` measures "
        f"them (issue 31): all {n:,} tasks in one call, roadie `app.add_tasks(list)` and "
        f"PgQueuer one `enqueue` of lists, each in a fresh process on an emptied table, the "
        f"median of {BATCH_REPEATS} batches; procrastinate one `batch_defer` call in its drain "
        f"script; SQLite roadie `app.add_tasks` with {throughput.CHUNK:,} tasks per call "
        "(`throughput.py`); huey's script has no batch enqueue.",
        "- drain: from starting the worker until the queue is empty (roadie "
        "`run_worker(concurrency=2, until_idle=True)`; PgQueuer `run(mode=drain)`; "
        "procrastinate `run_worker(wait=False, concurrency=2)`; huey a consumer with 2 threads "
        "until all results are stored).",
        f"- latency: enqueue-to-start of {LATENCY_TASKS} tasks added 20 ms apart to an idle "
        "worker in the same process (roadie `BackgroundWorker`, after 10 warm-up tasks; "
        "PgQueuer `run()` with LISTEN/NOTIFY; procrastinate `listen_notify=True`); p50 is the "
        "median (roadie: the 101st of 200), p99 the 198th of 200. PgQueuer's latency script "
        "uses the async entrypoint (shown in that row); there is no huey latency script.",
        "- oban-py: `oban.enqueue` one by one, `enqueue_many` of all the jobs, then one `Oban` "
        "with `queues={'default': 10}` (it has no default limit: 10 is its documentation's "
        "example) until every job has run; default settings otherwise (stager 1 s, a "
        "psycopg_pool pool from `Oban.create_pool`: 1 to 10 connections).",
        f"- async sleep drain: {ASYNC_TASKS:,} tasks each `await asyncio.sleep(0.1)`, "
        f"{ASYNC_SLOTS} at once (limit {ASYNC_SLOTS * 10:,}/s): roadie "
        f"`run_worker(concurrency=2, async_concurrency={ASYNC_SLOTS}, until_idle=True)` "
        "(`bench/async_tasks.py`, in a fresh process); PgQueuer an async entrypoint with "
        f"`concurrency_limit={ASYNC_SLOTS}` and `batch_size={ASYNC_SLOTS}`, drain mode; oban-py "
        f"`queues={{'default': {ASYNC_SLOTS}}}`. Added in one batch first, not timed.",
        f"- concurrent single adds: {ADDS:,} adds from {ADD_CLIENTS} callers: roadie "
        f"`await app.aio.add_task` from {ADD_CLIENTS} coroutines, and `app.add_task` from "
        f"{ADD_CLIENTS} threads (`bench/client_adds.py`); PgQueuer `Queries.enqueue` from "
        f"{ADD_CLIENTS} coroutines on `asyncpg.create_pool` (its default size, 10).",
        "",
        "<details><summary>Raw output lines</summary>",
        "",
        "```",
        *raw,
        "```",
        "",
        "</details>",
    ])
    write_section("Side by side with the peers", notes)


if __name__ == "__main__":
    main()

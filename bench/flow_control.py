"""Flow control (issue 29): what each control costs a drain, how exact a rate is, and what a
held backlog costs other work.

Three parts, each on SQLite (a file in a temp dir) and PostgreSQL, each case on a fresh
database, executors registered in this process (``app.plugins.register_executor``):

- overhead: ``--tasks`` no-ops (default 20,000) added with ``app.add_tasks`` in chunks of
  1,000 (add rate), then drained by ``app.run_worker(concurrency=2, until_idle=True)`` (from
  the call to its return): plain; ``max_running = 1000`` (never binds); a ``rate_limit`` that
  never binds (``Rate(100_000)``, or ``Rate(20_000)`` when the window of 100,000 rows cannot
  be set up quickly: a probe says which); a distinct ``unique_key`` on every task; and plain
  no-ops while another executor with 1,000 waiting tasks is paused. Interleaved: plain, then
  each case, ``--rounds`` times; the median and the spread of each rate and of its ratio to
  the plain drain of the same round. The drain of the rate case is stopped after
  ``--rate-seconds`` (it is slow), any other after ``--case-timeout``; a stopped drain's rate
  is of the tasks it finished (the table says so).
- accuracy: ``Rate(r, per=1)`` for r = 1, 50, 1,000 with about 5 s of starts (6, 250, 5,000
  tasks), drained by one worker with 8 threads (and for r = 50 by ``roadie worker
  --processes 4 -c 2 --until-idle`` with the executor from a throwaway plugin): from the
  tasks' ``started_at`` (the claim time, when a start is counted), the achieved rate after
  the first window, the most starts in any 1-second window, and the first-to-last spread.
- held: ``--depth`` tasks waiting (default 1,000,000 on PostgreSQL, 200,000 on SQLite) behind
  a ``max_running = 1`` whose slot is held, behind a ``Rate(1, per=3600)`` that has started
  one, or of a paused executor (also with an executor with ``max_running`` installed in the
  worker); the drain of ``--tasks`` no-ops of another executor (``BackgroundWorker``, 2
  threads; 3 for the held slot, whose holder runs in the same worker) against the same drain
  on an empty queue with the same executors, alternated ``--rounds`` times.

Each database registers only the executors its case needs: an executor with a limit that a
worker has changes how that worker claims every task (on PostgreSQL its settle statement
takes slots too).

    python bench/flow_control.py [--backend sqlite|postgres|both] [--only overhead|accuracy|held]
        [--tasks 20000] [--depth N] [--rounds 3] [--rate-seconds 15] [--held-timeout 20]
        [--no-write]

PostgreSQL: database ``roadie_bench_i29`` on 127.0.0.1:5432 (user postgres), dropped and
created again for each case; set ROADIE_BENCH_I29_PG to another server's URL.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import roadie
import sqlalchemy as sa
from _results import table, write_section
from roadie import models
from roadie.testing import BackgroundWorker

PG_URL = os.environ.get("ROADIE_BENCH_I29_PG",
                        "postgresql://postgres@127.0.0.1:5432/roadie_bench_i29")
CHUNK = 1000  # tasks per add_tasks call (overhead part)
FILL_CHUNK = 10_000  # tasks per transaction when filling a held backlog with add_tasks
SEED = 20_000  # a held backlog's first tasks, added with add_tasks; the rest are copies
LIMIT = 1000  # max_running of the overhead case (never binds: 2 threads)
RATE_COUNTS = (100_000, 20_000)  # the rate that never binds: the first that sets up quickly
RATE_SETUP_MAX = 5.0  # seconds: a window slower to set up than this is "slow"
PAUSED_WAITING = 1000  # tasks of the paused executor in the overhead case
ACCURACY = ((1, 6), (50, 250), (1000, 5000))  # (starts per second, tasks)
ACCURACY_THREADS = 8
ACCURACY_TASKS = 5000  # plain no-ops drained by the same worker, for comparison
PROCESSES = 4  # worker processes for the r = 50 run across processes
DEPTH = {"postgres": 1_000_000, "sqlite": 200_000}


# -- executors ----------------------------------------------------------------------------

class Noop(roadie.Executor):
    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        return roadie.Result.SUCCESS


class Limited(Noop):
    max_running = LIMIT


class Tick(roadie.Executor):
    """A no-op that counts its runs (a held drain waits on the count, not on a query)."""

    count = 0
    lock = threading.Lock()

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        with Tick.lock:
            Tick.count += 1
        return roadie.Result.SUCCESS


class Holder(roadie.Executor):
    """One at a time; runs until ``release`` is set (or the task is cancelled)."""

    max_running = 1
    release = threading.Event()

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        while not Holder.release.wait(0.05):
            task.raise_if_cancelled()
        return roadie.Result.SUCCESS


class Hourly(Noop):
    rate_limit = roadie.Rate(1, per=3600)


def rated(count: int, per: float = 1) -> type[roadie.Executor]:
    return type(f"Rated{count}", (Noop,), {"rate_limit": roadie.Rate(count, per=per)})


EXECUTORS: dict[str, type[roadie.Executor]] = {
    "bench:noop": Noop, "bench:limited": Limited, "bench:other": Noop, "bench:tick": Tick,
    "bench:hold": Holder, "bench:hourly": Hourly, "bench:paused": Noop,
    **{f"bench:rate-{count}": rated(count) for count in RATE_COUNTS},
    **{f"bench:rate-{r}": rated(r) for r, _ in ACCURACY},
}


# -- databases ----------------------------------------------------------------------------

class Database:
    """A fresh database for ``backend`` (PostgreSQL: dropped and created again) with an app
    that has the bench's ``executors`` registered (only those a case needs: an executor with
    a limit that the worker has changes how it claims every task)."""

    def __init__(self, backend: str, executors: Sequence[str], name: str = "") -> None:
        self.backend = backend
        self._tmp = tempfile.TemporaryDirectory(prefix="roadie-bench-i29-",
                                                ignore_cleanup_errors=True)
        if backend == "sqlite":
            self.url = f"sqlite:///{Path(self._tmp.name) / 'roadie.db'}"
        else:
            url = sa.make_url(PG_URL)
            if name:
                url = url.set(database=f"{url.database}_{name}")
            admin = url.set(drivername="postgresql", database="postgres").render_as_string(
                hide_password=False)
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{url.database}"')
            self.url = url.set(drivername="postgresql+psycopg").render_as_string(
                hide_password=False)
        self.app = roadie.Roadie(self.url, data_dir=self._tmp.name)
        self.app.upgrade_schema()
        for qualified in executors:
            self.app.plugins.register_executor(qualified, EXECUTORS[qualified])

    def analyze(self) -> None:
        """Fresh planner statistics after a fill (PostgreSQL; SQLite has none by default)."""
        if self.app.store.is_postgres:
            with self.app.store.engine.connect().execution_options(
                    isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("VACUUM ANALYZE roadie_tasks"))

    def counts(self, executor: str) -> dict[str, int]:
        """Tasks of ``executor`` by status name."""
        with self.app.store.engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT status, count(*) FROM roadie_tasks "
                                        "WHERE executor = :e GROUP BY status"), {"e": executor})
            return {roadie.Status(status).name: n for status, n in rows}

    def close(self) -> None:
        self.app.close()
        self._tmp.cleanup()


def add_in_chunks(app: roadie.Roadie, specs: Sequence[dict[str, object]]) -> float:
    """Add ``specs`` with ``app.add_tasks``, CHUNK per call; returns the rate (tasks/s)."""
    started = time.perf_counter()
    for offset in range(0, len(specs), CHUNK):
        app.add_tasks(list(specs[offset:offset + CHUNK]))
    return len(specs) / (time.perf_counter() - started)


class WorkerLog(logging.Handler):
    """Keeps the warnings that roadie's worker logs (a claim that fails is retried forever,
    logged as the database being unreachable); ``on_warning`` is called on the first."""

    def __init__(self, on_warning: Callable[[], None] | None = None) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self.on_warning = on_warning

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        if self.on_warning is not None and len(self.messages) == 1:
            self.on_warning()

    @property
    def first(self) -> str:
        """The first warning, without the database's URL and the retry notice."""
        if not self.messages:
            return ""
        text = re.sub(r"cannot use database \S+: ", "", self.messages[0])
        return re.sub(r"; (still )?retrying.*$", "", text)

    def __enter__(self) -> WorkerLog:
        logging.getLogger("roadie").addHandler(self)
        return self

    def __exit__(self, *_exc: object) -> None:
        logging.getLogger("roadie").removeHandler(self)


@dataclass
class Drain:
    seconds: float
    finished: int
    stopped: bool  # the timeout stopped it
    error: str = ""  # the first warning the worker logged

    @property
    def rate(self) -> float:
        return self.finished / self.seconds


def drain_until_idle(app: roadie.Roadie, concurrency: int, timeout: float,
                     stop_on_warning: bool = False) -> Drain:
    """``app.run_worker(concurrency, until_idle=True)`` (as a Worker, so that a timer can
    stop it after ``timeout`` seconds, or its first warning with ``stop_on_warning``)."""
    worker = app.worker(concurrency=concurrency, until_idle=True, handle_signals=False)
    stopped = threading.Event()

    def stop() -> None:
        stopped.set()
        worker.stop()

    timer = threading.Timer(timeout, stop)
    with WorkerLog(stop if stop_on_warning else None) as log:
        started = time.perf_counter()
        timer.start()
        try:
            stats = worker.run()
        finally:
            timer.cancel()
        seconds = time.perf_counter() - started
    return Drain(seconds, stats.finished, stopped.is_set(), log.first)


def median_spread(values: Sequence[float], fmt: str) -> str:
    """The median, and the lowest and highest value when there are several."""
    middle = format(statistics.median(values), fmt)
    if len(values) < 2:
        return middle
    return f"{middle} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def load() -> float:
    return os.getloadavg()[0]


# -- 1. overhead --------------------------------------------------------------------------

CASES = ("plain", "max_running", "rate_limit", "unique_key", "paused")


@dataclass
class Run:
    """One drain of one case."""

    add: float
    drain: Drain
    load: float


@dataclass
class Overhead:
    backend: str
    rate_count: int
    probes: list[str]
    runs: dict[str, list[Run]] = field(default_factory=dict)


def probe_rate_window(backend: str) -> tuple[int, list[str]]:
    """The never-binding rate to measure: the first of RATE_COUNTS whose window (one row per
    count, made at the first start) is set up within RATE_SETUP_MAX seconds; and what each
    probe found. A probe: one task of that rate, a worker until idle (stopped at its first
    warning, or after 60 s)."""
    notes = []
    for count in RATE_COUNTS:
        db = Database(backend, [f"bench:rate-{count}"])
        try:
            db.app.add_task(f"bench:rate-{count}", {})
            result = drain_until_idle(db.app, 2, 60, stop_on_warning=True)
        finally:
            db.close()
        if result.finished == 1 and result.seconds <= RATE_SETUP_MAX:
            notes.append(f"Rate({count:,}): first start {result.seconds:.1f} s after the "
                         f"worker started (the window's rows made)")
            print(f"  {backend}: {notes[-1]}", flush=True)
            return count, notes
        why = (f"the claim fails: {result.error}" if result.error else
               f"first start {result.seconds:.1f} s after the worker started")
        notes.append(f"Rate({count:,}) not used: {why}")
        print(f"  {backend}: {notes[-1]}", flush=True)
    return RATE_COUNTS[-1], notes


def overhead_case(backend: str, case: str, n: int, rate_count: int, timeout: float,
                  rate_seconds: float) -> Run:
    executor = {"max_running": "bench:limited",
                "rate_limit": f"bench:rate-{rate_count}"}.get(case, "bench:noop")
    db = Database(backend, [executor, "bench:other"] if case == "paused" else [executor])
    try:
        app = db.app
        if case == "paused":
            app.add_tasks([{"executor": "bench:other", "context": {}}] * PAUSED_WAITING)
            app.pause_executor("bench:other")
        specs: list[dict[str, object]] = [{"executor": executor, "context": {}}
                                          for _ in range(n)]
        if case == "unique_key":
            for i, spec in enumerate(specs):
                spec["unique_key"] = f"u{i}"
        at_start = load()
        add = add_in_chunks(app, specs)
        drain = drain_until_idle(app, 2, rate_seconds if case == "rate_limit" else timeout)
        done = db.counts(executor).get("SUCCESSFUL", 0)
        if done != drain.finished or (done != n and not drain.stopped):
            sys.exit(f"{backend} {case}: the worker finished {drain.finished}, "
                     f"{done} successful; expected {n}")
        if case == "paused" and db.counts("bench:other") != {"NEW": PAUSED_WAITING}:
            sys.exit(f"{backend} paused: the paused tasks changed: {db.counts('bench:other')}")
    finally:
        db.close()
    stopped = f" (stopped after {drain.seconds:.0f} s: {drain.finished:,} of {n:,})" \
        if drain.stopped else ""
    print(f"  {backend} {case}: add {add:,.0f}/s, drain {drain.rate:,.0f}/s{stopped}, "
          f"load {at_start:.1f}", flush=True)
    return Run(add, drain, at_start)


def measure_overhead(backend: str, n: int, rounds: int, timeout: float,
                     rate_seconds: float) -> Overhead:
    rate_count, probes = probe_rate_window(backend)
    result = Overhead(backend, rate_count, probes, {case: [] for case in CASES})
    for round_ in range(rounds):
        print(f"  {backend}: round {round_ + 1} of {rounds}", flush=True)
        for case in CASES:
            result.runs[case].append(overhead_case(backend, case, n, rate_count, timeout,
                                                   rate_seconds))
    return result


def overhead_report(results: list[Overhead], n: int, rounds: int, rate_seconds: float) -> str:
    rows = []
    for r in results:
        plain = r.runs["plain"]
        for case in CASES:
            runs = r.runs[case]
            name = {"max_running": f"max_running = {LIMIT:,}",
                    "rate_limit": f"rate_limit = Rate({r.rate_count:,}, per=1)",
                    "unique_key": "unique_key (distinct)",
                    "paused": f"paused other executor ({PAUSED_WAITING:,} waiting)"}.get(
                        case, case)
            stopped = [run for run in runs if run.drain.stopped]
            if stopped:
                name += (f" *stopped after {stopped[0].drain.seconds:.0f} s "
                         f"({min(s.drain.finished for s in stopped):,}-"
                         f"{max(s.drain.finished for s in stopped):,} done)*")
            drain_ratio = [run.drain.rate / p.drain.rate for run, p in zip(runs, plain,
                                                                             strict=True)]
            add_ratio = [run.add / p.add for run, p in zip(runs, plain, strict=True)]
            rows.append([
                r.backend, name,
                median_spread([run.add for run in runs], ",.0f") + "/s",
                "" if case == "plain" else median_spread(add_ratio, ".2f") + "x",
                median_spread([run.drain.rate for run in runs], ",.0f") + "/s",
                "" if case == "plain" else median_spread(drain_ratio, ".2f") + "x",
                "" if case == "plain" else (
                    "met" if statistics.median(drain_ratio) >= 1 / 1.1 else "**missed**"),
                ", ".join(f"{run.load:.1f}" for run in runs)])
    text = table(["backend", "case", "add (chunks of 1,000)", "add vs plain",
                  f"drain of {n:,}", "drain vs plain", "overhead < 10%",
                  "load at each start"], rows)
    probes = "\n".join(f"- {r.backend}: " + "; ".join(r.probes) + "." for r in results)
    return text + OVERHEAD_NOTES.format(n=n, rounds=rounds, probes=probes,
                                        setup=RATE_SETUP_MAX, rate_seconds=rate_seconds)


OVERHEAD_NOTES = """

Each case on a fresh database: {n:,} tasks added with `app.add_tasks` in chunks of 1,000,
then `app.run_worker(concurrency=2, until_idle=True)` timed from the call to its return
(worker start and stop included). Interleaved: plain, then each case, {rounds} rounds;
median (lowest-highest) of the rates and of the ratio to the plain run of the same round;
the target is a drain ratio of at least 1/1.1 (overhead under 10%). The rate case's drain
is stopped after {rate_seconds:.0f} s (`--rate-seconds`; at its speed the whole drain would
take many minutes): its rate is the tasks it finished over its time.
The never-binding rate is the first of Rate(100,000) and Rate(20,000) whose window (one row
per count, made at the key's first start) was set up within {setup:.0f} s:
{probes}"""


# -- 2. rate accuracy ---------------------------------------------------------------------

@dataclass
class Accuracy:
    backend: str
    workers: str
    rate: int
    tasks: int
    starts: list[dt.datetime]
    seconds: float
    load: float

    @property
    def spread(self) -> float:
        return (max(self.starts) - min(self.starts)).total_seconds()

    @property
    def ideal_spread(self) -> float:
        """The shortest first-to-last time a sliding window allows: a full window per
        second, the first at once."""
        return float(-(-self.tasks // self.rate) - 1)

    @property
    def achieved(self) -> float:
        """Starts after the first window's ``rate`` (those may all start at once), per
        second of the first-to-last time: exactly ``rate`` for a perfect sliding window."""
        return (len(self.starts) - self.rate) / self.spread if self.spread else 0.0

    @property
    def most_in_a_second(self) -> int:
        return most_in_window(self.starts, 1.0)


def most_in_window(times: Sequence[dt.datetime], seconds: float) -> int:
    """The largest number of ``times`` in any half-open window of ``seconds``."""
    ordered = sorted(times)
    peak = first = 0
    for last, when in enumerate(ordered):
        while (when - ordered[first]).total_seconds() >= seconds:
            first += 1
        peak = max(peak, last - first + 1)
    return peak


def start_times(db: Database, executor: str) -> list[dt.datetime]:
    tasks = db.app.list_tasks(executor=executor, limit=None)
    if {t.status for t in tasks} != {roadie.Status.SUCCESSFUL}:
        sys.exit(f"{db.backend}: {executor} tasks did not all succeed: "
                 f"{db.counts(executor)}")
    return [t.started_at for t in tasks if t.started_at is not None]


def measure_accuracy(backend: str, rate: int, n: int) -> Accuracy:
    executor = f"bench:rate-{rate}"
    db = Database(backend, [executor])
    try:
        db.app.add_tasks([{"executor": executor, "context": {}}] * n)
        at_start = load()
        drain = drain_until_idle(db.app, ACCURACY_THREADS, 120)
        if drain.stopped or drain.error:
            sys.exit(f"{backend} rate {rate}: the drain did not end ({drain.finished} of {n} "
                     f"in {drain.seconds:.0f} s; {drain.error})")
        result = Accuracy(backend, f"1 x {ACCURACY_THREADS} threads", rate, n,
                          start_times(db, executor), drain.seconds, at_start)
    finally:
        db.close()
    print_accuracy(result)
    return result


PLUGIN_DIST = "roadie-bench-flow"
PLUGIN_MODULE = "roadie_bench_flow"
PLUGIN_SOURCE = '''
import roadie


class Rated50(roadie.Executor):
    rate_limit = roadie.Rate(50, per=1)

    def execute(self, task):
        return roadie.Result.SUCCESS
'''


def make_plugin(site: Path) -> str:
    """A throwaway plugin distribution (module and dist-info with its entry point) in
    ``site``; returns its executor's qualified name."""
    (site / f"{PLUGIN_MODULE}.py").write_text(PLUGIN_SOURCE)
    info = site / f"{PLUGIN_MODULE}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PLUGIN_DIST}\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text(
        f"[roadie.executors]\nrated50 = {PLUGIN_MODULE}:Rated50\n")
    return f"{PLUGIN_DIST}:rated50"


def measure_accuracy_processes(backend: str, n: int) -> Accuracy:
    """Rate(50) with ``roadie worker --processes 4 -c 2 --until-idle`` (the executor from a
    throwaway plugin on PYTHONPATH, here and in the workers)."""
    with tempfile.TemporaryDirectory(prefix="roadie-bench-i29-site-") as site_dir:
        site = Path(site_dir)
        executor = make_plugin(site)
        sys.path.insert(0, site_dir)
        try:
            db = Database(backend, [])  # the plugin's executor is found on the path
            try:
                db.app.add_tasks([{"executor": executor, "context": {}}] * n)
                env = {**os.environ, "ROADIE_DATA_DIR": db._tmp.name,
                       "PYTHONPATH": os.pathsep.join(
                           [site_dir, *filter(None, [os.environ.get("PYTHONPATH")])])}
                at_start = load()
                started = time.perf_counter()
                subprocess.run([sys.executable, "-m", "roadie", "--url", db.url, "worker",
                                "--processes", str(PROCESSES), "-c", "2", "--until-idle"],
                               env=env, check=True, timeout=300,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                seconds = time.perf_counter() - started
                result = Accuracy(backend, f"{PROCESSES} processes x 2 threads", 50, n,
                                  start_times(db, executor), seconds, at_start)
            finally:
                db.close()
        finally:
            sys.path.remove(site_dir)
            sys.modules.pop(PLUGIN_MODULE, None)
    print_accuracy(result)
    return result


def print_accuracy(a: Accuracy) -> None:
    print(f"  {a.backend} Rate({a.rate}) {a.workers}: {a.tasks} tasks, achieved "
          f"{a.achieved:,.1f}/s, most in 1 s {a.most_in_a_second}, spread {a.spread:.2f} s "
          f"(ideal {a.ideal_spread:.0f} s), load {a.load:.1f}", flush=True)


def plain_reference(backend: str, n: int) -> float:
    """The start rate of ``n`` plain no-ops with the accuracy runs' worker (``started_at``,
    first to last): what the drain allows without a rate."""
    db = Database(backend, ["bench:noop"])
    try:
        db.app.add_tasks([{"executor": "bench:noop", "context": {}}] * n)
        drain_until_idle(db.app, ACCURACY_THREADS, 120)
        starts = start_times(db, "bench:noop")
    finally:
        db.close()
    rate = (len(starts) - 1) / (max(starts) - min(starts)).total_seconds()
    print(f"  {backend}: plain no-ops, 1 x {ACCURACY_THREADS} threads: {rate:,.0f} starts/s",
          flush=True)
    return rate


def accuracy_report(results: list[Accuracy], plain: dict[str, float]) -> str:
    rows = []
    for a in results:
        bound = a.most_in_a_second >= a.rate - 1
        within = a.most_in_a_second <= a.rate + 1
        rows.append([
            a.backend, f"Rate({a.rate:,}, per=1)", a.workers, f"{a.tasks:,}",
            f"{a.achieved:,.1f}/s", f"{a.most_in_a_second:,}",
            "yes" if within else "**no**",
            f"{a.spread:.2f} s (ideal {a.ideal_spread:.0f} s)",
            "the rate" if bound else "**the claim** (no second reached r)",
            f"{a.load:.1f}"])
    return table(["backend", "rate", "workers", "tasks", "achieved after the first window",
                  "most starts in 1 s", "<= r (+-1)", "first-to-last", "what limited it",
                  "load"], rows) + ACCURACY_NOTES + "".join(
        f"\n- {backend}: {ACCURACY_TASKS:,} plain no-ops (no rate) with the same worker "
        f"start at {rate:,.0f}/s." for backend, rate in plain.items())


ACCURACY_NOTES = """

A fresh database per row; the tasks (no-ops) are added at once, then drained until idle.
From their `started_at` (set by the claim, when the rate counts a start): achieved = starts
after the first `r` (a sliding window lets those start at once) per second of the
first-to-last time (a perfect window gives `r`); most starts in any half-open 1-second
window (never above `r`); first-to-last against the least a window allows (ceil(n/r) - 1
seconds). "What limited it": the rate when some second held r starts (+-1), else the claim
of the rated tasks was slower than the rate. The processes row runs `roadie worker
--processes 4 -c 2 --until-idle` (process start-up counts in nothing above: the times are
the tasks'). For comparison, the same drain without a rate:"""


# -- 3. held backlog ----------------------------------------------------------------------

HELD_KINDS = ("limit", "rate", "paused", "paused-limit")
HELD_EXECUTOR = {"limit": "bench:hold", "rate": "bench:hourly", "paused": "bench:paused",
                 "paused-limit": "bench:paused"}
# the executors of each kind's worker (its empty-queue twin has the same): paused-limit is
# paused with an executor with a limit installed too (none of its tasks exist)
HELD_EXECUTORS = {"limit": ["bench:tick", "bench:hold"], "rate": ["bench:tick", "bench:hourly"],
                  "paused": ["bench:tick", "bench:paused"],
                  "paused-limit": ["bench:tick", "bench:paused", "bench:limited"]}


class HeldRun:
    """A database where ``depth`` tasks of ``kind`` wait that the drain must leave alone
    (``empty``: none, an empty queue with the same executors), and drains of ``n`` no-ops
    over it, each stopped after ``timeout`` seconds (its rate then of the no-ops run)."""

    def __init__(self, backend: str, kind: str, depth: int, n: int, name: str,
                 timeout: float, empty: bool = False) -> None:
        self.kind, self.n, self.timeout = ("none" if empty else kind), n, timeout
        self.stopped = 0  # drains stopped by the timeout
        self.db = Database(backend, HELD_EXECUTORS[kind], name)
        self.fill_seconds = 0.0
        app = self.db.app
        executor = HELD_EXECUTOR[kind]
        if empty:
            return
        if kind.startswith("paused"):
            app.pause_executor(executor)
        started = time.perf_counter()
        seeded = min(depth, SEED)
        app.add_tasks(({"executor": executor, "context": {}} for _ in range(seeded)),
                      chunk_size=FILL_CHUNK)
        copy_last_task(self.db, depth - seeded)
        self.fill_seconds = time.perf_counter() - started
        self.db.analyze()
        if kind == "rate":  # one start: the rest wait an hour for the next
            runner = BackgroundWorker(app, concurrency=2).start()
            try:
                wait(lambda: self.db.counts(executor).get("SUCCESSFUL", 0) == 1, "one start")
                time.sleep(0.5)  # the next head meets the spent rate
            finally:
                runner.stop()
        print(f"  {backend}: filled {depth:,} ({kind}) in {self.fill_seconds:.1f} s "
              f"({depth / self.fill_seconds:,.0f}/s); {self.db.counts(executor)}", flush=True)

    def drain(self) -> float:
        """The rate (tasks/s) of one drain of ``n`` no-ops."""
        for offset in range(0, self.n, CHUNK):
            self.db.app.add_tasks([{"executor": "bench:tick", "context": {}}]
                                  * min(CHUNK, self.n - offset))
        Tick.count = 0
        Holder.release.clear()
        holding = self.kind == "limit"  # this worker runs the slot's holder: a thread more
        started = time.perf_counter()
        runner = BackgroundWorker(self.db.app, concurrency=3 if holding else 2).start()
        try:
            deadline = time.monotonic() + self.timeout
            while Tick.count < self.n and time.monotonic() < deadline:
                time.sleep(0.01)
            ran = min(Tick.count, self.n)
            rate = ran / (time.perf_counter() - started)
            if ran < self.n:
                self.stopped += 1
                print(f"  (a drain stopped after {self.timeout:.0f} s: {ran:,} of "
                      f"{self.n:,})", flush=True)
            if holding and self.db.counts("bench:hold").get("IN_PROGRESS", 0) != 1:
                sys.exit(f"the held slot was not held: {self.db.counts('bench:hold')}")
        finally:
            runner.worker.stop()
            Holder.release.set()  # the holder ends; the next one holds the slot next drain
            runner.stop()
        return rate

    def close(self) -> None:
        self.db.close()


def copy_last_task(db: Database, copies: int) -> None:
    """Add ``copies`` copies of the newest task row (all columns but the id) in one
    set-based statement: as the core wrote it (parked behind its key, or waiting)."""
    if copies <= 0:
        return
    columns = ", ".join(f'"{c.name}"' for c in models.tasks.c if c.name != "id")
    if db.app.store.is_postgres:
        sql = (f"INSERT INTO roadie_tasks ({columns}) SELECT {columns} FROM roadie_tasks "
               f"CROSS JOIN generate_series(1, :copies) WHERE id = (SELECT max(id) FROM "
               f"roadie_tasks)")
    else:
        sql = (f"INSERT INTO roadie_tasks ({columns}) WITH RECURSIVE n(i) AS (SELECT 1 "
               f"UNION ALL SELECT i + 1 FROM n WHERE i < :copies) SELECT {columns} FROM "
               f"roadie_tasks, n WHERE id = (SELECT max(id) FROM roadie_tasks)")
    with db.app.store.engine.begin() as conn:
        conn.execute(sa.text(sql), {"copies": copies})


def wait(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.01)


def held_report(backend: str, n: int, depth: int, rounds: int,
                timeout: float) -> list[list[str]]:
    rows = []
    for kind in HELD_KINDS:
        base = HeldRun(backend, kind, 0, n, "base", timeout, empty=True)
        deep = HeldRun(backend, kind, depth, n, "deep", timeout)
        try:
            empty_rates, deep_rates = [], []
            for _ in range(rounds):
                empty_rates.append(base.drain())
                deep_rates.append(deep.drain())
        finally:
            deep.close()
            base.close()
        empty, held = statistics.median(empty_rates), statistics.median(deep_rates)
        pairs = sorted(d / e for d, e in zip(deep_rates, empty_rates, strict=True))
        print(f"  {backend}: {depth:,} held ({kind}): drain {held:,.0f}/s vs empty "
              f"{empty:,.0f}/s ({held / empty:.2f}x; pairs {pairs[0]:.2f}-"
              f"{pairs[-1]:.2f}), load {load():.1f}", flush=True)
        what = {"limit": "behind max_running = 1 (slot held)",
                "rate": "behind Rate(1, per=3600) (spent)",
                "paused": "of a paused executor",
                "paused-limit": "of a paused executor; the worker also has an "
                                "executor with max_running"}[kind]
        if deep.stopped or base.stopped:
            what += (f" *({deep.stopped + base.stopped} of {2 * rounds} drains stopped "
                     f"after {timeout:.0f} s)*")
        rows.append([backend, what, f"{depth:,}", f"{deep.fill_seconds:.0f} s",
                     f"{held:,.0f}/s", f"{empty:,.0f}/s", f"{held / empty:.2f}x",
                     f"{pairs[0]:.2f}-{pairs[-1]:.2f}",
                     "met" if held / empty >= 0.9 else "**missed**", f"{load():.1f}"])
    return rows


HELD_NOTES = """

Each kind: a fresh database filled with {seed:,} tasks by `app.add_tasks(generator,
chunk_size={chunk})`, then the rest by copying the newest row as the core wrote it (one
`INSERT ... SELECT`; fill time in the table; PostgreSQL then VACUUM ANALYZE); the waiting
tasks are all of one executor:
`max_running = 1` (added while no worker ran: one head, the rest parked; the draining worker
claims the head first and runs it until the drain ends, with a third thread for it),
`Rate(1, per=3600)` (one task started before the drains: the next head waits an hour, the
rest are parked), or paused before the fill. The worker has the counting no-op and that
executor registered, nothing else (in the last row also an executor with `max_running`,
without tasks). Then {r} times, in turn, a drain of an empty queue (a second database with
the same executors, kept for the kind) and a drain of this one: each adds {n:,} counting
no-ops in chunks of 1,000, then a `BackgroundWorker` with 2 threads runs them (rate from its
start to the last no-op run; a drain still running after {timeout:.0f} s, `--held-timeout`,
is stopped and its rate is of the no-ops it ran). Ratio of the medians (target >= 0.9); the
pairs column gives the lowest and highest ratio of one drain to the empty drain just before
it. `load`: the 1-minute load average after the row."""


# -- main ---------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--only", choices=["overhead", "accuracy", "held"], action="append",
                        help="run only this part (repeatable; default all three)")
    parser.add_argument("--tasks", type=int, default=20_000,
                        help="no-ops per drain (overhead and held parts)")
    parser.add_argument("--depth", type=int, default=0, help="held tasks (default "
                        f"{DEPTH['postgres']:,} on PostgreSQL, {DEPTH['sqlite']:,} on SQLite)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repeats")
    parser.add_argument("--rate-seconds", type=float, default=15.0,
                        help="stop the drain of the overhead's rate case after this long")
    parser.add_argument("--case-timeout", type=float, default=120.0,
                        help="stop any other overhead drain after this many seconds")
    parser.add_argument("--held-timeout", type=float, default=20.0,
                        help="stop a drain of the held part after this many seconds")
    parser.add_argument("--no-processes", action="store_true",
                        help="skip the accuracy run across worker processes")
    parser.add_argument("--no-write", action="store_true", help="print only, keep RESULTS.md")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    parts = args.only or ["overhead", "accuracy", "held"]
    sections: list[tuple[str, str]] = []
    if "overhead" in parts:
        results = []
        for backend in backends:
            print(f"{backend}: overhead of each control, {args.tasks:,} no-ops", flush=True)
            results.append(measure_overhead(backend, args.tasks, args.rounds,
                                            args.case_timeout, args.rate_seconds))
        sections.append(("Flow control: overhead of each control",
                         overhead_report(results, args.tasks, args.rounds,
                                         args.rate_seconds)))
    if "accuracy" in parts:
        accuracy, plain = [], {}
        for backend in backends:
            print(f"{backend}: rate accuracy", flush=True)
            plain[backend] = plain_reference(backend, ACCURACY_TASKS)
            accuracy += [measure_accuracy(backend, rate, n) for rate, n in ACCURACY]
            if not args.no_processes:
                accuracy.append(measure_accuracy_processes(backend, dict(ACCURACY)[50]))
        sections.append(("Flow control: rate accuracy", accuracy_report(accuracy, plain)))
    if "held" in parts:
        rows = []
        for backend in backends:
            depth = args.depth or DEPTH[backend]
            print(f"{backend}: {depth:,} held tasks, drains of {args.tasks:,}", flush=True)
            rows += held_report(backend, args.tasks, depth, args.rounds, args.held_timeout)
        text = table(["backend", "waiting tasks", "how many", "fill", f"drain of "
                      f"{args.tasks:,} (median of {args.rounds})", "empty queue, same run",
                      "ratio", "ratio of each pair", "ratio >= 0.9", "load"], rows)
        sections.append(("Flow control: a held backlog costs other work nothing",
                         text + HELD_NOTES.format(r=args.rounds, n=args.tasks, seed=SEED,
                                                   chunk=FILL_CHUNK,
                                                   timeout=args.held_timeout)))
    for name, text in sections:
        print(f"\n{name}\n\n{text}")
        if not args.no_write:
            write_section(name, text)


if __name__ == "__main__":
    main()

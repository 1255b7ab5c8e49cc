"""Throughput and latency of roadie on SQLite and PostgreSQL, with no-op tasks.

For each backend, on a fresh database:

- enqueue one by one: ``app.add_task`` in a loop (tasks/s);
- enqueue in batches: ``app.add_tasks`` with 1,000 tasks per call (tasks/s);
- drain: ``app.run_worker(concurrency=2, until_idle=True)`` over the batch-added tasks, from
  the call to its return (tasks/s; one worker process, two threads);
- enqueue-to-start latency: an idle worker in a thread, then 200 tasks added one at a time with
  a small gap; each records ``perf_counter() - t0`` when its executor starts (p50/p99).

    python bench/throughput.py [--tasks 5000] [--backend sqlite|postgres|both]

Before and after a change, the drain only: ``--version NAME=REF`` (repeatable; REF a commit,
whose ``core`` is exported with ``git archive``, ``.`` for the working tree, or a folder with
a ``core/`` in it) runs each version's drain in a subprocess of its own (that ``core`` first on
the path, a fresh database each), ``--rounds`` times in an order that rotates from round to
round; then per version the rate and the CPU time per 1,000 tasks (of the worker, and with the
PostgreSQL server's backends when it runs on this machine), each as the median over the rounds
and its ratio to the first version's figure in the same round (median, lowest, highest):

    python bench/throughput.py --backend postgres --version base=e4adf5a --version new=. \
        --rounds 7 [--no-write]

PostgreSQL: database ``roadie_bench`` on 127.0.0.1:5432 (user postgres), dropped and created
again for each run; set ROADIE_BENCH_PG to another server's URL (``.../roadie_bench``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import roadie
import sqlalchemy as sa
from _databases import fresh_postgres
from _results import table, write_section
from roadie.testing import BackgroundWorker

NOOP = "roadie-examples:noop"
STAMP = "bench:stamp"
CHUNK = 1000
LATENCY_TASKS = 200
LATENCY_WARMUP = 10
LATENCY_GAP = 0.02  # seconds between two adds in the latency run
PG_URL = os.environ.get("ROADIE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/roadie_bench")


class StampExecutor(roadie.Executor):
    """Records how long after its ``add_task`` (``context["t0"]``) it started."""

    stamps: list[float] = []  # one process-wide list, appended from workers
    lock = threading.Lock()

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        now = time.perf_counter()
        with self.lock:
            self.stamps.append(now - task.context["t0"])
        return roadie.Result.SUCCESS


@dataclass
class Figures:
    """What one backend measured."""

    backend: str
    tasks: int
    enqueue_single: float = 0.0
    enqueue_batch: float = 0.0
    drain: float = 0.0
    drain_seconds: float = 0.0
    claims: int = 0
    drain_cpu: float = 0.0  # seconds of CPU of this process during the drain
    drain_server_cpu: float | None = None  # and of the database's server processes (local)
    latencies: list[float] = field(default_factory=list)

    def latency(self, q: float) -> float:
        """A latency quantile in milliseconds (q in 0..1)."""
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def fresh_database(backend: str, tmp: Path, suffix: str = "") -> str:
    """The URL of an empty database for ``backend`` (``suffix``: a second one beside it)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp / 'roadie.db'}"
    url = sa.make_url(PG_URL)
    if suffix:
        url = url.set(database=f"{url.database}_{suffix}")
    return fresh_postgres(url)


def empty_tasks(app: roadie.Roadie) -> None:
    """Remove every task row (between the enqueue measurements)."""
    with app.store.engine.begin() as conn:
        for table_name in ("roadie_tasks", "roadie_attempts", "roadie_locks"):
            conn.execute(sa.text(f"DELETE FROM {table_name}"))
    if app.store.is_postgres:
        with app.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE roadie_tasks"))


def count_successful(app: roadie.Roadie) -> int:
    return app.store.count_tasks().get(roadie.Status.SUCCESSFUL, 0)


def measure(backend: str, n: int, *, latency: bool = True) -> Figures:
    figures = Figures(backend, n)
    with tempfile.TemporaryDirectory(prefix="roadie-bench-", ignore_cleanup_errors=True) as tmp:
        url = fresh_database(backend, Path(tmp))
        app = roadie.Roadie(url, data_dir=tmp, auto_upgrade=True)
        app.plugins.register_executor(STAMP, StampExecutor)
        try:
            app.add_task(NOOP, {})  # connect, create the schema, load the plugins
            empty_tasks(app)

            started = time.perf_counter()
            for _ in range(n):
                app.add_task(NOOP, {})
            figures.enqueue_single = n / (time.perf_counter() - started)
            print(f"  {backend}: enqueue one by one {figures.enqueue_single:,.0f}/s", flush=True)
            empty_tasks(app)

            started = time.perf_counter()
            for offset in range(0, n, CHUNK):
                app.add_tasks([{"executor": NOOP, "context": {}}
                               for _ in range(min(CHUNK, n - offset))])
            figures.enqueue_batch = n / (time.perf_counter() - started)
            print(f"  {backend}: enqueue in batches {figures.enqueue_batch:,.0f}/s", flush=True)

            server = ServerCpu(app)
            cpu = time.process_time()
            started = time.perf_counter()
            stats = app.run_worker(concurrency=2, until_idle=True)
            figures.drain_seconds = time.perf_counter() - started
            figures.drain_cpu = time.process_time() - cpu
            figures.drain_server_cpu = server.used()
            figures.drain = n / figures.drain_seconds
            figures.claims = stats.claims
            done = count_successful(app)
            if stats.finished != n or done != n:
                sys.exit(f"{backend}: drain finished {stats.finished} tasks, {done} successful; "
                         f"expected {n}")
            print(f"  {backend}: drain {figures.drain:,.0f}/s ({figures.drain_seconds:.1f} s, "
                  f"{stats.claims} claims)", flush=True)

            if not latency:
                return figures
            figures.latencies = latency_run(app)
            print(f"  {backend}: latency p50 {figures.latency(0.5):.1f} ms, "
                  f"p99 {figures.latency(0.99):.1f} ms", flush=True)
        finally:
            app.close()
    return figures


class ServerCpu:
    """The CPU time that the database server's processes serving ``app``'s database used
    since this was made (PostgreSQL on this machine: its backends, found in /proc by their
    title, which names the database; None elsewhere). The CPU a drain costs is steadier than
    its rate on a shared machine, where other work takes turns on the cores."""

    def __init__(self, app: roadie.Roadie) -> None:
        url = app.store.engine.url
        local = app.store.is_postgres and url.host in ("127.0.0.1", "localhost", "::1")
        self.marker = f" {url.database} ".encode() if local else b""
        self.tick = os.sysconf("SC_CLK_TCK")
        self.before = self.sample()

    def sample(self) -> dict[int, float]:
        found: dict[int, float] = {}
        if not self.marker:
            return found
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                if self.marker not in Path(f"/proc/{name}/cmdline").read_bytes():
                    continue
                fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            found[int(name)] = (int(fields[11]) + int(fields[12])) / self.tick  # utime, stime
        return found

    def used(self) -> float | None:
        """Seconds of CPU since it was made (of the backends alive now)."""
        if not self.marker:
            return None
        return sum(cpu - self.before.get(pid, 0.0) for pid, cpu in self.sample().items())


def latency_run(app: roadie.Roadie) -> list[float]:
    """Enqueue-to-start latencies (seconds) of tasks added one at a time to an idle worker."""
    StampExecutor.stamps.clear()
    background = BackgroundWorker(app, concurrency=2).start()
    try:
        wait(lambda: background.worker.stats.claims > 0, "the worker to start")
        for count in (LATENCY_WARMUP, LATENCY_TASKS):
            StampExecutor.stamps.clear()
            for _ in range(count):
                time.sleep(LATENCY_GAP)
                app.add_task(STAMP, {"t0": time.perf_counter()})
            wait(lambda count=count: len(StampExecutor.stamps) >= count, "the stamps")
        return list(StampExecutor.stamps)
    finally:
        background.stop()


def wait(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.01)


def report(results: list[Figures]) -> str:
    header = ["backend", "enqueue 1 by 1", f"enqueue batch ({CHUNK})", "drain (1 worker, 2 thr)",
              "latency p50", "latency p99", "latency max"]
    rows = [
        [f.backend, f"{f.enqueue_single:,.0f}/s", f"{f.enqueue_batch:,.0f}/s",
         f"{f.drain:,.0f}/s", f"{f.latency(0.5):.1f} ms", f"{f.latency(0.99):.1f} ms",
         f"{max(f.latencies) * 1000:.1f} ms"]
        for f in results
    ]
    return table(header, rows)


# -- versions: the drain of several states of the code, interleaved ------------------------

DRAIN_LINE = re.compile(r"^drain=(?P<rate>[0-9.]+)/s cpu=(?P<cpu>[0-9.]+) "
                        r"server=(?P<server>[0-9.]+|-)")


@dataclass
class Drain:
    """One drain of a version: its rate and CPU per 1,000 tasks (ms; the worker's process,
    and with the database server's)."""

    rate: float
    cpu: float
    total_cpu: float | None
ROOT = Path(__file__).resolve().parents[1]


def export_core(ref: str, into: Path) -> Path:
    """The ``core`` folder of ``ref``: a commit (exported), ``.`` (this checkout) or a folder
    with a ``core/`` in it."""
    if ref == ".":
        return ROOT / "core"
    if Path(ref).is_dir():
        return Path(ref).resolve() / "core"
    target = into / re.sub(r"[^A-Za-z0-9_.-]", "_", ref)
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "core"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target / "core"


def drain_in_subprocess(backend: str, n: int, core: Path) -> tuple[Drain | None, str]:
    """One drain (``measure`` without the latency run) in a fresh process with ``core`` first
    on the path: (its figures or None, its last line of output)."""
    env = {**os.environ, "PYTHONPATH": str(core)}
    proc = subprocess.run([sys.executable, __file__, "--child-drain", "--backend", backend,
                           "--tasks", str(n)], capture_output=True, text=True, env=env,
                          timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()] or \
        proc.stderr.strip().splitlines()[-1:] or ["no output"]
    found = DRAIN_LINE.match(lines[-1])
    if not found or proc.returncode != 0:
        return None, lines[-1]
    per = 1_000_000 / n  # seconds for n tasks -> ms per 1,000
    cpu = float(found["cpu"]) * per
    server = None if found["server"] == "-" else cpu + float(found["server"]) * per
    return Drain(float(found["rate"]), cpu, server), lines[-1]


def versions_report(backend: str, n: int, versions: list[tuple[str, str]],
                    rounds: int) -> str:
    """The drains of ``versions`` (name, ref), interleaved ``rounds`` times; the table."""
    drains: list[dict[str, Drain]] = []  # per round, by version
    load = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="roadie-versions-"))
    try:
        cores = {name: export_core(ref, tmp) for name, ref in versions}
        names = [name for name, _ in versions]
        for r in range(rounds):
            got: dict[str, Drain] = {}
            for name in names[r % len(names):] + names[:r % len(names)]:
                drain, line = drain_in_subprocess(backend, n, cores[name])
                print(f"  round {r + 1} {name}: {line} (load {os.getloadavg()[0]:.2f})",
                      flush=True)
                if drain is not None:
                    got[name] = drain
            drains.append(got)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    first = names[0]

    def figure(name: str, of: Callable[[Drain], float | None], unit: str) -> list[str]:
        """Median, range, and the median and range of the ratios to the first version's
        figure of the same round."""
        values = [v for got in drains if name in got and (v := of(got[name])) is not None]
        if not values:
            return ["—", "—"]
        pairs = [a / b for got in drains if name in got and first in got
                 and (a := of(got[name])) is not None and (b := of(got[first]))]
        ratio = (f"{statistics.median(pairs):.3f} ({min(pairs):.2f}-{max(pairs):.2f})"
                 if pairs and name != first else "—")
        return [f"{statistics.median(values):,.0f}{unit} ({min(values):,.0f}-"
                f"{max(values):,.0f})", ratio]

    rows = [[name, ref, *figure(name, lambda d: d.rate, "/s"),
             *figure(name, lambda d: d.cpu, " ms"),
             *figure(name, lambda d: d.total_cpu, " ms")] for name, ref in versions]
    return (f"{backend}: {n:,} no-ops, drain (1 worker, 2 threads), {rounds} interleaved rounds, "
            f"load {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end\n\n"
            + table(["version", "ref", "drain: median (range)", f"/ {first}, per round",
                     "worker CPU per 1,000", f"/ {first}, per round",
                     "worker + server CPU per 1,000", f"/ {first}, per round"], rows))


# -- depth: drain while many tasks wait that this node cannot take now ----------------------

TICK = "bench:tick"
FILL_CHUNK = 20_000  # skipped tasks per add_tasks call (fewer statistics refreshes)
DEPTH_REPEATS = 5  # drains of each kind, each after a drain of the empty queue
DEPTH_NOTES = """

Each kind: a fresh database where the skipped tasks are added first; then {r} times, in
turn, a drain of an empty queue (a second database, kept for the whole run) and a drain of
this one: each adds the no-ops (`bench:tick`), then a `BackgroundWorker(app, concurrency=2)`
runs them (rate from its start to the last no-op run). The ratio is of the two medians;
the pairs column gives the lowest and highest ratio of one drain to the empty drain just
before it. Skipped kinds: serial-behind-lock (`roadie-examples:serial`, status QUEUED, behind
one long serial task that holds the lock in another worker), serial-backlog (the same
executor's tasks, each of 3,600 s, all added while no worker runs; the draining worker takes
the first and holds its key, with one thread more than the empty drain for it, and stops
at once after the drain: the held task fails and the next one holds the key in the next
drain), delayed (`delay=3600`),
tagged-absent (`tags=["gpu"]`), plugin-absent (an executor of a plugin no node has), mix (a
quarter of each); plain: not skipped at all, the timed no-ops are the first of a deep queue
of no-ops. `load` is the 1-minute load average after the row.""".replace("{r}", str(DEPTH_REPEATS))
PROCESSES_NOTES = """

{n:,} no-ops (`roadie-examples:noop`) on a fresh database, drained by `roadie worker -p 1` and
by `roadie worker -p {p}` (2 threads each, `--until-idle`), timed from the command's start to
its exit (process start-up included). Idle memory: the resident set (VmRSS) of a `roadie
worker` with default settings, 3 s after it registered: with the three first-party plugins
installed (roadie-examples, roadie-prometheus, roadie-opentelemetry), and with only
roadie-examples (the other two blocked with `ROADIE_BLOCK_PLUGINS`)."""
OPTIONAL_PLUGINS = "roadie-prometheus,roadie-opentelemetry"  # blocked for the second figure
ADD_MANY_NOTES = """

A fresh database; `app.add_tasks(generator)` of no-ops (chunks of 10,000 tasks, one
transaction each); peak memory is the growth of the process's maximum resident set during the
call. Then the median of 20 calls of the first page of `list_tasks` (50 newest), the first page
of NEW tasks, and `get_task_status` of a task in the middle."""
SKIP_KINDS = ("none", "serial-behind-lock", "serial-backlog", "delayed", "tagged-absent",
              "plugin-absent", "mix", "plain")


class TickExecutor(roadie.Executor):
    """A no-op that counts its runs (the depth drain waits on the count, not on a query)."""

    count = 0
    lock = threading.Lock()

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        with self.lock:
            TickExecutor.count += 1
        return roadie.Result.SUCCESS


def fill_skipped(app: roadie.Roadie, kind: str, depth: int) -> None:
    """Add ``depth`` tasks of ``kind`` that the draining worker must skip (none: nothing)."""
    if kind == "none" or depth <= 0:
        return
    if kind == "mix":
        quarter = depth // 4
        for part in ("serial-behind-lock", "delayed", "tagged-absent", "plugin-absent"):
            fill_skipped(app, part, quarter)
        return
    with app.store.engine.connect() as conn:
        before = conn.execute(sa.text("SELECT coalesce(max(id), 0) FROM roadie_tasks")).scalar()
    spec: dict[str, object] = {"executor": NOOP, "context": {}}
    if kind == "plain":
        spec = {"executor": TICK, "context": {}}
    elif kind in ("serial-behind-lock", "serial-backlog"):
        spec = {"executor": "roadie-examples:serial", "context": {"seconds": 3600}}
    elif kind == "delayed":
        spec["delay"] = 3600
    elif kind == "tagged-absent":
        spec["tags"] = ["gpu"]
    for offset in range(0, depth, FILL_CHUNK):
        app.add_tasks([spec] * min(FILL_CHUNK, depth - offset))
    with app.store.engine.begin() as conn:
        if kind == "serial-behind-lock":  # what a claim leaves behind a held lock
            conn.execute(sa.text("UPDATE roadie_tasks SET status = 4 WHERE id > :b"),
                         {"b": before})
        elif kind == "plugin-absent":  # as if added by a node that has this plugin
            conn.execute(sa.text("UPDATE roadie_tasks SET executor = 'roadie-absent:job', "
                                 "plugins = :p WHERE id > :b"),
                         {"p": '{"roadie-absent": "1.0"}', "b": before})
    if app.store.is_postgres:
        with app.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE roadie_tasks"))


class DepthRun:
    """A database with ``depth`` skipped tasks of ``kind`` (none: an empty queue) where
    ``drain`` times no-op drains again and again (each adds ``n`` counting no-ops, then a
    ``BackgroundWorker`` with 2 threads runs them)."""

    def __init__(self, backend: str, kind: str, depth: int, n: int, name: str) -> None:
        self.kind, self.n = kind, n
        self._tmp = tempfile.TemporaryDirectory(prefix="roadie-bench-",
                                                ignore_cleanup_errors=True)
        url = fresh_database(backend, Path(self._tmp.name), name)
        self.app = app = roadie.Roadie(url, data_dir=self._tmp.name, auto_upgrade=True)
        app.plugins.register_executor(TICK, TickExecutor)
        self._holder: BackgroundWorker | None = None
        app.add_task(NOOP, {})  # connect, create the schema, load the plugins
        empty_tasks(app)
        if kind in ("serial-behind-lock", "mix"):  # one long serial task holds the lock
            self._holder = BackgroundWorker(app, concurrency=1).start()
            self._first = app.add_task("roadie-examples:serial", {"seconds": 3600})
            wait(lambda: app.get_task(self._first.id).status == roadie.Status.IN_PROGRESS,
                 "the lock holder to start")
        # plain: the deep queue is of no-ops (each drain takes the first n of what is left)
        fill_skipped(app, kind, depth + (n * DEPTH_REPEATS if kind == "plain" else 0))

    def drain(self) -> float:
        """The rate (tasks/s) of one drain of ``n`` no-ops."""
        if self.kind != "plain":
            for offset in range(0, self.n, CHUNK):
                self.app.add_tasks([{"executor": TICK, "context": {}}]
                                   * min(CHUNK, self.n - offset))
        TickExecutor.count = 0
        started = time.perf_counter()
        backlog = self.kind == "serial-backlog"  # this worker holds the key: a thread more
        runner = BackgroundWorker(self.app, concurrency=3 if backlog else 2).start()
        try:
            wait(lambda: TickExecutor.count >= self.n, "the drain", timeout=3600)
            rate = self.n / (time.perf_counter() - started)
        finally:
            if backlog:  # the held serial task ends now (failed); the next one holds the key
                runner.worker.stop(now=True)
            runner.stop()
        return rate

    def close(self) -> None:
        if self._holder is not None:
            self.app.cancel_task(self._first.id)
            self._holder.stop()
        self.app.close()
        self._tmp.cleanup()


def depth_report(backend: str, n: int, depth: int, kinds: list[str]) -> str:
    """Each kind's drains alternate with drains of an empty queue (the same number, in one
    run: what the machine does meanwhile hits both alike); the ratio is of the medians."""
    rows = []
    base = DepthRun(backend, "none", 0, n, "base")
    try:
        for kind in kinds:
            if kind == "none":
                continue
            deep = DepthRun(backend, kind, depth, n, "deep")
            try:
                empty_rates, deep_rates = [], []
                for _ in range(DEPTH_REPEATS):
                    empty_rates.append(base.drain())
                    deep_rates.append(deep.drain())
            finally:
                deep.close()
            empty, deeper = statistics.median(empty_rates), statistics.median(deep_rates)
            pairs = sorted(d / e for d, e in zip(deep_rates, empty_rates, strict=True))
            print(f"  {backend}: {depth:,} {kind}: drain {deeper:,.0f}/s vs empty "
                  f"{empty:,.0f}/s ({deeper / empty:.2f}x; pairs {pairs[0]:.2f}-"
                  f"{pairs[-1]:.2f}), load {os.getloadavg()[0]:.1f}", flush=True)
            rows.append([backend, kind, f"{depth:,}", f"{deeper:,.0f}/s", f"{empty:,.0f}/s",
                         f"{deeper / empty:.2f}x", f"{pairs[0]:.2f}-{pairs[-1]:.2f}",
                         f"{os.getloadavg()[0]:.1f}"])
    finally:
        base.close()
    return table(["backend", "waiting tasks the node skips", "how many",
                  f"drain of {n:,} (median of {DEPTH_REPEATS})", "empty queue, same run",
                  "ratio", "ratio of each pair", "load"], rows)


# -- add_tasks from a generator, and reading at that depth ---------------------------------


def measure_add_many(backend: str, n: int) -> list[str]:
    """``add_tasks`` over a generator of ``n`` no-ops (rate, memory), then the first page of
    ``list_tasks`` and ``get_task_status`` at that depth."""
    import resource

    with tempfile.TemporaryDirectory(prefix="roadie-bench-", ignore_cleanup_errors=True) as tmp:
        url = fresh_database(backend, Path(tmp))
        app = roadie.Roadie(url, data_dir=tmp, auto_upgrade=True)
        try:
            app.add_task(NOOP, {})
            empty_tasks(app)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            started = time.perf_counter()
            added = app.add_tasks({"executor": NOOP, "context": {"i": i}} for i in range(n))
            rate = n / (time.perf_counter() - started)
            grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
            print(f"  {backend}: add_tasks(generator of {n:,}) {rate:,.0f}/s, peak memory "
                  f"+{grown:.0f} MB", flush=True)
            timings = {}
            for what, call in (("list first page", lambda: app.list_tasks(limit=50)),
                               ("list first page of new", lambda: app.list_tasks(
                                   status=[roadie.Status.NEW], limit=50)),
                               ("get_task_status", lambda: app.get_task_status(
                                   added.ids[len(added) // 2]))):
                call()
                runs = []
                for _ in range(20):
                    t0 = time.perf_counter()
                    call()
                    runs.append(time.perf_counter() - t0)
                timings[what] = sorted(runs)[len(runs) // 2] * 1000
                print(f"  {backend}: {what} at {n:,} waiting: {timings[what]:.1f} ms",
                      flush=True)
        finally:
            app.close()
    return [backend, f"{n:,}", f"{rate:,.0f}/s", f"+{grown:.0f} MB",
            *(f"{v:.1f} ms" for v in timings.values()), f"{os.getloadavg()[0]:.1f}"]


# -- many worker processes; idle memory ---------------------------------------------------


def measure_processes(backend: str, n: int, processes: int) -> float:
    """Drain rate of ``n`` no-ops by ``roadie worker -p PROCESSES -c 2 --until-idle`` (from
    the start of the command to its exit, process start-up included)."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="roadie-bench-", ignore_cleanup_errors=True) as tmp:
        url = fresh_database(backend, Path(tmp))
        app = roadie.Roadie(url, data_dir=tmp, auto_upgrade=True)
        try:
            app.add_task(NOOP, {})
            empty_tasks(app)
            for offset in range(0, n, CHUNK):
                app.add_tasks([{"executor": NOOP, "context": {}}] * min(CHUNK, n - offset))
            env = {**os.environ, "ROADIE_DATA_DIR": tmp}
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "roadie", "--url", url, "worker", "-p",
                            str(processes), "-c", "2", "--until-idle"], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            rate = n / (time.perf_counter() - started)
            done = count_successful(app)
            if done != n:
                sys.exit(f"{backend}: {processes} processes ran {done} of {n} tasks")
        finally:
            app.close()
    print(f"  {backend}: {processes} process(es): drain {rate:,.0f}/s, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    return rate


def measure_idle_memory(backend: str, blocked: str = "") -> float:
    """Resident memory (MB) of an idle ``roadie worker`` (default settings) after it started,
    with the plugins ``blocked`` (comma-separated) not loaded."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="roadie-bench-", ignore_cleanup_errors=True) as tmp:
        url = fresh_database(backend, Path(tmp))
        app = roadie.Roadie(url, data_dir=tmp, auto_upgrade=True)
        app.add_task(NOOP, {})
        app.run_worker(concurrency=1, until_idle=True)
        env = {**os.environ, "ROADIE_DATA_DIR": tmp, "ROADIE_BLOCK_PLUGINS": blocked}
        process = subprocess.Popen([sys.executable, "-m", "roadie", "--url", url, "worker"],
                                   env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            wait(lambda: len(app.list_nodes()) == 1, "the worker to start", timeout=120)
            time.sleep(3)  # a few idle rounds
            status = Path(f"/proc/{process.pid}/status").read_text()
            rss = int(next(line.split()[1] for line in status.splitlines()
                           if line.startswith("VmRSS:"))) / 1024
        finally:
            process.terminate()
            process.wait(30)
            app.close()
    print(f"  {backend}: idle worker {rss:.0f} MB (blocked: {blocked or 'none'})", flush=True)
    return rss


VERSIONS_NOTES = """Each drain: `measure()` without the latency run (enqueue one by one,
empty, enqueue in batches of 1,000, then `app.run_worker(concurrency=2, until_idle=True)`
timed), in a process of its own with the version's `core` first on the path and a fresh
database; versions in an order that rotates from round to round. Per version: the drain rate,
the CPU time of the worker's process during the drain, and that plus the CPU time of the
PostgreSQL backends serving the database (a local server: read from /proc), per 1,000 tasks;
each as the median (lowest-highest) over the rounds and as the median (lowest-highest) of its
ratio to the first version's figure of the same round. On a shared machine the CPU figures
vary less than the rate: other work delays a drain more than it adds to its CPU time."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5000, help="tasks per measurement")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--no-write", action="store_true", help="print only, keep RESULTS.md")
    parser.add_argument("--prefetch", type=int, action="append", default=None,
                        help="measure with this worker prefetch (repeatable; default: the "
                             "setting's default)")
    parser.add_argument("--depth", type=int, default=0,
                        help="drain with this many skipped tasks waiting (see --skip)")
    parser.add_argument("--skip", choices=SKIP_KINDS, action="append", default=None,
                        help="the kind of skipped task (repeatable; default all)")
    parser.add_argument("--add-many", type=int, default=0,
                        help="add this many tasks from a generator; then time reads")
    parser.add_argument("--processes", type=int, default=0,
                        help="drain with 1 and with this many worker processes; idle memory")
    parser.add_argument("--version", action="append", default=[],
                        help="NAME=REF: drain this state of the code (a commit, . or a folder "
                             "with core/), interleaved with the others (repeatable)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of --version drains")
    parser.add_argument("--child-drain", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    if args.child_drain:
        figures = measure(backends[0], args.tasks, latency=False)
        server = figures.drain_server_cpu
        print(f"drain={figures.drain:.1f}/s cpu={figures.drain_cpu:.3f} "
              f"server={'-' if server is None else f'{server:.3f}'} "
              f"({figures.drain_seconds:.2f} s, {figures.claims} claims; roadie from "
              f"{Path(roadie.__file__).parent})")
        return
    if args.version:
        versions = [(v.split("=", 1)[0], v.split("=", 1)[-1]) for v in args.version]
        text = "\n\n".join(versions_report(backend, args.tasks, versions, args.rounds)
                            for backend in backends)
        print(text)
        if not args.no_write:
            write_section("Drain: versions interleaved", text + "\n\n" + VERSIONS_NOTES)
        return
    if args.processes:
        rows = []
        for backend in backends:
            one = measure_processes(backend, args.tasks, 1)
            many = measure_processes(backend, args.tasks, args.processes)
            rows.append([backend, f"{one:,.0f}/s", f"{many:,.0f}/s", f"{many / one:.2f}x",
                         f"{measure_idle_memory(backend):.0f} MB",
                         f"{measure_idle_memory(backend, OPTIONAL_PLUGINS):.0f} MB",
                         f"{os.getloadavg()[0]:.1f}"])
        text = table(["backend", "drain, 1 process", f"drain, {args.processes} processes",
                      "ratio", "idle worker memory (RSS)", "without the optional plugins",
                      "load"], rows)
        print(text)
        if not args.no_write:
            write_section("Many worker processes; idle memory", text + PROCESSES_NOTES.format(
                n=args.tasks, p=args.processes))
        return
    if args.add_many:
        rows = [measure_add_many(backend, args.add_many) for backend in backends]
        text = table(["backend", "tasks", "add_tasks(generator)", "peak memory",
                      "list (50, newest)", "list new (50)", "get_task_status", "load"], rows)
        print(text)
        if not args.no_write:
            write_section(f"Depth: add_tasks from a generator, reads at {args.add_many:,}",
                          text + ADD_MANY_NOTES)
        return
    if args.depth:
        kinds = ["none", *[k for k in args.skip or SKIP_KINDS if k != "none"]]
        texts = [depth_report(backend, args.tasks, args.depth, kinds) for backend in backends]
        print("\n\n".join(texts))
        if not args.no_write:
            plain_only = set(kinds) == {"none", "plain"}
            chosen = "" if args.skip is None else f" ({', '.join(kinds[1:])})"
            write_section("Depth (plain)" if plain_only else
                          f"Depth: {args.depth:,} waiting tasks the node cannot take{chosen}",
                          "\n\n".join(texts) + DEPTH_NOTES)
        return

    results = []
    for prefetch in args.prefetch or [None]:  # None: the default setting
        if prefetch is None:
            os.environ.pop("ROADIE_PREFETCH", None)
        else:
            os.environ["ROADIE_PREFETCH"] = str(prefetch)
        for backend in backends:
            print(f"{backend}: {args.tasks} no-op tasks ({NOOP}), prefetch "
                  f"{'default' if prefetch is None else prefetch}", flush=True)
            figures = measure(backend, args.tasks)
            if prefetch is not None:
                figures = dataclasses.replace(figures, backend=f"{backend}, prefetch {prefetch}")
            results.append(figures)
    text = report(results)
    print()
    print(text)
    if args.no_write:
        return
    notes = "\n".join([
        f"{args.tasks:,} no-op tasks (`{NOOP}`) per measurement, default settings (prefetch "
        f"{roadie.Settings.prefetch}; but the worker's `prefetch` where a row says so), a fresh "
        f"database per backend (SQLite file in a temp dir; PostgreSQL 127.0.0.1, database "
        f"`roadie_bench`).",
        "",
        "- enqueue 1 by 1: `app.add_task` in a loop (one transaction per task).",
        f"- enqueue batch: `app.add_tasks` with {CHUNK:,} tasks per call.",
        "- drain: `app.run_worker(concurrency=2, until_idle=True)` over the batch-added tasks, "
        "from the call to its return (worker start and stop included).",
        f"- latency: enqueue-to-start of {LATENCY_TASKS} tasks added one at a time "
        f"({LATENCY_GAP * 1000:.0f} ms apart, after {LATENCY_WARMUP} warm-up tasks) to an "
        "idle `BackgroundWorker(app, concurrency=2)` in the same process; the executor records "
        "`perf_counter() - t0` when it starts.",
        "",
        "Drain details (time, claiming rounds = `WorkerStats.claims`): " + "; ".join(
            f"{f.backend} {f.drain_seconds:.1f} s, {f.claims:,} rounds" for f in results) + ".",
        "",
        "Peers measured on this machine: the section \"Side by side with the peers\" "
        "(`bench/peers.py`); the scripts and one older run are in `../shared/peer-bench`.",
    ])
    write_section("Throughput", text + "\n\n" + notes)


if __name__ == "__main__":
    main()

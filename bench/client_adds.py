"""Single adds from many concurrent callers (issue 31), PostgreSQL: what a web app does when each
request adds one task.

- async: ``await app.aio.add_task(...)`` from ``--clients`` (50) coroutines on one event loop;
- sync: ``app.add_task(...)`` from as many threads;

``--tasks`` no-op tasks each, alternated ``--rounds`` times on one fresh database (emptied
between measurements), with each rate and the async/sync ratio; the last line is the medians.
``bench/peers.py`` runs it in a subprocess of its own (as each peer runs) beside PgQueuer's
``enqueue`` on an asyncpg pool.

With ``--version NAME=COMMIT`` (repeated; ``NAME=.`` is the working tree) it compares versions
of roadie's code instead: each round runs, in an order that rotates from round to round, one
subprocess per version (that commit's ``core``, from ``git archive``, first on the path; one
async and one sync measurement each) and PgQueuer's ``peer_scripts/adds_pgqueuer.py`` (``Queries
.enqueue`` from as many coroutines on an asyncpg pool) in the peers' virtualenv; then a table
per round and whether the last version met issue 31's targets (async >= 1.2x PgQueuer of the
same round, and >= its own sync path) in every round and in the median.

    python bench/client_adds.py [--tasks 3000] [--clients 50] [--rounds 3] [--no-write]
    python bench/client_adds.py --version before=f3eb067 --version after=. [--rounds 3]

Database: ``ROADIE_BENCH_CLIENT_PG`` (default ``roadie_bench_client`` on 127.0.0.1:5432),
dropped and created again; PgQueuer's ``PEER_PG``; ``PEER_PY`` the peers' python.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import roadie
import sqlalchemy as sa
from _databases import fresh_postgres
from _results import table, write_section
from batch_adds import export

PG_URL = os.environ.get("ROADIE_BENCH_CLIENT_PG",
                        "postgresql://postgres@127.0.0.1:5432/roadie_bench_client")
NOOP = "roadie-examples:noop"
PEER_PY = os.environ.get("PEER_PY", "/work/peer-venv/bin/python")
ROADIE_LINE = re.compile(r"^roadie-pg concurrent_adds aio=(?P<aio>\d+)/s sync=(?P<sync>\d+)/s")
PEER_LINE = re.compile(r"^\S+ concurrent_adds=(?P<rate>\d+)/s")
PEER_RATIO = 1.2  # the target: async adds at least this many times PgQueuer's


@dataclass
class Rates:
    """Adds per second of one round."""

    aio: float
    sync: float


def fresh_database() -> str:
    return fresh_postgres(PG_URL)


def empty(app: roadie.Roadie) -> None:
    with app.store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM roadie_tasks"))
    with app.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE roadie_tasks"))


def aio_rate(app: roadie.Roadie, n: int, clients: int) -> float:
    async def main() -> float:
        await app.aio.add_task(NOOP, {})  # warm up: the pool's first session
        left = n

        async def client() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await app.aio.add_task(NOOP, {})

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        rate = n / (time.perf_counter() - started)
        await app.aio.close()
        return rate

    return asyncio.run(main())


def sync_rate(app: roadie.Roadie, n: int, clients: int) -> float:
    left = [n]
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            app.add_task(NOOP, {})

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    return n / (time.perf_counter() - started)


def measure(n: int, clients: int, rounds: int = 1) -> list[Rates]:
    """``rounds`` pairs (async, sync) on one fresh database, who goes first alternating."""
    app = roadie.Roadie(fresh_database(), auto_upgrade=True)
    try:
        app.add_task(NOOP, {})  # schema, plugins
        out = []
        for r in range(rounds):
            got: dict[str, float] = {}
            for kind in (("aio", "sync") if r % 2 == 0 else ("sync", "aio")):
                empty(app)
                got[kind] = (aio_rate if kind == "aio" else sync_rate)(app, n, clients)
            out.append(Rates(got["aio"], got["sync"]))
        return out
    finally:
        app.close()


def run_step(cmd: list[str], env: dict[str, str]) -> tuple[re.Match[str] | None, str]:
    """Run one measurement's subprocess: its figures line (None if it failed) and its text."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()] or \
        proc.stderr.strip().splitlines()[-1:] or ["no output"]
    found = next((m for ln in lines if (m := ROADIE_LINE.match(ln) or PEER_LINE.match(ln))),
                 None)
    return (found if proc.returncode == 0 else None), (found[0] if found else lines[-1])


def compare(args: argparse.Namespace) -> None:
    """Versions of roadie's code and PgQueuer, interleaved (``--version``)."""
    versions = [tuple(v.split("=", 1)) for v in args.version]
    load = os.getloadavg()[0]
    raw: list[str] = []
    aio: dict[str, list[float]] = {name: [] for name, _ in versions}
    sync: dict[str, list[float]] = {name: [] for name, _ in versions}
    peer: list[float] = []
    tmp = Path(tempfile.mkdtemp(prefix="roadie-client-adds-"))
    try:
        paths = {name: export(commit, tmp) for name, commit in versions}
        steps = [*(name for name, _ in versions), "PgQueuer"]
        for r in range(args.rounds):
            for name in steps[r % len(steps):] + steps[:r % len(steps)]:
                if name == "PgQueuer":
                    found, text = run_step(
                        [PEER_PY, str(Path(__file__).with_name("peer_scripts")
                                      / "adds_pgqueuer.py"), str(args.tasks), str(args.clients)],
                        dict(os.environ))
                    peer.append(float(found["rate"]) if found else float("nan"))
                else:
                    found, text = run_step(
                        [sys.executable, __file__, "--tasks", str(args.tasks), "--clients",
                         str(args.clients), "--rounds", "1", "--no-write"],
                        {**os.environ, "PYTHONPATH": str(paths[name])})
                    aio[name].append(float(found["aio"]) if found else float("nan"))
                    sync[name].append(float(found["sync"]) if found else float("nan"))
                line = f"round {r + 1} {name}: {text} (load {os.getloadavg()[0]:.2f})"
                print(line, flush=True)
                raw.append(line)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def figures(i: int | None) -> list[str]:
        pick = (lambda xs: xs[i]) if i is not None else statistics.median
        cells = []
        for name, _ in versions:
            a, s = pick(aio[name]), pick(sync[name])
            cells += [f"{a:,.0f}", f"{s:,.0f}", f"{a / s:.2f}", f"{a / pick(peer):.2f}"]
        return [*cells, f"{pick(peer):,.0f}"]

    header = [h for name, _ in versions for h in (
        f"{name}: async /s", f"{name}: sync /s", f"{name}: async / sync",
        f"{name}: async / PgQueuer")]
    rows = [[str(r + 1), *figures(r)] for r in range(args.rounds)]
    rows.append(["median", *figures(None)])
    text = table(["round", *header, "PgQueuer /s"], rows)
    last = versions[-1][0]
    vs_peer = [a / p for a, p in zip(aio[last], peer, strict=True)]
    vs_sync = [a / s for a, s in zip(aio[last], sync[last], strict=True)]

    def verdict(ratios: list[float], target: float, what: str) -> str:
        every = all(x >= target for x in ratios)
        median = statistics.median(ratios) >= target
        return (f"{last}: {what} in every round: {'met' if every else 'NOT met'} "
                f"({', '.join(f'{x:.2f}' for x in ratios)}); in the median of the rounds' "
                f"ratios: {'met' if median else 'NOT met'} ({statistics.median(ratios):.2f}).")

    verdicts = [verdict(vs_peer, PEER_RATIO, f"async >= {PEER_RATIO}x PgQueuer"),
                verdict(vs_sync, 1.0, "async >= sync (50 threads)")]
    print(text + "\n" + "\n".join(verdicts))
    if args.no_write:
        return
    described = ", ".join(f"{name} = `{commit}`" for name, commit in versions)
    write_section("Async client: single adds from concurrent callers, before and after",
                  "\n\n".join([
        text, "\n".join(f"- {v}" for v in verdicts),
        f"Versions: {described}. {args.tasks:,} no-op adds per measurement from "
        f"{args.clients} callers, PostgreSQL: roadie `await app.aio.add_task` from coroutines "
        "then `app.add_task` from threads, in one subprocess per version and round on a fresh "
        "database; PgQueuer `Queries.enqueue` from coroutines on an asyncpg pool "
        "(`bench/peer_scripts/adds_pgqueuer.py`). The subprocesses rotate their order from "
        f"round to round. Load average {load:.2f} at start.",
        "```\n" + "\n".join(raw) + "\n```"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--version", action="append", default=[],
                        help="NAME=COMMIT (or NAME=. for the working tree), in order: compare "
                             "versions and PgQueuer")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.version:
        compare(args)
        return
    load = os.getloadavg()[0]
    rounds = measure(args.tasks, args.clients, args.rounds)
    rows = [[str(i), f"{r.aio:,.0f}", f"{r.sync:,.0f}", f"{r.aio / r.sync:.2f}"]
            for i, r in enumerate(rounds, 1)]
    rows.append(["median", f"{statistics.median(r.aio for r in rounds):,.0f}",
                 f"{statistics.median(r.sync for r in rounds):,.0f}",
                 f"{statistics.median(r.aio / r.sync for r in rounds):.2f}"])
    for r in rounds:  # the line bench/peers.py reads
        print(f"roadie-pg concurrent_adds aio={r.aio:.0f}/s sync={r.sync:.0f}/s", flush=True)
    text = table(["round", f"async, {args.clients} coroutines /s",
                  f"sync, {args.clients} threads /s", "async / sync"], rows)
    print(text)
    print(f"roadie-pg concurrent_adds aio={statistics.median(r.aio for r in rounds):.0f}/s "
          f"sync={statistics.median(r.sync for r in rounds):.0f}/s")
    if not args.no_write:
        write_section("Single adds from concurrent callers", "\n\n".join([
            text, f"{args.tasks:,} no-op adds per measurement, PostgreSQL, load average "
            f"{load:.2f} at start; the two alternate in each round (who goes first too)."]))


if __name__ == "__main__":
    main()

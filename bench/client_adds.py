"""Single adds from many concurrent callers (issue 31), PostgreSQL: what a web app does when each
request adds one task.

- async: ``await app.aio.add_task(...)`` from ``--clients`` (50) coroutines on one event loop;
- sync: ``app.add_task(...)`` from as many threads;

``--tasks`` no-op tasks each, alternated ``--rounds`` times on one fresh database (emptied
between measurements), with each rate and the async/sync ratio; the last line is the medians.
``bench/peers.py`` runs it in a subprocess of its own (as each peer runs) beside PgQueuer's
``enqueue`` on an asyncpg pool.

    python bench/client_adds.py [--tasks 3000] [--clients 50] [--rounds 3] [--no-write]

Database: ``ROADIE_BENCH_CLIENT_PG`` (default ``roadie_bench_client`` on 127.0.0.1:5432),
dropped and created again.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import roadie
import sqlalchemy as sa
from _databases import fresh_postgres
from _results import table, write_section

PG_URL = os.environ.get("ROADIE_BENCH_CLIENT_PG",
                        "postgresql://postgres@127.0.0.1:5432/roadie_bench_client")
NOOP = "roadie-examples:noop"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
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

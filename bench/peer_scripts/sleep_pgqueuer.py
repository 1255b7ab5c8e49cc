"""PgQueuer's async sleep drain, for bench/async_tasks.py and bench/peers.py, run with the peers'
python (not the project's):
N jobs whose async entrypoint awaits ``asyncio.sleep(SECONDS)``, drained by one
``PgQueuer.run(mode=drain, max_concurrent_tasks=SLOTS, batch_size=BATCH)``.

    <peer-python> bench/peer_scripts/sleep_pgqueuer.py N SECONDS SLOTS [BATCH]

Prints one line: ``pgqueuer-pg sleep_drain=R/s n=N slots=SLOTS batch=BATCH peak_rss=M``
(megabytes).
PEER_PG is the database (its public schema is dropped and made again).
"""

import asyncio
import os
import resource
import sys
import time

import asyncpg
from pgqueuer import AsyncpgDriver, PgQueuer, Queries
from pgqueuer.types import QueueExecutionMode

N = int(sys.argv[1])
SECONDS = float(sys.argv[2])
SLOTS = int(sys.argv[3])
BATCH = int(sys.argv[4]) if len(sys.argv) > 4 else 10  # PgQueuer's default
DSN = os.environ.get("PEER_PG", "postgresql://postgres@127.0.0.1:5432/peer_bench")


async def main() -> None:
    admin = await asyncpg.connect(DSN)
    await admin.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    await admin.close()
    conn = await asyncpg.connect(DSN)
    driver = AsyncpgDriver(conn)
    queries = Queries(driver)
    await queries.install()
    for offset in range(0, N, 1000):
        size = min(1000, N - offset)
        await queries.enqueue(["sleep"] * size, [None] * size, [0] * size)
    pgq = PgQueuer(driver)
    done = 0

    @pgq.entrypoint("sleep")
    async def sleep(job: object) -> None:
        nonlocal done
        await asyncio.sleep(SECONDS)
        done += 1

    started = time.perf_counter()
    await pgq.run(mode=QueueExecutionMode.drain, batch_size=BATCH, max_concurrent_tasks=SLOTS)
    rate = N / (time.perf_counter() - started)
    assert done == N, done
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"pgqueuer-pg sleep_drain={rate:.0f}/s n={N} slots={SLOTS} batch={BATCH} "
          f"peak_rss={rss:.0f}")


asyncio.run(main())

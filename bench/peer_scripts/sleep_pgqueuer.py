"""PgQueuer on PostgreSQL: N jobs that each ``await asyncio.sleep(0.1)`` (one ``enqueue`` of the
list), drained by one PgQueuer with its async entrypoint limited to C (200) at once."""
import asyncio
import os
import sys
import time

import asyncpg
from pgqueuer import AsyncpgDriver, PgQueuer, Queries
from pgqueuer.types import QueueExecutionMode

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
C = int(sys.argv[2]) if len(sys.argv) > 2 else 200
DSN = os.environ.get("PEER_PG", "postgresql://postgres@127.0.0.1:5432/peer_bench")


async def main() -> None:
    conn = await asyncpg.connect(DSN)
    await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    driver = AsyncpgDriver(conn)
    queries = Queries(driver)
    await queries.install()
    await queries.enqueue(["wait"] * N, [None] * N, [0] * N)
    pgq = PgQueuer(driver)
    done = 0

    @pgq.entrypoint("wait", concurrency_limit=C)
    async def wait(job: object) -> None:
        nonlocal done
        await asyncio.sleep(0.1)
        done += 1

    started = time.perf_counter()
    await pgq.run(mode=QueueExecutionMode.drain, batch_size=C)
    drain = N / (time.perf_counter() - started)
    assert done == N, done
    print(f"pgqueuer-pg sleep_drain={drain:.0f}/s (n={N}, {C} at once)")


asyncio.run(main())

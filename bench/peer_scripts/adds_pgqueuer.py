"""PgQueuer on PostgreSQL: N single enqueues from C concurrent coroutines on an asyncpg pool
(asyncpg's default size, 10), as an async web app adds one job per request."""
import asyncio
import os
import sys
import time

import asyncpg
from pgqueuer import AsyncpgDriver, AsyncpgPoolDriver, Queries

N = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
C = int(sys.argv[2]) if len(sys.argv) > 2 else 50
DSN = os.environ.get("PEER_PG", "postgresql://postgres@127.0.0.1:5432/peer_bench")


async def main() -> None:
    admin = await asyncpg.connect(DSN)
    await admin.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    await Queries(AsyncpgDriver(admin)).install()
    await admin.close()
    pool = await asyncpg.create_pool(DSN)
    queries = Queries(AsyncpgPoolDriver(pool))
    await queries.enqueue("noop", None)  # warm up: connect, prepare
    left = N

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await queries.enqueue("noop", None)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(C)))
    rate = N / (time.perf_counter() - started)
    await pool.close()
    print(f"pgqueuer-pg concurrent_adds={rate:.0f}/s (n={N}, {C} coroutines)")


asyncio.run(main())

"""PgQueuer on PostgreSQL: R batch enqueues of N no-op jobs (one ``enqueue`` call with lists),
the table emptied before each; prints each rate and their median."""
import asyncio
import os
import statistics
import sys
import time

import asyncpg
from pgqueuer import AsyncpgDriver, Queries

N = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
R = int(sys.argv[2]) if len(sys.argv) > 2 else 3
DSN = os.environ.get("PEER_PG", "postgresql://postgres@127.0.0.1:5432/peer_bench")


async def main() -> None:
    conn = await asyncpg.connect(DSN)
    await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    queries = Queries(AsyncpgDriver(conn))
    await queries.install()
    await queries.enqueue("noop", None)  # warm up
    rates = []
    for _ in range(R):
        await conn.execute("TRUNCATE pgqueuer")
        await conn.execute("VACUUM ANALYZE pgqueuer")
        started = time.perf_counter()
        await queries.enqueue(["noop"] * N, [None] * N, [0] * N)
        rates.append(N / (time.perf_counter() - started))
    await conn.close()
    print(f"pgqueuer-pg batch={statistics.median(rates):.0f}/s "
          f"each={','.join(f'{r:.0f}' for r in rates)}")


asyncio.run(main())

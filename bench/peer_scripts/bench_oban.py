"""oban-py on PostgreSQL (psycopg's asyncio side, a psycopg_pool pool): enqueue N no-op jobs one
by one and in one ``enqueue_many``, then drain them with one Oban instance in the same process
(queue limit ``LIMIT``, 10 unless given) until every job has run. Prints the line peers.py
parses. ``sleep``: instead, N jobs that each ``await asyncio.sleep(0.1)``, added with
``enqueue_many``, drained with a queue limit of 200 (the async sleep drain)."""
import asyncio
import os
import sys
import time

from oban import Oban, job
from oban.schema import install

N = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
SLEEP = len(sys.argv) > 2 and sys.argv[2] == "sleep"
LIMIT = int(sys.argv[3]) if len(sys.argv) > 3 else (200 if SLEEP else 10)
DSN = os.environ.get("PEER_PG", "postgresql://postgres@127.0.0.1:5432/peer_bench")
done = 0


@job(queue="default")
async def noop() -> None:
    global done
    done += 1


@job(queue="default")
async def wait() -> None:
    global done
    await asyncio.sleep(0.1)
    done += 1


async def main() -> None:
    pool = await Oban.create_pool(DSN)
    async with pool.connection() as conn:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    await install(pool)
    client = Oban(pool=pool, name="client")  # no queues: it only enqueues

    single = 0.0
    if not SLEEP:
        started = time.perf_counter()
        for _ in range(N):
            await client.enqueue(noop.new())
        single = N / (time.perf_counter() - started)
        async with pool.connection() as conn:
            await conn.execute("TRUNCATE oban_jobs")
    worker = wait if SLEEP else noop
    started = time.perf_counter()
    await client.enqueue_many([worker.new() for _ in range(N)])
    batch = N / (time.perf_counter() - started)

    started = time.perf_counter()
    oban = Oban(pool=pool, queues={"default": LIMIT})
    await oban.start()
    while done < N:
        await asyncio.sleep(0.005)
    drain = N / (time.perf_counter() - started)
    await oban.stop()
    await pool.close()
    if SLEEP:
        print(f"oban-pg sleep_drain={drain:.0f}/s (n={N}, limit {LIMIT})")
    else:
        print(f"oban-pg enqueue_single={single:.0f}/s enqueue_batch={batch:.0f}/s "
              f"drain={drain:.0f}/s")


asyncio.run(main())

"""Live updates of the web app: many server-sent-events clients watching one task.

One task (``roadie-examples:count`` with ``delay`` 0.1, so it reports its progress 10 times a
second; the worker runs with ``ROADIE_STATUS_INTERVAL=0.1`` so each report is written) runs in
a worker process. A ``roadie web`` server process serves ``--clients`` streams
(``GET /events?id=<task>``) opened by this process with httpx. For ``--seconds`` it measures:

- the web server's CPU (user + system time of its process from /proc, as % of one core);
- delivery latency: from the progress write (the task's ``updated_at``, set in the write's
  transaction) to a client reading the event, p50 / p99 over every event of every client;
- events delivered per client per second, and whether every client saw the same updates.

The clients run on the same machine, so their own CPU competes with the server's.

    python bench/web_sse.py [--clients 100] [--seconds 20] [--backend postgres|sqlite|both]

PostgreSQL uses the database ``roadie_bench_i15`` (created when missing, emptied at start;
``ROADIE_BENCH_WEB_PG`` to point elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import roadie
import sqlalchemy as sa
from _results import table, write_section

PG_URL = os.environ.get("ROADIE_BENCH_WEB_PG",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/roadie_bench_i15")
ROADIE = str(Path(sys.executable).with_name("roadie"))


def database(backend: str, tmp: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp / 'roadie.db'}"
    url = sa.make_url(PG_URL)
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              (url.database,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{url.database}"')
    rendered = url.render_as_string(hide_password=False)
    app = roadie.Roadie(rendered, auto_upgrade=True)
    app.upgrade_schema()
    with app.store.engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE roadie_tasks, roadie_attempts, roadie_locks, "
                             "roadie_nodes, roadie_attachments RESTART IDENTITY"))
    app.close()
    return rendered


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def client(base: str, task_id: int, stop_at: float, latencies: list[float],
                 counts: list[int], index: int) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=None) as http, \
            http.stream("GET", f"/events?id={task_id}") as response:
        first = True
        async for line in response.aiter_lines():
            now = dt.datetime.now(dt.timezone.utc)
            if line.startswith("data: "):
                event = json.loads(line[6:])
                if first:  # the snapshot sent on connect is not a delivery
                    first = False
                elif event.get("updated_at"):
                    written = dt.datetime.fromisoformat(event["updated_at"])
                    latencies.append((now - written).total_seconds() * 1000)
                    counts[index] += 1
            if time.monotonic() >= stop_at:
                return


def measure(backend: str, clients: int, seconds: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="roadie-bench-web-") as tmp:
        url = database(backend, Path(tmp))
        env = {**os.environ, "ROADIE_URL": url, "ROADIE_DATA_DIR": tmp,
               "ROADIE_STATUS_INTERVAL": "0.1"}
        app = roadie.Roadie(url)
        task = app.add_task("roadie-examples:count",
                            {"n": int((seconds + 30) * 10), "delay": 0.1}, name="watched")
        port = free_port()
        server = subprocess.Popen([ROADIE, "web", "--port", str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        worker = subprocess.Popen([ROADIE, "worker", "--concurrency", "1"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("the web server did not start: "
                                           + server.stderr.read().decode()[-500:]) from None
                    time.sleep(0.1)
            while app.get_task(task.id).status != roadie.Status.IN_PROGRESS:
                time.sleep(0.05)
            latencies: list[float] = []
            counts = [0] * clients

            async def run_all() -> float:
                stop_at = time.monotonic() + seconds + 2
                tasks = [asyncio.create_task(client(base, task.id, stop_at, latencies, counts,
                                                    i)) for i in range(clients)]
                await asyncio.sleep(2)  # everyone connected; measure from here
                latencies.clear()
                for i in range(clients):
                    counts[i] = 0
                before = cpu_seconds(server.pid)
                await asyncio.gather(*tasks)
                return cpu_seconds(server.pid) - before

            cpu = asyncio.run(run_all())
            done = app.get_task(task.id).task_status.get("done", 0)
        finally:
            for process in (worker, server):
                process.terminate()
            for process in (worker, server):
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
            app.cancel_task(task.id)
            app.close()
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")

    return {
        "backend": backend, "clients": clients, "seconds": seconds,
        "cpu_percent": 100 * cpu / seconds,
        "p50": pct(0.50), "p99": pct(0.99), "mean": statistics.fmean(ordered) if ordered else 0,
        "events_per_client_s": statistics.fmean(counts) / seconds,
        "min_events": min(counts), "max_events": max(counts), "reports": done,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    backends = ["postgres", "sqlite"] if args.backend == "both" else [args.backend]
    rows = []
    for backend in backends:
        figures = measure(backend, args.clients, args.seconds)
        print(figures)
        rows.append([
            backend, str(figures["clients"]), f"{figures['cpu_percent']:.0f}%",
            f"{figures['p50']:.0f} ms", f"{figures['p99']:.0f} ms",
            f"{figures['events_per_client_s']:.1f}/s "
            f"({figures['min_events']}-{figures['max_events']} per client)",
        ])
    text = table(["database", "SSE clients", "web server CPU (one core)",
                  "latency p50", "latency p99", "events per client"], rows)
    print(text)
    if not args.no_write:
        write_section("Web app: live updates over server-sent events", text + f"""

One task reports its progress 10 times a second (`roadie-examples:count`, `delay` 0.1;
worker with `ROADIE_STATUS_INTERVAL=0.1`); {args.clients} SSE clients watch it through one
`roadie web` process for {args.seconds:.0f} s. Latency runs from the progress write (the task's
`updated_at`) to the client reading the event; the web server's CPU is its process's user +
system time. The clients (httpx, asyncio) and the worker run on the same machine. On
PostgreSQL the server's one LISTEN connection wakes its one feed thread, which reads the task
once per change for all clients; on SQLite the feed polls every 0.25 s (other processes'
commits are not announced), so its latency is bounded by the poll.""")


if __name__ == "__main__":
    main()

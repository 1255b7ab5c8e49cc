"""Transactional adds (issue 30): what ``connection=`` costs against a plain add, on PostgreSQL.

One process, one thread, a fresh database; no worker runs. Interleaved ``--rounds`` times, each
case on the same warm app:

- one at a time, ``--singles`` adds (default 2,000) of a no-op task with an empty context:
  - ``plain``: ``app.add_task(...)`` (roadie's own autocommit statement, one round trip);
  - ``SQLAlchemy connection``: ``with engine.begin() as conn: app.add_task(..., connection=conn)``
    on the application's own pooled engine;
  - ``psycopg connection``: ``app.add_task(..., connection=raw)`` then ``raw.commit()``;
  - ``empty transaction``: ``with engine.begin() as conn: conn.execute(SELECT 1)``, what a
    transaction of the caller costs without roadie, to show roadie's own share;
- in batches, ``--batches`` lists of ``--batch`` tasks (default 20 of 1,000):
  ``app.add_tasks(items)`` against ``with engine.begin() as conn: app.add_tasks(items,
  connection=conn)``.

The table gives the median rate of each case over the rounds, its spread, and its ratio to the
plain add of the same round.

    python bench/transactional_adds.py [--singles 2000] [--batches 20] [--batch 1000]
        [--rounds 3] [--no-write]

PostgreSQL: database ``roadie_bench_i30`` on 127.0.0.1:5432 (user postgres), dropped and made
again; set ROADIE_BENCH_I30_PG to another server's URL.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import roadie
import sqlalchemy as sa
from _databases import fresh_postgres
from _results import table, write_section

PG_URL = os.environ.get("ROADIE_BENCH_I30_PG",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/roadie_bench_i30")
EXECUTOR = "bench:noop"


class Noop(roadie.Executor):
    """Does nothing."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        return roadie.Result.SUCCESS


def fresh_database(url: str) -> None:
    """Drop and create the benchmark's database."""
    fresh_postgres(url)


def timed(count: int, add: Callable[[], object]) -> float:
    """Tasks per second of ``count`` calls of ``add``."""
    start = time.perf_counter()
    for _ in range(count):
        add()
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--singles", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    options = parser.parse_args()

    fresh_database(PG_URL)
    app = roadie.Roadie(PG_URL, data_dir=Path(tempfile.mkdtemp()), auto_upgrade=True)
    app.plugins.register_executor(EXECUTOR, Noop)
    engine = sa.create_engine(PG_URL)
    raw = psycopg.connect(sa.make_url(PG_URL).set(drivername="postgresql")
                          .render_as_string(hide_password=False))
    items = [(EXECUTOR, {})] * options.batch

    def with_sqlalchemy() -> None:
        with engine.begin() as conn:
            app.add_task(EXECUTOR, {}, connection=conn)

    def with_psycopg() -> None:
        app.add_task(EXECUTOR, {}, connection=raw)
        raw.commit()

    def empty_transaction() -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT 1"))

    def batch_plain() -> None:
        app.add_tasks(items)

    def batch_joined() -> None:
        with engine.begin() as conn:
            app.add_tasks(items, connection=conn)

    singles: dict[str, Callable[[], object]] = {
        "plain": lambda: app.add_task(EXECUTOR, {}),
        "SQLAlchemy connection": with_sqlalchemy,
        "psycopg connection": with_psycopg,
        "empty transaction (no add)": empty_transaction,
    }
    batches: dict[str, Callable[[], object]] = {
        "plain": batch_plain, "SQLAlchemy connection": batch_joined}
    for add in (*singles.values(), *batches.values()):  # warm up: plans, pools, plugins
        add()
    rates: dict[tuple[str, str], list[float]] = {}
    ratios: dict[tuple[str, str], list[float]] = {}
    for round_number in range(options.rounds):
        for kind, cases, count, per_call in (("one at a time", singles, options.singles, 1),
                                             ("batches", batches, options.batches,
                                              options.batch)):
            plain = 0.0
            for name, add in cases.items():
                rate = timed(count, add) * per_call
                plain = rate if name == "plain" else plain
                rates.setdefault((kind, name), []).append(rate)
                ratios.setdefault((kind, name), []).append(rate / plain)
                print(f"round {round_number + 1} {kind:13} {name:27} {rate:10,.0f}/s "
                      f"{rate / plain:5.2f}x", flush=True)
    raw.close()
    engine.dispose()
    app.close()

    rows = []
    for (kind, name), found in rates.items():
        unit = "adds/s" if kind == "one at a time" else "tasks/s"
        rows.append([kind, name, f"{statistics.median(found):,.0f} {unit}",
                     f"{min(found):,.0f} to {max(found):,.0f}",
                     f"{statistics.median(ratios[kind, name]):.2f}x"])
    text = "\n".join([
        f"PostgreSQL, one thread, no worker running; {options.singles:,} single adds and "
        f"{options.batches} batches of {options.batch:,} per case and round, {options.rounds} "
        "interleaved rounds (median, spread, ratio to the plain add of the same round).", "",
        table(["adds", "case", "median", "spread", "vs plain"], rows), "",
        "A plain single add is one autocommit statement (insert and NOTIFY in one round trip). "
        "A transactional add is the caller's BEGIN, the same insert and NOTIFY on the caller's "
        "connection, and its COMMIT: the difference from the empty transaction is roadie's "
        "own share. A batch on the caller's connection takes the same COPY path as a plain "
        "one."])
    print("\n" + text)
    if not options.no_write:
        write_section("Transactional adds", text)


if __name__ == "__main__":
    main()

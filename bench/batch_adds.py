"""Batch adds on PostgreSQL against PgQueuer's (issue 31), per version of roadie's code.

Each round runs, in an order that rotates from round to round, one subprocess per roadie version
(``--version NAME=COMMIT``: that commit's ``core`` exported with ``git archive`` and put first on
the path; ``NAME=.`` is the working tree) and PgQueuer's ``peer_scripts/batch_pgqueuer.py`` in
the peers' virtualenv. Each subprocess adds ``--tasks`` no-op tasks in one call, ``--repeats``
times on a fresh database (emptied and vacuumed before each), and reports the median: roadie
``app.add_tasks(list)`` (one transaction), PgQueuer one ``enqueue`` of lists. Then a table per
round, the ratio of each version to PgQueuer of the same round, and whether the last version
reached PgQueuer in every round.

    python bench/batch_adds.py --version base=fada292 --version new=. [--tasks 5000]
        [--rounds 3] [--repeats 3] [--no-write]

Databases: ``ROADIE_BENCH_BATCH_PG`` (default ``roadie_bench_batch``, dropped and created by
each subprocess); PgQueuer's ``PEER_PG``; ``PEER_PY`` the peers' python.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("ROADIE_BENCH_BATCH_PG",
                        "postgresql://postgres@127.0.0.1:5432/roadie_bench_batch")
PEER_PY = os.environ.get("PEER_PY", "/work/peer-venv/bin/python")
LINE = re.compile(r"^\S+ batch=(?P<rate>\d+)/s")


def child(n: int, repeats: int) -> None:
    """In a subprocess: the median rate of ``repeats`` batch adds of ``n`` tasks."""
    import roadie
    import sqlalchemy as sa
    from _databases import fresh_postgres

    url = fresh_postgres(PG_URL)
    with tempfile.TemporaryDirectory() as tmp:
        app = roadie.Roadie(url, data_dir=tmp, auto_upgrade=True)
        app.add_tasks([("roadie-examples:noop", {})] * 10)  # schema, plugins, warm up
        rates = []
        for _ in range(repeats):
            with app.store.engine.begin() as conn:
                conn.execute(sa.text("DELETE FROM roadie_tasks"))
            with app.store.engine.connect().execution_options(
                    isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("VACUUM ANALYZE roadie_tasks"))
            started = time.perf_counter()
            app.add_tasks([("roadie-examples:noop", {})] * n)
            rates.append(n / (time.perf_counter() - started))
        app.close()
    print(f"roadie batch={statistics.median(rates):.0f}/s "
          f"each={','.join(f'{r:.0f}' for r in rates)} (roadie from {roadie.__file__})")


def export(commit: str, into: Path) -> Path:
    """``commit``'s core folder, for PYTHONPATH (``.``: the working tree's)."""
    if commit == ".":
        return ROOT / "core"
    target = into / commit
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "core"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target / "core"


def run(cmd: list[str], env: dict[str, str]) -> tuple[float | None, str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    last = lines[-1] if lines else proc.stderr.strip().splitlines()[-1:] or ["no output"]
    text = last if isinstance(last, str) else last[0]
    m = LINE.match(text)
    return (float(m["rate"]) if m and proc.returncode == 0 else None), text


def measure_roadie(tasks: int, repeats: int, core: Path | None = None
                   ) -> tuple[float | None, str]:
    """roadie's batch rate (the median of ``repeats`` ``app.add_tasks`` of ``tasks``) in a
    fresh subprocess, with ``core`` (a tree's core folder) first on the path if given; and
    its output line. ``peers.py`` measures roadie's batch enqueue with it too."""
    cmd = [sys.executable, __file__, "--child", "--tasks", str(tasks), "--repeats", str(repeats)]
    env = dict(os.environ)
    if core is not None:
        env["PYTHONPATH"] = str(core)
    return run(cmd, env)


def measure_pgqueuer(tasks: int, repeats: int, peer_py: str = PEER_PY,
                     peer_pg: str | None = None) -> tuple[float | None, str]:
    """PgQueuer's batch rate (``peer_scripts/batch_pgqueuer.py``: the median of ``repeats``
    ``enqueue`` calls of lists of ``tasks``) in the peers' python; and its output line."""
    cmd = [peer_py, str(Path(__file__).with_name("peer_scripts") / "batch_pgqueuer.py"),
           str(tasks), str(repeats)]
    env = dict(os.environ) if peer_pg is None else {**os.environ, "PEER_PG": peer_pg}
    return run(cmd, env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="append", default=[],
                        help="NAME=COMMIT (or NAME=. for the working tree); in order")
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.tasks, args.repeats)
        return
    versions = [tuple(v.split("=", 1)) for v in args.version or ["this=."]]
    load = os.getloadavg()[0]
    raw: list[str] = []
    figures: dict[str, list[float | None]] = {name: [] for name, _ in versions}
    figures["PgQueuer"] = []
    tmp = Path(tempfile.mkdtemp(prefix="roadie-batch-"))
    try:
        paths = {name: export(commit, tmp) for name, commit in versions}
        steps = [*(name for name, _ in versions), "PgQueuer"]
        for r in range(args.rounds):
            order = steps[r % len(steps):] + steps[:r % len(steps)]
            for name in order:
                if name == "PgQueuer":
                    rate, text = measure_pgqueuer(args.tasks, args.repeats)
                else:
                    rate, text = measure_roadie(args.tasks, args.repeats, paths[name])
                line = f"round {r + 1} {name}: {text} (load {os.getloadavg()[0]:.2f})"
                print(line, flush=True)
                raw.append(line)
                figures[name].append(rate)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def fmt(value: float | None) -> str:
        return "—" if value is None else f"{value:,.0f}"

    header = ["round", *(f"{name} /s" for name, _ in versions), "PgQueuer /s",
              *(f"{name} / PgQueuer" for name, _ in versions)]
    rows = []
    for r in range(args.rounds):
        peer = figures["PgQueuer"][r]
        rows.append([str(r + 1), *(fmt(figures[name][r]) for name, _ in versions), fmt(peer),
                     *("—" if figures[name][r] is None or not peer
                       else f"{figures[name][r] / peer:.2f}" for name, _ in versions)])
    last = versions[-1][0]
    met = all(v is not None and p and v >= p
              for v, p in zip(figures[last], figures["PgQueuer"], strict=True))
    from _results import table, write_section

    text = table(header, rows)
    verdict = (f"Target (issue 31), {last} ≥ 1.0x PgQueuer in {args.rounds} interleaved runs "
               f"of {args.repeats}: {'met' if met else 'NOT met'}.")
    print(text + "\n" + verdict)
    if args.no_write:
        return
    described = ", ".join(f"{name} = `{commit}`" for name, commit in versions)
    write_section("Batch adds against PgQueuer", "\n\n".join([
        text, verdict,
        f"Versions: {described}. {args.tasks:,} no-op tasks per batch: roadie "
        "`app.add_tasks(list)` (one transaction), PgQueuer one `enqueue` of lists; each figure "
        f"the median of {args.repeats} batches in one subprocess on a fresh database; the "
        f"subprocesses rotate their order from round to round. Load average {load:.2f} at "
        "start.",
        "```\n" + "\n".join(raw) + "\n```"]))


if __name__ == "__main__":
    main()

"""Idle worker memory: `roadie worker` and a worker started from Python, per database, before
and after a change, with where the memory goes.

For each backend (a fresh database with roadie's schema), each round starts, one after the
other, in fresh processes:

- ``cli``: ``python -m roadie --url URL worker`` (default settings);
- ``python``: ``roadie.Roadie(URL).run_worker()`` from a small script;

waits until the worker registered its node, then 3 s (a few idle rounds), and reads its
resident set (VmRSS). The Python-started worker is then stopped with SIGTERM and says which of
the watched modules (the command line, the web app, Django, each database's dialect and driver)
it had loaded. With ``--against ROOT`` (an exported tree, ``git archive COMMIT core plugins |
tar -x -C ROOT``), every measurement is made with that tree's ``core/`` and first-party
``plugins/`` first on ``PYTHONPATH`` too, alternating with this checkout's, round by round.

Each tree's ``core/`` and ``plugins/`` are compiled to bytecode first (``__pycache__``), as pip
does when it installs a package: otherwise, where PYTHONDONTWRITEBYTECODE is set (as on the
benchmark machine) or the checkout is read-only, every worker would compile roadie's modules
from source at each start, and the compiler's leftovers would count (about 1 MB).

The breakdown (this checkout only, Python-started, per backend): the RSS after each step of a
fresh process (the interpreter; asyncio, which SQLAlchemy imports and which imports ssl;
SQLAlchemy; the plugin machinery; roadie; the plugins; the database; the idle worker) and the
Python allocations of the idle worker by package (tracemalloc, traced from the start, in
another process: its records would count in the RSS); and the floor, step by step: a process
with SQLAlchemy and the driver holding one connection, without roadie.

Target (issue 31): an idle worker at most 45 MB on both databases.

    python bench/memory.py [--rounds 3] [--backend sqlite|postgres|both] [--against ROOT]
                           [--no-write]

PostgreSQL: database ``roadie_bench_memory`` on 127.0.0.1:5432 (user postgres), dropped and
created again for each run; ROADIE_BENCH_MEMORY_PG points elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import roadie
from _databases import fresh_postgres
from _results import table, write_section
from _trees import PLUGINS, ROOT, compile_tree, environ

PG_URL = os.environ.get("ROADIE_BENCH_MEMORY_PG",
                        "postgresql://postgres@127.0.0.1:5432/roadie_bench_memory")
WATCHED = ["click", "rich", "starlette", "roadie.cli", "roadie.web", "django",
           "sqlalchemy.dialects.sqlite", "sqlite3", "sqlalchemy.dialects.postgresql", "psycopg",
           "alembic"]
TARGET_MB = 45.0

PYTHON_WORKER = """
import json, sys
import roadie
roadie.Roadie(sys.argv[1]).run_worker()
print(json.dumps(sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)))
"""

BREAKDOWN = """
import collections, json, os, sys, threading, time, tracemalloc
TRACE = sys.argv[2] == "trace"  # tracemalloc's own records would count in the RSS
if TRACE:
    tracemalloc.start(25)
def rss():
    with open("/proc/self/status") as f:
        return int(next(l.split()[1] for l in f if l.startswith("VmRSS:"))) / 1024
steps = [("the interpreter", rss())]
import asyncio; steps.append(("+ asyncio (with ssl; SQLAlchemy imports it)", rss()))
import sqlalchemy; steps.append(("+ SQLAlchemy", rss()))
import importlib.metadata, msgpack, pluggy
steps.append(("+ importlib.metadata, msgpack, pluggy", rss()))
import roadie; steps.append(("+ roadie", rss()))
app = roadie.Roadie(sys.argv[1]); app.plugins.load(); steps.append(("+ the plugins", rss()))
app.store; steps.append(("+ the database (engine, driver, dialect, schema check)", rss()))
def report():
    time.sleep(4)
    steps.append(("+ the idle worker (threads, first rounds)", rss()))
    packages = collections.Counter()
    for stat in tracemalloc.take_snapshot().statistics("traceback") if TRACE else []:
        name = next((f.filename for f in reversed(stat.traceback)
                     if not f.filename.startswith("<")), "?")
        if "site-packages/" in name:
            name = name.split("site-packages/")[1].split("/")[0].removesuffix(".py")
        elif "/roadie/" in name:
            name = "roadie"
        elif "/python3" in name:
            name = "standard library"
        packages[name] += stat.size
    print(json.dumps({"steps": steps, "packages": packages.most_common(8),
                      "traced": sum(packages.values())}), flush=True)
    os._exit(0)
threading.Thread(target=report, daemon=True).start()
app.run_worker()
"""

# The floor: SQLAlchemy and the database's driver holding one connection, no roadie (nor pluggy,
# msgpack): what any SQLAlchemy program on this database keeps, step by step in one process
FLOOR = """
import json, sys
def rss():
    with open("/proc/self/status") as f:
        return int(next(l.split()[1] for l in f if l.startswith("VmRSS:"))) / 1024
steps = [("the interpreter", rss())]
import asyncio; steps.append(("+ asyncio, with ssl and OpenSSL (SQLAlchemy imports it)", rss()))
import sqlalchemy as sa; steps.append(("+ SQLAlchemy", rss()))
if sa.engine.make_url(sys.argv[1]).get_backend_name() == "sqlite":
    import sqlite3; steps.append(("+ the driver (sqlite3, libsqlite3)", rss()))
else:
    import psycopg
    steps.append(("+ the driver (psycopg, psycopg-binary's libpq, OpenSSL, Kerberos, LDAP)",
                  rss()))
engine = sa.create_engine(sys.argv[1]); steps.append(("+ SQLAlchemy's dialect", rss()))
with engine.connect() as conn:
    conn.execute(sa.text("SELECT 1"))
steps.append(("+ one connection (SELECT 1)", rss()))
print(json.dumps(steps))
"""


def fresh_database(backend: str, tmp: Path) -> str:
    """The URL of a new database for ``backend``, with roadie's schema."""
    url = f"sqlite:///{tmp / 'roadie.db'}" if backend == "sqlite" else fresh_postgres(PG_URL)
    app = roadie.Roadie(url, data_dir=tmp, auto_upgrade=True)
    app.store  # noqa: B018 - create the schema
    app.close()
    return url


def idle_rss(url: str, mode: str, env: dict[str, str], app: roadie.Roadie
             ) -> tuple[float, list[str]]:
    """The RSS (MB) of an idle worker started as ``mode``, and the watched modules it loaded
    (Python-started only)."""
    if mode == "cli":
        command = [sys.executable, "-m", "roadie", "--url", url, "worker"]
    else:
        command = [sys.executable, "-c", PYTHON_WORKER, url, json.dumps(WATCHED)]
    before = {n.id for n in app.list_nodes()}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 120
        while not {n.id for n in app.list_nodes()} - before:
            if time.monotonic() > deadline or process.poll() is not None:
                sys.exit(f"the {mode} worker did not start")
            time.sleep(0.05)
        time.sleep(3)
        status = Path(f"/proc/{process.pid}/status").read_text()
        rss = int(next(line.split()[1] for line in status.splitlines()
                       if line.startswith("VmRSS:"))) / 1024
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    loaded = json.loads(out.strip().splitlines()[-1]) if mode == "python" and out.strip() \
        else []
    return rss, loaded


def breakdown(url: str, env: dict[str, str]) -> dict[str, Any]:
    """Where an idle Python-started worker's memory goes (this checkout)."""
    run = subprocess.run([sys.executable, "-c", FLOOR, url], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    found: dict[str, Any] = {"floor": json.loads(run.stdout.strip().splitlines()[-1])}
    for what in ("rss", "trace"):
        run = subprocess.run([sys.executable, "-c", BREAKDOWN, url, what], env=env,
                             capture_output=True, text=True, timeout=300, check=True)
        figures = json.loads(run.stdout.strip().splitlines()[-1])
        if what == "rss":
            found["steps"] = figures["steps"]
        else:
            found["packages"], found["traced"] = figures["packages"], figures["traced"]
    return found


def step_rows(steps: list[tuple[str, float]]) -> list[list[str]]:
    """Table rows of a process's steps: the RSS after each and what it added."""
    return [[what, f"{mb:.1f} MB", f"{mb - steps[i - 1][1]:+.1f} MB" if i else ""]
            for i, (what, mb) in enumerate(steps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--against", help="an exported tree (with core/, plugins/) to compare")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    trees: list[tuple[str, Path | None]] = [("this checkout", None)]
    if args.against:
        trees.insert(0, ("before", Path(args.against).resolve()))
    for _, tree in trees:
        compile_tree(tree or ROOT)
    rss: dict[tuple[str, str, str], list[float]] = {}
    loaded: dict[tuple[str, str], set[str]] = {}
    parts = []
    with tempfile.TemporaryDirectory(prefix="roadie-bench-memory-") as tmp_name:
        tmp = Path(tmp_name)
        for backend in backends:
            url = fresh_database(backend, tmp)
            app = roadie.Roadie(url, data_dir=tmp)
            try:
                for _ in range(args.rounds):
                    for label, tree in trees:
                        for mode in ("cli", "python"):
                            mb, modules = idle_rss(url, mode, environ(tree, tmp), app)
                            rss.setdefault((backend, label, mode), []).append(mb)
                            if mode == "python":
                                loaded[(backend, label)] = set(modules)
                            print(f"  {backend} {label} {mode}: {mb:.1f} MB "
                                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
                found = breakdown(url, environ(None, tmp))
            finally:
                app.close()
            rows = step_rows(found["steps"])
            packages = ", ".join(f"{name} {size / 1e6:.1f} MB"
                                 for name, size in found["packages"])
            parts.append(f"**Breakdown, {backend}** (this checkout, a worker started from "
                         f"Python, steps of one fresh process):\n\n"
                         + table(["step", "RSS", "step's share"], rows)
                         + f"\n\nPython allocations of the idle worker (tracemalloc, "
                         f"{found['traced'] / 1e6:.1f} MB traced), by package: {packages}."
                         f"\n\nThe floor, {backend}: SQLAlchemy and the driver holding one "
                         f"connection, without roadie (steps of one fresh process):\n\n"
                         + table(["step", "RSS", "step's share"], step_rows(found["floor"])))
    rows = []
    for backend in backends:
        for mode in ("cli", "python"):
            row = [backend, "`roadie worker`" if mode == "cli" else "`app.run_worker()`"]
            medians = [statistics.median(rss[(backend, label, mode)]) for label, _ in trees]
            row += [f"{m:.1f} MB" for m in medians]
            if len(trees) == 2:
                row.append(f"{medians[1] - medians[0]:+.1f} MB")
            row.append("yes" if medians[-1] <= TARGET_MB else "NO")
            rows.append(row)
    header = ["backend", "started by", *(f"idle RSS, {label}" for label, _ in trees)]
    if len(trees) == 2:
        header.append("change")
    header.append(f"≤ {TARGET_MB:.0f} MB")
    watched = "; ".join(
        f"{backend}, {label}: {', '.join(sorted(loaded[(backend, label)])) or 'none'}"
        for backend in backends for label, _ in trees)
    content = "\n\n".join([
        table(header, rows),
        f"Median of {args.rounds} rounds; in each round every worker is a fresh process"
        f"{', and the two trees alternate' if len(trees) == 2 else ''}. Idle RSS: VmRSS 3 s "
        f"after the worker registered its node (default settings, one process, the plugins "
        f"installed here: {', '.join(PLUGINS)}; no DJANGO_SETTINGS_MODULE; each tree's core "
        f"and plugins compiled to bytecode first, as pip installs them). "
        + (f"Before: `{args.against}` (core and plugins) first on PYTHONPATH. "
           if args.against else "")
        + f"Watched modules a Python-started worker had loaded ({', '.join(WATCHED)}): "
        f"{watched}.",
        *parts,
    ])
    print(content)
    if not args.no_write:
        write_section("Idle worker memory", content)


if __name__ == "__main__":
    main()

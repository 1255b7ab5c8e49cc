"""The architecture as a test: the layers contract in pyproject.toml holds, the diagram of
docs/architecture.md draws it, and no runtime import makes a circle among roadie's modules
(imports under TYPE_CHECKING do not count).

docs/architecture.md draws the layers; ``[tool.importlinter]`` in pyproject.toml is the
contract. An import the contract ignores (``ignore_imports``) is left out here too, so the
exceptions are written down in one place.
"""

from __future__ import annotations

import json
import os
import pkgutil
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]

# Circles that another change removes, each with what ends it. An entry that no longer
# matches a circle fails the test: delete it then.
KNOWN_CIRCLES: dict[frozenset[str], str] = {}


def contracts() -> list[dict[str, Any]]:
    """The import-linter contracts of pyproject.toml."""
    from importlinter.api import read_configuration

    return list(read_configuration(str(ROOT / "pyproject.toml"))["contracts_options"])


def layer_units() -> set[str]:
    """The modules and packages the layers contract names (``roadie.cli``,
    ``roadie.hosts.main``, ...)."""
    units = set()
    for contract in contracts():
        containers = contract.get("containers") or [""]
        for layer in contract.get("layers", []):
            for name in re.split(r"[|:]", layer):
                name = name.strip().strip("()")
                units.update(f"{c}.{name}" if c else name for c in containers)
    return units


def ignored_imports() -> set[tuple[str, str]]:
    """The ``importer -> imported`` pairs the layers contract ignores."""
    pairs = set()
    for contract in contracts():
        for expression in contract.get("ignore_imports", []):
            importer, _, imported = (part.strip() for part in expression.partition("->"))
            assert "*" not in expression, f"name the modules of {expression!r} exactly"
            pairs.add((importer, imported))
    return pairs


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("roadie", exclude_type_checking_imports=True, cache_dir=None)


def edges_of(graph: grimp.ImportGraph, part_of: Mapping[str, str]) -> dict[str, set[str]]:
    """The runtime imports between the nodes that ``part_of`` maps each module to, without
    the imports the contract ignores."""
    ignored = ignored_imports()
    edges: dict[str, set[str]] = {node: set() for node in set(part_of.values())}
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            if (importer, imported) in ignored:
                continue
            source, target = part_of[importer], part_of[imported]
            if source != target:
                edges[source].add(target)
    return edges


def circles(edges: Mapping[str, Iterable[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one node (Tarjan, without recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(edges[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.add(frozenset(component))
    return found


def describe(graph: grimp.ImportGraph, circle: frozenset[str], part_of: Mapping[str, str]) -> str:
    """One circle with the imports that make it, ``importer:line -> imported``."""
    lines = [" <-> ".join(sorted(circle))]
    for importer in sorted(m for m in graph.modules if part_of[m] in circle):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if part_of[imported] in circle and part_of[imported] != part_of[importer]:
                for detail in graph.get_import_details(importer=importer, imported=imported):
                    lines.append(f"    {importer}:{detail['line_number']} -> {imported}")
    return "\n".join(lines)


def check_circles(graph: grimp.ImportGraph, part_of: Mapping[str, str]) -> None:
    found = circles(edges_of(graph, part_of))
    new = [c for c in found if c not in KNOWN_CIRCLES]
    assert not new, "runtime import circles:\n" + "\n".join(
        describe(graph, c, part_of) for c in sorted(new, key=sorted))


def test_no_circle_among_modules(graph: grimp.ImportGraph) -> None:
    """No module reaches itself through runtime imports (a package is its ``__init__``: a
    submodule importing its own package's ``__init__``, which imports it, is a circle)."""
    check_circles(graph, {module: module for module in graph.modules})


def test_no_circle_among_the_parts_of_roadie(graph: grimp.ImportGraph) -> None:
    """Seen from above, with each part the layers contract names taken whole (``roadie.cli``,
    ``roadie.web``, ``roadie.app``, ``roadie.hosts.pool``, ...), the parts make no circle
    either: no import path leaves a part and comes back to it."""
    units = layer_units()

    def part(module: str) -> str:
        names = [u for u in units if module == u or module.startswith(u + ".")]
        return max(names, key=len) if names else module

    check_circles(graph, {module: part(module) for module in graph.modules})


def test_known_circles_still_exist(graph: grimp.ImportGraph) -> None:
    """A known circle that has gone is deleted from KNOWN_CIRCLES (so none can come back)."""
    found = circles(edges_of(graph, {module: module for module in graph.modules}))
    gone = [", ".join(sorted(c)) for c in KNOWN_CIRCLES if c not in found]
    assert not gone, f"these circles are gone, delete them from KNOWN_CIRCLES: {gone}"


def test_the_layers_contract_is_kept() -> None:
    """``lint-imports`` (the contract in pyproject.toml) passes."""
    run = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
         "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_docs_diagram_says_what_the_contract_says() -> None:
    """docs/architecture.md draws the contract's layers, in its order, with the same modules
    and separators (each layer is a node ``Lnn["..."]`` of its Mermaid diagram)."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    diagram = page.split("```mermaid", 1)[1].split("```", 1)[0]
    drawn = re.findall(r'^\s*L\d+\["([^"]+)"\]', diagram, flags=re.MULTILINE)
    (layers,) = [c["layers"] for c in contracts() if c.get("id") == "layers"]
    assert [" ".join(layer.split()) for layer in drawn] == [
        " ".join(layer.split()) for layer in layers]


def test_circles_finds_a_circle_and_its_members() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert circles(edges) == {frozenset({"a", "b", "c"})}


# What a worker started from Python (``app.run_worker``) must not load: the command line and
# its terminal output, the web app, the async client, Django without its settings,
# OpenTelemetry while the program uses none (roadie-opentelemetry installed), the host
# processes' pool while no executor runs in one (none of the installed plugins' does; it was
# imported by the first claim); greenlet (with libstdc++, about 1 MB) while no async attempt
# ran, though the event loop of the installed async executors runs; alembic while the schema
# is current; on each database, the other database's SQLAlchemy dialect and driver; what only
# a task that uses it needs (subtasks, lightweight children, attachments) and what only a
# program asks (watching tasks, why one waits) (issue 31: idle memory, async executors).
NOT_IN_A_WORKER = ("click", "rich", "starlette", "uvicorn", "roadie.cli", "roadie.web",
                   "roadie.aio_client", "django", "opentelemetry", "roadie.hosts", "greenlet",
                   "alembic", "roadie.trees", "roadie.lightweight", "roadie.attachments",
                   "roadie.app.watching", "roadie.app.waiting")
OTHER_DATABASE = {"sqlite": ("sqlalchemy.dialects.postgresql", "psycopg"),
                  "postgresql": ("sqlalchemy.dialects.sqlite", "sqlite3")}
WORKER_SCRIPT = """
import json, sys
import roadie
app = roadie.Roadie(sys.argv[1], data_dir=sys.argv[2])
stats = app.run_worker(concurrency=1, until_idle=True)
app.close()
print(json.dumps({"ran": stats.finished, "loaded": sorted(
    m for m in json.loads(sys.argv[3]) if m in sys.modules)}))
"""


def _one_task_waits(db_url: str, tmp_path: Path) -> str:
    """Add one no-op task in a fresh data directory (the schema made); the dialect's name."""
    from roadie.testing import make_app

    app = make_app(db_url, tmp_path / "data")
    try:
        app.add_task("roadie-examples:noop", {})
        return str(app.store.engine.dialect.name)
    finally:
        app.close()


def test_a_worker_started_from_python_loads_no_cli_web_or_other_database(
        db_url: str, tmp_path: Path) -> None:
    """``import roadie`` and a worker run from Python (the plugins installed here loaded,
    a task run) import none of ``NOT_IN_A_WORKER`` nor the other database's modules."""
    watched = [*NOT_IN_A_WORKER, *OTHER_DATABASE[_one_task_waits(db_url, tmp_path)]]
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    run = subprocess.run([sys.executable, "-c", WORKER_SCRIPT, db_url, str(tmp_path / "data"),
                          json.dumps(watched)], capture_output=True, text=True, timeout=300,
                         env=env)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found == {"ran": 1, "loaded": []}


# What `roadie worker` must not load beyond what a worker started from Python must not: it
# needs click and its own command (roadie.cli, roadie.cli.common, roadie.cli.worker), not the
# other commands' modules nor what only they use: rich while stderr is not a terminal (its log
# lines are then jsonlog's LineFormatter's), the plugin starter (issue 31: idle memory)
NOT_IN_A_CLI_WORKER = (
    *(name for name in NOT_IN_A_WORKER if name not in ("click", "roadie.cli")),
    "roadie.starter",
    *(f"roadie.cli.{module.name}" for module in pkgutil.iter_modules(
        [str(ROOT / "core" / "roadie" / "cli")]) if module.name not in ("common", "worker")),
)
CLI_WORKER_SCRIPT = """
import json, sys
from roadie.cli import cli
cli.main(args=sys.argv[2:], prog_name="roadie", standalone_mode=False)
print(json.dumps(sorted(m for m in json.loads(sys.argv[1]) if m in sys.modules)))
"""


def test_roadie_worker_loads_no_other_command_nor_rich(db_url: str, tmp_path: Path) -> None:
    """``roadie worker --until-idle`` with its stderr a pipe (the plugins installed here
    loaded, a task run) imports none of ``NOT_IN_A_CLI_WORKER`` nor the other database's
    modules."""
    watched = [*NOT_IN_A_CLI_WORKER, *OTHER_DATABASE[_one_task_waits(db_url, tmp_path)]]
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "ROADIE_LOG_FORMAT")}
    env["ROADIE_DATA_DIR"] = str(tmp_path / "data")
    run = subprocess.run([sys.executable, "-c", CLI_WORKER_SCRIPT, json.dumps(watched),
                          "--url", db_url, "worker", "--concurrency", "1", "--until-idle"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    *_, stopped, loaded = run.stdout.strip().splitlines()
    assert stopped.startswith("worker stopped: 1 task(s) run")
    assert json.loads(loaded) == []


# What a host process must not load: it never opens the database (its worker does), so neither
# SQLAlchemy nor a driver; its template imports roadie and the plugins once, and every host of
# the worker is forked from it (issue 31: a host's cold start)
NOT_IN_A_HOST = ("sqlalchemy", "psycopg", "psycopg_pool", "alembic", "click", "rich",
                 "starlette", "uvicorn", "roadie.cli", "roadie.web", "roadie.aio_client")


def test_a_host_process_loads_no_sqlalchemy_nor_driver(make_plugin: Any, db_url: str,
                                                        tmp_path: Path) -> None:
    """A task run in a host (forked from the worker's template host, with the plugins
    installed here loaded) finds none of ``NOT_IN_A_HOST`` in its process."""
    from roadie.testing import make_app

    from tests import host_plugin

    make_plugin(host_plugin.DIST, {f"{host_plugin.MODULE}.py": host_plugin.SOURCE},
                host_plugin.EXECUTORS, hooks=host_plugin.MODULE)
    app = make_app(db_url, tmp_path / "data")
    try:
        task = app.add_task("hosty:modules", {"watched": list(NOT_IN_A_HOST)})
        app.run_worker(concurrency=1, until_idle=True)
        record = app.get_task(task.id)
    finally:
        app.close()
    assert record.status.name == "SUCCESSFUL", record.status_message
    pid, loaded = record.status_message.removeprefix("pid ").split(" loaded ")
    assert int(pid) != os.getpid()
    assert loaded == "[]"

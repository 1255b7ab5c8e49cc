"""Many workers: exactly-once claims across processes, isolation, tags, priority, delays."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import roadie
from click.testing import CliRunner
from roadie import Status
from roadie.cli import cli
from roadie.testing import BackgroundWorker, wait_final, wait_for

from tests import record_plugin
from tests.processes import worker_env


def drain_with_processes(app: roadie.Roadie, recorded: dict[str, Any], tmp_path: Path,
                         processes: int, concurrency: int = 2, timeout: float = 240) -> None:
    """Run `roadie worker --processes N --until-idle` and wait for it to exit cleanly."""
    log = tmp_path / "workers.log"
    with log.open("wb") as out:
        code = subprocess.call(
            [sys.executable, "-m", "roadie", "--url", app.url, "worker", "--processes",
             str(processes), "--concurrency", str(concurrency), "--until-idle"],
            env=worker_env(tmp_path / "data", [recorded["site"]]), stdout=out,
            stderr=subprocess.STDOUT, timeout=timeout,
        )
    assert code == 0, log.read_text()[-3000:]


def fresh_app(app: roadie.Roadie) -> roadie.Roadie:
    """A Roadie that sees the plugins created after ``app`` was made."""
    return roadie.Roadie(app.url, settings=app.settings)


def overlaps(spans: list[tuple[float, float]]) -> bool:
    spans = sorted(spans)
    return any(b[0] < a[1] for a, b in itertools.pairwise(spans))


@pytest.mark.slow
def test_worker_processes_run_every_task_exactly_once(app: roadie.Roadie, recorded: dict,
                                                      tmp_path: Path) -> None:
    total, processes = (2000, 4) if app.store.is_postgres else (400, 2)
    client = fresh_app(app)
    tasks = client.add_tasks([
        {"executor": "roadie-recorded:record",
         "context": {"runs_url": recorded["runs_url"], "seconds": 0}}
        for _ in range(total)
    ])
    drain_with_processes(client, recorded, tmp_path, processes)
    started = record_plugin.runs(recorded["runs_url"], "start")
    ids = [r["task_id"] for r in started]
    assert len(ids) == total, "a task ran twice or not at all"
    assert set(ids) == {t.id for t in tasks}
    assert len({r["pid"] for r in started}) == processes  # every process did its share
    counts = client.store.count_tasks()
    assert counts == {Status.SUCCESSFUL: total}
    client.close()


@pytest.mark.slow
def test_serial_executor_never_overlaps_across_processes(app: roadie.Roadie, recorded: dict,
                                                         tmp_path: Path) -> None:
    client = fresh_app(app)
    client.add_tasks([
        {"executor": "roadie-recorded:serial",
         "context": {"runs_url": recorded["runs_url"], "seconds": 0.05}}
        for _ in range(16)
    ] + [
        {"executor": "roadie-recorded:record",
         "context": {"runs_url": recorded["runs_url"], "seconds": 0.05}}
        for _ in range(16)
    ])
    drain_with_processes(client, recorded, tmp_path, processes=4)
    serial_ids = {t.id for t in client.list_tasks(executor="roadie-recorded:serial", limit=None)}
    ended = [r for r in record_plugin.runs(recorded["runs_url"], "end")
             if r["task_id"] in serial_ids]
    assert len(ended) == 16
    assert not overlaps([(r["started"], r["ended"]) for r in ended])
    assert client.store.held_locks() == {}
    assert client.store.count_tasks() == {Status.SUCCESSFUL: 32}
    client.close()


@pytest.mark.slow
def test_group_isolation(app: roadie.Roadie, recorded: dict, tmp_path: Path) -> None:
    client = fresh_app(app)
    client.add_tasks([
        {"executor": "roadie-recorded:grouped", "group": group,
         "context": {"runs_url": recorded["runs_url"], "seconds": 0.25}}
        for _ in range(4) for group in ("site-1", "site-2")
    ])
    drain_with_processes(client, recorded, tmp_path, processes=2)
    groups = {t.id: t.group for t in client.list_tasks(limit=None)}
    spans: dict[str | None, list[tuple[float, float]]] = defaultdict(list)
    for r in record_plugin.runs(recorded["runs_url"], "end"):
        spans[groups[r["task_id"]]].append((r["started"], r["ended"]))
    assert len(spans["site-1"]) == len(spans["site-2"]) == 4
    assert not overlaps(spans["site-1"]) and not overlaps(spans["site-2"])
    assert overlaps(spans["site-1"] + spans["site-2"])  # the two groups ran side by side
    client.close()


def test_isolated_task_waits_as_queued(app: roadie.Roadie) -> None:
    first = app.add_task("tests:serial", {"seconds": 0.3})
    second = app.add_task("tests:serial", {"seconds": 0})
    assert app.get_task(second.id).status is Status.QUEUED  # behind the first, when added
    assert app.waiting_reason(app.get_task(second.id)) == (
        f"queued: task {first.id} runs first (isolation key 'tests:serial', one at a time)")
    with BackgroundWorker(app, concurrency=2):
        wait_for(lambda: app.get_task(first.id).status is Status.IN_PROGRESS,
                 message="the first serial task to start")
        assert app.get_task(second.id).status is Status.QUEUED
        reason = app.waiting_reason(app.get_task(second.id))
        assert reason == f"queued: task {first.id} holds isolation key 'tests:serial'"
        assert wait_final(app, second.id).status is Status.SUCCESSFUL
    assert app.get_task(first.id).finished_at <= app.get_task(second.id).started_at
    assert app.store.held_locks() == {}


def test_tags_choose_the_node(app: roadie.Roadie) -> None:
    gpu = app.add_task("roadie-examples:echo", {"x": 1}, tags={"gpu"})
    plain = app.add_task("roadie-examples:echo", {"x": 2})
    with BackgroundWorker(app, concurrency=1, name="cpu-node"):
        wait_final(app, plain.id)
        waiting = app.get_task(gpu.id)
        assert waiting.status is Status.NEW
        assert app.waiting_reason(waiting) == "waiting: no worker has tags gpu"
        with BackgroundWorker(app, concurrency=1, name="gpu-node", tags={"gpu", "big"}):
            done = wait_final(app, gpu.id)
    node = {n.id: n.name for n in app.list_nodes(include_stopped=True)}[done.node]
    assert node == "gpu-node"


def test_priority_and_delay(app: roadie.Roadie) -> None:
    # A delayed task starts once due, not before; a worker run until idle waits for one due
    # within the pending horizon, not for one due in an hour. (Which of two due tasks starts
    # first depends on when the first claim comes, so the order of starts is not asserted.)
    later = app.add_task("roadie-examples:echo", {}, delay=2.0)
    distant = app.add_task("roadie-examples:echo", {}, delay=3600.0)
    now = app.add_task("roadie-examples:echo", {})
    assert app.waiting_reason(app.get_task(later.id)).startswith("waiting: runs after")
    app.run_worker(concurrency=1, until_idle=True)
    done_later, done_now = app.get_task(later.id), app.get_task(now.id)
    assert done_later.status is done_now.status is Status.SUCCESSFUL
    assert (done_later.started_at - done_later.created_at).total_seconds() >= 2.0
    assert app.get_task(distant.id).status is Status.NEW


def test_nodes_are_registered_and_listed(app: roadie.Roadie, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    with BackgroundWorker(app, concurrency=3, name="node-a", tags={"eu"}):
        node = wait_for(lambda: [n for n in app.list_nodes() if n.name == "node-a"])[0]
        assert node.concurrency == 3 and node.tags == {"eu"}
        assert "roadie-examples" in node.plugins
        assert node.executors["roadie-examples:serial"] == "class"
        monkeypatch.setenv("ROADIE_DATA_DIR", str(tmp_path / "data"))
        result = CliRunner().invoke(cli, ["--url", app.url, "nodes"])
        assert "node-a" in result.output and "alive" in result.output
    assert [n for n in app.list_nodes() if n.name == "node-a"] == []
    stopped = [n for n in app.list_nodes(include_stopped=True) if n.name == "node-a"]
    assert stopped[0].stopped_at is not None


def test_add_task_for_an_executor_only_a_live_node_has(app: roadie.Roadie, make_plugin: Any,
                                                       tmp_path: Path) -> None:
    app.plugins.load()  # discover now, before the plugin below exists
    make_plugin("roadie-remote", {"remote_plugin.py": (
        "import roadie\n"
        "class Job(roadie.Executor):\n"
        "    isolation = roadie.Isolation.CLASS\n"
        "    def execute(self, task):\n"
        "        return roadie.Result.success('remote done')\n")},
        {"job": "remote_plugin:Job"})
    having = fresh_app(app)
    with BackgroundWorker(having, concurrency=1):
        wait_for(lambda: app.list_nodes())
        # `app` was made before the plugin existed: it only knows the plugin from the node
        assert "roadie-remote:job" not in app.plugins.executor_names()
        task = app.add_task("roadie-remote:job", {})
        assert task.plugins == {"roadie-remote": "0.1"}
        assert task.isolation_key == "roadie-remote:job"
        assert wait_final(app, task.id).status_message == "remote done"
    with pytest.raises(roadie.UnknownExecutor, match="unknown executor 'roadie-remote:job'"):
        app.add_task("roadie-remote:job", {})  # no live node has it any more
    having.close()

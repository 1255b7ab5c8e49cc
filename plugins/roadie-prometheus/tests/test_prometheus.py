"""The Prometheus plugin after real runs: the text output, parsed, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import roadie
from prometheus_client.parser import text_string_to_metric_families
from roadie import Status
from roadie.testing import BackgroundWorker, wait_final, wait_for
from roadie_prometheus import render
from roadie_prometheus.hooks import PORT_VARIABLE


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page: (name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(page: dict, name: str, **labels: str) -> float:
    return page.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_after_a_run(roadie_db_app: roadie.Roadie) -> None:
    app = roadie_db_app
    before = samples(render().decode())
    app.add_tasks([{"executor": "roadie-examples:noop"} for _ in range(3)])
    app.add_task("roadie-examples:fail", {})
    app.add_tasks([{"executor": "roadie-examples:wait", "context": {"seconds": 0.01}}
                   for _ in range(2)])
    app.add_task("roadie-examples:noop", delay=60)  # waits: queue depth 1
    app.run_worker(concurrency=2, until_idle=True)
    page = samples(render().decode())

    def delta(name: str, **labels: str) -> float:
        return value(page, name, **labels) - value(before, name, **labels)

    assert delta("roadie_attempts_total", executor="roadie-examples:noop") == 3
    assert delta("roadie_tasks_ended_total", executor="roadie-examples:noop",
                 status="successful") == 3
    assert delta("roadie_tasks_ended_total", executor="roadie-examples:fail",
                 status="failed") == 1
    assert delta("roadie_attempt_failures_total", executor="roadie-examples:fail") == 1
    assert delta("roadie_attempt_duration_seconds_count", executor="roadie-examples:wait",
                 kind="async", outcome="successful") == 2
    assert delta("roadie_attempt_duration_seconds_count", executor="roadie-examples:noop",
                 kind="thread", outcome="successful") == 3
    assert delta("roadie_task_wait_seconds_count", executor="roadie-examples:wait") == 2
    # gauges read from the database
    assert value(page, "roadie_tasks", status="successful",
                 executor="roadie-examples:noop") == 3
    assert value(page, "roadie_tasks", status="failed", executor="roadie-examples:fail") == 1
    assert value(page, "roadie_queue_depth", executor="roadie-examples:noop") == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_worker_serves_metrics_with_busy_slots_and_heartbeats(
        roadie_db_app: roadie.Roadie, monkeypatch: pytest.MonkeyPatch) -> None:
    app = roadie_db_app
    port = free_port()
    monkeypatch.setenv("ROADIE_METRICS_PORT", str(port))
    task = app.add_task("roadie-examples:wait", {"seconds": 3600})
    with BackgroundWorker(app, concurrency=3, async_concurrency=7):
        wait_for(lambda: app.get_task(task.id).status is Status.IN_PROGRESS)

        def page() -> dict | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
                    return samples(response.read().decode())
            except OSError:
                return None

        found = wait_for(page, message="the metrics endpoint")
        assert value(found, "roadie_worker_busy", kind="async") == 1
        assert value(found, "roadie_worker_busy", kind="thread") == 0
        assert value(found, "roadie_worker_slots", kind="async") == 7
        assert value(found, "roadie_worker_slots", kind="thread") == 3
        assert any(name == "roadie_node_heartbeat_timestamp_seconds" and v > 0
                   for (name, _), v in found.items())
        app.cancel_task(task.id)
        assert wait_final(app, task.id).status is Status.CANCELLED


def free_ports(count: int) -> int:
    """A port P such that P, P+1, ..., P+count-1 are free now."""
    while True:
        base = free_port()
        try:
            for offset in range(1, count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue


def metrics_at(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return samples(response.read().decode())
    except OSError:
        return None


def test_each_worker_process_serves_its_own_port(roadie_db_app: roadie.Roadie,
                                                 tmp_path: Path) -> None:
    app = roadie_db_app
    base = free_ports(2)
    env = {**os.environ, "ROADIE_DATA_DIR": str(tmp_path / "data"),
           "ROADIE_HEARTBEAT_INTERVAL": "0.2", "ROADIE_SQLITE_POLL_INTERVAL": "0.02"}
    env.pop(PORT_VARIABLE, None)
    log = (tmp_path / "w.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "roadie", "--url", app.url, "worker", "-p", "2", "-c", "1",
         "--async-concurrency", "5", "--metrics-port", str(base)],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        pages = [wait_for(lambda p=port: metrics_at(p), timeout=60,
                          message=f"metrics on port {port}") for port in (base, base + 1)]
        for page in pages:
            assert value(page, "roadie_worker_slots", kind="async") == 5
            assert value(page, "roadie_worker_slots", kind="thread") == 1
        wait_for(lambda: len(app.list_nodes()) == 2, message="two worker nodes")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(30) == 0, (tmp_path / "w.log").read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()


def test_a_taken_port_is_a_clear_error_and_tasks_still_run(
        roadie_db_app: roadie.Roadie, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    app = roadie_db_app
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv(PORT_VARIABLE, str(port))
        task = app.add_task("roadie-examples:noop", {})
        with caplog.at_level(logging.ERROR, logger="roadie_prometheus"):
            app.run_worker(concurrency=1, until_idle=True)
    assert app.get_task(task.id).status is Status.SUCCESSFUL
    errors = [r.getMessage() for r in caplog.records if r.name == "roadie_prometheus"]
    assert len(errors) == 1
    assert errors[0].startswith(f"roadie-prometheus: cannot serve metrics on port {port}: ")
    assert f"--metrics-port {port}; choose a free port" in errors[0]


def test_the_web_app_serves_metrics_behind_its_token(roadie_db_app: roadie.Roadie) -> None:
    from roadie.web import create_app
    from starlette.testclient import TestClient

    app = roadie_db_app
    app.add_task("roadie-examples:noop", {})
    with TestClient(create_app(app, token="s3cret-token-for-tests")) as client:
        refused = client.get("/metrics")
        assert refused.status_code == 401
        assert refused.json()["error"].startswith("authentication required")
        page = client.get("/metrics", headers={"Authorization": "Bearer s3cret-token-for-tests"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain")
    found = samples(page.text)
    assert value(found, "roadie_tasks", status="new", executor="roadie-examples:noop") == 1

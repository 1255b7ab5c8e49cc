"""The metrics: counters and histograms fed by roadie's hooks, and gauges read from the
database and the running worker when Prometheus scrapes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from roadie.status import WAITING_STATUSES

from roadie_prometheus.state import STATE

REGISTRY = CollectorRegistry(auto_describe=True)

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

ATTEMPTS = Counter("roadie_attempts", "Attempts started.", ["executor"], registry=REGISTRY)
ENDED = Counter("roadie_tasks_ended", "Tasks that ended, by final status.",
                ["executor", "status"], registry=REGISTRY)
FAILURES = Counter("roadie_attempt_failures", "Attempts whose execution raised (retried or "
                   "not).", ["executor"], registry=REGISTRY)
DURATION = Histogram("roadie_attempt_duration_seconds", "Run time of one attempt's execution.",
                     ["executor", "kind", "outcome"], buckets=BUCKETS, registry=REGISTRY)
WAIT = Histogram("roadie_task_wait_seconds", "How long a task waited, due, before an attempt "
                 "started.", ["executor"], buckets=BUCKETS, registry=REGISTRY)


class RoadieCollector(Collector):
    """Gauges read at scrape time: tasks by status and executor, queue depth and age, busy
    slots of this worker, and every node's last heartbeat."""

    def describe(self) -> list[GaugeMetricFamily]:
        """Nothing: registering the collector must not read the database or take STATE.lock
        (this module is imported on first use, maybe while the worker is set or the lock
        held); collect() reads them at scrape time."""
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The current values."""
        with STATE.lock:
            app, worker = STATE.app, STATE.worker
        if app is None:
            return
        tasks = GaugeMetricFamily("roadie_tasks", "Tasks by status and executor.",
                                  labels=["status", "executor"])
        depth = GaugeMetricFamily("roadie_queue_depth", "Tasks waiting (NEW or QUEUED).",
                                  labels=["executor"])
        waiting: dict[str, int] = {}
        for (status, executor), count in sorted(app.task_counts().items()):
            tasks.add_metric([status.label, executor], count)
            if status in WAITING_STATUSES:
                waiting[executor] = waiting.get(executor, 0) + count
        for executor, count in sorted(waiting.items()):
            depth.add_metric([executor], count)
        yield tasks
        yield depth
        age = GaugeMetricFamily("roadie_queue_wait_seconds", "How long the longest-waiting due "
                                "task of each executor has waited.", labels=["executor"])
        for executor, seconds in sorted(app.queue_ages().items()):
            age.add_metric([executor], seconds)
        yield age
        if worker is not None:
            threads, slots = worker.busy_slots()
            busy = GaugeMetricFamily("roadie_worker_busy", "Busy slots of this worker.",
                                     labels=["kind"])
            busy.add_metric(["thread"], threads)
            busy.add_metric(["async"], slots)
            yield busy
            capacity = GaugeMetricFamily("roadie_worker_slots", "Slots of this worker.",
                                         labels=["kind"])
            capacity.add_metric(["thread"], worker.concurrency)
            capacity.add_metric(["async"], worker.async_concurrency)
            yield capacity
        beats = GaugeMetricFamily("roadie_node_heartbeat_timestamp_seconds",
                                  "Last heartbeat of each running node (Unix time).",
                                  labels=["node", "name", "host"])
        for node in app.list_nodes():
            beats.add_metric([node.id, node.name, node.host], node.heartbeat_at.timestamp())
        yield beats


REGISTRY.register(RoadieCollector())


def render() -> bytes:
    """The metrics in Prometheus' text format (for a web app's ``/metrics``)."""
    return generate_latest(REGISTRY)


def serve(port: int, addr: str = "0.0.0.0") -> Any:
    """Serve ``/metrics`` on ``port`` from a thread; returns the server (``shutdown()``)."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=addr, registry=REGISTRY)
    return server

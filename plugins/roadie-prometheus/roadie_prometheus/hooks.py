"""roadie hooks of the Prometheus plugin: only roadie's public hooks feed the metrics."""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import logging
import os
import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import roadie
from roadie import hookimpl

from roadie_prometheus.state import STATE

if TYPE_CHECKING:  # click only where the CLI asks for commands: a worker never loads it
    import click
    from roadie import Executor, Result, RunningTask, TaskRecord
    from roadie.web.extensions import WebExtensions
    from roadie.worker import Worker

ROADIE_GLOBAL = True  # every task's hooks, whatever plugins the task names

log = logging.getLogger("roadie_prometheus")
PORT_VARIABLE = "ROADIE_METRICS_PORT"


def _remember_port(_ctx: click.Context, _param: click.Parameter, value: int | None) -> None:
    if value is not None:
        os.environ[PORT_VARIABLE] = str(value)  # read when the worker starts (and by -p children)


@hookimpl
def roadie_register_commands(cli: click.Group) -> None:
    """Add ``--metrics-port P`` to ``roadie worker``."""
    import click

    worker = cli.commands.get("worker")
    if worker is not None and not any(p.name == "metrics_port" for p in worker.params):
        worker.params.append(click.Option(
            ["--metrics-port"], type=int, default=None, expose_value=False,
            callback=_remember_port,
            help="Serve Prometheus metrics on this port (roadie-prometheus).",
        ))


def worker_port() -> tuple[int, str] | None:
    """This process's metrics port and how it was chosen: ``--metrics-port P``
    (``ROADIE_METRICS_PORT``), plus ``i - 1`` in the ``i``-th process of ``roadie worker -p M``
    (so the processes serve P, P+1, ..., P+M-1)."""
    value = os.environ.get(PORT_VARIABLE)
    if not value:
        return None
    try:
        base = int(value)
    except ValueError:
        raise ValueError(f"{PORT_VARIABLE}={value!r} is not a port number") from None
    processes = os.environ.get("ROADIE_WORKER_PROCESSES")
    if not processes:
        return base, f"--metrics-port {base}; choose a free port"
    index = int(os.environ.get("ROADIE_WORKER_INDEX") or 1)
    last = base + int(processes) - 1
    return base + index - 1, (f"worker process {index} of {processes} serves --metrics-port "
                              f"{base} + {index - 1}; ports {base} to {last} must be free")


@hookimpl
def roadie_worker_started(worker: Worker) -> None:
    """Remember the worker (its slots and database feed the gauges); serve the endpoint."""
    with STATE.lock:
        STATE.worker, STATE.app = worker, worker.app
        chosen = worker_port()
        if chosen is None or STATE.server is not None:
            return
        port, why = chosen
        from roadie_prometheus.metrics import serve

        try:
            STATE.server = serve(port)
        except OSError as exc:
            log.error("roadie-prometheus: cannot serve metrics on port %s: %s (%s); tasks run "
                      "on without metrics", port, exc.strerror or exc, why)
            return
        log.info("Prometheus metrics on port %s", port)


@hookimpl
def roadie_web_extend(web: WebExtensions) -> None:
    """Serve ``/metrics`` from the web app (``roadie web``), behind its token if it has one."""
    add_text = getattr(web, "add_text", None)
    if add_text is None:  # a roadie without text endpoints
        return
    from prometheus_client import CONTENT_TYPE_LATEST

    from roadie_prometheus.metrics import render

    def metrics(app: roadie.Roadie) -> bytes:
        with STATE.lock:
            if STATE.worker is None:  # no worker in this process: gauges of the web's app
                STATE.app = app
        return render()

    add_text("/metrics", metrics, media_type=CONTENT_TYPE_LATEST)


@hookimpl
def roadie_worker_stopping(worker: Worker) -> None:
    """Stop serving."""
    with STATE.lock:
        if STATE.worker is worker:
            STATE.worker = None
            if STATE.server is not None:
                STATE.server.shutdown()
                STATE.server = None


@functools.lru_cache(maxsize=4096)
def _series(metric: str, *labels: str) -> Any:
    """``metric.labels(*labels)`` of the metric of that name, looked up once (every task ends
    up here: labels() validates and locks on each call). The metrics, and prometheus_client
    with them (about 2 MB), are imported by the first task: an idle worker does without."""
    from roadie_prometheus import metrics

    return getattr(metrics, metric).labels(*labels)


@functools.lru_cache(maxsize=1024)
def _kind(executor_class: type) -> str:
    return "async" if inspect.iscoroutinefunction(executor_class.execute) else "thread"


@hookimpl
def roadie_before_task(task: RunningTask) -> None:
    """Count the attempt and how long the task waited."""
    executor = task.record.executor
    _series("ATTEMPTS", executor).inc()
    due = max(task.record.run_after, task.record.created_at)
    _series("WAIT", executor).observe(max(0.0, (dt.datetime.now(dt.timezone.utc) - due)
                                      .total_seconds()))


@hookimpl(wrapper=True)
def roadie_execute_task(task: RunningTask, executor: Executor) -> Generator[None, Any, Any]:
    """Time the execution, by executor, kind (thread or async) and outcome."""
    kind = _kind(type(executor))
    start = time.perf_counter()
    outcome = "failed"
    try:
        result = yield
        outcome = result.status.label if isinstance(result, roadie.Result) else "successful"
        return result
    except roadie.Cancelled as exc:
        outcome = "timed-out" if exc.timed_out else "cancelled"
        raise
    except BaseException:
        _series("FAILURES", task.record.executor).inc()
        raise
    finally:
        _series("DURATION", task.record.executor, kind, outcome).observe(
            time.perf_counter() - start)


@hookimpl
def roadie_task_finished(task: TaskRecord, result: Result) -> None:
    """Count a SUCCESSFUL end."""
    _series("ENDED", task.executor, "successful").inc()


@hookimpl
def roadie_task_failed(task: TaskRecord, message: str, error: BaseException | None) -> None:
    """Count a FAILED end."""
    _series("ENDED", task.executor, "failed").inc()


@hookimpl
def roadie_task_cancelled(task: TaskRecord, message: str) -> None:
    """Count a CANCELLED end."""
    _series("ENDED", task.executor, "cancelled").inc()

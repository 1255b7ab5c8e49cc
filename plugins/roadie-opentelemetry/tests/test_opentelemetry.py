"""One trace joins the code that adds a task and the task's attempts (SDK in-memory exporter),
on SQLite and PostgreSQL, for thread and async executors."""

from __future__ import annotations

import pytest
import roadie
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from roadie import Status
from roadie.testing import BackgroundWorker, wait_final, wait_for

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def tracing() -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)  # once per process: the global provider


@pytest.fixture(autouse=True)
def fresh_spans() -> None:
    EXPORTER.clear()  # task ids start at 1 on each database


def attempt_spans(task_id: int) -> list:
    return [s for s in EXPORTER.get_finished_spans()
            if (s.attributes or {}).get("roadie.task.id") == task_id]


def test_one_trace_joins_the_adding_code_and_the_attempts(roadie_db_app: roadie.Roadie) -> None:
    app = roadie_db_app
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("POST /reports") as request:
        sync = app.add_task("roadie-examples:noop", name="report")
        aio = app.add_task("roadie-examples:wait", {"seconds": 0.01}, owner="ann")
        failing = app.add_task("roadie-examples:fail", {})
    untraced = app.add_task("roadie-examples:noop")
    app.run_worker(concurrency=2, until_idle=True)  # other threads: only the task carries it

    parent = request.get_span_context()
    for task, outcome in ((sync, "successful"), (aio, "successful"), (failing, "failed")):
        [span] = attempt_spans(task.id)
        assert span.context.trace_id == parent.trace_id
        assert span.parent is not None and span.parent.span_id == parent.span_id
        assert span.name == f"roadie {task.executor}"
        assert span.kind is trace.SpanKind.CONSUMER
        assert span.attributes["roadie.executor"] == task.executor
        assert span.attributes["roadie.attempt"] == 1
        assert span.attributes["roadie.outcome"] == outcome
    assert attempt_spans(sync.id)[0].attributes["roadie.task.name"] == "report"
    assert attempt_spans(aio.id)[0].attributes["roadie.task.owner"] == "ann"
    [failed] = attempt_spans(failing.id)
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.events and failed.events[0].name == "exception"
    [alone] = attempt_spans(untraced.id)
    assert alone.parent is None and alone.context.trace_id != parent.trace_id


def test_a_cancelled_async_attempt_ends_its_span(roadie_db_app: roadie.Roadie) -> None:
    app = roadie_db_app
    task = app.add_task("roadie-examples:wait", {"seconds": 3600})
    with BackgroundWorker(app, concurrency=1):
        # awaiting in the executor (a cancel that comes while the worker still starts the
        # attempt stops it before the executor runs: no attempt, no span)
        wait_for(lambda: app.get_task_status(task.id).get("total") == 1)
        app.cancel_task(task.id, by="test")
        assert wait_final(app, task.id).status is Status.CANCELLED
    [span] = wait_for(lambda: attempt_spans(task.id) or None)
    assert span.attributes["roadie.outcome"] == "cancelled"


def test_no_span_until_the_application_sets_a_tracer_provider(
    roadie_db_app: roadie.Roadie, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = roadie_db_app
    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)
    task = app.add_task("roadie-examples:noop")
    app.run_worker(concurrency=1, until_idle=True)
    assert app.get_task(task.id).status is Status.SUCCESSFUL
    assert attempt_spans(task.id) == []

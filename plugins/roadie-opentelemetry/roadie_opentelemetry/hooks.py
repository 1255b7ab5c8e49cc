"""roadie hooks of the OpenTelemetry plugin: capture the caller's trace context when a task is
added, restore it on the worker, and wrap each attempt's execution in a span.

OpenTelemetry is imported only once the process uses it (its application imported the API, or
named a tracer provider in ``OTEL_PYTHON_TRACER_PROVIDER`` as this module loaded), or to restore
a captured context: until then no context can be current and no provider is set, so every hook
would do nothing, and a worker keeps about 0.5 MB less (issue 31: idle memory)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import roadie
from roadie import hookimpl

if TYPE_CHECKING:
    from roadie import Executor, RunningTask

ROADIE_GLOBAL = True  # every task's hooks, whatever plugins the task names

TRACER_NAME = "roadie_opentelemetry"
CAPTURED_KEY = "otel_trace_context"  # in task.captured: the W3C headers (traceparent, ...)


@hookimpl
def roadie_capture_context(executor: str, context: dict[str, Any]) -> dict[str, Any] | None:
    """The caller's W3C trace context (``traceparent``, ``tracestate``), if it has one. An
    empty OpenTelemetry context (no span, no baggage: a caller outside any trace) has nothing
    to propagate, and costs no propagator call (``add_tasks`` calls this for every task)."""
    if "opentelemetry.context" not in sys.modules:
        return None  # nothing imported it: no context was ever attached
    from opentelemetry import context as otel_context
    from opentelemetry import propagate

    if not otel_context.get_current():
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {CAPTURED_KEY: carrier} if carrier else None


@contextlib.contextmanager
def _attached(carrier: dict[str, str]) -> Iterator[None]:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate

    token = otel_context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)


@hookimpl
def roadie_restore_context(task: RunningTask, captured: dict[str, Any]
                           ) -> contextlib.AbstractContextManager[Any] | None:
    """Make the captured trace context current around the execution (or none: a new trace)."""
    carrier = captured.get(CAPTURED_KEY)
    return _attached(carrier) if isinstance(carrier, dict) else None


# whether the environment names a tracer provider, read once as the plugin loads (as
# OpenTelemetry reads it once, on first use): a look-up in os.environ costs each attempt
# about 2 us, the most of this hook's cost when nothing traces
_PROVIDER_NAMED = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ


def _tracing() -> bool:
    """Whether the application set a tracer provider: until it does, every span would be a
    no-op that still costs its making, on every attempt."""
    if not _PROVIDER_NAMED and "opentelemetry.trace" not in sys.modules:
        return False  # no application code imported the API, so none set a provider
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


@hookimpl(wrapper=True)
def roadie_execute_task(task: RunningTask, executor: Executor) -> Generator[None, Any, Any]:
    """One span per attempt (a consumer span, child of the adding code's span), with the
    task's attributes and its outcome."""
    if not _tracing():
        return (yield)
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    record = task.record
    attributes: dict[str, Any] = {
        "roadie.task.id": record.id,
        "roadie.task.name": record.name,
        "roadie.executor": record.executor,
        "roadie.attempt": task.attempt,
    }
    for key, value in (("roadie.task.owner", record.owner), ("roadie.task.group", record.group)):
        if value is not None:
            attributes[key] = value
    tracer = trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(f"roadie {record.executor}", kind=SpanKind.CONSUMER,
                                      attributes=attributes, record_exception=False,
                                      set_status_on_exception=False) as span:
        try:
            result = yield
        except roadie.Cancelled as exc:
            outcome = "timed-out" if exc.timed_out else "cancelled"
            span.set_attribute("roadie.outcome", outcome)
            if exc.timed_out:
                span.set_status(Status(StatusCode.ERROR, exc.message))
            raise
        except BaseException as exc:
            span.set_attribute("roadie.outcome", "failed")
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        status = result.status.label if isinstance(result, roadie.Result) else "successful"
        span.set_attribute("roadie.outcome", status)
        if status == "failed":
            span.set_status(Status(StatusCode.ERROR, getattr(result, "message", "")))
        else:
            span.set_status(Status(StatusCode.OK))
        return result

"""OpenTelemetry traces for roadie: the trace of the code that adds a task continues in the
task's attempts (W3C trace context), one span per attempt."""

from roadie_opentelemetry.hooks import CAPTURED_KEY, TRACER_NAME

__all__ = ["CAPTURED_KEY", "TRACER_NAME"]

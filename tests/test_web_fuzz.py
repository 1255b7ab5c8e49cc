"""The whole HTTP API fuzzed against its own OpenAPI document with schemathesis, on SQLite
and PostgreSQL: no 5xx, and every response matches the schema."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from roadie import Roadie

warnings.filterwarnings("ignore", message=".*httpx.*", category=DeprecationWarning)
schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("starlette")

from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

TOKEN = "fuzz-token"
MAX_EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def test_the_api_never_fails_and_matches_its_schema(app: Roadie) -> None:
    """Every operation of /api/openapi.json, with generated valid and invalid input."""
    from hypothesis import given
    from roadie.web import create_app

    for n in range(3):  # something for ids 1..4 to find: done, failed, waiting, with a file
        app.add_task("roadie-examples:count", {"n": n, "delay": 0}, name=f"count {n}",
                     owner="alice")
    app.run_worker(concurrency=1, until_idle=True)
    app.add_attachment(1, "notes.txt", b"hello")
    app.add_task("roadie-examples:fail", {}, name="fails")
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", create_app(app, token=TOKEN))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 13
    modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    for operation in operations:

        @given(st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in modes)))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        check()

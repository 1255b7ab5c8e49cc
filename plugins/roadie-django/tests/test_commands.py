"""``python manage.py roadie ...``, the system checks about roadie's schema, and the
worker's check of its database."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa
from django.core.checks import run_checks
from django.core.management import CommandError, call_command
from djhelpers import PG2_URL, require_postgres
from roadie_django.compat import task_backends
from roadie_django.hooks import check_worker_database
from shop.tasks import add


def test_the_schema_check_and_the_upgrade_command(capsys: pytest.CaptureFixture[str]) -> None:
    require_postgres()
    engine = sa.create_engine(PG2_URL)  # the backend "empty": a database without roadie
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()

    warnings = [m for m in run_checks(databases=["default"]) if m.obj == "TASKS['empty']"]
    assert [m.id for m in warnings] == ["roadie_django.W001"]
    assert "has no roadie schema" in warnings[0].msg
    assert warnings[0].hint.startswith("run `python manage.py roadie --backend empty db upgrade`")
    assert not run_checks()  # without databases Django asks for no connection

    call_command("roadie", "--backend", "empty", "db", "upgrade")
    database = sa.engine.make_url(PG2_URL).database
    assert f"{database} is at schema revision" in capsys.readouterr().out
    assert not run_checks(databases=["default"])


def test_sqlite_needs_no_upgrade_check() -> None:
    from roadie_django.checks import schema_messages

    assert not schema_messages("default", task_backends["default"].url)


def test_roadie_commands_run_on_the_backends_database(
        alias: str, capsys: pytest.CaptureFixture[str]) -> None:
    result = add.using(backend=alias).enqueue(1, 2)
    call_command("roadie", "--backend", alias, "list")
    out = capsys.readouterr().out
    assert "shop.tasks.add" in out and result.id in out


def test_an_unknown_backend_is_a_command_error() -> None:
    with pytest.raises(CommandError, match="no backend 'nope' in TASKS"):
        call_command("roadie", "--backend", "nope", "list")


def test_a_worker_on_another_database_is_told(caplog: pytest.LogCaptureFixture,
                                              tmp_path: object) -> None:
    assert check_worker_database(task_backends["default"].url)
    with caplog.at_level(logging.ERROR, logger="roadie_django"):
        assert not check_worker_database("sqlite:////elsewhere/roadie.db")
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith("roadie-django: this worker uses sqlite:////elsewhere/roadie.db,"
                              " but Django enqueues to TASKS['default'] at sqlite:///")
    assert "`python manage.py roadie worker`" in message

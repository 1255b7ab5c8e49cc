"""The examples plugin, tested the way a plugin author tests theirs: with roadie.testing."""

from __future__ import annotations

import datetime as dt

import roadie
from click.testing import CliRunner
from roadie.cli import cli
from roadie.testing import HookRecorder, run_task
from roadie_examples.hooks import LOCALE
from roadie_examples.types import Batch


def test_count_reports_progress_and_a_result(roadie_app: roadie.Roadie) -> None:
    run = run_task(roadie_app, "roadie-examples:count", {"n": 5, "delay": 0})
    assert run.task.status is roadie.Status.SUCCESSFUL
    assert run.task.result == 5
    assert run.status["percent"] == 100.0
    assert run.task.checkpoint is None or run.task.checkpoint["i"] <= 5


def test_fail_goes_through_handle_exception(roadie_app: roadie.Roadie,
                                            roadie_recorder: HookRecorder) -> None:
    run = run_task(roadie_app, "roadie-examples:fail", {"reason": "on purpose"})
    assert run.task.status is roadie.Status.FAILED
    assert run.task.status_message == "fail example: on purpose"
    assert "roadie_task_failed" in roadie_recorder.names(run.task.id)


def test_report_decodes_a_batch_and_attaches_a_file(roadie_app: roadie.Roadie) -> None:
    batch = Batch(3, 2, unit="pages", planned=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    run = run_task(roadie_app, "roadie-examples:report", {"batch": batch})
    assert run.task.status_message == "reported 2 pages"
    assert run.task.context["batch"] == batch
    with roadie_app.open_attachment(run.task.id, "report.txt") as report:
        assert report.read() == b"pages 3\npages 4"


def test_batch_version_1_is_upgraded() -> None:
    registry = roadie.TypeRegistry()
    registry.register(Batch, namespace="roadie-examples")
    old = registry.get("roadie-examples:Batch")
    assert old is not None and old.version == 2
    assert old.upgrade({"start": 0, "size": 1}, 1) == {"start": 0, "size": 1, "unit": "items"}


def test_greet_runs_in_the_callers_locale(roadie_app: roadie.Roadie) -> None:
    token = LOCALE.set("fr")
    try:
        task = roadie_app.add_task("roadie-examples:greet", {"who": "Ada"})
    finally:
        LOCALE.reset(token)
    roadie_app.run_worker(concurrency=1, until_idle=True)
    assert roadie_app.get_task(task.id).status_message == "bonjour Ada"


def test_import_translator_counts_rows_per_table(roadie_app: roadie.Roadie) -> None:
    run = run_task(roadie_app, "roadie-examples:import", {"tables": {"users": 4, "groups": 2}})
    assert run.status["rows"] == 6
    assert run.status["rows.users"] == 4 and run.status["rows.groups"] == 2
    assert run.status["step"] == "importing groups"
    assert "seconds" in run.status  # the plugin's execute wrapper timed it


def test_skip_vetoes_the_task(roadie_app: roadie.Roadie) -> None:
    run = run_task(roadie_app, "roadie-examples:echo", {"skip": True})
    assert run.task.status is roadie.Status.CANCELLED
    assert run.task.status_message == "skipped: its context asked for it"


def test_fanout_children_drive_progress(roadie_app: roadie.Roadie) -> None:
    run = run_task(roadie_app, "roadie-examples:fanout", {"items": 12, "width": 3, "delay": 0})
    assert run.task.result == sum(i * i for i in range(12))
    assert run.status["children"] == {"runnable": 0, "closed": 12, "failed": 0}
    assert run.status["done"] == 12


def test_seed_command_is_added_to_the_cli(roadie_app: roadie.Roadie, monkeypatch) -> None:
    monkeypatch.setenv("ROADIE_DATA_DIR", str(roadie_app.settings.data_dir))
    result = CliRunner().invoke(cli, ["--url", roadie_app.url, "examples-seed", "2"])
    assert result.exit_code == 0, result.output
    assert "added 2 count tasks" in result.output
    assert len(roadie_app.list_tasks(executor="roadie-examples:count")) == 2


def test_the_web_app_shows_the_timing_panel_and_examples_page(roadie_app: roadie.Roadie) -> None:
    import pytest

    pytest.importorskip("starlette")
    from roadie.web.extensions import collect, render_panels

    web = collect(roadie_app)
    run = run_task(roadie_app, "roadie-examples:count", {"n": 3, "delay": 0})
    panels = render_panels(roadie_app, web, run.task)
    timing = next(p for p in panels if p["title"] == "roadie-examples timing")
    assert "seconds in execute" in timing["values"]
    rows = web.pages["examples"].render(roadie_app)
    assert {"roadie-examples:count", "roadie-examples:fail"} <= {r["executor"] for r in rows}

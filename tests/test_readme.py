"""The README's set-up commands are the ones CI runs."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if line.startswith("python3 -m venv"))
    assert command in readme
    assert ".venv/bin/pytest" in command


def test_readme_demo_command_installs_the_examples_and_runs_the_demo() -> None:
    readme = (ROOT / "README.md").read_text()
    assert ("python3 -m venv .venv && .venv/bin/pip install -e . -e plugins/roadie-examples "
            "&& .venv/bin/roadie demo") in readme

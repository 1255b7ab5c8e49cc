"""``roadie plugin new``: the files it writes, bad names, and never overwriting a folder.

That the new plugin's own tests pass after ``pip install -e .`` is checked by .ci/run, which
creates one, installs it and runs its pytest.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from click.testing import CliRunner
from roadie.cli import cli
from roadie.errors import StarterError
from roadie.starter import create_plugin, plugin_names


def test_plugin_new_writes_a_complete_distribution(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["plugin", "new", "acme-export", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    root = tmp_path / "roadie-acme-export"
    assert f"created {root}" in result.output
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "pyproject.toml",
        "roadie_acme_export/__init__.py",
        "roadie_acme_export/executors.py",
        "roadie_acme_export/hooks.py",
        "roadie_acme_export/types.py",
        "tests/test_plugin.py",
    ]
    pyproject = (root / "pyproject.toml").read_text()
    for line in (
        'name = "roadie-acme-export"',
        '[project.entry-points."roadie.executors"]',
        'work = "roadie_acme_export.executors:Work"',
        '[project.entry-points."roadie.plugins"]',
        'roadie_acme_export = "roadie_acme_export.hooks"',
        'dependencies = ["roadie>=',
    ):
        assert line in pyproject
    for path in root.rglob("*.py"):
        ast.parse(path.read_text(), filename=str(path))  # valid Python, every placeholder filled
        assert "$" not in path.read_text(), path
    executors = (root / "roadie_acme_export/executors.py").read_text()
    for needed in ("task.progress(", "task.checkpoint(", "last_checkpoint", "raise_if_cancelled"):
        assert needed in executors
    assert "register(Job)" in (root / "roadie_acme_export/hooks.py").read_text()
    tests = (root / "tests/test_plugin.py").read_text()
    assert "from roadie.testing import" in tests and "roadie_app" in tests
    assert "roadie-acme-export:work" in (root / "README.md").read_text()


@pytest.mark.parametrize("name", ["", "Acme", "acme_export", "1acme", "acme--x", "acme-", "a b"])
def test_invalid_names_get_a_clear_error(tmp_path: Path, name: str) -> None:
    result = CliRunner().invoke(cli, ["plugin", "new", name, "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert f"invalid plugin name {name!r}" in result.output
    assert "lower-case letters" in result.output
    assert list(tmp_path.iterdir()) == []


def test_the_roadie_prefix_is_optional() -> None:
    assert plugin_names("roadie-acme") == plugin_names("acme") == ("roadie-acme", "roadie_acme")


def test_an_existing_folder_is_never_overwritten(tmp_path: Path) -> None:
    existing = tmp_path / "roadie-acme"
    existing.mkdir()
    (existing / "pyproject.toml").write_text("mine")
    with pytest.raises(StarterError, match="never overwrites"):
        create_plugin("acme", tmp_path)
    assert [p.name for p in existing.iterdir()] == ["pyproject.toml"]
    assert (existing / "pyproject.toml").read_text() == "mine"
    result = CliRunner().invoke(cli, ["plugin", "new", "acme", "--dir", str(tmp_path)])
    assert result.exit_code == 1 and "exists already" in result.output

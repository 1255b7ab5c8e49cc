"""Settings: one rule for every way of making them (argument, then ROADIE_*, then default)."""

from __future__ import annotations

from pathlib import Path

import pytest
import roadie
from roadie.errors import ConfigurationError


def test_settings_read_the_environment_for_fields_not_given(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROADIE_HEARTBEAT_GRACE", "7.5")
    monkeypatch.setenv("ROADIE_PREFETCH", "3")
    assert roadie.Settings().heartbeat_grace == 7.5
    assert roadie.Settings.from_env().heartbeat_grace == 7.5
    explicit = roadie.Settings(heartbeat_grace=2.0)
    assert explicit.heartbeat_grace == 2.0  # an argument wins over the variable
    assert explicit.prefetch == 3  # the variable wins over the default
    assert explicit.status_interval == 0.25  # the default


def test_roadie_follows_the_same_rule_with_or_without_settings(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ROADIE_HEARTBEAT_GRACE", "7.5")
    url = f"sqlite:///{tmp_path / 'roadie.db'}"
    assert roadie.Roadie(url).settings.heartbeat_grace == 7.5
    assert roadie.Roadie(url, settings=roadie.Settings()).settings.heartbeat_grace == 7.5
    assert roadie.Roadie(url, heartbeat_grace=1.0).settings.heartbeat_grace == 1.0
    given = roadie.Settings(prefetch=2)
    app = roadie.Roadie(url, settings=given, heartbeat_grace=1.0)
    assert (app.settings.heartbeat_grace, app.settings.prefetch) == (1.0, 2)
    assert given.heartbeat_grace == 7.5  # the caller's object is left alone


def test_data_dir_is_a_path_however_given(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setenv("ROADIE_DATA_DIR", str(tmp_path / "env"))
    assert roadie.Settings().data_dir == tmp_path / "env"
    assert roadie.Settings(data_dir=str(tmp_path / "arg")).data_dir == tmp_path / "arg"


def test_bad_settings_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match=r"unknown setting.*heartbeat_gracee"):
        roadie.Settings(heartbeat_gracee=1)
    monkeypatch.setenv("ROADIE_PREFETCH", "many")
    with pytest.raises(ConfigurationError, match="ROADIE_PREFETCH='many'"):
        roadie.Settings()
    assert roadie.Settings(prefetch=1).prefetch == 1  # an argument needs no variable


def test_a_switch_reads_the_usual_words_and_refuses_others(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for raw, value in [("1", True), ("yes", True), ("ON", True), ("true", True),
                       ("0", False), ("no", False), ("Off", False), ("false", False)]:
        monkeypatch.setenv("ROADIE_TUNE_GC", raw)
        assert roadie.Settings().tune_gc is value, raw
    monkeypatch.setenv("ROADIE_TUNE_GC", "maybe")
    with pytest.raises(ConfigurationError, match=r"ROADIE_TUNE_GC='maybe'.*1 or 0"):
        roadie.Settings()

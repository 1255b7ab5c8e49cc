"""A plugin that implements a deprecated hook is warned, by name, with the replacement."""

from __future__ import annotations

import types
import warnings

import pytest
import roadie
from roadie.codec import TypeRegistry
from roadie.deprecation import deprecated_hook
from roadie.plugins import Plugins


class OldSpecs:
    """A hook deprecated only within this test (roadie has no deprecated hook today)."""

    @roadie.hookspec
    @deprecated_hook(since="0.2", replacement="roadie_task_finished", removal="0.4")
    def roadie_task_done(self, task: object) -> None:
        """The old name of ``roadie_task_finished``."""


def plugins_with_old_hook() -> Plugins:
    plugins = Plugins(TypeRegistry(), entry_points=False)
    plugins.pm.add_hookspecs(OldSpecs)
    plugins.load()
    return plugins


def test_a_plugin_implementing_a_deprecated_hook_gets_a_warning_naming_it() -> None:
    plugins = plugins_with_old_hook()
    module = types.ModuleType("acme_old")

    @roadie.hookimpl
    def roadie_task_done(task: object) -> None:
        pass

    module.roadie_task_done = roadie_task_done  # type: ignore[attr-defined]
    with pytest.warns(DeprecationWarning) as caught:
        plugins.register(module, name="acme-old")
    [warning] = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    text = str(warning.message)
    assert "plugin 'acme-old'" in text
    assert "'roadie_task_done'" in text
    assert "since roadie 0.2" in text
    assert "use roadie_task_finished instead" in text
    assert "removed in roadie 0.4" in text
    assert warning.filename == __file__  # it points at the plugin's implementation
    # The deprecated hook keeps working.
    called = []
    module2 = types.ModuleType("acme_new")
    module2.roadie_task_done = roadie.hookimpl(lambda task: called.append(task))  # type: ignore[attr-defined]
    with pytest.warns(DeprecationWarning, match="plugin 'acme-new'"):
        plugins.register(module2, name="acme-new")
    plugins.hook.roadie_task_done(task="t")
    assert called == ["t"]


def test_current_hooks_do_not_warn() -> None:
    plugins = plugins_with_old_hook()
    module = types.ModuleType("acme_current")
    module.roadie_task_finished = roadie.hookimpl(  # type: ignore[attr-defined]
        lambda task, result: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plugins.register(module, name="acme-current")



def test_executor_max_attempts_is_the_old_name_of_max_crash_attempts() -> None:
    with pytest.warns(DeprecationWarning, match=r"OldStyle\.max_attempts is deprecated.*"
                                                r"use max_crash_attempts"):
        class OldStyle(roadie.Executor):
            crash_policy = roadie.CrashPolicy.RETRY
            max_attempts = 5

    assert OldStyle.max_crash_attempts == 5
    assert OldStyle.max_attempts == 5  # its own value, still readable

    class NewStyle(roadie.Executor):
        max_crash_attempts = 4

    with pytest.warns(DeprecationWarning, match=r"NewStyle\.max_attempts is deprecated"):
        assert NewStyle.max_attempts == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert NewStyle.max_crash_attempts == 4 and roadie.Executor.max_crash_attempts == 3

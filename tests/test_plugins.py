"""Plugins: discovery, hooks in order, failing hooks, import contexts, blocking, the testing kit."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import roadie
from roadie import Status
from roadie.testing import BackgroundWorker, HookRecorder, run_task, wait_final, wait_for

from tests.processes import start_worker, stop

PER_TASK = ["roadie_task_added", "roadie_before_task", "roadie_restore_context",
            "roadie_execute_task"]


@pytest.fixture
def recorder(app: roadie.Roadie) -> HookRecorder:
    recorder = HookRecorder()
    app.plugins.register(recorder, name="recorder")
    return recorder


def test_hook_order_successful(app: roadie.Roadie, recorder: HookRecorder) -> None:
    task = run_task(app, "roadie-examples:count", {"n": 2, "delay": 0}).task
    assert recorder.names(task.id) == [*PER_TASK, "roadie_status_message",
                                       "roadie_status_message", "roadie_task_finished"]
    finished = recorder.calls[-2] if recorder.calls[-1].name == "roadie_worker_stopping" \
        else recorder.calls[-1]
    assert finished.kwargs["result"].message == "counted to 2"
    assert finished.kwargs["task"].status is Status.SUCCESSFUL
    names = recorder.names()
    assert names[1] == "roadie_worker_started" and names[-1] == "roadie_worker_stopping"


def test_hook_order_failed(app: roadie.Roadie, recorder: HookRecorder) -> None:
    task = run_task(app, "tests:boom", {"reason": "x"}).task
    assert recorder.names(task.id) == [*PER_TASK, "roadie_task_failed"]
    failed = next(c for c in recorder.calls if c.name == "roadie_task_failed")
    assert failed.kwargs["message"] == "RuntimeError: x"
    assert isinstance(failed.kwargs["error"], RuntimeError)


def test_hook_order_cancelled(app: roadie.Roadie, recorder: HookRecorder) -> None:
    task = app.add_task("tests:spin", {})
    with BackgroundWorker(app, concurrency=1):
        # wait for its progress, not only IN_PROGRESS (set at the claim): a task cancelled
        # before a thread starts it never starts, and no per-task hook fires (a flake under
        # load)
        wait_for(lambda: app.get_task(task.id).task_status.get("done"))
        app.cancel_task(task.id, by="tester")
        done = wait_final(app, task.id)
    assert done.status is Status.CANCELLED
    names = recorder.names(task.id)
    assert names[:4] == PER_TASK
    assert names[-1] == "roadie_task_cancelled"
    assert set(names[4:-1]) == {"roadie_status_message"}
    cancelled = next(c for c in recorder.calls if c.name == "roadie_task_cancelled")
    assert "cancelled by tester" in cancelled.kwargs["message"]


class Raises:
    def __init__(self, hook: str) -> None:
        self.hook = hook

    @roadie.hookimpl
    def roadie_before_task(self, task: Any) -> None:
        if self.hook == "before":
            raise RuntimeError("before exploded")

    @roadie.hookimpl
    def roadie_task_finished(self, task: Any, result: Any) -> None:
        if self.hook == "finished":
            raise RuntimeError("finished exploded")


def test_raising_before_hook_fails_the_task_naming_the_plugin(app: roadie.Roadie) -> None:
    app.plugins.register(Raises("before"), name="exploder")
    task = run_task(app, "roadie-examples:echo", {"a": 1}).task
    assert task.status is Status.FAILED
    assert "roadie_before_task of plugin 'exploder' failed" in task.status_message
    assert task.context == {"a": 1}


def test_raising_observer_hook_keeps_the_result_and_notes_the_plugin(app: roadie.Roadie) -> None:
    app.plugins.register(Raises("finished"), name="exploder")
    task = run_task(app, "roadie-examples:echo", {"a": 1}).task
    assert task.status is Status.SUCCESSFUL
    assert task.error is not None
    assert "roadie_task_finished of plugin 'exploder' failed: RuntimeError" in task.error


class Gatekeeper:
    def __init__(self) -> None:
        self.delayed: list[int] = []

    @roadie.hookimpl
    def roadie_before_task(self, task: roadie.RunningTask) -> Any:
        if task.context.get("veto"):
            return roadie.Veto("not today")
        if task.context.get("delay") and task.id not in self.delayed:
            self.delayed.append(task.id)
            return roadie.Delay(0.05, "come back later")
        return None


def test_before_task_can_veto_or_delay(app: roadie.Roadie) -> None:
    gatekeeper = Gatekeeper()
    app.plugins.register(gatekeeper, name="gatekeeper")
    vetoed = app.add_task("roadie-examples:echo", {"veto": True})
    delayed = app.add_task("roadie-examples:echo", {"delay": True})
    app.run_worker(concurrency=1, until_idle=True)
    assert app.get_task(vetoed.id).status is Status.CANCELLED
    assert app.get_task(vetoed.id).status_message == "not today"
    again = app.get_task(delayed.id)
    assert gatekeeper.delayed == [delayed.id]
    assert again.status is Status.SUCCESSFUL
    assert again.attempts == 1  # the delayed try did not count as an attempt


class Tenant:
    current: str | None = None

    @roadie.hookimpl
    def roadie_capture_context(self, executor: str, context: dict[str, Any]) -> dict[str, Any]:
        return {"tenant": Tenant.current}

    @roadie.hookimpl
    def roadie_restore_context(self, task: roadie.RunningTask, captured: dict[str, Any]) -> Any:
        @contextlib.contextmanager
        def restore() -> Any:
            previous, Tenant.current = Tenant.current, captured.get("tenant")
            try:
                yield
            finally:
                Tenant.current = previous

        return restore()

    @roadie.hookimpl(wrapper=True)
    def roadie_execute_task(self, task: roadie.RunningTask, executor: Any) -> Any:
        task.status.set("tenant_seen", Tenant.current)
        return (yield)


def test_caller_context_is_captured_and_restored(app: roadie.Roadie) -> None:
    app.plugins.register(Tenant(), name="tenant")
    Tenant.current = "acme"
    task = app.add_task("roadie-examples:echo", {})
    Tenant.current = None
    assert app.get_task(task.id).captured["tenant"] == "acme"
    app.run_worker(concurrency=1, until_idle=True)
    assert app.get_task_status(task.id)["tenant_seen"] == "acme"
    assert Tenant.current is None


class Locale:
    """Captures from the context alone (a hook may take fewer arguments than the spec)."""

    @roadie.hookimpl
    def roadie_capture_context(self, context: dict[str, Any]) -> dict[str, Any]:
        return {"locale": context.get("lang", "en")}


class BrokenCapture:
    @roadie.hookimpl
    def roadie_capture_context(self, executor: str) -> None:
        raise RuntimeError(f"no session for {executor}")


def test_every_task_of_add_tasks_captures_its_own_context(app: roadie.Roadie) -> None:
    app.plugins.register(Locale(), name="locale")
    app.plugins.register(Tenant(), name="tenant")
    Tenant.current = "acme"
    try:
        tasks = app.add_tasks([("roadie-examples:echo", {"lang": "fr"}),
                               ("roadie-examples:echo", {})])
    finally:
        Tenant.current = None
    captured = [app.get_task(t.id).captured for t in tasks]
    assert [(c["locale"], c["tenant"]) for c in captured] == [("fr", "acme"), ("en", "acme")]


def test_failing_capture_hook_stops_the_add_naming_the_plugin(app: roadie.Roadie) -> None:
    app.plugins.register(BrokenCapture(), name="broken-capture")
    with pytest.raises(roadie.PluginError,
                       match="roadie-examples:echo task: hook roadie_capture_context of plugin "
                             "'broken-capture' failed: RuntimeError: no session for "
                             "roadie-examples:echo"):
        app.add_tasks([("roadie-examples:echo", {})] * 3)
    assert app.list_tasks() == []


def test_task_scoped_hooks_only_for_tasks_that_name_the_plugin(app: roadie.Roadie) -> None:
    # roadie-examples' execute wrapper times its own tasks, and only those
    mine = app.add_task("roadie-examples:echo", {})
    other = app.add_task("tests:sleep", {"seconds": 0})
    app.run_worker(concurrency=1, until_idle=True)
    assert "seconds" in app.get_task_status(mine.id)
    assert "seconds" not in app.get_task_status(other.id)


def test_blocked_plugin_is_not_loaded(db_url: str, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROADIE_BLOCK_PLUGINS", "roadie-examples")
    app = roadie.Roadie(db_url, data_dir=tmp_path)
    assert "roadie-examples:count" not in app.plugins.executor_names()
    with pytest.raises(roadie.UnknownExecutor, match="Plugin 'roadie-examples' is blocked"):
        app.add_task("roadie-examples:count", {})


def test_trace_variable_prints_hook_calls(db_url: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ROADIE_TRACE_HOOKS", "1")
    app = roadie.Roadie(db_url, data_dir=tmp_path, auto_upgrade=True)
    app.add_task("roadie-examples:echo", {})
    assert "roadie_task_added" in capsys.readouterr().err


SAME_NAME_PLUGIN = '''
from dataclasses import dataclass
import roadie

@dataclass
class Item:
    value: int

class Work(roadie.Executor):
    def execute(self, task):
        item = task.context["item"]
        assert type(item) is Item, type(item)
        return roadie.Result.success(f"{__name__}:{item.value}")

@roadie.hookimpl
def roadie_register_types(register):
    register(Item)
'''


def test_two_plugins_with_same_class_names_resolve_their_own(app: roadie.Roadie,
                                                             make_plugin: Any) -> None:
    for dist, module in (("roadie-alpha", "alpha_plugin"), ("roadie-beta", "beta_plugin")):
        make_plugin(dist, {f"{module}.py": SAME_NAME_PLUGIN}, {"work": f"{module}:Work"},
                    hooks=module)
    fresh = roadie.Roadie(app.url, settings=app.settings)
    import alpha_plugin
    import beta_plugin

    a = fresh.add_task("roadie-alpha:work", {"item": alpha_plugin.Item(1)})
    b = fresh.add_task("roadie-beta:work", {"item": beta_plugin.Item(2)})
    assert a.plugins == {"roadie-alpha": "0.1"}
    assert b.plugins == {"roadie-beta": "0.1"}
    with pytest.raises(roadie.ContextEncodeError):
        # a type of one plugin given to the other plugin's task is still encodable, but the
        # task then needs both plugins: the import context says so
        fresh.add_task("roadie-alpha:work", {"item": object()})
    fresh.run_worker(concurrency=2, until_idle=True)
    assert fresh.get_task(a.id).status_message == "alpha_plugin:1"
    assert fresh.get_task(b.id).status_message == "beta_plugin:2"
    assert type(fresh.get_task(a.id).context["item"]) is alpha_plugin.Item
    fresh.close()


PLUGIN_SOURCE = '''
import roadie

class Hello(roadie.Executor):
    def execute(self, task):
        return roadie.Result.success("hello " + task.context["who"])
'''


@pytest.mark.slow
def test_worker_without_the_plugin_leaves_the_task_to_one_that_has_it(
        app: roadie.Roadie, make_plugin: Any, tmp_path: Path) -> None:
    site = make_plugin("roadie-hello", {"hello_plugin.py": PLUGIN_SOURCE},
                       {"hello": "hello_plugin:Hello"})
    fresh = roadie.Roadie(app.url, settings=app.settings)
    lacking = start_worker(app.url, tmp_path / "data", "--concurrency", "1",
                           "--name", "lacking", log=tmp_path / "lacking.log")
    having = None
    try:
        wait_for(lambda: any(n.name == "lacking" for n in fresh.list_nodes()),
                 message="the first worker to register")
        task = fresh.add_task("roadie-hello:hello", {"who": "world"})
        other = fresh.add_task("roadie-examples:echo", {"x": 1})
        wait_final(fresh, other.id)  # the lacking worker is busy doing what it can
        assert fresh.get_task(task.id).status is Status.NEW
        assert fresh.waiting_reason(fresh.get_task(task.id)) == \
            "waiting: no worker has plugin roadie-hello"
        having = start_worker(app.url, tmp_path / "data", "--concurrency", "1",
                              "--name", "having", pythonpath=[site],
                              log=tmp_path / "having.log")
        done = wait_final(fresh, task.id, timeout=60)
        assert done.status is Status.SUCCESSFUL and done.status_message == "hello world"
        runner = next(n for n in fresh.list_nodes() if n.id == done.node)
        assert runner.name == "having"
    finally:
        assert stop(lacking) == 0, (tmp_path / "lacking.log").read_text()
        if having is not None:
            assert stop(having) == 0, (tmp_path / "having.log").read_text()
        fresh.close()


def test_throwaway_plugin_end_to_end_in_process(app: roadie.Roadie, make_plugin: Any) -> None:
    make_plugin("roadie-hello", {"hello_plugin.py": PLUGIN_SOURCE},
                {"hello": "hello_plugin:Hello"})
    fresh = roadie.Roadie(app.url, settings=app.settings)
    task = run_task(fresh, "roadie-hello:hello", {"who": "plugin"}).task
    assert task.status is Status.SUCCESSFUL and task.status_message == "hello plugin"
    assert task.plugins == {"roadie-hello": "0.1"}
    fresh.close()


def test_testing_fixtures_are_registered(roadie_app: roadie.Roadie,
                                         roadie_recorder: HookRecorder) -> None:
    run = run_task(roadie_app, "roadie-examples:count", {"n": 3, "delay": 0})
    assert run.task.status is Status.SUCCESSFUL
    assert run.messages[-1] == {"done": 3, "total": 3, "message": "counted to 3"}
    assert "roadie_task_finished" in roadie_recorder.names(run.task.id)


URL_PLUGIN = """
import os

import roadie


@roadie.hookimpl
def roadie_default_url(settings):
    if os.environ.get("URL_PLUGIN_FAILS"):
        raise RuntimeError("no settings module")
    return os.environ.get("URL_PLUGIN_URL")
"""


def test_a_plugin_gives_the_database_url_when_none_is_given(
        make_plugin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_plugin("roadie-urls", {"url_plugin.py": URL_PLUGIN}, {}, hooks="url_plugin")
    monkeypatch.delenv("ROADIE_URL", raising=False)
    chosen = f"sqlite:///{tmp_path / 'chosen.db'}"
    monkeypatch.setenv("URL_PLUGIN_URL", chosen)
    assert roadie.Roadie(data_dir=tmp_path).url == chosen
    given = f"sqlite:///{tmp_path / 'given.db'}"
    assert roadie.Roadie(given, data_dir=tmp_path).url == given  # an argument wins
    monkeypatch.setenv("ROADIE_URL", given)
    assert roadie.Roadie(data_dir=tmp_path).url == given  # and so does ROADIE_URL
    monkeypatch.delenv("ROADIE_URL")
    monkeypatch.delenv("URL_PLUGIN_URL")  # no answer: the embedded file
    assert roadie.Roadie(data_dir=tmp_path).url == f"sqlite:///{tmp_path / 'roadie.db'}"
    monkeypatch.setenv("URL_PLUGIN_FAILS", "1")
    with pytest.raises(roadie.PluginError, match=r"roadie_default_url failed.*no settings"):
        roadie.Roadie(data_dir=tmp_path)

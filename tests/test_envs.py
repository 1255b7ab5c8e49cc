"""Environments: plugins with conflicting dependencies side by side, each in its own hosts."""

from __future__ import annotations

import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import roadie
from click.testing import CliRunner
from roadie.cli import cli
from roadie.envs import create_env, install, remove_env
from roadie.envs.discovery import env_state
from roadie.errors import EnvError
from roadie.testing import make_app, wait_for

from tests.processes import start_worker, stop

# Making the environments (a venv with roadie's runtime, then pip installs) takes a minute
# on an idle machine and more on a loaded one: more than the suite's default timeout.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PLUGIN = '''
import os
import time
from pathlib import Path

import roadie
import tinydep


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y


def roadie_register_types(register):
    register(Point, name="Point", encode=lambda p: [p.x, p.y], decode=lambda d: Point(*d))


class Which(roadie.Executor):
    """Says which tinydep it sees; with "meet", waits until its peer runs too."""

    def execute(self, task):
        meet = task.context.get("meet")
        if meet:
            Path(meet, "{dist}").write_text(str(os.getpid()))
            deadline = time.monotonic() + 60
            while len(list(Path(meet).iterdir())) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
        point = task.context.get("point")
        value = Point(point.x * 2, point.y * 2) if point is not None else None
        task.progress(1, 1)
        return roadie.Result.success(f"tinydep {{tinydep.VERSION}}", value)


class Abort(roadie.Executor):
    def execute(self, task):
        os.abort()
'''


def build_wheel(folder: Path, dist: str, version: str, files: dict[str, str], *,
                entry_points: str = "", requires: tuple[str, ...] = ()) -> Path:
    """A pure-Python wheel made by hand (no build backend, no index)."""
    stem = f"{dist.replace('-', '_')}-{version}"
    path = folder / f"{stem}-py3-none-any.whl"
    info = f"{stem}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    contents = {**files, f"{info}/METADATA": metadata,
                f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: roadie-tests\n"
                                 "Root-Is-Purelib: true\nTag: py3-none-any\n"}
    if entry_points:
        contents[f"{info}/entry_points.txt"] = entry_points
    record = "".join(f"{name},,\n" for name in [*contents, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in {**contents, f"{info}/RECORD": record}.items():
            archive.writestr(name, text)
    return path


def plugin_wheel(folder: Path, dist: str, pin: str) -> Path:
    module = dist.replace("-", "_")
    entry_points = (f"[roadie.executors]\nwhich = {module}:Which\nabort = {module}:Abort\n\n"
                    f"[roadie.plugins]\n{module} = {module}\n")
    return build_wheel(folder, dist, "1.0",
                       {f"{module}.py": textwrap.dedent(PLUGIN.format(dist=dist))},
                       entry_points=entry_points, requires=(f"tinydep=={pin}",))


@pytest.fixture(scope="session")
def envs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two environments made once: plug-a with tinydep 1.0, plug-b with tinydep 2.0."""
    root = tmp_path_factory.mktemp("envs")
    wheels = tmp_path_factory.mktemp("wheels")
    made = {"envs": root}
    for pin in ("1.0", "2.0"):
        made[f"tinydep-{pin}"] = build_wheel(wheels, "tinydep", pin,
                                             {"tinydep.py": f"VERSION = {pin!r}\n"})
    for env, dist, pin in (("env-a", "plug-a", "1.0"), ("env-b", "plug-b", "2.0")):
        create_env(root, env)
        install(root, env, [str(plugin_wheel(wheels, dist, pin)), str(made[f"tinydep-{pin}"])])
    made["plug-c"] = plugin_wheel(wheels, "plug-c", "2.0")
    made["plug-b"] = plugin_wheel(wheels, "plug-b", "2.0")
    return made


class LookalikePoint:
    """The caller's own class for plug-a's Point (the worker has neither)."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y


@pytest.fixture
def env_app(envs: dict[str, Path], db_url: str, tmp_path: Path) -> Iterator[roadie.Roadie]:
    app = make_app(db_url, tmp_path / "data", envs_dir=str(envs["envs"]))
    app.registry.register(LookalikePoint, namespace="plug-a", name="Point",
                          encode=lambda p: [p.x, p.y], decode=lambda d: LookalikePoint(*d))
    yield app
    app.close()


def test_conflicting_dependencies_in_one_worker_at_once(
    env_app: roadie.Roadie, envs: dict[str, Path], db_url: str, tmp_path: Path
) -> None:
    meet = tmp_path / "meet"
    meet.mkdir()
    a = env_app.add_task("plug-a:which", {"point": LookalikePoint(1, 2), "meet": str(meet)})
    b = env_app.add_task("plug-b:which", {"meet": str(meet)})
    worker = start_worker(db_url, tmp_path / "data", "--concurrency", "2", "--until-idle",
                          env={"ROADIE_ENVS_DIR": str(envs["envs"])})
    try:
        assert worker.wait(120) == 0
    finally:
        stop(worker)
    one, two = env_app.get_task(a.id), env_app.get_task(b.id)
    assert (one.status, one.status_message) == (roadie.Status.SUCCESSFUL, "tinydep 1.0")
    assert (two.status, two.status_message) == (roadie.Status.SUCCESSFUL, "tinydep 2.0")
    assert (one.result.x, one.result.y) == (2, 4)  # decoded in the host, not in the worker
    assert len(list(meet.iterdir())) == 2  # they ran at the same time


def test_a_crash_in_an_env_executor_is_contained(env_app: roadie.Roadie) -> None:
    crash = env_app.add_task("plug-a:abort", {})
    later = [env_app.add_task(f"plug-{x}:which", {}) for x in "ab"]
    env_app.run_worker(concurrency=1, until_idle=True)
    record = env_app.get_task(crash.id)
    assert record.status == roadie.Status.FAILED
    assert "killed by signal SIGABRT" in record.status_message
    assert [env_app.get_task(t.id).status_message for t in later] == [
        "tinydep 1.0", "tinydep 2.0"]


def test_env_commands_discovery_and_refresh(
    envs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = envs["envs"]
    monkeypatch.setenv("ROADIE_ENVS_DIR", str(root))
    url = f"sqlite:///{tmp_path / 'roadie.db'}"
    runner = CliRunner()
    listed = runner.invoke(cli, ["env", "list"], catch_exceptions=False).output
    assert "env-a" in listed and "plug-a 1.0" in listed and "plug-b:which" in listed
    for args, text in ((["env", "create", "env-a"], "exists already"),
                       (["env", "create", "no/pe"], "invalid environment name"),
                       (["env", "remove", "missing"], "no environment named 'missing'")):
        result = runner.invoke(cli, args)
        assert result.exit_code == 1 and text in result.output
        assert len(result.output.strip().splitlines()) == 1
    before = env_state(root / "env-a")
    with pytest.raises(EnvError, match="it is unchanged"):
        install(root, "env-a", [str(tmp_path / "missing-1.0-py3-none-any.whl")])
    assert env_state(root / "env-a") == before

    app = make_app(url, tmp_path / "data", envs_dir=str(root))
    worker = app.worker(concurrency=1, handle_signals=False)
    import threading

    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        create_env(root, "env-c")
        install(root, "env-c", [str(envs["plug-c"]), str(envs["plug-b"]),
                                str(envs["tinydep-2.0"])])
        wait_for(lambda: any("plug-c:which" in n.executors for n in app.list_nodes()),
                 message="the worker advertises the new environment's executor")
        task = app.add_task("plug-c:which", {})
        wait_for(lambda: app.get_task(task.id).status.is_final)
        assert app.get_task(task.id).status_message == "tinydep 2.0"
        shown = runner.invoke(cli, ["--url", url, "plugins"], catch_exceptions=False).output
        assert "plug-c" in shown and "env-c" in shown
        assert "also in env env-c" in shown  # plug-b: env-b wins (environments by name)
    finally:
        worker.stop()
        thread.join(30)
        app.close()
        remove_env(root, "env-c")


def test_an_env_executor_fires_on_a_schedule(env_app: roadie.Roadie) -> None:
    """Schedules of an environment's executor are added through the API and fire like any."""
    import datetime as dt

    now = dt.datetime(2026, 5, 1, 12, 0, 30, tzinfo=dt.timezone.utc)
    env_app.clock = lambda: now
    env_app.add_schedule("env-tick", "plug-b:which", every=60)
    (task,) = env_app.fire_schedules(now + dt.timedelta(minutes=1))
    assert (task.executor, task.schedule) == ("plug-b:which", "env-tick")
    assert env_app.list_schedules()[0].state == "active"

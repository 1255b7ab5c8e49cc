"""End to end: a plugin's dataclass travels in a context to a worker in another process.

A throwaway plugin distribution is written into ``tmp_path`` (a package plus a hand-written
``.dist-info`` with its entry points), put on ``sys.path`` here and on ``PYTHONPATH`` for the
worker, which runs as ``python -m roadie ... worker --until-idle``.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
import roadie
from roadie.codec import EXT_CODE
from roadie.testing import make_app

DIST = "roadie-e2e-parcels"
PACKAGE = "roadie_e2e_parcels"
EXECUTOR = f"{DIST}:deliver"

PLUGIN_FILES = {
    f"{PACKAGE}/__init__.py": '"""A plugin made by tests/test_context_e2e.py."""\n',
    f"{PACKAGE}/types.py": '''
        from __future__ import annotations

        import datetime as dt
        from dataclasses import dataclass

        import roadie


        @roadie.context_type(version=2, upgraders={1: lambda d: {**d, "fragile": False}})
        @dataclass(frozen=True)
        class Parcel:
            label: str
            grams: int
            due: dt.datetime
            fragile: bool = False
    ''',
    f"{PACKAGE}/hooks.py": '''
        import roadie

        from roadie_e2e_parcels.types import Parcel


        @roadie.hookimpl
        def roadie_register_types(register):
            register(Parcel)
    ''',
    f"{PACKAGE}/executors.py": '''
        import os

        import roadie

        from roadie_e2e_parcels.types import Parcel


        class Deliver(roadie.Executor):
            def execute(self, task):
                parcel = task.context["parcel"]
                assert isinstance(parcel, Parcel), f"got {type(parcel)!r}"
                assert type(parcel).__module__ == "roadie_e2e_parcels.types"
                more = task.context["more"]
                assert all(isinstance(p, Parcel) for p in more["by_label"].values())
                assert all(isinstance(key, tuple) for key in more["by_slot"])
                total = parcel.grams + sum(p.grams for p in more["by_label"].values())
                return roadie.Result.success(
                    f"delivered {parcel.label} ({total} g, due {parcel.due.isoformat()}) "
                    f"in process {os.getpid()}",
                    value={"parcel": parcel, "pid": os.getpid(), "slots": more["by_slot"]},
                )
    ''',
    f"{PACKAGE}-0.1.dist-info/METADATA": f"""
        Metadata-Version: 2.1
        Name: {DIST}
        Version: 0.1
        Summary: a throwaway roadie plugin for an end-to-end test
    """,
    f"{PACKAGE}-0.1.dist-info/entry_points.txt": f"""
        [roadie.executors]
        deliver = {PACKAGE}.executors:Deliver

        [roadie.plugins]
        {PACKAGE} = {PACKAGE}.hooks
    """,
}


@dataclass
class Plugin:
    root: Path


@pytest.fixture
def plugin(tmp_path: Path) -> Iterator[Plugin]:
    """The plugin distribution, importable in this process for the test's duration."""
    root = tmp_path / "site"
    for name, text in PLUGIN_FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    sys.path.insert(0, str(root))
    try:
        yield Plugin(root)
    finally:
        sys.path.remove(str(root))
        sys.path_importer_cache.pop(str(root), None)
        for module in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[module]


@pytest.fixture
def sqlite_app(tmp_path: Path, plugin: Plugin) -> Iterator[roadie.Roadie]:
    app = make_app(f"sqlite:///{tmp_path / 'roadie.db'}", tmp_path / "data")
    yield app
    app.close()


def run_worker_process(app: roadie.Roadie, plugin: Plugin, tmp_path: Path) -> None:
    """``roadie worker --until-idle`` in a separate Python process, with the plugin on its path."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("ROADIE_URL", "ROADIE_BLOCK_PLUGINS", "ROADIE_LOAD_PLUGINS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugin.root), env.get("PYTHONPATH")]))
    env["ROADIE_DATA_DIR"] = str(tmp_path / "worker-data")
    done = subprocess.run(
        [sys.executable, "-m", "roadie", "--url", app.url, "worker", "--until-idle",
         "--concurrency", "1"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, f"worker failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"


@pytest.mark.slow
def test_a_plugin_dataclass_reaches_a_worker_in_another_process(
    sqlite_app: roadie.Roadie, plugin: Plugin, tmp_path: Path
) -> None:
    from roadie_e2e_parcels.types import Parcel  # importable now: the fixture put it on sys.path

    due = dt.datetime(2025, 5, 6, 7, 8, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    parcel = Parcel("p-1", 1200, due, fragile=True)
    context = {
        "parcel": parcel,
        "more": {
            "by_label": {"p-2": Parcel("p-2", 30, due)},
            "by_slot": {(1, "A"): "p-1", (2, "B"): "p-2"},
        },
    }
    task = sqlite_app.add_task(EXECUTOR, context, name="deliver p-1")
    assert set(task.plugins) == {DIST}
    assert task.plugins[DIST] == "0.1"
    stored = task.context_bytes

    run_worker_process(sqlite_app, plugin, tmp_path)

    final = sqlite_app.get_task(task.id)
    assert final.status == roadie.Status.SUCCESSFUL, (final.status_message, final.error)
    assert final.completed
    assert final.status_message.startswith("delivered p-1 (1230 g, due 2025-05-06T07:08:00+02:00)")
    result = final.result
    assert result["pid"] != os.getpid()
    assert f"in process {result['pid']}" in final.status_message
    assert type(result["parcel"]) is Parcel and result["parcel"] == parcel
    assert result["slots"] == {(1, "A"): "p-1", (2, "B"): "p-2"}
    assert final.context == context
    assert final.context_bytes == stored

    # a Roadie without the plugin keeps the row and the bytes, and says what is missing
    with roadie.Roadie(sqlite_app.url, blocked_plugins=[DIST],
                       data_dir=tmp_path / "blocked") as blocked:
        record = blocked.get_task(task.id)
        assert record.status == roadie.Status.SUCCESSFUL
        assert record.context_bytes == stored
        with pytest.raises(roadie.ContextDecodeError) as caught:
            record.context  # noqa: B018
    message = str(caught.value)
    assert f"context of task {task.id}" in message
    assert f"plugin '{DIST}'" in message
    assert "type 'Parcel'" in message
    assert sqlite_app.get_task(task.id).context_bytes == stored


def test_a_version_1_parcel_is_upgraded_when_read(sqlite_app: roadie.Roadie) -> None:
    """A value written by version 1 of the plugin's type reads as the installed version 2."""
    from roadie_e2e_parcels.types import Parcel

    sqlite_app.plugins.load()
    due = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    v1 = msgpack.packb({"parcel": msgpack.ExtType(EXT_CODE, msgpack.packb(
        [f"{DIST}:Parcel", 1, {"label": "old", "grams": 5,
                               "due": msgpack.unpackb(sqlite_app.registry.encode(due))}]))})
    assert sqlite_app.registry.decode(v1, namespaces=[DIST]) == {"parcel": Parcel("old", 5, due)}


def test_a_fresh_roadie_reads_a_plugin_type(sqlite_app: roadie.Roadie, tmp_path: Path) -> None:
    from roadie_e2e_parcels.types import Parcel

    due = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    task = sqlite_app.add_task(EXECUTOR, {"parcel": Parcel("p", 1, due)})
    with roadie.Roadie(sqlite_app.url, data_dir=tmp_path / "fresh") as fresh:
        context: Any = fresh.get_task(task.id).context
    assert context == {"parcel": Parcel("p", 1, due)}

"""Attachments: round trips with checksums, from execute, across restarts, deletion, hostile
names, the size limit, a plugin's store, and the CLI."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
import roadie
from click.testing import CliRunner
from roadie import AttachmentError, Status, TaskNotFound
from roadie.cli import cli
from roadie.testing import make_app, run_task


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def folder_of(app: roadie.Roadie, task_id: int) -> Path:
    return Path(app.settings.data_dir) / "attachments" / str(task_id)


def read(app: roadie.Roadie, task_id: int, name: str) -> bytes:
    with app.open_attachment(task_id, name) as stream:
        return stream.read()


def new_task(app: roadie.Roadie) -> int:
    return app.add_task("tests:sleep", {"seconds": 0}).id


# -- an executor that attaches from execute, and from a child ------------------------------


class Attacher(roadie.Executor):
    """Attaches bytes, a path and a file object from execute, and bytes from a child."""

    def execute(self, task: roadie.RunningTask) -> roadie.Result:
        source = Path(task.context["source"])
        task.attach("inline.txt", b"hello from execute")
        task.attach("copy.bin", source)
        with source.open("rb") as stream:
            task.attach("stream.dat", stream, media_type="application/x-roadie-test")

        def child() -> str:
            current = roadie.current_task()
            assert current is not None
            return current.attach("from-child.txt", b"a child's file").name

        name = task.spawn(child, name="attaching child").result()
        return roadie.Result.success(f"attached 4 files, the last {name}")


@pytest.fixture(autouse=True)
def _attacher(app: roadie.Roadie) -> None:
    app.plugins.register_executor("tests:attacher", Attacher)


def attach_from_execute(app: roadie.Roadie, tmp_path: Path) -> tuple[int, bytes]:
    payload = os.urandom(300_000)
    source = tmp_path / "source.bin"
    source.write_bytes(payload)
    task = run_task(app, "tests:attacher", {"source": str(source)}).task
    assert task.status is Status.SUCCESSFUL, task.status_message
    return task.id, payload


# -- round trips ----------------------------------------------------------------------------


def test_round_trip_from_bytes_path_and_file_object(app: roadie.Roadie, tmp_path: Path) -> None:
    task_id = new_task(app)
    big = os.urandom(2 * 1024 * 1024 + 123)  # more than one 1 MiB chunk
    small = b'{"answer": 42}\n'
    on_disk = tmp_path / "upload.csv"
    on_disk.write_bytes(b"a,b\n1,2\n")
    before = dt.datetime.now(dt.timezone.utc)

    infos = [
        app.add_attachment(task_id, "big.bin", big),
        app.add_attachment(task_id, "answer.json", small),
        app.add_attachment(task_id, "from-path.csv", on_disk),
        app.add_attachment(task_id, "from-str-path.csv", str(on_disk)),
        app.add_attachment(task_id, "buffer.dat", io.BytesIO(b"\x00\x01\x02" * 1000)),
    ]
    with on_disk.open("rb") as stream:
        infos.append(app.add_attachment(task_id, "file-object.txt", stream,
                                        media_type="text/csv"))
    expected = {
        "big.bin": (big, "application/octet-stream"),
        "answer.json": (small, "application/json"),
        "from-path.csv": (b"a,b\n1,2\n", "text/csv"),
        "from-str-path.csv": (b"a,b\n1,2\n", "text/csv"),
        "buffer.dat": (b"\x00\x01\x02" * 1000, "application/octet-stream"),
        "file-object.txt": (b"a,b\n1,2\n", "text/csv"),  # explicit media type wins
    }
    for info in infos:
        data, media_type = expected[info.name]
        assert info.task_id == task_id
        assert info.size == len(data)
        assert info.checksum == sha(data)
        assert info.media_type == media_type

    listed = app.list_attachments(task_id)
    assert [a.name for a in listed] == sorted(expected)
    for info in listed:
        data, media_type = expected[info.name]
        assert (info.size, info.checksum, info.media_type) == (len(data), sha(data), media_type)
        assert info.created_at.tzinfo is not None
        assert before - dt.timedelta(seconds=5) <= info.created_at
        assert info.created_at <= dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5)
        content = read(app, task_id, info.name)
        assert content == data and sha(content) == info.checksum

    # attaching a name again replaces it
    again = app.add_attachment(task_id, "big.bin", b"second")
    assert [a for a in app.list_attachments(task_id) if a.name == "big.bin"] == [again]
    assert read(app, task_id, "big.bin") == b"second"
    assert again.checksum == sha(b"second") and again.size == 6


def test_attach_from_execute_and_from_a_child(app: roadie.Roadie, tmp_path: Path) -> None:
    task_id, payload = attach_from_execute(app, tmp_path)
    listed = {a.name: a for a in app.list_attachments(task_id)}
    assert sorted(listed) == ["copy.bin", "from-child.txt", "inline.txt", "stream.dat"]
    assert listed["inline.txt"].checksum == sha(b"hello from execute")
    assert listed["inline.txt"].media_type == "text/plain"
    assert listed["copy.bin"].checksum == listed["stream.dat"].checksum == sha(payload)
    assert listed["stream.dat"].media_type == "application/x-roadie-test"
    assert listed["from-child.txt"].size == len(b"a child's file")
    assert read(app, task_id, "copy.bin") == payload


def test_attachments_survive_a_restart(app: roadie.Roadie, tmp_path: Path) -> None:
    task_id, payload = attach_from_execute(app, tmp_path)
    before = app.list_attachments(task_id)
    url, data_dir = app.url, app.settings.data_dir
    app.close()
    with make_app(url, data_dir) as fresh:
        assert fresh.list_attachments(task_id) == before
        assert read(fresh, task_id, "stream.dat") == payload
        assert sha(read(fresh, task_id, "stream.dat")) == sha(payload)
        assert read(fresh, task_id, "inline.txt") == b"hello from execute"
    with roadie.Roadie(url, data_dir=data_dir) as plain:  # no test settings at all
        assert [a.checksum for a in plain.list_attachments(task_id)] == \
            [a.checksum for a in before]


def test_deleting_the_task_deletes_its_attachments(app: roadie.Roadie, tmp_path: Path) -> None:
    task_id, _ = attach_from_execute(app, tmp_path)
    other = new_task(app)
    app.add_attachment(other, "keep.txt", b"not mine to delete")
    folder = folder_of(app, task_id)
    assert sorted(p.name for p in folder.iterdir()) == [
        "copy.bin", "from-child.txt", "inline.txt", "stream.dat"]

    app.delete_task(task_id)

    assert not folder.exists()
    assert app.store.list_attachments(task_id) == []  # the rows are gone
    with pytest.raises(TaskNotFound):
        app.list_attachments(task_id)
    with pytest.raises(TaskNotFound):
        app.open_attachment(task_id, "inline.txt")
    assert read(app, other, "keep.txt") == b"not mine to delete"
    assert [a.name for a in app.list_attachments(other)] == ["keep.txt"]


# -- refusals -------------------------------------------------------------------------------

HOSTILE_NAMES = [
    "../x", "/etc/passwd", "a/b", "", "..", ".", "a\x00b", "a\\b", "..\\x", "x" * 256,
    "C:\\x", "C:x", ".hidden", "a\nb", "trailing\n", " leading", "trailing.", "trailing ",
    "a/../b", "~/x", "sub/../../x", "\u202eevil.txt",
]


def test_hostile_names_are_refused_and_plain_ones_accepted(app: roadie.Roadie,
                                                          tmp_path: Path) -> None:
    task_id = new_task(app)
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in HOSTILE_NAMES:
        with pytest.raises(AttachmentError, match="is not allowed") as refused:
            app.add_attachment(task_id, name, b"payload")
        assert repr(name) in str(refused.value), name
        with pytest.raises(AttachmentError, match="is not allowed"):
            app.open_attachment(task_id, name)
    with pytest.raises(AttachmentError, match="is not allowed"):
        app.add_attachment(task_id, None, b"payload")  # type: ignore[arg-type]
    assert app.list_attachments(task_id) == []
    attachments = Path(app.settings.data_dir) / "attachments"
    written = [p for p in attachments.rglob("*") if p.is_file()] if attachments.exists() else []
    assert written == []
    assert list(outside.iterdir()) == []

    for name in ["x" * 255, "report 2024-01.pdf", "a+b_c-d.tar.gz", "0", "v1.2"]:
        info = app.add_attachment(task_id, name, name.encode())
        assert info.name == name
        assert read(app, task_id, name) == name.encode()


def test_the_size_limit(app: roadie.Roadie, tmp_path: Path) -> None:
    task_id = new_task(app)
    with make_app(app.url, app.settings.data_dir, max_attachment_size=100) as limited:
        info = limited.add_attachment(task_id, "exactly.bin", b"x" * 100)
        assert info.size == 100
        too_big = tmp_path / "big.bin"
        too_big.write_bytes(b"y" * 101)
        for data in (b"y" * 101, too_big, io.BytesIO(b"y" * 5000)):
            with pytest.raises(AttachmentError) as refused:
                limited.add_attachment(task_id, "big.bin", data)
            message = str(refused.value)
            assert "'big.bin'" in message and f"task {task_id}" in message
            assert "limit of 100 bytes" in message and "max_attachment_size" in message
        assert [a.name for a in limited.list_attachments(task_id)] == ["exactly.bin"]
        # no partial upload is left behind
        assert sorted(p.name for p in folder_of(limited, task_id).iterdir()) == ["exactly.bin"]


def test_bad_data_is_refused_clearly(app: roadie.Roadie, tmp_path: Path) -> None:
    task_id = new_task(app)
    with pytest.raises(AttachmentError, match="no such file"):
        app.add_attachment(task_id, "gone.txt", tmp_path / "does-not-exist.txt")
    with pytest.raises(AttachmentError, match="not int"):
        app.add_attachment(task_id, "number.txt", 42)  # type: ignore[arg-type]
    text = tmp_path / "text.txt"
    text.write_text("some text")
    with text.open("r") as stream, pytest.raises(AttachmentError, match="binary mode"):
        app.add_attachment(task_id, "text.txt", stream)  # type: ignore[arg-type]
    with pytest.raises(AttachmentError, match="binary mode"):
        app.add_attachment(task_id, "text.txt", io.StringIO("text"))  # type: ignore[arg-type]
    assert app.list_attachments(task_id) == []
    with pytest.raises(TaskNotFound):
        app.add_attachment(999, "x.txt", b"x")
    assert not folder_of(app, 999).exists()


def test_opening_a_missing_attachment_lists_what_exists(app: roadie.Roadie) -> None:
    task_id = new_task(app)
    with pytest.raises(AttachmentError, match=r"has no attachment 'a\.txt' \(it has: none\)"):
        app.open_attachment(task_id, "a.txt")
    app.add_attachment(task_id, "b.txt", b"b")
    app.add_attachment(task_id, "a.csv", b"a")
    with pytest.raises(AttachmentError) as missing:
        app.open_attachment(task_id, "a.txt")
    assert str(missing.value) == (f"task {task_id} has no attachment 'a.txt' "
                                  f"(it has: a.csv, b.txt)")
    with pytest.raises(TaskNotFound):
        app.open_attachment(task_id + 100, "a.txt")

    # recorded, but the store lost the file
    (folder_of(app, task_id) / "b.txt").unlink()
    with pytest.raises(AttachmentError, match=r"'b\.txt' of task \d+ .* cannot open it"):
        app.open_attachment(task_id, "b.txt")


# -- a plugin's store -----------------------------------------------------------------------


class MemoryStore:
    """Keeps attachments in a dict; deliberately does not check ``max_size`` itself."""

    def __init__(self) -> None:
        self.files: dict[tuple[int, str], bytes] = {}
        self.deleted: list[int] = []

    def put(self, task_id: int, name: str, stream: IO[bytes]) -> None:
        data = b"".join(iter(lambda: stream.read(4096), b""))
        self.files[(task_id, name)] = data

    def open(self, task_id: int, name: str) -> IO[bytes]:
        return io.BytesIO(self.files[(task_id, name)])

    def delete_all(self, task_id: int) -> None:
        self.deleted.append(task_id)
        for key in [k for k in self.files if k[0] == task_id]:
            del self.files[key]


class MemoryStorePlugin:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self.apps: list[roadie.Roadie] = []

    @roadie.hookimpl
    def roadie_attachment_store(self, app: roadie.Roadie) -> MemoryStore:
        self.apps.append(app)
        return self.store


@pytest.fixture
def memstore(app: roadie.Roadie) -> Iterator[MemoryStore]:
    plugin = MemoryStorePlugin()
    app.plugins.register(plugin, name="memstore")  # before the first attachment call
    yield plugin.store
    assert plugin.apps == [app]  # asked once, then cached


def test_a_plugin_provides_the_store(app: roadie.Roadie, memstore: MemoryStore,
                                     tmp_path: Path) -> None:
    assert app.attachment_store is memstore
    task_id, payload = attach_from_execute(app, tmp_path)
    assert sorted(name for (tid, name) in memstore.files if tid == task_id) == [
        "copy.bin", "from-child.txt", "inline.txt", "stream.dat"]
    assert not (Path(app.settings.data_dir) / "attachments").exists()
    listed = {a.name: a for a in app.list_attachments(task_id)}
    # size and checksum are roadie's own, whatever the store answers
    assert listed["copy.bin"].checksum == sha(payload)
    assert listed["copy.bin"].size == len(payload)
    assert read(app, task_id, "copy.bin") == payload

    app.settings.max_attachment_size = 10  # the limit holds for a plugin's store too
    with pytest.raises(AttachmentError, match="limit of 10 bytes"):
        app.add_attachment(task_id, "big.txt", b"z" * 11)

    app.delete_task(task_id)
    assert memstore.deleted == [task_id]
    assert not any(tid == task_id for (tid, _) in memstore.files)
    assert app.store.list_attachments(task_id) == []


# -- the command line -------------------------------------------------------------------------


@pytest.fixture
def invoke(app: roadie.Roadie, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ROADIE_DATA_DIR", str(app.settings.data_dir))
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(cli, ["--url", app.url, *args], catch_exceptions=False)

    return run


def test_cli_lists_and_gets_attachments(app: roadie.Roadie, invoke, tmp_path: Path) -> None:
    task_id, payload = attach_from_execute(app, tmp_path)
    listed = invoke("attachments", str(task_id))
    assert listed.exit_code == 0, listed.output
    for info in app.list_attachments(task_id):
        assert info.name in listed.output
        assert f"{info.size:,}" in listed.output
        assert info.media_type in listed.output
        assert info.checksum[:19] in listed.output

    target = tmp_path / "out" / "copy.bin"
    target.parent.mkdir()
    got = invoke("attachment", "get", str(task_id), "copy.bin", "-o", str(target))
    assert got.exit_code == 0, got.output
    assert target.read_bytes() == payload
    assert f"wrote {target}" in got.stderr

    to_stdout = invoke("attachment", "get", str(task_id), "stream.dat")
    assert to_stdout.exit_code == 0, to_stdout.stderr
    assert to_stdout.stdout_bytes == payload
    assert sha(to_stdout.stdout_bytes) == sha(payload)


def test_cli_errors_are_one_line(app: roadie.Roadie, invoke) -> None:
    task_id = new_task(app)
    app.add_attachment(task_id, "only.txt", b"x")
    missing = invoke("attachment", "get", str(task_id), "other.txt")
    assert missing.exit_code == 1
    assert missing.stderr.strip() == (f"error: task {task_id} has no attachment 'other.txt' "
                                      f"(it has: only.txt)")
    hostile = invoke("attachment", "get", str(task_id), "../only.txt")
    assert hostile.exit_code == 1 and "is not allowed" in hostile.stderr
    no_task = invoke("attachments", "424242")
    assert no_task.exit_code == 1 and "task 424242 does not exist" in no_task.stderr
    empty = invoke("attachments", str(new_task(app)))
    assert empty.exit_code == 0

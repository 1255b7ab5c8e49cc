"""Task attachments: files kept with a task, stored by a pluggable backend."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from roadie.errors import AttachmentError
from roadie.records import AttachmentInfo
from roadie.store import utcnow

if TYPE_CHECKING:
    from roadie.app import Roadie
    from roadie.store import Fence

CHUNK = 1024 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ +-]{0,254}$")


class AttachmentStore(Protocol):
    """Where attachment bytes live. roadie checks names, enforces the size limit and computes
    size and checksum while the store reads the stream, so a store only keeps bytes."""

    def put(self, task_id: int, name: str, stream: IO[bytes]) -> None:
        """Store everything ``stream`` gives as attachment ``name`` of ``task_id``, replacing
        any earlier one; if reading raises, keep nothing."""

    def open(self, task_id: int, name: str) -> IO[bytes]:
        """Open a stored attachment for reading."""

    def delete_all(self, task_id: int) -> None:
        """Delete every attachment of a task (no error if there are none)."""


class LocalAttachmentStore:
    """Keeps a folder per task under ``root``; writes go to a temporary file first."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _folder(self, task_id: int) -> Path:
        return self.root / str(int(task_id))

    def put(self, task_id: int, name: str, stream: IO[bytes]) -> None:
        self.stage(task_id, name, stream)(True)

    def stage(self, task_id: int, name: str, stream: IO[bytes]) -> Callable[[bool], None]:
        """Write the bytes to a temporary file, and return ``finish``: ``finish(True)`` puts
        them in place, ``finish(False)`` drops them. (A store may have this method: a fenced
        write then puts the bytes in place while the task row is locked, so that a stale
        attempt cannot replace a newer attempt's bytes.)"""
        folder = self._folder(task_id)
        folder.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(stream, out, CHUNK)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

        def finish(keep: bool) -> None:
            if keep:
                os.replace(temporary, folder / name)
            else:
                Path(temporary).unlink(missing_ok=True)

        return finish

    def open(self, task_id: int, name: str) -> IO[bytes]:
        return (self._folder(task_id) / name).open("rb")

    def delete_all(self, task_id: int) -> None:
        shutil.rmtree(self._folder(task_id), ignore_errors=True)


class _CheckedStream(io.RawIOBase):
    """Reads a caller's stream for a store: counts and hashes the bytes, and refuses more than
    ``max_size`` (so the limit and the checksum hold whichever store keeps the bytes)."""

    def __init__(self, stream: IO[bytes], task_id: int, name: str, max_size: int) -> None:
        super().__init__()
        self._stream = stream
        self._task_id = task_id
        self._name = name
        self._max_size = max_size
        self._digest = hashlib.sha256()
        self.size = 0

    @property
    def checksum(self) -> str:
        """``"sha256:<hex>"`` of the bytes read so far."""
        return f"sha256:{self._digest.hexdigest()}"

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int | None:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        chunk = self._stream.read(len(view))
        if chunk is None:
            return None  # a non-blocking stream with no data yet
        if isinstance(chunk, str):
            raise AttachmentError(
                f"attachment {self._name!r} of task {self._task_id}: the file object gives "
                f"text; open it in binary mode ('rb')"
            )
        self.size += len(chunk)
        if self.size > self._max_size:
            raise AttachmentError(
                f"attachment {self._name!r} of task {self._task_id} is larger than the limit of "
                f"{self._max_size:,} bytes (setting max_attachment_size)"
            )
        self._digest.update(chunk)
        view[: len(chunk)] = chunk
        return len(chunk)


def check_name(name: str) -> str:
    """Refuse names that could escape the task's folder or confuse a file system."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", "..") \
            or ".." in name or name.endswith((" ", ".")):
        raise AttachmentError(
            f"attachment name {name!r} is not allowed: use 1-255 letters, digits, '.', '_', "
            f"'-', '+' or spaces, starting with a letter or digit (no paths)"
        )
    return name


def store_attachment(app: Roadie, task_id: int, name: str,
                     data: bytes | str | Path | IO[bytes], *,
                     media_type: str | None = None, fence: Fence | None = None) -> AttachmentInfo:
    """Validate, store and record one attachment. With ``fence`` it is a write of that
    attempt: refused (TakenOver) before the bytes are stored, and again when the row is, if the
    task was taken over."""
    check_name(name)
    if fence is not None:
        app.store.check_fence(None, fence)  # a stale attempt must not replace the bytes
    else:
        app.get_task(task_id)
    if isinstance(data, (bytes, bytearray, memoryview)):
        stream: IO[bytes] = io.BytesIO(bytes(data))
        close = False
    elif isinstance(data, (str, Path)):
        path = Path(data)
        if not path.is_file():
            raise AttachmentError(f"cannot attach {str(path)!r} to task {task_id}: no such file")
        stream = path.open("rb")
        close = True
    elif isinstance(data, io.TextIOBase):
        raise AttachmentError(
            f"attachment {name!r} of task {task_id}: the file object gives text; open it in "
            f"binary mode ('rb')"
        )
    elif hasattr(data, "read"):
        stream = data
        close = False
    else:
        raise AttachmentError(
            f"attachment {name!r}: give bytes, a path or a binary file object, "
            f"not {type(data).__name__}"
        )
    max_size = app.settings.max_attachment_size
    checked = _CheckedStream(stream, task_id, name, max_size)
    store = app.attachment_store
    stage = getattr(store, "stage", None) if fence is not None else None
    finish: Callable[[bool], None] | None = None
    try:
        if stage is not None:  # the bytes go in place once the fence holds the task row
            finish = stage(task_id, name, checked)
        else:
            store.put(task_id, name, checked)  # type: ignore[arg-type]
    finally:
        if close:
            stream.close()
    info = AttachmentInfo(
        task_id=task_id, name=name, size=checked.size, checksum=checked.checksum,
        media_type=media_type or _guess_type(name),
        created_at=utcnow(),
    )
    try:
        app.store.add_attachment(info, fence,
                                 in_place=None if finish is None else lambda: finish(True))
    except BaseException:
        if finish is not None:
            finish(False)  # refused (a stale attempt): its bytes are not kept
        raise
    return info


def _guess_type(name: str) -> str:
    """The media type of a file called ``name``, from its extension (mimetypes is imported
    here: a worker whose tasks attach nothing never loads it)."""
    import mimetypes

    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def open_attachment(app: Roadie, task_id: int, name: str) -> IO[bytes]:
    """Open a recorded attachment, or raise a clear error."""
    check_name(name)
    names = {a.name for a in app.list_attachments(task_id)}
    if name not in names:
        listing = ", ".join(sorted(names)) or "none"
        raise AttachmentError(f"task {task_id} has no attachment {name!r} (it has: {listing})")
    try:
        return app.attachment_store.open(task_id, name)
    except (OSError, LookupError) as exc:
        raise AttachmentError(
            f"attachment {name!r} of task {task_id} is recorded but its store cannot open it "
            f"({type(exc).__name__}: {exc}); delete the task or attach it again"
        ) from exc

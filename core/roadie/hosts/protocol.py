"""The host protocol: length-prefixed msgpack frames over a socket, and task rows as frames.

A frame is a 4-byte big-endian length and a msgpack map with an ``op`` key. Plugin values
(context, status, checkpoint, result) cross as bytes already encoded by the type registry of
the side that made them, so the worker never decodes a plugin's types. Nothing is pickled.

Worker to host: ``run`` (a task), ``cancel``, ``ping`` (the lease), ``reply`` (to a call),
``exit``. Host to worker: ``ready``, ``live`` (status, messages, checkpoint), ``call`` (an
attachment to store, subtasks to add, an executor the host does not have to resolve), ``done``
(the attempt's outcome).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import socket
import struct
import threading
from collections.abc import Sequence
from typing import Any

import msgpack

from roadie.records import TaskRecord
from roadie.status import Status
from roadie.store import NewTask

MAX_FRAME = 512 * 1024 * 1024
_HEADER = struct.Struct(">I")
_DATES = {"run_after", "heartbeat_at", "cancel_requested_at", "created_at", "started_at",
          "finished_at", "updated_at", "scheduled_for"}


class ChannelClosed(EOFError):
    """The other side closed its end (or died)."""


class Channel:
    """One end of a host connection: whole frames in, whole frames out (sends are locked)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()
        self._buffer = bytearray()

    def send(self, frame: dict[str, Any], fds: Sequence[int] = ()) -> None:
        """Send one frame (thread-safe), with the file descriptors ``fds`` if any (a host's
        socket, sent to a template host)."""
        body = msgpack.packb(frame, use_bin_type=True)
        data = _HEADER.pack(len(body)) + body
        with self._send_lock:
            if fds:
                sent = socket.send_fds(self.sock, [data], list(fds))
                self.sock.sendall(data[sent:])
            else:
                self.sock.sendall(data)

    def recv(self, timeout: float | None = None,
             fds: list[int] | None = None) -> dict[str, Any] | None:
        """The next frame, or None when ``timeout`` passes first; raises ChannelClosed.
        With ``fds``, file descriptors that come with the bytes are appended to it."""
        self.sock.settimeout(timeout)
        while True:
            if len(self._buffer) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(self._buffer)
                if size > MAX_FRAME:
                    raise ChannelClosed(f"frame of {size} bytes is over the limit")
                if len(self._buffer) >= _HEADER.size + size:
                    body = bytes(self._buffer[_HEADER.size:_HEADER.size + size])
                    del self._buffer[:_HEADER.size + size]
                    frame: dict[str, Any] = msgpack.unpackb(body, raw=False)
                    return frame
            try:
                if fds is None:
                    chunk = self.sock.recv(1 << 16)
                else:
                    chunk, received, _, _ = socket.recv_fds(self.sock, 1 << 16, 8)
                    fds.extend(received)
            except (TimeoutError, BlockingIOError):
                return None
            except OSError as exc:
                raise ChannelClosed(str(exc)) from exc
            if not chunk:
                raise ChannelClosed("the other side closed the connection")
            self._buffer.extend(chunk)

    def close(self) -> None:
        """Close this end."""
        self.sock.close()


def record_to_frame(record: TaskRecord) -> dict[str, Any]:
    """A task row as plain msgpack values (dates as ISO strings, bytes as they are)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        if f.name == "decoder":
            continue
        value = getattr(record, f.name)
        if isinstance(value, dt.datetime):
            value = value.isoformat()
        elif isinstance(value, frozenset):
            value = sorted(value)
        elif isinstance(value, Status):
            value = int(value)
        elif f.name == "plugins":
            value = dict(value)
        out[f.name] = value
    return out


def record_from_frame(frame: dict[str, Any]) -> TaskRecord:
    """The TaskRecord that ``record_to_frame`` sent (without a decoder)."""
    values = dict(frame)
    for name in _DATES:
        if values.get(name) is not None:
            values[name] = dt.datetime.fromisoformat(values[name])
    values["tags"] = frozenset(values.get("tags") or ())
    values["status"] = Status(values["status"])
    return TaskRecord(**values)


def new_task_to_frame(spec: NewTask) -> dict[str, Any]:
    """A task to insert (a subtask a host adds) as plain msgpack values."""
    out = dataclasses.asdict(spec)
    out["plugins"] = dict(spec.plugins)
    out["after"] = list(spec.after)
    if spec.run_after is not None:
        out["run_after"] = spec.run_after.isoformat()
    return out


def new_task_from_frame(frame: dict[str, Any]) -> NewTask:
    """The NewTask that ``new_task_to_frame`` sent."""
    values = dict(frame)
    if values.get("run_after") is not None:
        values["run_after"] = dt.datetime.fromisoformat(values["run_after"])
    values["after"] = tuple(values.get("after") or ())
    return NewTask(**values)

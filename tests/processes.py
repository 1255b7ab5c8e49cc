"""Worker processes for tests: real `roadie worker` subprocesses with fast intervals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from roadie.testing import FAST_SETTINGS


def worker_env(data_dir: Path, pythonpath: Iterable[Path | str] = (),
               **extra: str) -> dict[str, str]:
    """The environment of a test worker process."""
    env = dict(os.environ)
    env["ROADIE_DATA_DIR"] = str(data_dir)
    for key, value in FAST_SETTINGS.items():
        env[f"ROADIE_{key.upper()}"] = str(value)
    paths = [str(p) for p in pythonpath]
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([*paths, root])
    env.update(extra)
    return env


def start_worker(url: str, data_dir: Path, *args: str, pythonpath: Iterable[Path | str] = (),
                 env: dict[str, str] | None = None, log: Path | None = None,
                 new_session: bool = False) -> subprocess.Popen[bytes]:
    """Start ``python -m roadie --url URL worker ARGS`` (output to ``log`` if given;
    ``new_session``: in a process group of its own, as a terminal's foreground job)."""
    command = [sys.executable, "-m", "roadie", "--url", url, "worker", *args]
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    return subprocess.Popen(
        command, env={**worker_env(data_dir, pythonpath), **(env or {})},
        stdout=out, stderr=subprocess.STDOUT, start_new_session=new_session,
    )


def stop(process: subprocess.Popen[bytes], *, timeout: float = 30) -> int:
    """SIGTERM (graceful) and wait; SIGKILL if it does not stop in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def kill(process: subprocess.Popen[bytes]) -> None:
    """kill -9, and reap."""
    if process.poll() is None:
        process.kill()
    process.wait()

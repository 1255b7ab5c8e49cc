"""Template hosts: one warm process per environment that forks a host per request.

A template (``python -m roadie.hosts.main --template``) imports roadie and the plugins once;
each host it forks starts in the time of a fork instead of a Python start and its imports.
The pool (``hosts/pool``) asks it for hosts and learns from it how each one ended.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import Future

from roadie.errors import RoadieError
from roadie.hosts.protocol import Channel, ChannelClosed

log = logging.getLogger("roadie.hosts")

# hosts are forked from a template host where a process can fork and pass a socket
CAN_FORK = hasattr(os, "fork") and hasattr(socket, "send_fds")


class HostError(RoadieError):
    """A task's host failed it: it died, was killed, or could not start."""


def describe_exit(code: int | None) -> str:
    """'killed by signal SIGABRT' or 'exit code 3'."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class ForkedProcess:
    """A host forked by a template host: the part of ``subprocess.Popen`` a HostProcess uses.
    Its template reaps it and says how it ended; a kill goes through the template too."""

    def __init__(self, template: Template, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._template = template
        self._ended = threading.Event()

    def poll(self) -> int | None:
        """Its exit code (negative: the signal), or None while it runs."""
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait until it ended; ``subprocess.TimeoutExpired`` after ``timeout``."""
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(f"host {self.pid}", timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        """SIGKILL it (by its template, which has not reaped it yet)."""
        if self.returncode is None:
            self._template.kill(self.pid)

    def ended(self, code: int) -> None:
        self.returncode = code
        self._ended.set()


class Template:
    """A template host of one environment (``python -m roadie.hosts.main --template``): it
    imports roadie and the plugins once and forks a warm host per request, so a host starts
    in the time of a fork instead of a Python start and its imports. Started on the pool's
    starter thread (it dies with the worker: see the module docstring), like the hosts were.
    A thread of the worker reads what it says: each fork's pid and each host's end."""

    def __init__(self, env: str | None, python: str, environ: dict[str, str]) -> None:
        self.env = env
        self.python = python
        self.forkable = False
        self.retired = False
        self.start_ms = 0.0
        self._hosts: dict[int, ForkedProcess] = {}
        self._forks: queue.SimpleQueue[Future[ForkedProcess]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        started = time.perf_counter()
        parent, child = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [python, "-m", "roadie.hosts.main", "--template", str(child.fileno())],
                pass_fds=(child.fileno(),), env=environ, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self.channel = Channel(parent)
        self._started = started

    def wait_ready(self, timeout: float) -> None:
        """Wait for its "ready" frame; HostError if it does not come."""
        try:
            frame = self.channel.recv(timeout)
        except (ChannelClosed, OSError):
            frame = None
        self.start_ms = (time.perf_counter() - self._started) * 1000
        if frame is None or frame.get("op") != "ready":
            self.close()
            where = f"environment {self.env!r}" if self.env else "the worker's environment"
            raise HostError(
                f"a host process in {where} ({self.python}) did not start: "
                f"{describe_exit(self.proc.poll())} (its error is in the worker's log)")
        self.forkable = bool(frame.get("fork"))
        if self.forkable:
            threading.Thread(target=self._read, name="roadie-host-template",
                             daemon=True).start()
        else:
            log.info("a plugin starts a thread when it loads: hosts of %s start one by one",
                     f"environment {self.env!r}" if self.env else "the worker's environment")
            self.close()

    def alive(self) -> bool:
        """Whether it can still fork hosts."""
        return self.forkable and not self.retired and self.proc.poll() is None

    def fork(self, fd: int) -> ForkedProcess:
        """A new host serving the socket ``fd`` (a copy of it goes to the host)."""
        future: Future[ForkedProcess] = Future()
        with self._lock:
            self._forks.put(future)
            self.channel.send({"op": "fork"}, fds=[fd])
        try:
            return future.result(60)
        except TimeoutError:
            raise HostError("a template host did not fork") from None

    def kill(self, pid: int) -> None:
        """Ask the template to SIGKILL its host ``pid``."""
        with contextlib.suppress(OSError):
            self.channel.send({"op": "kill", "pid": pid})

    def _read(self) -> None:
        """Forks and ends, until the template is gone (its hosts then die with it)."""
        while True:
            try:
                frame = self.channel.recv(None)
            except (ChannelClosed, OSError):
                break
            if frame is None:
                continue
            if frame.get("op") == "forked":
                host = ForkedProcess(self, frame["pid"])
                with self._lock:
                    self._hosts[host.pid] = host
                self._forks.get().set_result(host)
            elif frame.get("op") == "exited":
                with self._lock:
                    ended = self._hosts.pop(frame["pid"], None)
                    done = self.retired and not self._hosts
                if ended is not None:
                    ended.ended(int(frame["code"]))
                if done:
                    self.close()
        with self._lock:
            hosts, self._hosts = list(self._hosts.values()), {}
        for host in hosts:  # PR_SET_PDEATHSIG killed them with their template
            host.ended(-signal.SIGKILL)
        while not self._forks.empty():
            self._forks.get().set_exception(HostError("the template host ended"))

    def retire(self) -> None:
        """Fork no more; end once its last host ended (an environment changed)."""
        with self._lock:
            self.retired = True
            done = not self._hosts
        if done:
            self.close()

    def close(self) -> None:
        """Stop it (hosts it forked that still run die with it)."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.channel.send({"op": "exit"})
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(OSError):
            self.channel.sock.shutdown(socket.SHUT_RDWR)  # wakes the reading thread
        self.channel.close()


"""A throwaway PostgreSQL cluster of its own (initdb on a free port), for tests that stop and
start the server. The shared server is never touched.

The binaries come from ``pg_config --bindir`` or ``/usr/lib/postgresql/<version>/bin`` (the
newest). Run as root, the server runs as user ``postgres`` (``runuser``), since PostgreSQL
refuses to run as root.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa


def pg_bindir() -> Path | None:
    """Where initdb and pg_ctl are, or None."""
    candidates = []
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                             check=True).stdout.strip()
        candidates.append(Path(out))

    def version(path: str) -> tuple[int, ...]:
        part = Path(path).parent.name
        return tuple(int(p) for p in part.split(".") if p.isdigit())

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version,
                                           reverse=True)]
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """One cluster: ``url`` of its database ``roadie``; ``stop()``, ``start()``. With
    ``standby_of``, a streaming standby of that cluster (``pg_basebackup``), which
    ``promote()`` makes a primary."""

    def __init__(self, bindir: Path, *, standby_of: Cluster | None = None) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="roadie-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        if standby_of is not None:
            self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(standby_of.port),
                      "-U", "postgres", "-D", str(self.data), "-R", "-X", "stream", "-c", "fast",
                      "--no-sync")
            self.start()
            self.url = self.server_url("roadie")
            return
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync")
        self.start()
        admin = sa.create_engine(self.server_url("postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text("CREATE DATABASE roadie"))
        admin.dispose()
        self.url = self.server_url("roadie")

    def promote(self) -> None:
        """Make this standby a primary (it returns once it accepts writes)."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "promote")

    def require_synchronous_standby(self) -> None:
        """A commit returns only once a standby has it (``synchronous_standby_names``)."""
        admin = sa.create_engine(self.server_url("postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text("ALTER SYSTEM SET synchronous_standby_names = '*'"))
            conn.execute(sa.text("SELECT pg_reload_conf()"))
        admin.dispose()

    def server_url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bindir / program), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120, cwd=self.root)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
                   f"-c fsync=off -c max_connections=100")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: clients are disconnected; ``immediate``: a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def throwaway_pair() -> Iterator[tuple[Cluster, Cluster]]:
    """A new primary and its streaming standby, destroyed afterwards."""
    bindir = pg_bindir()
    if bindir is None:
        raise RuntimeError("no PostgreSQL binaries (pg_config --bindir, /usr/lib/postgresql)")
    primary = Cluster(bindir)
    standby = None
    try:
        standby = Cluster(bindir, standby_of=primary)
        yield primary, standby
    finally:
        primary.destroy()
        if standby is not None:
            standby.destroy()


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[Cluster]:
    """A new cluster, destroyed afterwards."""
    bindir = pg_bindir()
    if bindir is None:
        raise RuntimeError("no PostgreSQL binaries (pg_config --bindir, /usr/lib/postgresql)")
    cluster = Cluster(bindir)
    try:
        yield cluster
    finally:
        cluster.destroy()

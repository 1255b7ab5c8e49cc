"""A PgBouncer of its own in transaction pooling mode (Debian's package, on a free port) in
front of the test PostgreSQL server, for the tests of ``pooler="transaction"``.

PgBouncer refuses to run as root: run as root, it runs as user ``postgres`` (``runuser``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from tests.pgcluster import free_port

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def pgbouncer_available() -> bool:
    """Whether the pgbouncer program is installed."""
    return Path(PGBOUNCER).exists()


class Bouncer:
    """One PgBouncer: ``url(server_url)`` is that server's database through it; ``log()`` its
    log so far; ``stop()``."""

    def __init__(self, server_url: str) -> None:
        server = sa.make_url(server_url)
        self.root = Path(tempfile.mkdtemp(prefix="roadie-pgbouncer-"))
        self.port = free_port()
        self.logfile = self.root / "pgbouncer.log"
        (self.root / "users.txt").write_text(f'"{server.username}" ""\n')
        (self.root / "pgbouncer.ini").write_text("\n".join([
            "[databases]",
            f"* = host={server.host} port={server.port or 5432}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            f"unix_socket_dir = {self.root}",
            "auth_type = trust",
            f"auth_file = {self.root / 'users.txt'}",
            "pool_mode = transaction",
            "max_client_conn = 1000",
            "default_pool_size = 20",
            f"logfile = {self.logfile}",
            f"pidfile = {self.root / 'pgbouncer.pid'}",
            "",
        ]))
        self.server = server
        command = [PGBOUNCER, "-d", str(self.root / "pgbouncer.ini")]
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            for child in self.root.iterdir():
                shutil.chown(child, "postgres", "postgres")
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=30)
        self._wait_ready()

    def url(self, database: str | None = None) -> str:
        """The URL of ``database`` (the server URL's by default) through the pooler."""
        return self.server.set(host="127.0.0.1", port=self.port,
                               database=database or self.server.database).render_as_string(
            hide_password=False)

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        engine = sa.create_engine(self.url(), connect_args={"prepare_threshold": None})
        try:
            while True:
                try:
                    with engine.connect() as conn:
                        conn.execute(sa.text("SELECT 1"))
                    return
                except sa.exc.OperationalError:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.05)
        finally:
            engine.dispose()

    def log(self) -> str:
        """Its log so far."""
        return self.logfile.read_text() if self.logfile.exists() else ""

    def problems(self) -> list[str]:
        """The lines of its log that are warnings or errors."""
        return [line for line in self.log().splitlines()
                if " WARNING " in line or " ERROR " in line or " FATAL " in line]

    def stop(self) -> None:
        pid_file = self.root / "pgbouncer.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text().strip()), 15)
            deadline = time.monotonic() + 10
            while pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def bouncer_for(server_url: str) -> Iterator[Bouncer]:
    """A PgBouncer in front of ``server_url``'s server, stopped afterwards."""
    bouncer = Bouncer(server_url)
    try:
        yield bouncer
    finally:
        bouncer.stop()

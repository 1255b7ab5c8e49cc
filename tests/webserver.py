"""A real uvicorn server for the web app in a thread of the test process (SSE and browser
tests)."""

from __future__ import annotations

import socket
import threading
from typing import Any

from roadie.testing import wait_for


class ServerThread:
    """Serve an ASGI app on 127.0.0.1 and a free port until ``stop()``."""

    def __init__(self, asgi: Any) -> None:
        import uvicorn

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(asgi, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on", access_log=False,
                                timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="roadie-test-web",
                                       daemon=True)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=20, message="the web server to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

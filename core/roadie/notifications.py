"""Wake-ups: a task was added, changed, or asked to cancel.

Every ``Roadie`` on a database shares one in-process hub per database URL. On PostgreSQL a
listener thread turns LISTEN/NOTIFY into hub messages, so workers on other machines wake within
milliseconds; on SQLite the store publishes to the hub after each commit, and processes poll
each other at a short interval.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable

log = logging.getLogger("roadie.notifications")

Callback = Callable[[str, str], None]  # (channel, payload)


class Hub:
    """In-process publish/subscribe for one database."""

    def __init__(self) -> None:
        self._subscribers: dict[int, Callback] = {}
        self._lock = threading.Lock()
        self._next = 0

    def subscribe(self, callback: Callback) -> int:
        """Call ``callback(channel, payload)`` for every message; returns a token."""
        with self._lock:
            self._next += 1
            self._subscribers[self._next] = callback
            return self._next

    def unsubscribe(self, token: int) -> None:
        """Stop a subscription."""
        with self._lock:
            self._subscribers.pop(token, None)

    def publish(self, channel: str, payload: str) -> None:
        """Deliver a message to every subscriber (errors are logged, never raised)."""
        with self._lock:
            callbacks = list(self._subscribers.values())
        for callback in callbacks:
            try:
                callback(channel, payload)
            except Exception:
                log.exception("a roadie notification subscriber failed")


_hubs: dict[str, Hub] = defaultdict(Hub)
_hubs_lock = threading.Lock()


def hub_for(url: str) -> Hub:
    """The process-wide hub of a database URL."""
    with _hubs_lock:
        return _hubs[url]


class PgListener:
    """A thread that LISTENs on PostgreSQL channels and publishes what arrives to a hub."""

    def __init__(self, conninfo: str, channels: list[str], hub: Hub) -> None:
        self.conninfo = conninfo
        self.channels = channels
        self.hub = hub
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="roadie-listen", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        """Start listening; returns once LISTEN is in place (or after ``timeout``; at once
        with a ``timeout`` of 0: ``wait_ready`` then)."""
        self._thread.start()
        if timeout > 0:
            self._ready.wait(timeout)

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Return once LISTEN is in place (or its connection failed), or after ``timeout``."""
        self._ready.wait(timeout)

    def stop(self) -> None:
        """Stop listening (within about a second)."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    for channel in self.channels:
                        conn.execute(f'LISTEN "{channel}"')
                    self._ready.set()
                    self.hub.publish("roadie_listener_ready", "")
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=0.5):
                            self.hub.publish(notify.channel, notify.payload)
            except Exception as exc:
                log.warning("roadie LISTEN connection lost (%s); reconnecting", exc)
                self._ready.set()
                self._stop.wait(1.0)

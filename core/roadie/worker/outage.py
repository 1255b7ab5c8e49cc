"""Database outages as a worker sees them: when the database stops answering, one warning, a
reminder every so often while it lasts (saying for how long, and whether other nodes may have
taken over this node's tasks meanwhile), and one line when it answers again. The claim loop
and the maintenance thread both report to the same ``DatabaseOutage``; so do the built-in
plugins that run beside the worker (the schedules' firing thread). The first
``SchemaMismatchError`` is not an outage either: it goes to ``on_mismatch`` (the worker
stops)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from roadie.errors import SchemaMismatchError

log = logging.getLogger("roadie.worker")


class DatabaseOutage:
    """How long the database has been unreachable for this worker, logged: once when it
    starts, again every ``every`` seconds while it lasts (saying for how long), and once when
    it ends. Thread-safe: the claim loop and the maintenance thread both report."""

    def __init__(self, every: float, grace: float,
                 on_mismatch: Callable[[SchemaMismatchError], None] | None = None) -> None:
        self.every = max(every, 1.0)
        self.grace = grace
        self.on_mismatch = on_mismatch
        self.mismatch: SchemaMismatchError | None = None  # the first one met
        self.since: float | None = None
        self._next = 0.0
        self._refused: dict[str, float] = {}  # a refused statement's error: when to log it again
        self._lock = threading.Lock()

    def failed(self, exc: BaseException) -> None:
        """A database call failed with ``exc``."""
        if isinstance(exc, SchemaMismatchError) and self.on_mismatch is not None:
            with self._lock:
                first, self.mismatch = self.mismatch is None, self.mismatch or exc
            if first:
                self.on_mismatch(exc)
                return
        now = time.monotonic()
        if not getattr(exc, "unreachable", True):  # not an outage: a statement was refused
            with self._lock:
                if now < self._refused.get(str(exc), 0.0):
                    return
                self._refused[str(exc)] = now + self.every
            log.error("%s; retrying", exc)
            return
        with self._lock:
            if self.since is None:
                self.since, self._next = now, now + self.every
                log.warning("database unreachable: %s; retrying", exc)
                return
            if now < self._next:
                return
            self._next = now + self.every
            lasted = now - self.since
        late = (f" (longer than heartbeat_grace {self.grace:g} s: other nodes may take over "
                f"its running tasks)" if lasted > self.grace else "")
        log.warning("database unreachable for %.0f s: %s; still retrying%s", lasted, exc, late)

    def reached(self) -> None:
        """A database call succeeded."""
        if self.since is None:  # the common case: no lock
            return
        with self._lock:
            if self.since is None:
                return
            lasted, self.since = time.monotonic() - self.since, None
        log.warning("database reachable again after %.0f s", lasted)

"""The planner's statistics of the task table (PostgreSQL), kept fresh after bursts of adds.

Without them the claim sorts every waiting task: a burst leaves them behind until autovacuum
catches up. So once the tasks added by this process since the last look are as many as the
table held then (the statistics are never more than half behind), the table is analyzed:
growing it to n tasks analyzes it about log2(n) times, not once per add. The ANALYZE runs on
a thread of its own, one at a time, so the add that set it off returns at its commit. The
thread is not a daemon: a process that ends right after a big add still refreshes them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

import sqlalchemy as sa
from sqlalchemy.engine import Connection

log = logging.getLogger("roadie.store")

# the columns whose statistics the claim and the sweeps are planned with (an ANALYZE of these
# takes about half the time of all; autovacuum analyzes the rest later)
PLANNED_COLUMNS = ("status", "claimable", "executor", "tags", "priority", "run_after",
                   "isolation_key", "node", "parent_id")
ANALYZE_AFTER = 1000  # tasks added (here, since the last look) before statistics are looked at
_ROWS = sa.text("SELECT reltuples FROM pg_class WHERE oid = 'roadie_tasks'::regclass")
_ANALYZE = sa.text(f"ANALYZE roadie_tasks ({', '.join(PLANNED_COLUMNS)})")


class TaskStatistics:
    """Counts the tasks this process added and refreshes the statistics when they are half
    behind; ``autocommit`` gives a connection of the store's own pool."""

    def __init__(self, autocommit: Callable[[], AbstractContextManager[Connection]]) -> None:
        self._autocommit = autocommit
        self._lock = threading.Lock()
        self._unanalyzed = 0  # tasks added since the statistics were last looked at
        self._analyzed_rows = 0  # the task table's rows then
        self._thread: threading.Thread | None = None

    def added(self, count: int) -> None:
        """``count`` tasks were committed: start a refresh if that makes the statistics half
        behind and none runs."""
        with self._lock:
            self._unanalyzed += count
            if (self._thread is not None
                    or self._unanalyzed < max(ANALYZE_AFTER, self._analyzed_rows)):
                return
            self._thread = threading.Thread(target=self._refresh, name="roadie-statistics")
            self._thread.start()

    def _refresh(self) -> None:
        with self._lock:
            looked_at = self._unanalyzed
        try:
            with self._autocommit() as conn:
                rows = max(0, int(conn.execute(_ROWS).scalar() or 0))
                if looked_at >= rows:  # (autovacuum may have analyzed it meanwhile)
                    conn.execute(_ANALYZE)
                    rows += looked_at
        except Exception as exc:  # autovacuum gets to it; the next add over the mark retries
            log.warning("could not refresh the task table's statistics: %s", exc)
            with self._lock:
                self._thread = None
            return
        with self._lock:
            self._analyzed_rows = rows
            self._unanalyzed -= looked_at  # (tasks added meanwhile count towards the next)
            self._thread = None

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a refresh on its way (tests, and the store before it closes)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

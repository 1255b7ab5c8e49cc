"""Live updates: one feed per web server process, fanned out to every server-sent-events
stream.

The feed subscribes once to the app's change hub (on PostgreSQL that hub is fed by the one
LISTEN connection of the process; on SQLite by this process's commits), and on SQLite it also
polls, because other processes' commits announce nothing here. Whenever something may have
changed it reads the watched tasks in ONE query, for all clients together, and sends each
client the states of the tasks it watches that changed. A hundred browsers watching one task
cost one query per change, not a hundred.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

from roadie.status import Status
from roadie.store import CHANNEL_ADDED, CHANNEL_CHANGED, split_payload
from roadie.web.views import counts_view, live_state, subtask_counts

if TYPE_CHECKING:
    from roadie.app import Roadie

log = logging.getLogger("roadie.web")

PING_SECONDS = 15.0


class Subscriber:
    """One SSE stream: the task ids it watches, and the latest state of each not yet sent."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ids: Iterable[int], counts: bool,
                 changes: bool = False) -> None:
        self.loop = loop
        self.ids = frozenset(ids)
        self.counts = counts
        self.changes = changes  # a "change" event whenever tasks may have changed (overview)
        self.pending: dict[str, str] = {}  # "task:7" / "counts" -> its latest JSON
        self.sent: dict[int, str] = {}  # task id -> the state last given to this stream
        self.ready = asyncio.Event()

    def offer(self, key: str, data: str) -> None:
        """Called in the event loop: keep only the newest state per key (a slow client never
        queues more than one message per task)."""
        self.pending[key] = data
        self.ready.set()

    def take(self) -> list[tuple[str, str]]:
        """The messages waiting, emptied."""
        items = list(self.pending.items())
        self.pending.clear()
        self.ready.clear()
        return items


class Feed:
    """The process's single source of live task states for the web app."""

    def __init__(self, app: Roadie, *, poll_interval: float | None = None) -> None:
        self.app = app
        self.poll_interval = poll_interval
        self._subscribers: set[Subscriber] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hub_token: int | None = None
        self._seen: dict[int, str] = {}
        self._counts = ""
        self._counts_changed = True
        self._counts_at = 0.0
        self._changes = 0  # how many change notifications came (the "change" events' data)
        self._changes_sent = 0
        self._changes_at = 0.0
        self.queries = 0  # how many reads the feed made (the benchmark reports it)

    # -- clients -------------------------------------------------------------------------

    def subscribe(self, ids: Iterable[int], *, counts: bool = False,
                  changes: bool = False) -> Subscriber:
        """Register a stream in the running event loop and send it the current states
        (``changes``: a ``change`` event, no query, whenever tasks may have changed)."""
        subscriber = Subscriber(asyncio.get_running_loop(), ids, counts, changes)
        self._ensure_started()
        with self._lock:
            self._subscribers.add(subscriber)
            for task_id in subscriber.ids:  # a newcomer gets what is known at once...
                if task_id in self._seen:
                    subscriber.sent[task_id] = self._seen[task_id]
                    subscriber.offer(f"task:{task_id}", self._seen[task_id])
            if counts and self._counts:
                subscriber.offer("counts", self._counts)
        self._wake.set()  # ...and the feed reads its tasks again, for what it missed
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget a stream (its browser went away)."""
        with self._lock:
            self._subscribers.discard(subscriber)

    @property
    def clients(self) -> int:
        """How many streams are open."""
        with self._lock:
            return len(self._subscribers)

    async def stream(self, subscriber: Subscriber) -> AsyncIterator[str]:
        """The text of an SSE response for one subscriber."""
        try:
            yield "retry: 2000\n\n"
            while True:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(subscriber.ready.wait(), PING_SECONDS)
                items = subscriber.take()
                if not items:
                    yield ": ping\n\n"
                    continue
                yield "".join(
                    f"event: {key if key in ('counts', 'change') else 'task'}\n"
                    f"data: {data}\n\n" for key, data in items
                )
        finally:
            self.unsubscribe(subscriber)

    # -- the feed thread -----------------------------------------------------------------

    def _ensure_started(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            hub = self.app.store.listen()  # PostgreSQL: the process's one LISTEN connection
            self._hub_token = hub.subscribe(self._on_change)
            self._thread = threading.Thread(target=self._run, name="roadie-web-feed",
                                            daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the feed thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._hub_token is not None:
            self.app.store.hub.unsubscribe(self._hub_token)

    def _on_change(self, channel: str, payload: str) -> None:
        if channel in (CHANNEL_CHANGED, CHANNEL_ADDED) and split_payload(payload):
            self._counts_changed = True
            self._changes += 1
            self._wake.set()

    def _interval(self) -> float:
        if self.poll_interval is not None:
            return self.poll_interval
        # SQLite: other processes' commits are not announced here, so poll; PostgreSQL:
        # NOTIFY wakes the feed, and a slow poll covers a lost listener connection.
        return 0.25 if self.app.store.is_sqlite else 5.0

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval())
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._refresh()
            except Exception as exc:  # the database may be away for a moment
                log.warning("roadie web: cannot read live task states (%s)", exc)
                self._stop.wait(1.0)
            time.sleep(0.02)  # a burst of notifications costs one read, not one each

    def _refresh(self) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        watched: set[int] = set()
        for subscriber in subscribers:
            watched |= subscriber.ids
        messages: dict[str, str] = {}  # for every stream that wants them: counts, change
        states: dict[int, str] = {}  # every watched task's state as read now
        if watched:
            self.queries += 1
            tasks = self.app.store.list_tasks(ids=sorted(watched), limit=None,
                                              decoder=self.app.decode_for_task)
            found = set()
            for task in tasks:
                found.add(task.id)
                # A waiting parent's row does not change as its subtasks end: count them.
                subtasks = subtask_counts(self.app, task) \
                    if task.status == Status.WAITING else None
                states[task.id] = json.dumps(live_state(task, subtasks))
            for task_id in watched - found:
                states[task_id] = json.dumps({"id": task_id, "status": "deleted", "deleted": True})
        stale = time.monotonic() - self._counts_at > 2.0  # other processes on SQLite
        if any(s.counts for s in subscribers) and (self._counts_changed or stale):
            self._counts_changed = False
            self._counts_at = time.monotonic()
            self.queries += 1
            counts = json.dumps(counts_view(self.app))
            if counts != self._counts:
                self._counts = counts
                messages["counts"] = counts
        if any(s.changes for s in subscribers):
            # SQLite: other processes' commits are not announced; say so every few seconds
            if self.app.store.is_sqlite and time.monotonic() - self._changes_at > 5.0:
                self._changes += 1
            if self._changes != self._changes_sent:
                self._changes_sent = self._changes
                self._changes_at = time.monotonic()
                messages["change"] = json.dumps({"n": self._changes})
        with self._lock:
            self._seen = states  # (tasks nobody watches any more are forgotten)
        # Each stream gets the states that differ from what it was last given: one that
        # subscribed while this read ran, and was given the state from before it, gets the
        # new one now, not only the streams that were there when the read began.
        for subscriber in subscribers:
            wanted = [(k, v) for k, v in messages.items()
                      if (k == "counts" and subscriber.counts)
                      or (k == "change" and subscriber.changes)]
            for task_id in subscriber.ids:
                data = states.get(task_id)
                if data is not None and subscriber.sent.get(task_id) != data:
                    subscriber.sent[task_id] = data
                    wanted.append((f"task:{task_id}", data))
            if wanted:
                subscriber.loop.call_soon_threadsafe(_deliver, subscriber, wanted)


def _deliver(subscriber: Subscriber, items: list[tuple[str, Any]]) -> None:
    for key, data in items:
        subscriber.offer(key, data)

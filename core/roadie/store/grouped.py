"""Group commit of single adds (PostgreSQL): ``GroupedAdds`` for the async client's
coroutines, ``ThreadedAdds`` for threads calling ``Roadie.add_task``.

When many callers add a task each at once, the rows that arrive while a statement is in flight
wait for it and then go in together, in the next statement: one ``PG_INSERT_GROUP`` (an insert
of all of them and one notification, one commit, one round trip), each caller waiting for its
own row. A lone caller's row goes at once (as ``PG_INSERT_ONE``): nothing ever waits on a
timer. An add returns only once its row is committed. At most ``IN_FLIGHT`` statements are on
their way at once (per event loop, or per store for threads).

A group that the server refuses (a value out of a column's range, say) is committed by
nobody; its rows are then sent again one by one, so each caller gets its own row's error or
its own task. A group whose outcome is unknown (the connection was lost) fails all of its
callers, as a single add would fail its own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa

from roadie.store.engine import AsyncSessions
from roadie.store.sql import PG_INSERT_GROUP, PG_INSERT_ONE

GROUP_MAX = 100  # rows per statement, at most
IN_FLIGHT = 2  # statements on their way at once; rows arriving meanwhile make the next group
_COLUMNS = ("name", "owner", "task_group", "executor", "plugins", "context", "captured",
            "priority", "run_after", "tags", "timeout", "now", "claimable")

_Waiting = tuple[Mapping[str, Any], "asyncio.Future[dict[str, Any]]"]


class GroupedAdds:
    """One event loop's single adds on ``sessions`` (``AsyncSessions``), grouped as they
    arrive. ``await insert(params)`` gives the inserted row (a dict, with ``notified``);
    ``await close()`` lets the rows already handed in go in, then closes the sessions."""

    def __init__(self, sessions: AsyncSessions, *, group_max: int = GROUP_MAX,
                 in_flight: int = IN_FLIGHT) -> None:
        self.sessions = sessions
        self._group_max = group_max
        self._in_flight = in_flight
        self._waiting: list[_Waiting] = []
        self._senders: set[asyncio.Task[None]] = set()
        self._sending = 0  # senders not yet returned (the set loses them a moment later)

    async def insert(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Insert one task row (``PG_INSERT_ONE``'s parameters) with the rows that other
        callers hand in meanwhile; a driver error is raised as SQLAlchemy wraps it."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append((params, future))
        if self._sending < self._in_flight:
            self._sending += 1
            sender = asyncio.get_running_loop().create_task(self._send_waiting())
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)
        return await future

    async def _send_waiting(self) -> None:
        """Send the waiting rows, a group at a time, until none wait."""
        try:
            while self._waiting:
                group = [(params, future) for params, future in self._waiting[:self._group_max]
                         if not future.done()]  # (a caller cancelled before it went: not added)
                del self._waiting[:self._group_max]
                if group:
                    await self._send(group)
        finally:
            self._sending -= 1

    async def _send(self, group: list[_Waiting]) -> None:
        try:
            rows = await self.sessions.rows(*statement([p for p, _ in group]))
        except sa.exc.DBAPIError as exc:
            if len(group) > 1 and _refused(exc):  # nothing committed: each on its own
                for one in group:
                    await self._send([one])
                return
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException as exc:  # (cancelled, or a bug): the callers must not hang
            for _, future in group:
                if not future.done():
                    if isinstance(exc, Exception):
                        future.set_exception(exc)
                    else:
                        future.cancel()
            raise
        for (_, future), row in zip(group, rows, strict=True):
            if not future.done():
                future.set_result(row)

    async def close(self) -> None:
        """Wait for the rows handed in so far, then close the sessions."""
        while self._senders:
            await asyncio.gather(*self._senders, return_exceptions=True)
        await self.sessions.close()


class _Slot:
    """One thread's row in ``ThreadedAdds``: its outcome, or the word that it leads."""

    __slots__ = ("done", "error", "lead", "params", "row", "woken")

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = params
        self.woken = threading.Event()  # settled, or asked to lead
        self.done = threading.Event()  # settled
        self.lead = False
        self.row: dict[str, Any] | None = None
        self.error: BaseException | None = None

    def settle(self, row: dict[str, Any] | None, error: BaseException | None) -> None:
        self.row, self.error = row, error
        self.done.set()
        self.woken.set()


class ThreadedAdds:
    """Single adds from many threads, grouped as they arrive: ``insert(params)`` gives the
    inserted row. A thread whose row waits either gets its outcome or is asked to lead: a
    leader sends the waiting rows (``send(*statement(rows))``, in its own thread) a group at
    a time until its own row is settled, then hands the lead to a thread whose row waits."""

    def __init__(self, send: Callable[[str, Any], list[dict[str, Any]]], *,
                 group_max: int = GROUP_MAX, in_flight: int = IN_FLIGHT) -> None:
        self._send_statement = send
        self._group_max = group_max
        self._in_flight = in_flight
        self._lock = threading.Lock()
        self._waiting: list[_Slot] = []
        self._leads = 0  # leaders, and rows asked to lead that have not yet woken

    def insert(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Insert one task row (``PG_INSERT_ONE``'s parameters) with the rows that other
        threads hand in meanwhile; a driver error is raised as SQLAlchemy wraps it."""
        slot = _Slot(params)
        with self._lock:
            self._waiting.append(slot)
            if self._leads < self._in_flight:
                self._leads += 1
                slot.lead = True
        if not slot.lead:
            slot.woken.wait()
        if slot.lead:
            self._lead(slot)
        if slot.error is not None:
            raise slot.error
        assert slot.row is not None
        return slot.row

    def _lead(self, own: _Slot) -> None:
        """Send groups until ``own`` is settled, then pass the lead on (or give it up)."""
        try:
            while True:
                with self._lock:
                    if own.done.is_set() or not self._waiting:
                        break
                    group = self._waiting[:self._group_max]
                    del self._waiting[:self._group_max]
                self._send(group)
        finally:
            with self._lock:
                heir = next((s for s in self._waiting if not s.lead), None)
                if heir is not None:  # its thread leads next
                    heir.lead = True
                    heir.woken.set()
                else:
                    self._leads -= 1
        own.done.wait()  # (in a group that another leader has on its way)

    def _send(self, group: list[_Slot]) -> None:
        try:
            rows = self._send_statement(*statement([slot.params for slot in group]))
        except sa.exc.DBAPIError as exc:
            if len(group) > 1 and _refused(exc):  # nothing committed: each on its own
                for slot in group:
                    self._send([slot])
                return
            for slot in group:
                slot.settle(None, exc)
            return
        except BaseException as exc:  # (interrupted, or a bug): the others must not hang
            for slot in group:
                slot.settle(None, exc)
            raise
        for slot, row in zip(group, rows, strict=True):
            slot.settle(row, None)


def statement(rows: list[Mapping[str, Any]]) -> tuple[str, Any]:
    """The statement that inserts ``rows`` (each ``PG_INSERT_ONE``'s parameters) and its
    parameters: a lone row as ``PG_INSERT_ONE``, a group as ``PG_INSERT_GROUP`` (one list
    per column of the rows' values)."""
    if len(rows) == 1:
        return PG_INSERT_ONE, rows[0]
    return PG_INSERT_GROUP, {column: [row[column] for row in rows] for column in _COLUMNS}


def _refused(exc: sa.exc.DBAPIError) -> bool:
    """Whether nothing of the statement was committed, so that sending its rows again adds
    none twice: the server reported an error of the statement's own (not of the connection,
    class 08, or of an operator's intervention, class 57), or the driver refused the
    parameters before sending them (mixed types in a column); not a lost connection."""
    import psycopg

    original: Any = exc.orig
    sqlstate = str(getattr(original, "sqlstate", None) or "")
    if sqlstate:
        return not sqlstate.startswith(("08", "57"))
    return not isinstance(original, (psycopg.OperationalError, psycopg.InterfaceError))

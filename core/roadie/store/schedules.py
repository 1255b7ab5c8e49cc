"""Every query of schedules (the schedule part of the store): the ``roadie_schedules`` table
and the firing transaction.

Firing a slot is one transaction: a compare-and-set moves the schedule to its next slot (only
the worker that read the current version wins), and the slot's task is inserted with
``ON CONFLICT (schedule, scheduled_for) DO NOTHING`` on a unique index, so the database itself
refuses a second task for a slot. A worker killed inside the transaction commits neither.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from roadie import models
from roadie.errors import ScheduleError
from roadie.status import Status
from roadie.store.channels import CHANNEL_ADDED, CHANNEL_SCHEDULES
from roadie.store.locks import queue_behind_heads
from roadie.store.rows import task_record
from roadie.store.values import RUN_ONCE, claimable_at

if TYPE_CHECKING:
    from roadie.records import Decoder, TaskRecord
    from roadie.store.facade import Store

S = models.schedules
T = models.tasks
RULE_COLUMNS = ("cron", "every", "timezone")


@dataclass(frozen=True)
class ScheduleRow:
    """A row of ``roadie_schedules`` as stored."""

    name: str
    executor: str
    origin: str
    cron: str | None
    every: float | None
    timezone: str
    catch_up: str
    jitter: float
    overlap: bool
    paused: bool
    task_name: str
    owner: str | None
    task_group: str | None
    plugins: Mapping[str, str]
    context: bytes
    captured: bytes | None
    isolation_key: str | None
    key_limit: int | None
    priority: int
    tags: str
    timeout: float | None
    next_at: dt.datetime | None
    version: int
    last_slot: dt.datetime | None
    last_task_id: int | None
    last_fired_by: str | None
    note: str
    created_at: dt.datetime
    updated_at: dt.datetime


_FIELDS = tuple(f.name for f in dataclasses.fields(ScheduleRow))


def _row(row: Any) -> ScheduleRow:
    m = row._mapping
    return ScheduleRow(**{name: m[name] for name in _FIELDS})




class ScheduleStore:
    """The schedule queries of one ``Store`` (``store.schedules``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- reading ---------------------------------------------------------------------------

    def get(self, name: str) -> ScheduleRow | None:
        """The schedule called ``name``, or None."""
        with self.store.read_one() as conn:
            row = conn.execute(sa.select(S).where(S.c.name == name)).first()
        return None if row is None else _row(row)

    def all(self) -> list[ScheduleRow]:
        """Every schedule, by name."""
        with self.store.read_one() as conn:
            return [_row(r) for r in conn.execute(sa.select(S).order_by(S.c.name))]

    def due(self, now: dt.datetime, executors: Sequence[str]) -> list[ScheduleRow]:
        """Schedules of ``executors``, not paused, whose next slot is at or before ``now``."""
        query = sa.select(S).where(S.c.paused == sa.false(), S.c.next_at <= now,
                                   S.c.executor.in_(list(executors))).order_by(S.c.next_at)
        with self.store.read_one() as conn:
            return [_row(r) for r in conn.execute(query)]

    def next_due(self, executors: Sequence[str]) -> dt.datetime | None:
        """The earliest next slot among the active schedules of ``executors``."""
        query = sa.select(sa.func.min(S.c.next_at)).where(
            S.c.paused == sa.false(), S.c.executor.in_(list(executors)))
        with self.store.read_one() as conn:
            value = conn.execute(query).scalar()
        if value is None:
            return None
        return models.UTCDateTime().process_result_value(value, self.store.engine.dialect)

    # -- changing --------------------------------------------------------------------------

    def add(self, row: Mapping[str, Any], *, replace: bool, now: dt.datetime) -> None:
        """Insert a schedule (``row`` holds its rule, options, template and ``next_at``), or
        with ``replace`` update one added through the API (keeping its state)."""
        name = row["name"]
        with self.store.write() as conn:
            old = self._locked(conn, name)
            if old is not None:
                if old.origin == "executor":
                    raise ScheduleError(
                        f"schedule {name!r} is declared by executor {old.executor} (its class "
                        f"attribute `schedule`); choose another name")
                if not replace:
                    raise ScheduleError(
                        f"a schedule named {name!r} exists already; remove it first or "
                        f"replace it (replace=True, `--replace`)")
                values = dict(row)
                if old.paused:
                    values["next_at"] = None
                elif all(getattr(old, c) == row[c] for c in RULE_COLUMNS):
                    values["next_at"] = old.next_at  # the same rule: keep its next slot
                conn.execute(S.update().where(S.c.name == name).values(
                    **values, version=S.c.version + 1, updated_at=now,
                    note=f"{_stamp(now)}: replaced"))
            else:
                inserted = conn.execute(self.store.insert(S).values(**self._new(row, now))
                                        .on_conflict_do_nothing(index_elements=["name"]))
                if not inserted.rowcount:  # added at the same moment by someone else
                    raise ScheduleError(
                        f"a schedule named {name!r} exists already; remove it first or "
                        f"replace it (replace=True, `--replace`)")
            self.store.notify(conn, CHANNEL_SCHEDULES, name)

    @staticmethod
    def _new(row: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
        return {**row, "paused": False, "version": 1, "last_slot": None, "last_task_id": None,
                "last_fired_by": None, "note": "", "created_at": now, "updated_at": now}

    def _locked(self, conn: Connection, name: str) -> ScheduleRow | None:
        row = conn.execute(sa.select(S).where(S.c.name == name).with_for_update()).first()
        return None if row is None else _row(row)

    def remove(self, name: str) -> bool:
        """Delete a schedule (its tasks stay); whether it existed."""
        with self.store.write() as conn:
            gone = conn.execute(S.delete().where(S.c.name == name)).rowcount
            if gone:
                self.store.notify(conn, CHANNEL_SCHEDULES, name)
        return bool(gone)

    def set_paused(self, name: str, paused: bool, next_at: dt.datetime | None, *,
                   now: dt.datetime) -> bool:
        """Pause (``next_at`` None) or resume (from ``next_at``); whether it exists."""
        note = f"{_stamp(now)}: {'paused' if paused else 'resumed'}"
        with self.store.write() as conn:
            found = conn.execute(S.update().where(S.c.name == name).values(
                paused=paused, next_at=next_at, version=S.c.version + 1, updated_at=now,
                note=note)).rowcount
            if found:
                self.store.notify(conn, CHANNEL_SCHEDULES, name)
        return bool(found)

    def sync(self, rows: Sequence[Mapping[str, Any]], executors: Sequence[str], *,
             now: dt.datetime) -> None:
        """Store the schedules that ``executors`` declare: insert new ones, update changed
        ones (a new rule starts from its ``next_at``; pause state is kept), and delete the
        ones of ``executors`` that are declared no more. Writes nothing when nothing changed.
        """
        names = {row["name"] for row in rows}
        query = sa.select(S).where(sa.or_(
            S.c.name.in_(list(names)),
            sa.and_(S.c.origin == "executor", S.c.executor.in_(list(executors)))))
        with self.store.read() as conn:
            existing = {r.name: r for r in map(_row, conn.execute(
                query, execution_options=RUN_ONCE))}
        inserts: list[dict[str, Any]] = []
        updates: list[tuple[str, dict[str, Any]]] = []
        for row in rows:
            old = existing.get(row["name"])
            if old is None:
                inserts.append(self._new(row, now))
            elif old.origin == "executor":  # (an API schedule may hold the name: left alone)
                values = {k: v for k, v in row.items()
                          if k != "next_at" and getattr(old, k) != v}
                if any(c in values for c in RULE_COLUMNS):
                    values["next_at"] = None if old.paused else row["next_at"]
                if values:
                    updates.append((old.name, values))
        stale = [n for n, r in existing.items() if r.origin == "executor" and n not in names]
        if not (inserts or updates or stale):
            return
        with self.store.write() as conn:
            for values in inserts:  # another worker may have added it meanwhile
                conn.execute(self.store.insert(S).values(**values)
                             .on_conflict_do_nothing(index_elements=["name"]))
            for name, values in updates:
                conn.execute(S.update().where(S.c.name == name, S.c.origin == "executor")
                             .values(**values, version=S.c.version + 1, updated_at=now))
            if stale:
                conn.execute(S.delete().where(S.c.name.in_(stale), S.c.origin == "executor"))
            self.store.notify(conn, CHANNEL_SCHEDULES, "*")

    # -- firing ----------------------------------------------------------------------------

    def fire(self, row: ScheduleRow, slots: Sequence[tuple[dt.datetime, dt.datetime]],
             next_at: dt.datetime, note: str, *, node: str, now: dt.datetime,
             decoder: Decoder | None = None) -> list[TaskRecord] | None:
        """Fire ``row`` (as read, at its version): move it to ``next_at`` and make one task per
        ``(slot, run_after)``, in one transaction. None if another node fired it first."""
        with self.store.write() as conn:
            won = conn.execute(S.update().where(
                S.c.name == row.name, S.c.version == row.version, S.c.paused == sa.false(),
            ).values(next_at=next_at, version=S.c.version + 1, updated_at=now,
                     last_fired_by=node)).rowcount
            if not won:
                return None
            if slots and not row.overlap and row.last_task_id is not None:
                previous = conn.execute(sa.select(T.c.id).where(
                    T.c.id == row.last_task_id, T.c.completed == sa.false())).scalar()
                if previous is not None:
                    skipped = slots[-1][0].isoformat(timespec="seconds")
                    note = (f"skipped the slot of {skipped}: the previous task {previous} has "
                            f"not ended (overlap=False)")
                    slots = []
            tasks = self._insert_tasks(conn, row, slots, now, decoder)
            values: dict[str, Any] = {}
            if note:
                values["note"] = f"{_stamp(now)}: {note}"
            if slots:
                values["last_slot"] = slots[-1][0]
            if tasks:
                values["last_task_id"] = tasks[-1].id
            if values:
                conn.execute(S.update().where(S.c.name == row.name).values(**values))
        return tasks

    def run_now(self, name: str, *, now: dt.datetime,
                decoder: Decoder | None = None) -> TaskRecord | None:
        """Make one task of schedule ``name`` for the slot ``now`` (outside its rule)."""
        with self.store.write() as conn:
            row = self._locked(conn, name)
            if row is None:
                return None
            tasks = self._insert_tasks(conn, row, [(now, now)], now, decoder)
            if not tasks:
                return None
            conn.execute(S.update().where(S.c.name == name).values(
                last_task_id=tasks[0].id, version=S.c.version + 1, updated_at=now,
                note=f"{_stamp(now)}: run now (task {tasks[0].id})"))
        return tasks[0]

    def _insert_tasks(self, conn: Connection, row: ScheduleRow,
                      slots: Sequence[tuple[dt.datetime, dt.datetime]], now: dt.datetime,
                      decoder: Decoder | None) -> list[TaskRecord]:
        """Insert the tasks of ``slots`` from the schedule's template; a slot that has a task
        already is skipped by the unique index (schedule, scheduled_for). Tasks with an
        isolation key queue behind its head as added tasks do (``locks``)."""
        if not slots:
            return []
        key = row.isolation_key
        heads = self.store.key_heads(conn, [key]) if key is not None else {}
        held = self.store.held_counts(conn, [key]) if key is not None else {}
        status = Status.NEW
        values = [{
            "name": row.task_name, "owner": row.owner, "task_group": row.task_group,
            "executor": row.executor, "plugins": dict(row.plugins), "context": row.context,
            "captured": row.captured, "status": int(status), "status_message": "",
            "completed": False, "attempts": 0, "isolation_key": row.isolation_key,
            "key_limit": row.key_limit, "priority": row.priority, "run_after": run_after,
            "tags": row.tags,
            "timeout": row.timeout, "created_at": now, "updated_at": now,
            "schedule": row.name, "scheduled_for": slot,
            "claimable": claimable_at(int(status), run_after, now),
        } for slot, run_after in slots]
        if key is not None:
            queue_behind_heads(self.store, conn, values, heads, held, now)
        statement = (
            self.store.insert(T).values(values)
            .on_conflict_do_nothing(index_elements=["schedule", "scheduled_for"],
                                    index_where=T.c.schedule.is_not(None))
            .returning(*T.c)
        )
        tasks = sorted((task_record(r, decoder) for r in conn.execute(statement)),
                       key=lambda t: t.id)
        if key is not None and len(tasks) < len(values):
            # the slot chosen as the key's next task may have been skipped: wake the best
            # parked one then (nothing, while the key has a head or is held)
            self.store.promote_parked(conn, [key])
        if tasks:
            self.store.notify(conn, CHANNEL_ADDED, str(tasks[-1].id))
        return tasks


def _stamp(now: dt.datetime) -> str:
    return now.astimezone(dt.timezone.utc).isoformat(timespec="seconds")

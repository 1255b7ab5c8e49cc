"""The live state of running tasks: their status, recent messages and checkpoint, written
in batches by the worker while they run (each write fenced by its attempt)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

import sqlalchemy as sa

from roadie import models
from roadie.status import Status
from roadie.store.channels import CHANNEL_CHANGED
from roadie.store.engine import driver_tuples
from roadie.store.sql import PG_SAVE_PROGRESS, SAVE_PROGRESS
from roadie.store.values import utcnow

if TYPE_CHECKING:
    from roadie.store.facade import Store

T = models.tasks
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


def save_progress(
    self: Store, node: str,
    updates: Mapping[int, tuple[bytes | None, bytes | None, bytes | None]],
    attempts: Mapping[int, int] | None = None,
) -> tuple[set[int], set[int]]:
    """Write the live status, recent messages and checkpoint of running tasks (each only
    while ``node`` runs its attempt ``attempts[task_id]``, its fencing token); return the
    ids among them that have a cancel request, and those whose write was refused (taken
    over). One batched statement, in id order, and one read, whatever the number of
    tasks; on PostgreSQL one statement that writes and reads (PG_SAVE_PROGRESS)."""
    if not updates:
        return set(), set()
    now = utcnow()
    ids = sorted(updates)
    fences = attempts or {}
    if self.is_postgres:
        rows_json = _COMPACT_JSON.encode([
            [task_id, fences.get(task_id)] + [None if b is None else b.hex()
                                              for b in updates[task_id]]
            for task_id in ids])
        with self.write() as conn:
            _, written = driver_tuples(conn, PG_SAVE_PROGRESS,
                                        {"rows": rows_json, "node": node, "now": now})
            for task_id in ids:
                self.notify(conn, CHANNEL_CHANGED, str(task_id))
        owned_pg = {row[0]: row[1] for row in written}
        return ({task_id for task_id, asked in owned_pg.items() if asked is not None},
                set(ids) - set(owned_pg))
    with self.write() as conn:
        conn.execute(SAVE_PROGRESS, [
            {"b_id": task_id, "b_node": node, "b_now": now, "b_status": updates[task_id][0],
             "b_messages": updates[task_id][1], "b_checkpoint": updates[task_id][2],
             "b_attempt": fences.get(task_id)}
            for task_id in ids])
        rows = conn.execute(
            sa.select(T.c.id, T.c.attempts, T.c.cancel_requested_at).where(
                T.c.id.in_(ids), T.c.node == node, T.c.status == int(Status.IN_PROGRESS))
        ).all()
        owned = {r.id: r.cancel_requested_at for r in rows
                 if fences.get(r.id) in (None, r.attempts)}
        for task_id in ids:
            self.notify(conn, CHANNEL_CHANGED, str(task_id))
    cancelled = {task_id for task_id, asked in owned.items() if asked is not None}
    return cancelled, set(ids) - set(owned)

"""Retention: deleting ended tasks once they are old enough (the policy and its schedule are
in ``roadie.retention``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING

import sqlalchemy as sa

from roadie import models
from roadie.status import FINAL_STATUSES, Status
from roadie.store.trees import open_child_of

if TYPE_CHECKING:
    from roadie.store.facade import Store

T = models.tasks


def prune(self: Store, cutoffs: Mapping[Status, dt.datetime], limit: int) -> list[int]:
    """Delete up to ``limit`` ended tasks (with their attempts, attachment rows and
    dependency edges) that ended with a status of ``cutoffs`` before its time, oldest
    first, in one short transaction; returns their ids. Never a task that has not
    ended, nor one whose subtasks or dependents still wait for it."""
    D = models.dependencies
    dependent = T.alias("dependent")
    waited_on = sa.exists().where(D.c.after_id == T.c.id, dependent.c.id == D.c.task_id,
                                  dependent.c.status.in_([0, 4, 6]))
    ids: list[int] = []
    with self.write() as conn:
        for status, before in sorted(cutoffs.items()):
            if status not in FINAL_STATUSES:
                raise ValueError(f"only ended tasks can be pruned, not {status.label} ones")
            if len(ids) >= limit:
                break
            query = (sa.select(T.c.id)
                     .where(sa.text(models.ENDED), T.c.status == int(status),
                            T.c.finished_at < before, ~open_child_of(T.c.id), ~waited_on)
                     .order_by(T.c.finished_at).limit(limit - len(ids)))
            if self.is_postgres:  # workers pruning at once take different rows
                query = query.with_for_update(of=T, skip_locked=True)
            ids += conn.execute(query).scalars().all()
        if ids:
            self.trees.delete_rows(conn, ids)
            conn.execute(D.delete().where(D.c.after_id.in_(ids)))
    return ids

"""The rows of attachments: files kept with a task (their bytes live in an attachment store,
``roadie.attachments``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import sqlalchemy as sa

from roadie import models
from roadie.errors import TaskNotFound
from roadie.records import AttachmentInfo
from roadie.store.values import Fence

if TYPE_CHECKING:
    from roadie.store.facade import Store

T = models.tasks


def add_attachment(self: Store, info: AttachmentInfo, fence: Fence | None = None, *,
                   in_place: Callable[[], None] | None = None) -> None:
    """Record (or replace) an attachment row; with ``fence``, a write of that attempt
    (refused with TakenOver once it is stale). ``in_place`` (puts staged bytes in place) runs
    in the same transaction, after the fence check locked the task row."""
    A = models.attachments
    with self.write() as conn:
        if fence is not None:
            self.check_fence(conn, fence)
        elif conn.execute(sa.select(T.c.id).where(T.c.id == info.task_id)).first() is None:
            raise TaskNotFound(info.task_id)
        conn.execute(A.delete().where(A.c.task_id == info.task_id, A.c.name == info.name))
        conn.execute(A.insert().values(
            task_id=info.task_id, name=info.name, size=info.size, checksum=info.checksum,
            media_type=info.media_type, created_at=info.created_at,
        ))
        if in_place is not None:
            in_place()


def list_attachments(self: Store, task_id: int) -> list[AttachmentInfo]:
    """The attachments of a task, by name."""
    A = models.attachments
    with self.read_one() as conn:
        rows = conn.execute(sa.select(A).where(A.c.task_id == task_id).order_by(A.c.name))
        return [AttachmentInfo(r.task_id, r.name, r.size, r.checksum, r.media_type,
                               r.created_at) for r in rows]

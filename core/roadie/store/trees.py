"""The queries of task trees (issue 16): subtasks, the fan-in of a waiting parent, and
dependencies between tasks (``after=[ids]``). Reached as ``Store.trees``.

Neither a WAITING parent nor a task blocked by its dependencies is ever walked by the claim:
WAITING is not a claimable status, and a blocked task is NEW with its run-after time set to
``BLOCKED`` (far in the future), which the claim treats like any delayed task. The transaction
that records the end of a task releases what waited for it: one indexed probe per parent
("has it an open subtask left?") and per dependent, never a poll.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from roadie import models
from roadie.errors import (
    Cancelled,
    DatabaseError,
    DependencyError,
    InvalidTransition,
    TaskNotFound,
)
from roadie.records import TaskRecord
from roadie.status import FINAL_STATUSES, Status
from roadie.store.rows import task_record
from roadie.store.values import utcnow

if TYPE_CHECKING:
    from roadie.store.facade import Store
    from roadie.store.values import Fence, NewTask

log = logging.getLogger("roadie.trees")
T = models.tasks
D = models.dependencies
BLOCKED = dt.datetime(9999, 1, 1, tzinfo=dt.timezone.utc)
"""The run-after time of a task that waits for its dependencies (released when they succeed)."""
_CHUNK = 500


def _ids_text(ids: Iterable[int]) -> str:
    items = sorted(ids)
    shown = ", ".join(str(i) for i in items[:10])
    return shown + (f" and {len(items) - 10} more" if len(items) > 10 else "")


# The tasks' table as open_child_of reads it: the two columns it names, not an alias of the
# whole table, whose proxies of every column would stay in the cache of compiled statements
# with each statement that asks (every worker's sweep, every heartbeat)
_CHILD = sa.table("roadie_tasks", sa.column("parent_id", models.Id),
                  sa.column("status", sa.SmallInteger)).alias("child")


def open_child_of(parent: Any) -> Any:
    """An open (not ended) subtask of ``parent`` exists: one probe of the partial index."""
    child = _CHILD
    return sa.exists().where(child.c.parent_id == parent, child.c.parent_id.is_not(None),
                             child.c.status.not_in([2, 3, 5]))


class TreeStore:
    """Subtasks, fan-in and dependencies; the SQL of ``roadie.trees``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # set by the app: fires the hooks of tasks that ended here (dependency cancelled)
        self.on_cancelled: Callable[[list[TaskRecord]], None] | None = None

    # -- adding ------------------------------------------------------------------------

    def check_parent(self, conn: Connection, parent: Fence) -> None:
        """Subtasks are a write of the parent's attempt: refused (TakenOver) unless that
        attempt still runs; a cancel requested meanwhile is a safe point (Cancelled)."""
        self.store.check_fence(conn, parent)
        row = conn.execute(sa.select(T.c.cancel_requested_at, T.c.cancel_requested_by)
                           .where(T.c.id == parent.task_id)).one()
        if row.cancel_requested_at is not None:  # a safe point: no subtask outlives a cancel
            raise Cancelled(_cancelled_by(row.cancel_requested_by, row.cancel_requested_at))

    def block_on(self, conn: Connection, new_tasks: Sequence[NewTask],
                 rows: list[dict[str, Any]], now: dt.datetime) -> None:
        """Check the ``after`` ids of new tasks and set each row waiting, runnable or
        CANCELLED (a dependency already failed)."""
        wanted = sorted({i for t in new_tasks for i in t.after})
        found: dict[int, Status] = {}
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start:start + _CHUNK]
            found.update((r.id, Status(r.status)) for r in conn.execute(
                T.update().where(T.c.id.in_(chunk)).values(has_dependents=True)
                .returning(T.c.id, T.c.status)))
        for task, row in zip(new_tasks, rows, strict=True):
            if not task.after:
                continue
            unknown = [i for i in task.after if i not in found]
            if unknown:
                raise DependencyError(
                    f"cannot add the {task.executor} task: after= names "
                    f"task{'s' if len(unknown) > 1 else ''} {_ids_text(unknown)}, which "
                    f"do{'es' if len(unknown) == 1 else ''} not exist (a task can only run "
                    f"after tasks added before it, so no cycle can form)")
            ended_badly = [i for i in task.after
                           if found[i] in (Status.FAILED, Status.CANCELLED)]
            open_ids = [i for i in task.after if found[i] != Status.SUCCESSFUL]
            if ended_badly:
                first = ended_badly[0]
                row.update(status=int(Status.CANCELLED), completed=True, finished_at=now,
                           status_message=_cancel_message(first, found[first]))
            elif open_ids:
                row.update(status=int(Status.NEW), run_after=BLOCKED,
                           status_message=f"waiting for tasks {_ids_text(open_ids)}")

    def record_dependencies(self, conn: Connection, new_tasks: Sequence[NewTask],
                            ids: Sequence[int]) -> None:
        """Store the edges ``task runs after after_id`` of newly inserted tasks (``ids``)."""
        edges = [{"task_id": task_id, "after_id": after}
                 for task, task_id in zip(new_tasks, ids, strict=True)
                 for after in dict.fromkeys(task.after)]
        for start in range(0, len(edges), _CHUNK):
            conn.execute(D.insert(), edges[start:start + _CHUNK])

    # -- the end of a task: fan-in and dependents ----------------------------------------

    def settled(self, records: Iterable[TaskRecord]) -> None:
        """After tasks ended (or a parent went WAITING): make a waiting parent claimable
        once its last subtask has ended, release the tasks that waited for a task that
        succeeded, cancel those that waited for one that failed. Cheap when nothing waits."""
        pending = list(records)
        while pending:
            parents = {r.parent_id for r in pending if r.parent_id is not None
                       and r.status in FINAL_STATUSES}
            parents.update(r.id for r in pending if r.status == Status.WAITING)
            ended = [r for r in pending if r.has_dependents and r.status in FINAL_STATUSES]
            if not parents and not ended:
                return
            try:
                with self.store.write() as conn:
                    cancelled = self._wake_parents(conn, sorted(parents)) if parents else []
                    if ended:
                        cancelled += self._release_dependents(conn, ended)
            except (DatabaseError, sa.exc.SQLAlchemyError) as exc:
                # the ends are recorded (an earlier transaction); the recovery sweep of any
                # worker (``sweep``, every heartbeat interval) releases what waits for them
                log.warning("task trees: the fan-in of %d ended task(s) is left to the "
                            "recovery sweep: %s", len(pending), exc)
                return
            if cancelled and self.on_cancelled is not None:
                self.on_cancelled(cancelled)
            pending = cancelled

    def _wake_parents(self, conn: Connection, parent_ids: list[int]) -> list[TaskRecord]:
        """Parents whose last subtask ended: NEW with ``fan_in`` (``subtasks_done`` runs
        next), or CANCELLED when a cancel was requested before they went WAITING; returns
        the cancelled ones."""
        now = self.store_now()
        ready = (T.c.status == int(Status.WAITING), ~open_child_of(T.c.id))
        asked = conn.execute(
            sa.select(T.c.id, T.c.cancel_requested_by, T.c.cancel_requested_at)
            .where(T.c.id.in_(parent_ids), T.c.cancel_requested_at.is_not(None), *ready)
            .with_for_update()).all()
        cancelled: list[Any] = []
        for row in asked:
            cancelled += conn.execute(
                T.update().where(T.c.id == row.id, T.c.status == int(Status.WAITING))
                .values(status=int(Status.CANCELLED), completed=True, finished_at=now,
                        updated_at=now, status_message=_cancelled_by(
                            row.cancel_requested_by, row.cancel_requested_at))
                .returning(*T.c)).all()
        woken = conn.execute(
            T.update().where(T.c.id.in_(parent_ids), *ready)
            .values(status=int(Status.NEW), run_after=now, updated_at=now, claimable=True,
                    status_message="its subtasks have ended; subtasks_done runs next")
            .returning(T.c.id)).scalars().all()
        for task_id in woken:
            self.store.notify(conn, "roadie_task_added", str(task_id))
        # every parent changed: woken, cancelled, or one more of its subtasks ended (watchers
        # of a waiting parent re-read its subtask counts)
        for start in range(0, len(parent_ids), 50):
            self.store.notify(conn, "roadie_task_changed",
                              ",".join(str(i) for i in parent_ids[start:start + 50]))
        return [task_record(r, None) for r in cancelled]

    def _release_dependents(self, conn: Connection,
                            ended: list[TaskRecord]) -> list[TaskRecord]:
        now = self.store_now()
        cancelled: list[TaskRecord] = []
        waiting = (T.c.status.in_([int(Status.NEW), int(Status.QUEUED)]),
                   T.c.run_after == BLOCKED)
        for record in ended:
            dependents = sa.select(D.c.task_id).where(D.c.after_id == record.id)
            if record.status == Status.SUCCESSFUL:
                other = T.alias("other")
                unmet = sa.exists().where(D.c.task_id == T.c.id, other.c.id == D.c.after_id,
                                          other.c.status != int(Status.SUCCESSFUL))
                released = conn.execute(
                    T.update().where(T.c.id.in_(dependents), *waiting, ~unmet)
                    .values(run_after=now, updated_at=now, status_message="", claimable=True)
                    .returning(T.c.id)).scalars().all()
                for task_id in released:
                    self.store.notify(conn, "roadie_task_added", str(task_id))
                    self.store.notify(conn, "roadie_task_changed", str(task_id))
                continue
            rows = conn.execute(
                T.update().where(T.c.id.in_(dependents), *waiting)
                .values(status=int(Status.CANCELLED), completed=True, finished_at=now,
                        updated_at=now,
                        status_message=_cancel_message(record.id, record.status))
                .returning(*T.c)).all()
            for row in rows:
                cancelled.append(task_record(row, None))
                self.store.notify(conn, "roadie_task_changed", str(row.id))
        return cancelled

    def sweep(self) -> int:
        """Release what a crash between a task's end and its fan-in left waiting (parents
        whose subtasks have all ended, tasks whose dependencies all succeeded or one failed);
        returns how many tasks it moved. Run with crash recovery."""
        with self.store.read() as conn:
            stuck = [r for r in conn.execute(
                sa.select(T.c.id).where(models.IS_WAITING_PARENT,
                                        ~open_child_of(T.c.id))).scalars()]
            # from the dependencies of blocked tasks (a join would let the planner walk
            # every ended task instead), then those of their prerequisites that ended
            after = sorted(set(conn.execute(
                sa.select(D.c.after_id).join(T, T.c.id == D.c.task_id)
                .where(T.c.status == int(Status.NEW), T.c.run_after == BLOCKED)).scalars()))
            blocked: list[Any] = []
            for start in range(0, len(after), _CHUNK):
                blocked += conn.execute(
                    sa.select(T.c.id, T.c.status, T.c.parent_id)
                    .where(T.c.id.in_(after[start:start + _CHUNK]),
                           T.c.status.in_([int(s) for s in FINAL_STATUSES]))).all()
        records = [_stub(i, Status.WAITING, None, False) for i in stuck]
        records += [_stub(r.id, Status(r.status), None, True) for r in blocked]
        self.settled(records)
        return len(records)

    @staticmethod
    def store_now() -> dt.datetime:
        return utcnow()

    # -- reading -------------------------------------------------------------------------

    def subtask_counts(self, parent_id: int) -> dict[Status, int]:
        """How many subtasks of ``parent_id`` have each status."""
        with self.store.read_one() as conn:
            rows = conn.execute(sa.select(T.c.status, sa.func.count())
                                .where(T.c.parent_id == parent_id).group_by(T.c.status))
            return {Status(s): n for s, n in rows}

    def subtask_counts_of(self, parent_ids: Sequence[int]) -> dict[int, dict[Status, int]]:
        """How many subtasks each of ``parent_ids`` has per status (those with none are left
        out): one grouped query over the parent index per 500 parents."""
        found: dict[int, dict[Status, int]] = {}
        with self.store.read() as conn:
            for start in range(0, len(parent_ids), _CHUNK):
                rows = conn.execute(
                    sa.select(T.c.parent_id, T.c.status, sa.func.count())
                    .where(T.c.parent_id.in_(list(parent_ids[start:start + _CHUNK])))
                    .group_by(T.c.parent_id, T.c.status))
                for parent, status, count in rows:
                    found.setdefault(parent, {})[Status(status)] = count
        return found

    def subtask_count(self, parent_id: int) -> int:
        """How many subtasks ``parent_id`` has (one COUNT over the parent index)."""
        with self.store.read_one() as conn:
            return int(conn.execute(sa.select(sa.func.count())
                                    .where(T.c.parent_id == parent_id)).scalar_one())

    def subtask_ids(self, parent_id: int, *, after: int = 0, limit: int = 1000,
                    offset: int = 0) -> list[int]:
        """The ids of ``parent_id``'s subtasks above ``after``, oldest first (for paging),
        skipping the first ``offset`` of them (for reading at a position)."""
        query = (sa.select(T.c.id).where(T.c.parent_id == parent_id, T.c.id > after)
                 .order_by(T.c.id).limit(limit))
        if offset:
            query = query.offset(offset)
        with self.store.read_one() as conn:
            return list(conn.execute(query).scalars())

    def unmet_dependencies(self, task_id: int) -> list[int]:
        """The tasks that ``task_id`` runs after and that have not succeeded yet."""
        other = T.alias("other")
        with self.store.read_one() as conn:
            return list(conn.execute(
                sa.select(D.c.after_id).join(other, other.c.id == D.c.after_id)
                .where(D.c.task_id == task_id, other.c.status != int(Status.SUCCESSFUL))
                .order_by(D.c.after_id)).scalars())

    # -- cancelling and deleting ---------------------------------------------------------

    def descendants(self, conn: Connection, task_id: int) -> list[Any]:
        """Every subtask below ``task_id`` (id, status, node), level by level."""
        found: list[Any] = []
        level = [task_id]
        while level:
            rows: list[Any] = []
            for start in range(0, len(level), _CHUNK):
                rows += conn.execute(
                    sa.select(T.c.id, T.c.status, T.c.node, T.c.cancel_requested_at)
                    .where(T.c.parent_id.in_(level[start:start + _CHUNK]))).all()
            found += rows
            level = [r.id for r in rows]
        return found

    def cancel_subtasks(self, task_id: int, by: str, message: str) -> list[TaskRecord]:
        """Cancel every subtask below ``task_id`` that has not ended: waiting ones end
        CANCELLED at once (returned), running ones get a cancel request."""
        now = self.store_now()
        with self.store.write() as conn:
            rows = [r for r in self.descendants(conn, task_id)
                    if Status(r.status) not in FINAL_STATUSES]
            waiting = [r.id for r in rows if r.status != int(Status.IN_PROGRESS)]
            running = [r for r in rows if r.status == int(Status.IN_PROGRESS)]
            cancelled: list[Any] = []
            for start in range(0, len(waiting), _CHUNK):
                cancelled += conn.execute(
                    T.update().where(T.c.id.in_(waiting[start:start + _CHUNK]),
                                     T.c.status.in_([0, 4, 6]))
                    .values(status=int(Status.CANCELLED), completed=True, finished_at=now,
                            updated_at=now, status_message=message, cancel_requested_at=now,
                            cancel_requested_by=by)
                    .returning(*T.c)).all()
            # a waiting one a worker claimed meanwhile is running now: ask it to stop too
            ended = {r.id for r in cancelled}
            missed = [i for i in waiting if i not in ended]
            for start in range(0, len(missed), _CHUNK):
                running += conn.execute(
                    sa.select(T.c.id, T.c.node).where(T.c.id.in_(missed[start:start + _CHUNK]),
                                                      T.c.status == int(Status.IN_PROGRESS))
                ).all()
            for row in running:
                conn.execute(T.update().where(T.c.id == row.id,
                                              T.c.cancel_requested_at.is_(None))
                             .values(cancel_requested_at=now, cancel_requested_by=by,
                                     updated_at=now))
                self.store.notify(conn, "roadie_task_cancel", f"{row.id}:{row.node or ''}")
            for row in cancelled:
                self.store.notify(conn, "roadie_task_changed", str(row.id))
            keys = {r.isolation_key for r in cancelled if r.isolation_key is not None}
            if keys:  # a cancelled subtask may have been the next of its key
                self.store.promote_parked(conn, keys)
        records = [task_record(r, None) for r in cancelled]
        self.settled(records)
        return records

    def tree_to_delete(self, conn: Connection, task_id: int, tree: bool) -> list[int]:
        """The ids to delete for ``delete_task(task_id, tree=...)``; refuses a parent whose
        subtasks have not ended (without ``tree``) and a tree with a running task."""
        below = self.descendants(conn, task_id)
        live = [r.id for r in below if Status(r.status) not in FINAL_STATUSES]
        if not tree:
            if live:
                raise InvalidTransition(
                    f"task {task_id} has {len(live)} subtask{'s' if len(live) > 1 else ''} "
                    f"that ha{'ve' if len(live) > 1 else 's'} not ended ({_ids_text(live)}); "
                    f"cancel it first, or delete the whole tree "
                    f"(delete_task({task_id}, tree=True), `roadie delete --tree {task_id}`)")
            return [task_id]
        running = [r.id for r in below if r.status == int(Status.IN_PROGRESS)]
        if running:
            raise InvalidTransition(
                f"task {task_id} has running subtasks ({_ids_text(running)}); cancel it "
                f"(`roadie cancel {task_id}`) and delete the tree once they have stopped")
        status = conn.execute(sa.select(T.c.status).where(T.c.id == task_id)).scalar()
        if status is None:
            raise TaskNotFound(task_id)
        if status == int(Status.IN_PROGRESS):
            raise InvalidTransition(
                f"task {task_id} is in progress; cancel it (`roadie cancel {task_id}`) and "
                f"delete it once it has ended")
        return [task_id] + [r.id for r in below]

    def delete_rows(self, conn: Connection, ids: list[int]) -> None:
        """Delete tasks with their attempts, attachment rows, locks and dependency edges."""
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            keys = {key for key in conn.execute(
                T.delete().where(T.c.id.in_(chunk)).returning(T.c.isolation_key)).scalars()
                if key is not None}
            conn.execute(models.attempts.delete().where(models.attempts.c.task_id.in_(chunk)))
            conn.execute(models.attachments.delete()
                         .where(models.attachments.c.task_id.in_(chunk)))
            self.store.release_locks(conn, chunk)
            if keys:  # a deleted task may have been the next of its key
                self.store.promote_parked(conn, keys)
            conn.execute(D.delete().where(D.c.task_id.in_(chunk)))
        self.store.notify(conn, "roadie_task_changed", ",".join(str(i) for i in ids[:50]))


def _cancelled_by(by: str | None, when: dt.datetime) -> str:
    """The message of a task whose cancel request is honoured here (as a worker words it)."""
    if when.tzinfo is None:  # SQLite keeps UTC without its zone
        when = when.replace(tzinfo=dt.timezone.utc)
    return f"cancelled by {by or 'someone'} at {when.isoformat(timespec='seconds')}"


def _cancel_message(after_id: int, status: Status) -> str:
    return f"cancelled: task {after_id}, which it runs after, {status.label}"


def _stub(task_id: int, status: Status, parent_id: int | None,
          has_dependents: bool) -> TaskRecord:
    """A minimal record for ``settled`` (only id, status, parent and dependents matter)."""
    now = TreeStore.store_now()
    return TaskRecord(
        id=task_id, name="", owner=None, group=None, executor="", plugins={}, status=status,
        status_message="", completed=False, attempts=0, isolation_key=None, priority=0,
        run_after=now, tags=frozenset(), timeout=None, node=None, heartbeat_at=None,
        cancel_requested_at=None, cancel_requested_by=None, error=None, created_at=now,
        started_at=None, finished_at=None, updated_at=now, context_bytes=b"",
        parent_id=parent_id, has_dependents=has_dependents)

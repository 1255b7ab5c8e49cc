"""Worker nodes and the attempts they run: register, heartbeat and stop a node; find the
tasks of dead nodes and take them over; the fence that refuses a stale attempt's writes;
cancel requests a node's running tasks have."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from roadie import models
from roadie.errors import TakenOver, TaskNotFound
from roadie.records import NodeRecord, TaskRecord
from roadie.status import FINAL_STATUSES, Status
from roadie.store.channels import CHANNEL_ADDED, CHANNEL_CHANGED
from roadie.store.rows import task_record
from roadie.store.values import RUN_ONCE, Fence, utcnow

if TYPE_CHECKING:
    from roadie.store.facade import Store

T = models.tasks


def register_node(self: Store, node: NodeRecord) -> None:
    """Insert (or refresh) a worker node row."""
    with self.write() as conn:
        write_node(conn, node)


def write_node(conn: Connection, node: NodeRecord) -> None:
    """``register_node`` in the caller's transaction ``conn``."""
    N = models.nodes
    values = {
        "id": node.id, "name": node.name, "host": node.host, "pid": node.pid,
        "concurrency": node.concurrency, "plugins": dict(node.plugins),
        "executors": dict(node.executors), "tags": sorted(node.tags),
        "started_at": node.started_at, "heartbeat_at": node.heartbeat_at,
        "stopped_at": None,
    }
    conn.execute(N.delete().where(N.c.id == node.id), execution_options=RUN_ONCE)
    conn.execute(N.insert().values(**values), execution_options=RUN_ONCE)


def heartbeat(self: Store, node: str,
              running: Iterable[int] | Mapping[int, int] = ()) -> set[int]:
    """Prove ``node`` and its running tasks alive; return the ids among ``running`` that
    it no longer owns (taken over as orphans while it could not heartbeat). ``running``
    may map each task id to its attempt (fencing token): a task that runs again, in a
    newer attempt, is no longer this attempt's either."""
    now = utcnow()
    with self.write() as conn:
        conn.execute(models.nodes.update().where(models.nodes.c.id == node)
                     .values(heartbeat_at=now))
        mine = (T.c.node == node, T.c.status == int(Status.IN_PROGRESS))
        owned: dict[int, int] = dict(conn.execute(
            sa.select(T.c.id, T.c.attempts).where(*mine)).all())
        # rows another transaction of this worker holds (an outcome, a progress write) are
        # skipped, not waited for: locking them in another order could deadlock
        free = sa.select(T.c.id).where(*mine).with_for_update(skip_locked=True)
        conn.execute(T.update().where(T.c.id.in_(free.scalar_subquery()))
                     .values(heartbeat_at=now))
    if isinstance(running, Mapping):
        return {i for i, attempt in running.items() if owned.get(i) != attempt}
    return set(running) - set(owned)


def stop_node(self: Store, node: str) -> None:
    """Mark a node stopped."""
    with self.write() as conn:
        write_stopped(conn, node)


def write_stopped(conn: Connection, node: str) -> None:
    """``stop_node`` in the caller's transaction ``conn``."""
    conn.execute(models.nodes.update().where(models.nodes.c.id == node)
                 .values(stopped_at=utcnow()))


def list_nodes(self: Store, *, include_stopped: bool = False,
               name: str | None = None) -> list[NodeRecord]:
    """Registered nodes, newest first (only those named ``name``, when given)."""
    N = models.nodes
    query = sa.select(N).order_by(N.c.started_at.desc())
    if not include_stopped:
        query = query.where(N.c.stopped_at.is_(None))
    if name is not None:
        query = query.where(N.c.name == name)
    with self.read_one() as conn:
        return [
            NodeRecord(r.id, r.name, r.host, r.pid, r.concurrency, r.plugins or {},
                       r.executors or {}, frozenset(r.tags or ()), r.started_at,
                       r.heartbeat_at, r.stopped_at)
            for r in conn.execute(query)
        ]


def forget_nodes(self: Store, before: dt.datetime) -> int:
    """Delete the rows of nodes stopped, or silent, since before ``before`` that run no
    task (a task's attempts keep the node's id); returns how many."""
    N = models.nodes
    last_seen = sa.func.coalesce(N.c.stopped_at, N.c.heartbeat_at)
    running = sa.exists().where(T.c.node == N.c.id, models.IS_RUNNING)
    with self.write() as conn:
        return int(conn.execute(N.delete().where(last_seen < before, ~running)).rowcount or 0)


def orphaned_tasks(self: Store, grace: float) -> list[TaskRecord]:
    """IN_PROGRESS tasks whose node stopped heartbeating ``grace`` seconds ago or more
    (or is gone, or stopped)."""
    now = utcnow()
    N = models.nodes
    stale = now - dt.timedelta(seconds=grace)
    alive = sa.exists().where(
        N.c.id == T.c.node, N.c.heartbeat_at >= stale, N.c.stopped_at.is_(None)
    )
    orphaned = (models.IS_RUNNING, ~alive)  # the running tasks' index
    # their ids first: every worker asks every heartbeat, and there is nearly never one (an
    # idle worker keeps no compiled statement of every column of the tasks' table); then their
    # rows, where the condition is asked again: two statements, each its own transaction
    with self.read_one() as conn:
        ids = list(conn.execute(sa.select(T.c.id).where(*orphaned)).scalars())
    if not ids:
        return []
    query = sa.select(T).where(T.c.id.in_(ids), *orphaned)
    with self.read_one() as conn:
        return [task_record(r, None) for r in conn.execute(query)]


def take_over_orphan(
    self: Store, task: TaskRecord, status: Status, message: str, *, keep_checkpoint: bool = True,
    grace: float | None = None,
) -> bool:
    """End (FAILED) or requeue (NEW) a dead node's task and release its lock, unless
    someone else did first. A task it had claimed ahead and never started goes back
    uncounted (no attempt)."""
    started = task.started_at is not None
    now = utcnow()
    final = status in FINAL_STATUSES
    values: dict[str, Any] = {
        "status": int(status), "status_message": message, "completed": final,
        "updated_at": now, "node": None if not final else task.node,
    }
    if final:
        values["finished_at"] = now
    else:
        values["run_after"] = now
        values["claimable"] = True
        values["cancel_requested_at"] = None
        values["cancel_requested_by"] = None
    if not started:
        values["attempts"] = T.c.attempts - 1
    if not keep_checkpoint:
        values["checkpoint"] = None
    with self.write() as conn:
        owned = [T.c.id == task.id, T.c.status == int(Status.IN_PROGRESS),
                 T.c.node == task.node, T.c.attempts == task.attempts]
        if grace is not None:  # only while its node is still dead (it may have come back)
            N = models.nodes
            owned.append(~sa.exists().where(
                N.c.id == T.c.node, N.c.stopped_at.is_(None),
                N.c.heartbeat_at >= now - dt.timedelta(seconds=grace)))
        done = conn.execute(T.update().where(*owned).values(**values)).rowcount
        if not done:
            return False
        self.release_locks(conn, [task.id])
        if started:
            conn.execute(
                models.attempts.insert().values(
                    task_id=task.id, attempt=task.attempts, node=task.node,
                    status=int(Status.FAILED), message=message, error=None,
                    started_at=task.started_at, finished_at=now,
                )
            )
        self.notify(conn, CHANNEL_CHANGED, str(task.id))
        if not final:
            self.notify(conn, CHANNEL_ADDED, str(task.id))
    if final:
        self.trees.settled([self.get_task(task.id)])
    return True
def check_fence(self: Store, conn: Connection | None, fence: Fence) -> None:
    """Raise TakenOver unless ``fence``'s attempt still runs its task (in ``conn``'s
    transaction, locking the row until it ends; or on its own)."""
    if conn is None:
        with self.read() as own:
            self.check_fence(own, fence)
        return
    row = conn.execute(sa.select(T.c.status, T.c.node, T.c.attempts)
                       .where(T.c.id == fence.task_id).with_for_update()).first()
    if row is None:
        raise TaskNotFound(fence.task_id)
    if (row.status, row.node, row.attempts) != (int(Status.IN_PROGRESS), fence.node,
                                                fence.attempt):
        now = (f"attempt {row.attempts} on node {row.node}" if row.node
               else f"attempt {row.attempts}")
        raise TakenOver(
            f"task {fence.task_id}: attempt {fence.attempt} on node {fence.node} was taken "
            f"over (the task is {Status(row.status).label}, {now}); this attempt's writes "
            f"are refused and it stops")


def cancel_requests(self: Store, node: str) -> set[int]:
    """The ids of this node's running tasks that have a cancel request."""
    with self.read_one() as conn:
        return set(
            conn.execute(
                sa.select(T.c.id).where(  # the partial index of running tasks, not
                    # the node's index (which holds every task the node ever ran)
                    T.c.node == node, models.IS_RUNNING,
                    T.c.cancel_requested_at.is_not(None),
                )
            ).scalars()
        )

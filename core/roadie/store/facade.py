"""``Store``: the table of contents of roadie's database operations.

Each concern module defines the store's methods of its concern as functions of the store
(their first parameter is the store, ``self``), and ``Store`` gathers them below: a function
set as a class attribute is a method, so a call costs what a call of a method written in the
class costs. The connection side (engines, sessions, transactions, notifications, schema) is
the base class, ``engine.Database``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from roadie.store import (
    attachments,
    caller,
    executors,
    locks,
    nodes,
    progress,
    retention,
    rollup,
    tasks,
)
from roadie.store import claim as claims
from roadie.store.engine import Database
from roadie.store.grouped import ThreadedAdds
from roadie.store.schedules import ScheduleStore
from roadie.store.statistics import TaskStatistics
from roadie.store.trees import TreeStore

if TYPE_CHECKING:
    from collections.abc import Sequence

    from roadie.limits import Limits
    from roadie.records import NodeRecord


class Store(Database):
    """The database: connection, schema, and every query roadie makes.

    From ``engine.Database``: ``listen``, ``wait_listening``,
    ``safe_url``, ``bound``, ``dispose``, ``write``,
    ``read``, ``notify``, ``schema_revision``, ``schema_error``, ``check_revision``,
    ``upgrade``, ``check_schema``.
    """

    def __init__(self, url: str, *, echo: bool = False,
                 synchronous_commit: str = "on", idle_timeout: float | None = None,
                 pooler: str = "none", listen_url: str = "") -> None:
        super().__init__(url, echo=echo, synchronous_commit=synchronous_commit,
                         idle_timeout=idle_timeout, pooler=pooler, listen_url=listen_url)
        # what the concern modules keep per store
        self.statistics = TaskStatistics(self._autocommit)  # the planner's, after bursts
        self._candidates_cache: dict[tuple[int, int, int], Any] = {}  # claim: by shape
        self._next_due_check = 0.0  # time.monotonic() of the next promotion of due tasks
        self._rate_keys: set[tuple[str, int]] = set()  # (key, count): rate windows made
        # single adds from threads, grouped as they arrive (PostgreSQL; tasks._pg_insert_one)
        self._threaded_adds = ThreadedAdds(functools.partial(tasks._send_group, self))

    def advertise_node(self, node: NodeRecord, limits: dict[str, tuple[Limits, str]]
                       ) -> frozenset[str]:
        """A starting worker's writes in one transaction: its node row (``register_node``),
        its executors' limits (``declare_limits``); returns the executors paused now
        (``paused_executors``), which its first claim leaves out."""
        with self.write() as conn:
            nodes.write_node(conn, node)
            executors.write_limits(self, conn, limits)
            return executors.paused_in(conn)

    def add_rollup_and_stop(self, rows: Sequence[dict[str, Any]], node: str) -> None:
        """A stopping worker's last writes in one transaction: the overview's last counts
        (``add_rollup``) and its node marked stopped (``stop_node``)."""
        with self.write() as conn:
            rollup.write_rollup(self, conn, rows)
            nodes.write_stopped(conn, node)

    def dispose(self) -> None:
        """Let a refresh of the statistics on its way end, then close (``Database``'s)."""
        self.statistics.wait(30)
        super().dispose()

    # -- tasks: add, read, count, cancel, resume, delete (tasks.py) ------------------------
    insert_tasks = tasks.insert_tasks
    stream_tasks = tasks.stream_tasks
    streams = tasks.streams
    inserts_alone = tasks.inserts_alone
    insert_one_async = tasks.insert_one_async
    async_adds = tasks.async_adds
    get_task = tasks.get_task
    list_tasks = tasks.list_tasks
    count_tasks = tasks.count_tasks
    count_tasks_by_executor = tasks.count_tasks_by_executor
    oldest_due = tasks.oldest_due
    attempts_of = tasks.attempts_of
    attempts_of_tasks = tasks.attempts_of_tasks
    append_error = tasks.append_error
    cancel_task = tasks.cancel_task
    resume_task = tasks.resume_task
    delete_task = tasks.delete_task
    snapshot = tasks.snapshot

    # -- the worker's round: claim and settle (claim.py) -----------------------------------
    claim = claims.claim
    settle = claims.settle
    count_pending = claims.count_pending

    # -- isolation keys and slots, rates, parked and delayed tasks (locks.py) ------------
    held_counts = locks.held_counts
    key_heads = locks.key_heads
    key_state = locks.key_state
    release_locks = locks.release_locks
    promote_parked = locks.promote_parked
    promote_stranded = locks.promote_stranded
    held_locks = locks.held_locks

    # -- executors: paused or not, their declared limits (executors.py) --------------------
    set_paused = executors.set_paused
    paused_executors = executors.paused_executors
    declare_limits = executors.declare_limits
    executor_rows = executors.executor_rows
    executor_counts = executors.executor_counts
    has_tasks_of = executors.has_tasks_of

    # -- the caller's transaction: add on the application's connection (caller.py) --------
    joined = caller.joined
    joined_async = caller.joined_async
    identity = caller.store_identity

    # -- nodes, heartbeats, orphans and fences (nodes.py) ----------------------------------
    register_node = nodes.register_node
    heartbeat = nodes.heartbeat
    stop_node = nodes.stop_node
    list_nodes = nodes.list_nodes
    forget_nodes = nodes.forget_nodes
    orphaned_tasks = nodes.orphaned_tasks
    take_over_orphan = nodes.take_over_orphan
    check_fence = nodes.check_fence
    cancel_requests = nodes.cancel_requests

    # -- the live state of running tasks (progress.py) -------------------------------------
    save_progress = progress.save_progress

    # -- attachments (attachments.py) ------------------------------------------------------
    add_attachment = attachments.add_attachment
    list_attachments = attachments.list_attachments

    # -- retention (retention.py) ----------------------------------------------------------
    prune = retention.prune

    # -- the overview's per-minute rollup (rollup.py) --------------------------------------
    add_rollup = rollup.add_rollup
    sample_depth = rollup.sample_depth
    rollup_counts = rollup.rollup_counts
    rollup_depth = rollup.rollup_depth
    rollup_times = rollup.rollup_times
    rollup_failed = rollup.rollup_failed
    prune_rollup = rollup.prune_rollup

    # -- task trees and schedules: query objects of their own (trees.py, schedules.py) -----

    @functools.cached_property
    def trees(self) -> TreeStore:
        """The queries of task trees: subtasks, fan-in, dependencies (``store.trees``)."""
        return TreeStore(self)

    @functools.cached_property
    def schedules(self) -> ScheduleStore:
        """The queries of schedules (``store.schedules``)."""
        return ScheduleStore(self)

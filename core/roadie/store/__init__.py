"""Every database operation of roadie. The app, the worker and the CLI never build queries.

``Store`` (``facade``) reads like a table of contents; each concern has a module of its own:

- ``engine``: engines, connections and the sessions kept for hot statements, transactions,
  notifications, the schema's revision (``Database``, the base of ``Store``);
- ``tasks``: add, read, count, cancel, resume and delete tasks;
- ``claim``: the worker's round, claim and settle, on PostgreSQL and SQLite;
- ``locks``: isolation locks, tasks parked behind them, delayed tasks coming due;
- ``nodes``: worker nodes, heartbeats, orphans and their take-over, fences, cancel requests;
- ``progress``, ``attachments``, ``retention`` (pruning), ``trees`` (subtasks, fan-in,
  dependencies: ``Store.trees``), ``schedules`` (``Store.schedules``);
- ``grouped``: the async client's concurrent single adds, in one statement per group;
- ``sql``: the long statements, each under its name; ``rows``: task rows into records;
  ``values``: what callers hand the store and get back.

The concern modules depend on ``engine``, ``sql``, ``rows`` and ``values``, and ``facade`` on
them; never the reverse (a concern module names ``Store`` only for type checking).
``channels`` (the notification channels' names) and ``values`` import no SQLAlchemy, and
``Store`` and ``make_async_engine`` are imported on first use (PEP 562): a process that only
needs the values (a host process) never loads SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from roadie.store.channels import (
    CHANNEL_ADDED,
    CHANNEL_CANCEL,
    CHANNEL_CHANGED,
    CHANNEL_SCHEDULES,
    split_payload,
)
from roadie.store.values import (
    MAX_TAGS_PER_NODE,
    Claimable,
    Fence,
    NewTask,
    Outcome,
    PlainTasks,
    Settled,
    Snapshot,
    claimable_at,
    tag_subsets,
    tags_key,
    utcnow,
)

__all__ = [
    "CHANNEL_ADDED",
    "CHANNEL_CANCEL",
    "CHANNEL_CHANGED",
    "CHANNEL_SCHEDULES",
    "MAX_TAGS_PER_NODE",
    "Claimable",
    "Fence",
    "NewTask",
    "Outcome",
    "PlainTasks",
    "Settled",
    "Snapshot",
    "Store",
    "claimable_at",
    "make_async_engine",
    "split_payload",
    "tag_subsets",
    "tags_key",
    "utcnow",
]


if TYPE_CHECKING:
    from roadie.store.engine import make_async_engine
    from roadie.store.facade import Store


def __getattr__(name: str) -> Any:
    if name == "Store":
        from roadie.store.facade import Store

        return Store
    if name == "make_async_engine":
        from roadie.store.engine import make_async_engine

        return make_async_engine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

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
- ``sql``: the long statements, each under its name; ``rows``: task rows into records;
  ``values``: what callers hand the store and get back.

The concern modules depend on ``engine``, ``sql``, ``rows`` and ``values``, and ``facade`` on
them; never the reverse (a concern module names ``Store`` only for type checking).
"""

from roadie.store.engine import (
    CHANNEL_ADDED,
    CHANNEL_CANCEL,
    CHANNEL_CHANGED,
    CHANNEL_SCHEDULES,
    make_async_engine,
    split_payload,
)
from roadie.store.facade import Store
from roadie.store.values import (
    MAX_TAGS_PER_NODE,
    Claimable,
    Fence,
    NewTask,
    Outcome,
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

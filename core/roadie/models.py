"""The database tables (SQLAlchemy Core); the Alembic migrations in ``roadie/migrations``
create them."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from roadie.rollup_columns import ROLLUP_COUNTS, ROLLUP_HISTOGRAMS
from roadie.status import Status

metadata = sa.MetaData()

VERSION_TABLE = "roadie_alembic_version"  # Alembic's record of the schema's revision
SCHEMA_HEAD = "i33_overview"  # the newest migration; a new one must update this


# Partial indexes carry their condition for the database in use, added by
# add_dialect_options() when it is known, not here: a ``postgresql_*`` (``sqlite_*``) argument
# makes SQLAlchemy import its whole PostgreSQL (SQLite) dialect, about 3 MB (0.5 MB), which a
# process on the other database never needs.
_PARTIAL_INDEXES: list[tuple[sa.Index, str]] = []


def partial_index(name: str, *columns: Any, where: str, unique: bool = False) -> sa.Index:
    """An index of the rows matching ``where`` (SQL, repeated literally by the queries)."""
    index = sa.Index(name, *columns, unique=unique)
    _PARTIAL_INDEXES.append((index, where))
    return index


def add_dialect_options(dialect: str) -> None:
    """Give the partial indexes their condition for ``dialect`` ("postgresql" or "sqlite";
    again: no harm). Called wherever the metadata meets a database: the store, Alembic's
    environment, ``metadata.create_all``."""
    if dialect not in ("postgresql", "sqlite"):
        return
    for index, where in _PARTIAL_INDEXES:
        index.dialect_kwargs[f"{dialect}_where"] = sa.text(where)


@sa.event.listens_for(metadata, "before_create")
def _before_create(target: sa.MetaData, connection: sa.Connection, **kw: Any) -> None:
    add_dialect_options(connection.dialect.name)


class UTCDateTime(sa.TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every database (SQLite keeps naive UTC text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite" and getattr(dialect, "native_datetime", False):
            # a caller's sqlite3 connection (store/caller.py) may convert DATETIME columns
            # itself (Django's does): the text goes as it is and either comes back
            return dialect.type_descriptor(sa.String())
        return dialect.type_descriptor(self.impl)

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: roadie stores timezone-aware UTC times")
        value = value.astimezone(dt.timezone.utc)
        if dialect.name != "sqlite":
            return value
        value = value.replace(tzinfo=None)
        if getattr(dialect, "native_datetime", False):  # see load_dialect_impl
            return value.isoformat(" ", "microseconds")  # the text SQLAlchemy keeps
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # SQLite without SQLAlchemy's conversion (caller.py)
            value = dt.datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

tasks = sa.Table(
    "roadie_tasks",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(255), nullable=False, server_default=""),
    sa.Column("owner", sa.String(255)),
    sa.Column("task_group", sa.String(255)),
    sa.Column("executor", sa.String(255), nullable=False),
    sa.Column("plugins", sa.JSON, nullable=False),  # {"dist": "version", ...}
    sa.Column("context", sa.LargeBinary, nullable=False),
    sa.Column("captured", sa.LargeBinary),
    sa.Column("status", sa.SmallInteger, nullable=False),
    sa.Column("status_message", sa.Text, nullable=False, server_default=""),
    sa.Column("completed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("result", sa.LargeBinary),
    sa.Column("error", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("isolation_key", sa.String(512)),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    sa.Column("run_after", UTCDateTime, nullable=False),
    sa.Column("tags", sa.String(512), nullable=False, server_default=""),
    sa.Column("timeout", sa.Float),
    sa.Column("node", sa.String(64)),
    sa.Column("heartbeat_at", UTCDateTime),
    sa.Column("cancel_requested_at", UTCDateTime),
    sa.Column("cancel_requested_by", sa.String(255)),
    sa.Column("checkpoint", sa.LargeBinary),
    sa.Column("task_status", sa.LargeBinary),
    sa.Column("messages", sa.LargeBinary),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("schedule", sa.String(255)),  # the schedule that made it (issue 17)
    sa.Column("scheduled_for", UTCDateTime),  # its slot
    sa.Column("parent_id", Id),  # the task that added it as a subtask (issue 16)
    sa.Column("fan_in", sa.Boolean, nullable=False, server_default=sa.false()),  # runs
    # subtasks_done next time it is claimed
    sa.Column("has_dependents", sa.Boolean, nullable=False, server_default=sa.false()),
    # false while a waiting task cannot be claimed: delayed (NEW, run_after ahead), or QUEUED
    # behind a held isolation lock (issue 12); the claim's index holds only claimable tasks
    sa.Column("claimable", sa.Boolean, nullable=False, server_default=sa.true()),
    # flow control (issue 29): a key no other open task of the executor has (``unique_key``),
    # and how many tasks of its isolation key may be active, running or claimable, at once
    # (``key_limit``: the executor's max_running; NULL is 1, serial)
    sa.Column("unique_key", sa.String(255)),
    sa.Column("key_limit", sa.Integer),
    sa.Index("roadie_tasks_executor", "executor"),
)
# Columns that most tasks leave NULL are indexed where they are set (issue 31): a task added
# without them costs no entry in these indexes. Every query that looks them up compares them
# with a value (``=``, ``IN``), which implies ``IS NOT NULL``, so the planner still uses them.
for _name, _column in (("isolation_key", "isolation_key"), ("node", "node"),
                       ("owner", "owner"), ("group", "task_group")):
    partial_index(f"roadie_tasks_{_name}", tasks.c[_column], where=f"{_column} IS NOT NULL")

# The slots of isolation keys: a running task of a key with a limit of n holds one of its
# slots 0..n-1 (a serial key has one slot, 0)
locks = sa.Table(
    "roadie_locks",
    metadata,
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("slot", sa.Integer, primary_key=True, server_default="0"),
    sa.Column("task_id", Id, nullable=False),
    sa.Column("node", sa.String(64)),
    sa.Column("acquired_at", UTCDateTime, nullable=False),
)

# The sliding windows of rate limits: a key limited to n starts per period has n rows, each the
# time of one of its recent starts; a start takes a row whose time is a period old
rate_slots = sa.Table(
    "roadie_rate_slots",
    metadata,
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("slot", sa.Integer, primary_key=True),
    sa.Column("taken_at", UTCDateTime, nullable=False),
    sa.Index("roadie_rate_slots_oldest", "key", "taken_at"),  # a start takes the oldest rows
)

# What every node should know of an executor: whether it is paused (set by pause_executor,
# read by every worker's claim), and the limits its class declares (written by workers)
executors = sa.Table(
    "roadie_executors",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("paused_at", UTCDateTime),
    sa.Column("paused_by", sa.String(255)),
    sa.Column("max_running", sa.Integer),
    sa.Column("rate_count", sa.Integer),
    sa.Column("rate_per", sa.Float),
    sa.Column("isolation", sa.String(32)),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

nodes = sa.Table(
    "roadie_nodes",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("concurrency", sa.Integer, nullable=False),
    sa.Column("plugins", sa.JSON, nullable=False),  # {"dist": "version"}
    sa.Column("executors", sa.JSON, nullable=False),  # ["dist:name", ...]
    sa.Column("tags", sa.JSON, nullable=False),  # ["gpu", ...]
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("heartbeat_at", UTCDateTime, nullable=False),
    sa.Column("stopped_at", UTCDateTime),
)

attempts = sa.Table(
    "roadie_attempts",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("task_id", Id, nullable=False, index=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("node", sa.String(64)),
    sa.Column("status", sa.SmallInteger, nullable=False),
    sa.Column("message", sa.Text, nullable=False, server_default=""),
    sa.Column("error", sa.Text),
    sa.Column("started_at", UTCDateTime),
    sa.Column("finished_at", UTCDateTime, nullable=False),
)

attachments = sa.Table(
    "roadie_attachments",
    metadata,
    sa.Column("task_id", Id, primary_key=True),
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("checksum", sa.String(80), nullable=False),  # "sha256:<hex>"
    sa.Column("media_type", sa.String(255), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# The claim reads claimable tasks per (executor, tags) by priority, then age: a partial index
# keeps that a short walk however many finished, delayed or parked tasks the table holds, and
# however many tasks wait for other executors or tags. Delayed tasks are found by due time
# (promoted when due), tasks parked behind an isolation lock by key (the lock's release
# promotes the next one). Queries must repeat these conditions literally (not as bound
# parameters) for the planners to use the indexes.
WAITING = sa.text("roadie_tasks.status IN (0, 4)")
CLAIMABLE = "claimable AND status IN (0, 4)"
DUE = "NOT claimable AND status = 0"
PARKED = "NOT claimable AND status = 4"
partial_index("roadie_tasks_claimable", tasks.c.executor, tasks.c.tags,
              tasks.c.priority.desc(), tasks.c.id, where=CLAIMABLE)
partial_index("roadie_tasks_due", tasks.c.run_after, where=DUE)
partial_index("roadie_tasks_parked", tasks.c.isolation_key, tasks.c.priority.desc(), tasks.c.id,
              where=PARKED)
# Of a key's waiting tasks only its head (the next to run) is claimable: the others are parked
# when added, so a backlog behind one key never crowds the claim. Adding finds the head here.
KEY_HEAD = "claimable AND status IN (0, 4) AND isolation_key IS NOT NULL"
partial_index("roadie_tasks_key_head", tasks.c.isolation_key, where=KEY_HEAD)
# Unique tasks: one open (not ended) task per executor and unique key. Adds that meet it return
# that task instead; the database settles concurrent adds.
UNIQUE_OPEN = "unique_key IS NOT NULL AND status IN (0, 1, 4, 6)"
partial_index("roadie_tasks_unique", tasks.c.executor, tasks.c.unique_key, unique=True,
              where=UNIQUE_OPEN)
# Retention (``roadie prune``) deletes ended tasks by end time, oldest first.
ENDED = "status IN (2, 3, 5)"
partial_index("roadie_tasks_ended", tasks.c.finished_at, where=ENDED)

# The counts of open tasks per executor (the executors page, the overview, ``/api/stats``):
# an index-only walk of the waiting and running tasks, never of the ended ones.
OPEN_BY_EXECUTOR = "status IN (0, 1, 4)"
partial_index("roadie_tasks_open_executor", tasks.c.executor, tasks.c.status,
              tasks.c.claimable, where=OPEN_BY_EXECUTOR)

# Crash recovery reads the IN_PROGRESS tasks (of dead nodes), the fan-in sweep the WAITING
# parents, every heartbeat interval on every worker: O(those tasks), not O(table).
RUNNING = f"status = {int(Status.IN_PROGRESS)}"
WAITING_PARENT = f"status = {int(Status.WAITING)}"
partial_index("roadie_tasks_running", tasks.c.node, where=RUNNING)
partial_index("roadie_tasks_waiting", tasks.c.id, where=WAITING_PARENT)
# ... and the queries say it literally (a bound status would not match the index's condition)
IS_RUNNING = sa.text(f"roadie_tasks.{RUNNING}")
IS_WAITING_PARENT = sa.text(f"roadie_tasks.{WAITING_PARENT}")

# One task per schedule and slot: the database turns a second firing of a slot into a no-op.
partial_index("roadie_tasks_schedule_slot", tasks.c.schedule, tasks.c.scheduled_for, unique=True,
              where="schedule IS NOT NULL")

# Task trees (issue 16): the subtasks of a parent, and those not ended yet (the fan-in checks
# "does the parent still have an open subtask?" with one index probe).
partial_index("roadie_tasks_parent", tasks.c.parent_id, where="parent_id IS NOT NULL")
OPEN_CHILD = "parent_id IS NOT NULL AND status NOT IN (2, 3, 5)"
partial_index("roadie_tasks_open_children", tasks.c.parent_id, where=OPEN_CHILD)

dependencies = sa.Table(
    "roadie_dependencies",
    metadata,
    sa.Column("task_id", Id, primary_key=True),  # the task that waits
    sa.Column("after_id", Id, primary_key=True),  # the task it waits for
    sa.Index("roadie_dependencies_after", "after_id"),
)

schedules = sa.Table(
    "roadie_schedules",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("executor", sa.String(255), nullable=False),
    sa.Column("origin", sa.String(16), nullable=False),  # "api" or "executor"
    sa.Column("cron", sa.String(255)),
    sa.Column("every", sa.Float),  # seconds
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("catch_up", sa.String(16), nullable=False),
    sa.Column("jitter", sa.Float, nullable=False),
    sa.Column("overlap", sa.Boolean, nullable=False),
    sa.Column("paused", sa.Boolean, nullable=False),
    # the template of the tasks it makes (encoded once, when the schedule is added)
    sa.Column("task_name", sa.String(255), nullable=False),
    sa.Column("owner", sa.String(255)),
    sa.Column("task_group", sa.String(255)),
    sa.Column("plugins", sa.JSON, nullable=False),
    sa.Column("context", sa.LargeBinary, nullable=False),
    sa.Column("captured", sa.LargeBinary),
    sa.Column("isolation_key", sa.String(512)),
    sa.Column("key_limit", sa.Integer),  # its key's width (roadie_tasks.key_limit)
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("tags", sa.String(512), nullable=False),
    sa.Column("timeout", sa.Float),
    # the firing state: the next slot due, and a version every change bumps (compare-and-set)
    sa.Column("next_at", UTCDateTime),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("last_slot", UTCDateTime),
    sa.Column("last_task_id", Id),
    sa.Column("last_fired_by", sa.String(64)),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("roadie_schedules_next_at", "next_at"),
)

# The overview's per-minute rollup (issue 33): per minute and executor, the attempts started,
# the tasks ended per final status, log-spaced histograms of their wait (start - max(created,
# run_after)) and run times (``wait_<i>``, ``run_<i>``: see ``roadie.rollup``), written by the
# workers as they settle; and a sample of the queue's depth, written once a minute by worker
# maintenance. ``roadie_hours`` holds the same per hour (written with it), so that a week
# reads 168 rows per executor, not 10,080. Retention prunes both with the tasks.
def _rollup_table(name: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("at", UTCDateTime, primary_key=True),  # the minute's (hour's) start
        sa.Column("executor", sa.String(255), primary_key=True),
        *(sa.Column(column, sa.Integer, nullable=False, server_default="0")
          for column in ROLLUP_COUNTS + ROLLUP_HISTOGRAMS),
        sa.Column("waiting", sa.Integer),  # the depth sample (NULL: none taken then)
        sa.Column("running", sa.Integer),
    )


minutes = _rollup_table("roadie_minutes")
hours = _rollup_table("roadie_hours")  # the same per hour, for windows longer than a day

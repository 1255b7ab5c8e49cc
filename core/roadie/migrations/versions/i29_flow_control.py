"""Flow control: unique tasks, concurrency limits, rate limits and paused executors.

- ``roadie_tasks.unique_key``, with a unique index of the open tasks (executor, unique_key);
- ``roadie_tasks.key_limit`` (and the schedules' template's): how many tasks of the task's
  isolation key may be active at once;
- ``roadie_locks`` gets a ``slot`` (a key with a limit of n has slots 0..n-1; the locks held
  now keep slot 0, the one slot of a serial key);
- ``roadie_rate_slots``: the recent starts of rate-limited keys;
- ``roadie_executors``: paused executors, and the limits their classes declare.

Revision ID: i29_flow_control
Revises: i27_key_heads
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "i29_flow_control"
down_revision = "i27_key_heads"
branch_labels = None
depends_on = None
# roadie.models.SCHEMA_HEAD must name the newest revision (tests/test_api.py checks it)

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)
UNIQUE_OPEN = "unique_key IS NOT NULL AND status IN (0, 1, 4, 6)"


def upgrade() -> None:
    op.add_column("roadie_tasks", sa.Column("unique_key", sa.String(255)))
    op.add_column("roadie_tasks", sa.Column("key_limit", sa.Integer))
    op.add_column("roadie_schedules", sa.Column("key_limit", sa.Integer))
    op.create_index("roadie_tasks_unique", "roadie_tasks", ["executor", "unique_key"],
                    unique=True, postgresql_where=sa.text(UNIQUE_OPEN),
                    sqlite_where=sa.text(UNIQUE_OPEN))
    # the locks' primary key becomes (key, slot): a new table, the held locks copied over
    op.create_table(
        "roadie_locks_slots",
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("slot", sa.Integer, primary_key=True, server_default="0"),
        sa.Column("task_id", Id, nullable=False),
        sa.Column("node", sa.String(64)),
        sa.Column("acquired_at", Time, nullable=False),
    )
    op.execute("INSERT INTO roadie_locks_slots (key, slot, task_id, node, acquired_at) "
               "SELECT key, 0, task_id, node, acquired_at FROM roadie_locks")
    op.drop_table("roadie_locks")
    op.rename_table("roadie_locks_slots", "roadie_locks")
    if op.get_bind().dialect.name == "postgresql":  # keep the conventional name
        op.execute("ALTER INDEX roadie_locks_slots_pkey RENAME TO roadie_locks_pkey")
    op.create_table(
        "roadie_rate_slots",
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("slot", sa.Integer, primary_key=True),
        sa.Column("taken_at", Time, nullable=False),
    )
    op.create_index("roadie_rate_slots_oldest", "roadie_rate_slots", ["key", "taken_at"])
    op.create_table(
        "roadie_executors",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("paused_at", Time),
        sa.Column("paused_by", sa.String(255)),
        sa.Column("max_running", sa.Integer),
        sa.Column("rate_count", sa.Integer),
        sa.Column("rate_per", sa.Float),
        sa.Column("isolation", sa.String(32)),
        sa.Column("updated_at", Time, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("roadie_executors")
    op.drop_table("roadie_rate_slots")
    op.create_table(
        "roadie_locks_key",
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("task_id", Id, nullable=False),
        sa.Column("node", sa.String(64)),
        sa.Column("acquired_at", Time, nullable=False),
    )
    op.execute("INSERT INTO roadie_locks_key (key, task_id, node, acquired_at) "
               "SELECT key, task_id, node, acquired_at FROM roadie_locks WHERE slot = 0")
    op.drop_table("roadie_locks")
    op.rename_table("roadie_locks_key", "roadie_locks")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER INDEX roadie_locks_key_pkey RENAME TO roadie_locks_pkey")
    op.drop_index("roadie_tasks_unique", "roadie_tasks")
    op.drop_column("roadie_schedules", "key_limit")
    op.drop_column("roadie_tasks", "key_limit")
    op.drop_column("roadie_tasks", "unique_key")

"""Schedules: the roadie_schedules table, and the schedule and slot of each task they make.

Revision ID: i17_schedules
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "i17_schedules"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("roadie_tasks", sa.Column("schedule", sa.String(255)))
    op.add_column("roadie_tasks", sa.Column("scheduled_for", Time))
    scheduled = sa.text("schedule IS NOT NULL")
    op.create_index("roadie_tasks_schedule_slot", "roadie_tasks", ["schedule", "scheduled_for"],
                    unique=True, postgresql_where=scheduled, sqlite_where=scheduled)
    op.create_table(
        "roadie_schedules",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("executor", sa.String(255), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("cron", sa.String(255)),
        sa.Column("every", sa.Float),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("catch_up", sa.String(16), nullable=False),
        sa.Column("jitter", sa.Float, nullable=False),
        sa.Column("overlap", sa.Boolean, nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("task_name", sa.String(255), nullable=False),
        sa.Column("owner", sa.String(255)),
        sa.Column("task_group", sa.String(255)),
        sa.Column("plugins", sa.JSON, nullable=False),
        sa.Column("context", sa.LargeBinary, nullable=False),
        sa.Column("captured", sa.LargeBinary),
        sa.Column("isolation_key", sa.String(512)),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("tags", sa.String(512), nullable=False),
        sa.Column("timeout", sa.Float),
        sa.Column("next_at", Time),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("last_slot", Time),
        sa.Column("last_task_id", Id),
        sa.Column("last_fired_by", sa.String(64)),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("updated_at", Time, nullable=False),
    )
    op.create_index("roadie_schedules_next_at", "roadie_schedules", ["next_at"])


def downgrade() -> None:
    op.drop_table("roadie_schedules")
    op.drop_index("roadie_tasks_schedule_slot", "roadie_tasks")
    with op.batch_alter_table("roadie_tasks") as batch:
        batch.drop_column("scheduled_for")
        batch.drop_column("schedule")

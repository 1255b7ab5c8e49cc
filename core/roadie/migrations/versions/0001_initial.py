"""The first schema: tasks, isolation locks, nodes, attempts and attachments.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "roadie_tasks",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False, server_default=""),
        sa.Column("owner", sa.String(255)),
        sa.Column("task_group", sa.String(255)),
        sa.Column("executor", sa.String(255), nullable=False),
        sa.Column("plugins", sa.JSON, nullable=False),
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
        sa.Column("run_after", Time, nullable=False),
        sa.Column("tags", sa.String(512), nullable=False, server_default=""),
        sa.Column("timeout", sa.Float),
        sa.Column("node", sa.String(64)),
        sa.Column("heartbeat_at", Time),
        sa.Column("cancel_requested_at", Time),
        sa.Column("cancel_requested_by", sa.String(255)),
        sa.Column("checkpoint", sa.LargeBinary),
        sa.Column("task_status", sa.LargeBinary),
        sa.Column("messages", sa.LargeBinary),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("started_at", Time),
        sa.Column("finished_at", Time),
        sa.Column("updated_at", Time, nullable=False),
    )
    waiting = sa.text("status IN (0, 4)")
    op.create_index("roadie_tasks_claim", "roadie_tasks", [sa.text("priority DESC"), "id"],
                    postgresql_where=waiting, sqlite_where=waiting)
    op.create_index("roadie_tasks_isolation_key", "roadie_tasks", ["isolation_key"])
    op.create_index("roadie_tasks_node", "roadie_tasks", ["node"])
    op.create_index("roadie_tasks_owner", "roadie_tasks", ["owner"])
    op.create_index("roadie_tasks_group", "roadie_tasks", ["task_group"])
    op.create_index("roadie_tasks_executor", "roadie_tasks", ["executor"])
    op.create_table(
        "roadie_locks",
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("task_id", Id, nullable=False),
        sa.Column("node", sa.String(64)),
        sa.Column("acquired_at", Time, nullable=False),
    )
    op.create_table(
        "roadie_nodes",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column("plugins", sa.JSON, nullable=False),
        sa.Column("executors", sa.JSON, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("started_at", Time, nullable=False),
        sa.Column("heartbeat_at", Time, nullable=False),
        sa.Column("stopped_at", Time),
    )
    op.create_table(
        "roadie_attempts",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("task_id", Id, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("node", sa.String(64)),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("message", sa.Text, nullable=False, server_default=""),
        sa.Column("error", sa.Text),
        sa.Column("started_at", Time),
        sa.Column("finished_at", Time, nullable=False),
    )
    op.create_index("ix_roadie_attempts_task_id", "roadie_attempts", ["task_id"])
    op.create_table(
        "roadie_attachments",
        sa.Column("task_id", Id, primary_key=True),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("checksum", sa.String(80), nullable=False),
        sa.Column("media_type", sa.String(255), nullable=False),
        sa.Column("created_at", Time, nullable=False),
    )


def downgrade() -> None:
    for table in ("roadie_attachments", "roadie_attempts", "roadie_nodes", "roadie_locks"):
        op.drop_table(table)
    op.drop_table("roadie_tasks")

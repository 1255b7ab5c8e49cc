"""The overview (issue 33): a per-minute rollup of started and ended tasks, their wait and run
times and the queue's depth (``roadie_minutes``, and per hour ``roadie_hours``), and an index
of the open tasks by executor for the counts of waiting and running tasks.

Revision ID: i33_overview
Revises: i31_partial_indexes
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "i33_overview"
down_revision = "i31_partial_indexes"
branch_labels = None
depends_on = None
# roadie.models.SCHEMA_HEAD must name the newest revision (tests/test_api.py checks it)

Time = sa.DateTime(timezone=True)
BUCKETS = 28
OPEN_BY_EXECUTOR = "status IN (0, 1, 4)"


def upgrade() -> None:
    counts = ["started", "succeeded", "failed", "cancelled"]
    counts += [f"{kind}_{i}" for kind in ("wait", "run") for i in range(BUCKETS)]
    for table in ("roadie_minutes", "roadie_hours"):
        op.create_table(
            table,
            sa.Column("at", Time, primary_key=True),
            sa.Column("executor", sa.String(255), primary_key=True),
            *(sa.Column(name, sa.Integer, nullable=False, server_default="0")
              for name in counts),
            sa.Column("waiting", sa.Integer),
            sa.Column("running", sa.Integer),
        )
    op.create_index("roadie_tasks_open_executor", "roadie_tasks",
                    ["executor", "status", "claimable"],
                    postgresql_where=sa.text(OPEN_BY_EXECUTOR),
                    sqlite_where=sa.text(OPEN_BY_EXECUTOR))


def downgrade() -> None:
    op.drop_index("roadie_tasks_open_executor", "roadie_tasks")
    op.drop_table("roadie_hours")
    op.drop_table("roadie_minutes")

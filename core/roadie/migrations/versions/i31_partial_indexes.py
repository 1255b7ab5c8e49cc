"""Partial indexes for the columns that most tasks leave NULL: ``isolation_key``, ``node``,
``owner``, ``task_group`` and ``parent_id`` are indexed only where set, so adding a task without
them writes 5 index entries fewer (of 15). Every query that looks them up compares them with a
value, which implies ``IS NOT NULL``: the planner uses the partial index as it did the full one.

Revision ID: i31_partial_indexes
Revises: i29_flow_control
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "i31_partial_indexes"
down_revision = "i29_flow_control"
branch_labels = None
depends_on = None
# roadie.models.SCHEMA_HEAD must name the newest revision (tests/test_api.py checks it)

INDEXES = (("roadie_tasks_isolation_key", "isolation_key"), ("roadie_tasks_node", "node"),
           ("roadie_tasks_owner", "owner"), ("roadie_tasks_group", "task_group"),
           ("roadie_tasks_parent", "parent_id"))


def upgrade() -> None:
    for name, column in INDEXES:
        op.drop_index(name, "roadie_tasks")
        where = text(f"{column} IS NOT NULL")
        op.create_index(name, "roadie_tasks", [column], postgresql_where=where,
                        sqlite_where=where)


def downgrade() -> None:
    for name, column in INDEXES:
        op.drop_index(name, "roadie_tasks")
        op.create_index(name, "roadie_tasks", [column])

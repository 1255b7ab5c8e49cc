"""Task trees: the parent of a subtask, the fan-in flag, and dependencies between tasks.

Revision ID: i16_task_trees
Revises: i17_schedules
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "i16_task_trees"
down_revision = "i17_schedules"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
OPEN_CHILD = "parent_id IS NOT NULL AND status NOT IN (2, 3, 5)"


def upgrade() -> None:
    op.add_column("roadie_tasks", sa.Column("parent_id", Id))
    op.add_column("roadie_tasks", sa.Column("fan_in", sa.Boolean, nullable=False,
                                            server_default=sa.false()))
    op.add_column("roadie_tasks", sa.Column("has_dependents", sa.Boolean, nullable=False,
                                            server_default=sa.false()))
    op.create_index("roadie_tasks_parent", "roadie_tasks", ["parent_id"])
    op.create_index("roadie_tasks_open_children", "roadie_tasks", ["parent_id"],
                    postgresql_where=sa.text(OPEN_CHILD), sqlite_where=sa.text(OPEN_CHILD))
    op.create_table(
        "roadie_dependencies",
        sa.Column("task_id", Id, primary_key=True),
        sa.Column("after_id", Id, primary_key=True),
    )
    op.create_index("roadie_dependencies_after", "roadie_dependencies", ["after_id"])


def downgrade() -> None:
    op.drop_table("roadie_dependencies")
    op.drop_index("roadie_tasks_open_children", "roadie_tasks")
    op.drop_index("roadie_tasks_parent", "roadie_tasks")
    with op.batch_alter_table("roadie_tasks") as batch:
        batch.drop_column("has_dependents")
        batch.drop_column("fan_in")
        batch.drop_column("parent_id")

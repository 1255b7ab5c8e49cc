"""Crash recovery and the fan-in sweep cost O(running tasks), not O(table): partial indexes of
the IN_PROGRESS tasks (by node) and of the WAITING parents. Every worker runs both sweeps each
heartbeat interval; without them each was a scan of the whole table (45-77 ms at 1,000,000
tasks on PostgreSQL).

Revision ID: i12_sweep_indexes
Revises: i12_claimable
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "i12_sweep_indexes"
down_revision = "i12_claimable"
branch_labels = None
depends_on = None
# roadie.models.SCHEMA_HEAD must name the newest revision (tests/test_api.py checks it)

RUNNING = "status = 1"
WAITING = "status = 6"


def upgrade() -> None:
    op.create_index("roadie_tasks_running", "roadie_tasks", ["node"],
                    postgresql_where=text(RUNNING), sqlite_where=text(RUNNING))
    op.create_index("roadie_tasks_waiting", "roadie_tasks", ["id"],
                    postgresql_where=text(WAITING), sqlite_where=text(WAITING))


def downgrade() -> None:
    op.drop_index("roadie_tasks_waiting", "roadie_tasks")
    op.drop_index("roadie_tasks_running", "roadie_tasks")

"""A backlog of tasks with one isolation key costs the claim nothing: of a key's waiting tasks
only the next one (its head) is claimable, the rest are parked from the moment they are added.
An index of the claimable tasks that have a key finds a key's head in O(log n) when a task is
added. Existing backlogs are parked here, all but the best of each key (highest priority, then
oldest); a worker's claim parks that one too while its key is held.

Revision ID: i27_key_heads
Revises: i12_sweep_indexes
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "i27_key_heads"
down_revision = "i12_sweep_indexes"
branch_labels = None
depends_on = None
# roadie.models.SCHEMA_HEAD must name the newest revision (tests/test_api.py checks it)

KEY_HEAD = "claimable AND status IN (0, 4) AND isolation_key IS NOT NULL"


def upgrade() -> None:
    op.create_index("roadie_tasks_key_head", "roadie_tasks", ["isolation_key"],
                    postgresql_where=text(KEY_HEAD), sqlite_where=text(KEY_HEAD))
    # the best waiting task of each key stays claimable; the others are parked behind it
    op.execute(text(f"""
        UPDATE roadie_tasks SET status = 4, claimable = false
        WHERE {KEY_HEAD} AND id NOT IN (
            SELECT (SELECT h.id FROM roadie_tasks AS h
                    WHERE h.isolation_key = k.isolation_key
                      AND h.claimable AND h.status IN (0, 4)
                    ORDER BY h.priority DESC, h.id LIMIT 1)
            FROM (SELECT DISTINCT isolation_key FROM roadie_tasks WHERE {KEY_HEAD}) AS k)"""))


def downgrade() -> None:
    op.drop_index("roadie_tasks_key_head", "roadie_tasks")

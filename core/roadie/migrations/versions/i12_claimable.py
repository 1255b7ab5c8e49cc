"""The claim costs O(log n) in the tasks it cannot take: a ``claimable`` flag and the indexes
of the claim (per executor and tags), of delayed tasks (by due time) and of tasks parked behind
an isolation lock (per key); and of ended tasks by end time (retention).

Revision ID: i12_claimable
Revises: i16_task_trees
Create Date: 2026-11-30
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op
from roadie.models import UTCDateTime

revision = "i12_claimable"
down_revision = "i16_task_trees"
branch_labels = None
depends_on = None

CLAIMABLE = "claimable AND status IN (0, 4)"
DUE = "NOT claimable AND status = 0"
PARKED = "NOT claimable AND status = 4"
ENDED = "status IN (2, 3, 5)"


def upgrade() -> None:
    op.add_column("roadie_tasks", sa.Column("claimable", sa.Boolean, nullable=False,
                                            server_default=sa.true()))
    op.drop_index("roadie_tasks_claim", "roadie_tasks")
    op.create_index("roadie_tasks_claimable", "roadie_tasks",
                    ["executor", "tags", sa.text("priority DESC"), "id"],
                    postgresql_where=sa.text(CLAIMABLE), sqlite_where=sa.text(CLAIMABLE))
    op.create_index("roadie_tasks_due", "roadie_tasks", ["run_after"],
                    postgresql_where=sa.text(DUE), sqlite_where=sa.text(DUE))
    op.create_index("roadie_tasks_parked", "roadie_tasks",
                    ["isolation_key", sa.text("priority DESC"), "id"],
                    postgresql_where=sa.text(PARKED), sqlite_where=sa.text(PARKED))
    op.create_index("roadie_tasks_ended", "roadie_tasks", ["finished_at"],
                    postgresql_where=sa.text(ENDED), sqlite_where=sa.text(ENDED))
    # the tasks waiting now: delayed ones wait for their time, queued ones behind a held
    # lock for its release (the first worker's recovery wakes any whose lock is gone)
    tasks = sa.table("roadie_tasks", sa.column("claimable", sa.Boolean),
                     sa.column("status", sa.SmallInteger), sa.column("run_after", UTCDateTime),
                     sa.column("isolation_key", sa.String))
    locks = sa.table("roadie_locks", sa.column("key", sa.String))
    now = dt.datetime.now(dt.timezone.utc)
    op.execute(tasks.update().where(tasks.c.status == 0, tasks.c.run_after > now)
               .values(claimable=False))
    op.execute(tasks.update().where(tasks.c.status == 4,
                                    tasks.c.isolation_key.in_(sa.select(locks.c.key)))
               .values(claimable=False))


def downgrade() -> None:
    op.drop_index("roadie_tasks_ended", "roadie_tasks")
    op.drop_index("roadie_tasks_parked", "roadie_tasks")
    op.drop_index("roadie_tasks_due", "roadie_tasks")
    op.drop_index("roadie_tasks_claimable", "roadie_tasks")
    waiting = sa.text("status IN (0, 4)")
    op.create_index("roadie_tasks_claim", "roadie_tasks", [sa.text("priority DESC"), "id"],
                    postgresql_where=waiting, sqlite_where=waiting)
    with op.batch_alter_table("roadie_tasks") as batch:
        batch.drop_column("claimable")

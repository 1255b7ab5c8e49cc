"""The named statements of ``roadie.store.sql``: what the planner and the driver need of them."""

from __future__ import annotations

import itertools

import pytest
from roadie import models
from roadie.store import sql

COLUMNS = tuple(c.name for c in models.tasks.c)


def of_alias(condition: str, alias: str) -> str:
    """A partial index's condition as a statement writes it for a table alias."""
    for column in ("claimable", "status"):
        condition = condition.replace(column, f"{alias}.{column}")
    return condition


@pytest.mark.parametrize(("statement", "condition"), [
    (sql.PG_CANDIDATES, of_alias(models.CLAIMABLE, "t")),
    (sql.SQLITE_CANDIDATES_RANGE, models.CLAIMABLE),
    (sql.SQLITE_CANDIDATES_MANY, models.CLAIMABLE),
    (sql.PG_CLAIM_BRANCH, of_alias(models.CLAIMABLE, "t")),
    (sql.PG_SETTLE_DUE, models.DUE),
])
def test_statements_spell_out_the_condition_of_the_index_they_walk(statement: str,
                                                                   condition: str) -> None:
    # the planner takes a partial index only for a query that implies its condition
    assert condition in " ".join(statement.split())


@pytest.mark.parametrize(("record", "due", "known"),
                         list(itertools.product([False, True], [False, True], [(), COLUMNS])))
def test_a_thread_round_stays_under_psycopgs_query_cache_limit(record: bool, due: bool,
                                                                known: tuple[str, ...]) -> None:
    # psycopg caches how it converts a query only for texts under 4,096 bytes
    if known and not record:
        return
    assert len(sql.pg_settle_sql(record, True, False, due, known).encode()) < 4096

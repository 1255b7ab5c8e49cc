"""The store's long statements, each under one name and shown whole: someone hunting "the
settle statement" or "the claim" finds it here by its name.

Three kinds:

- driver SQL, ``PG_...`` and ``SQLITE_...``: text the store hands the driver itself (psycopg's
  ``%(name)s``, sqlite3's ``?``), for the worker's hot statements, where compiling and type
  processing on every round cost more than the database work;
- templates, driver SQL with ``{placeholders}``: completed once per shape by the function that
  uses them (the shapes are cached), never per call;
- SQLAlchemy statements, no prefix: built once, here, compiled for either database and cached
  by SQLAlchemy.

A statement that walks a partial index spells out that index's condition (``models.CLAIMABLE``,
``DUE``, ``PARKED``): the planner takes the index only for a query that implies it.
"""

from __future__ import annotations

import functools
import re

import sqlalchemy as sa

from roadie import models
from roadie.status import Status

T = models.tasks
DUE_BATCH = 1000  # delayed tasks made claimable per promotion, at most


# -- adding tasks ---------------------------------------------------------------------------

# The columns that a single add and a group of adds set (PG_INSERT_ONE, PG_INSERT_GROUP)
_INSERT_NEW_TASKS = """    INSERT INTO roadie_tasks
        (name, owner, task_group, executor, plugins, context, captured, status, status_message,
         completed, attempts, isolation_key, priority, run_after, tags, timeout, created_at,
         updated_at, claimable)
"""

# One task without an isolation key (PostgreSQL): insert and announce it in one autocommit
# statement (one round trip instead of four).
PG_INSERT_ONE = "\nWITH ins AS (\n" + _INSERT_NEW_TASKS + """\
    VALUES
        (%(name)s, %(owner)s, %(task_group)s, %(executor)s, %(plugins)s::json, %(context)s,
         %(captured)s, 0, '', false, 0, NULL, %(priority)s, %(run_after)s, %(tags)s,
         %(timeout)s, %(now)s, %(now)s, %(claimable)s)
    RETURNING *
)
SELECT ins.*, pg_notify('roadie_task_added', ins.id::text)::text AS notified FROM ins
"""

# Any number of such tasks in one autocommit statement, one array per column (the same text
# for every count: prepared once; binary parameters, about ten times cheaper to build than
# text arrays), announced by one notification (the highest id); the rows come back in the
# order of the arrays (ids are drawn in that order, after the sort).
PG_INSERT_GROUP = "\nWITH ins AS (\n" + _INSERT_NEW_TASKS + """\
    SELECT v.name, v.owner, v.task_group, v.executor, v.plugins::json, v.context, v.captured,
           0, '', false, 0, NULL, v.priority, v.run_after, v.tags, v.timeout, v.now, v.now,
           v.claimable
    FROM unnest(%(name)b::text[], %(owner)b::text[], %(task_group)b::text[],
                %(executor)b::text[], %(plugins)b::text[], %(context)b::bytea[],
                %(captured)b::bytea[], %(priority)b::int4[], %(run_after)b::timestamptz[],
                %(tags)b::text[], %(timeout)b::float8[], %(now)b::timestamptz[],
                %(claimable)b::bool[])
         WITH ORDINALITY AS v(name, owner, task_group, executor, plugins, context, captured,
                              priority, run_after, tags, timeout, now, claimable, n)
    ORDER BY v.n
    RETURNING *
)
SELECT ins.*, (SELECT pg_notify('roadie_task_added', max(id)::text) FROM ins)::text AS notified
FROM ins ORDER BY ins.id
"""

# The ids of ``:n`` tasks about to be copied in (PostgreSQL): the sequence is looked up once
# (OFFSET 0 keeps the planner from inlining the lookup into every row: 3-4 times slower).
PG_RESERVE_IDS = sa.text(  # (as one array: a row per id costs more to read)
    "SELECT array_agg(nextval(s.seq)) FROM (SELECT pg_get_serial_sequence('roadie_tasks', "
    "'id')::regclass AS seq OFFSET 0) AS s, generate_series(1, :n)")


# -- the claim's candidates (the general claim, both databases) -----------------------------

CANDIDATE_COLUMNS = "id, executor, isolation_key, plugins, name, owner, task_group, priority"

# Per (executor, tags) pair of ``{ranges}`` (``(:e0, :g0), ...``), the first claimable tasks
# of that range of the claim index whose plugins are all among ``{plugins}`` (``:p0, ...``),
# locked; then the best of them. Bound: ``now``, ``limit``.
PG_CANDIDATES = """
SELECT c.* FROM (VALUES {ranges}) AS r(executor, tags)
CROSS JOIN LATERAL (
    SELECT t.id, t.executor, t.isolation_key, t.plugins, t.name, t.owner, t.task_group,
           t.priority
    FROM roadie_tasks AS t
    WHERE t.claimable AND t.status IN (0, 4) AND t.executor = r.executor AND t.tags = r.tags
      AND t.run_after <= :now
      AND NOT EXISTS (SELECT 1 FROM json_object_keys(t.plugins) AS p(key)
                      WHERE p.key NOT IN ({plugins}))
    ORDER BY t.priority DESC, t.id LIMIT :limit
    FOR UPDATE OF t SKIP LOCKED
) AS c
ORDER BY c.priority DESC, c.id LIMIT :limit"""

# The same on SQLite: one range of the claim index (executor ``:e{i}``, tags ``:g{j}``) ...
SQLITE_CANDIDATES_RANGE = """SELECT * FROM (
    SELECT id, executor, isolation_key, plugins, name, owner, task_group, priority
    FROM roadie_tasks
    WHERE claimable AND status IN (0, 4) AND executor = :e{i} AND tags = :g{j}
      AND run_after <= :now
      AND NOT EXISTS (SELECT 1 FROM json_each(roadie_tasks.plugins) AS p
                      WHERE p.key NOT IN ({plugins}))
    ORDER BY priority DESC, id LIMIT :limit)"""
# ... and the best of all ``{ranges}`` (those ranges joined by UNION ALL)
SQLITE_CANDIDATES = "SELECT * FROM ({ranges}) ORDER BY priority DESC, id LIMIT :limit"
# A node with more ranges than SQLite takes in one compound SELECT (claim.SQLITE_MAX_RANGES):
# one walk of the claim index for all of its executors and tags.
SQLITE_CANDIDATES_MANY = """
SELECT id, executor, isolation_key, plugins, name, owner, task_group, priority
FROM roadie_tasks
WHERE claimable AND status IN (0, 4) AND executor IN ({executors}) AND tags IN ({tags})
  AND run_after <= :now
  AND NOT EXISTS (SELECT 1 FROM json_each(roadie_tasks.plugins) AS p
                  WHERE p.key NOT IN ({plugins}))
ORDER BY priority DESC, id LIMIT :limit"""

# A task whose plugins are all among ``:plugins`` (the node's), for ``count_pending``
HAS_PLUGINS_PG = sa.text(
    "NOT EXISTS (SELECT 1 FROM json_object_keys(roadie_tasks.plugins) AS p(key) "
    "WHERE p.key NOT IN :plugins)").bindparams(sa.bindparam("plugins", expanding=True))
HAS_PLUGINS_SQLITE = sa.text(
    "NOT EXISTS (SELECT 1 FROM json_each(roadie_tasks.plugins) AS p "
    "WHERE p.key NOT IN :plugins)").bindparams(sa.bindparam("plugins", expanding=True))


# -- the general claim and settle (both databases) ------------------------------------------

# Claim tasks ``:ids`` for ``:node``: started now (``:started``) or claimed ahead (NULL)
CLAIM_UPDATE = (
    T.update()
    .where(T.c.id.in_(sa.bindparam("ids", expanding=True)))
    .values(status=int(Status.IN_PROGRESS), node=sa.bindparam("node"),
            started_at=sa.bindparam("started", type_=models.UTCDateTime),
            heartbeat_at=sa.bindparam("now", type_=models.UTCDateTime),
            attempts=T.c.attempts + 1,
            updated_at=sa.bindparam("now", type_=models.UTCDateTime),
            status_message="")
    .returning(*T.c)
)

# Task ``:b_id`` while ``:b_node`` still runs its attempt ``:b_attempt`` (None: any attempt):
# what a worker writes of an attempt is written only while the attempt is still its own
OWNED_ATTEMPT = (
    T.c.id == sa.bindparam("b_id"), T.c.node == sa.bindparam("b_node"),
    T.c.status == int(Status.IN_PROGRESS),
    T.c.attempts == sa.func.coalesce(sa.bindparam("b_attempt", type_=sa.Integer),
                                     T.c.attempts),
)

# Record the final outcome of one attempt (executemany), while its node still owns it
FINISH_FINAL = T.update().where(*OWNED_ATTEMPT).values(
    status=sa.bindparam("b_status"), status_message=sa.bindparam("b_message"),
    completed=True, result=sa.bindparam("b_result"), error=sa.bindparam("b_error"),
    task_status=sa.bindparam("b_task_status"), messages=sa.bindparam("b_messages"),
    checkpoint=sa.func.coalesce(sa.bindparam("b_checkpoint", type_=sa.LargeBinary),
                                T.c.checkpoint),
    started_at=sa.func.coalesce(T.c.started_at,
                                sa.bindparam("b_started", type_=models.UTCDateTime)),
    finished_at=sa.bindparam("b_now", type_=models.UTCDateTime),
    updated_at=sa.bindparam("b_now", type_=models.UTCDateTime),
)

# Record that a task claimed ahead has started (executemany), while its attempt runs
MARK_STARTED = T.update().where(
    T.c.id == sa.bindparam("b_id"), T.c.node == sa.bindparam("b_node"),
    T.c.status == int(Status.IN_PROGRESS), T.c.attempts == sa.bindparam("b_attempt"),
    T.c.started_at.is_(None),
).values(started_at=sa.bindparam("b_at", type_=models.UTCDateTime))

ROWS_BY_ID = sa.select(T).where(T.c.id.in_(sa.bindparam("ids", expanding=True)))

# The worker's hot statements on SQLite in driver SQL: the same writes as FINISH_FINAL,
# CLAIM_UPDATE and an insert into models.attempts, without compiling and type processing on
# every round; a change to what an end or a claim writes changes both. Times are stored as
# SQLAlchemy stores them there: naive UTC, "YYYY-MM-DD HH:MM:SS.ffffff" (rows.sqlite_time).
SQLITE_FINISH = (  # final outcomes ({values}: one (?, ...) per outcome), rows as written
    "WITH v(id, status, message, result, error, task_status, messages, checkpoint, started, "
    "attempt) AS (VALUES {values}) "
    "UPDATE roadie_tasks SET status = v.status, status_message = v.message, completed = 1, "
    "result = v.result, error = v.error, task_status = v.task_status, messages = v.messages, "
    "checkpoint = coalesce(v.checkpoint, roadie_tasks.checkpoint), "
    "started_at = coalesce(roadie_tasks.started_at, v.started), finished_at = ?, "
    "updated_at = ? FROM v WHERE roadie_tasks.id = v.id AND roadie_tasks.node = ? "
    "AND roadie_tasks.status = 1 "
    "AND roadie_tasks.attempts = coalesce(v.attempt, roadie_tasks.attempts) RETURNING *")
SQLITE_ATTEMPT = (
    "INSERT INTO roadie_attempts (task_id, attempt, node, status, message, error, started_at, "
    "finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
SQLITE_CLAIM = (  # {ids}: one ? per task
    "UPDATE roadie_tasks SET status = 1, node = ?, started_at = ?, heartbeat_at = ?, "
    "attempts = attempts + 1, updated_at = ?, status_message = '' WHERE id IN ({ids}) "
    "RETURNING *")


# -- locks, parking, delayed tasks ----------------------------------------------------------

# Release the isolation slots that tasks ``:ids`` hold; returns their keys
RELEASE_LOCKS = models.locks.delete().where(
    models.locks.c.task_id.in_(sa.bindparam("ids", expanding=True))
).returning(models.locks.c.key)

# How many more tasks of isolation key ``:key`` may be active (running or claimable): its width
# (the ``key_limit`` of its best parked task; NULL is 1, serial), less its slots held
# (``:held``, counted by the caller under a share lock) and its heads (claimable tasks)
_ROOM = """(SELECT coalesce(p.key_limit, 1) FROM roadie_tasks AS p
     WHERE p.isolation_key = :key AND NOT p.claimable AND p.status = 4
     ORDER BY p.priority DESC, p.id LIMIT 1)
    - :held - (SELECT count(*) FROM roadie_tasks AS h
               WHERE h.isolation_key = :key AND h.claimable AND h.status IN (0, 4)
                 AND h.isolation_key IS NOT NULL)"""  # models.KEY_HEAD

# Make the next tasks parked behind ``:key`` (highest priority, then oldest) claimable, as many
# as its room: one runs next (or n, for a limit of n), not more. On PostgreSQL ({lock}) the
# chosen rows are locked in that order and rows another transaction holds are skipped: two
# workers promoting the same key at once (claims of a rated key, releases of its slots) would
# otherwise each wait for rows the other updated, in orders that can deadlock; a row another
# promoter holds is its to wake.
_PROMOTE_PARKED = f"""
UPDATE roadie_tasks SET claimable = true
WHERE id IN (
    SELECT id FROM roadie_tasks
    WHERE isolation_key = :key AND {models.PARKED}
    ORDER BY priority DESC, id
    LIMIT (CASE WHEN {_ROOM} > 0 THEN {_ROOM} ELSE 0 END){{lock}})
RETURNING id"""
PROMOTE_PARKED = sa.text(_PROMOTE_PARKED.format(lock=""))
PROMOTE_PARKED_PG = sa.text(_PROMOTE_PARKED.format(lock="\n    FOR UPDATE SKIP LOCKED"))

# The head (the claimable task) of each of some isolation keys: the key-head index
KEY_HEADS = (sa.select(T.c.isolation_key, T.c.id, T.c.priority)
             .where(T.c.isolation_key.in_(sa.bindparam("keys", expanding=True)),
                    sa.text(models.KEY_HEAD))
             .order_by(T.c.priority, T.c.id.desc()))

# The keys that have parked tasks and room for more active ones (after a crash, or a task that
# was next for its key ended without running): a walk of the distinct parked keys (a loose
# index scan of the parked index), not of the parked tasks
STRANDED_KEYS = sa.text(f"""
    WITH RECURSIVE k(key) AS (
        SELECT (SELECT min(isolation_key) FROM roadie_tasks WHERE {models.PARKED})
        UNION ALL
        SELECT (SELECT min(isolation_key) FROM roadie_tasks
                WHERE {models.PARKED} AND isolation_key > k.key)
        FROM k WHERE k.key IS NOT NULL
    )
    SELECT key FROM k WHERE key IS NOT NULL
      AND (SELECT count(*) FROM roadie_locks AS l WHERE l.key = k.key)
        + (SELECT count(*) FROM roadie_tasks AS h WHERE h.isolation_key = k.key
             AND h.claimable AND h.status IN (0, 4) AND h.isolation_key IS NOT NULL)
        < (SELECT coalesce(p.key_limit, 1) FROM roadie_tasks AS p
           WHERE p.isolation_key = k.key AND NOT p.claimable AND p.status = 4
           ORDER BY p.priority DESC, p.id LIMIT 1)""")

# Whether a delayed task is due at ``:now``
DUE_EXISTS = sa.select(T.c.id).where(
    sa.text(models.DUE), T.c.run_after <= sa.bindparam("now", type_=models.UTCDateTime),
).limit(1)

# Make delayed tasks due at ``:now`` claimable: a range of the due index, DUE_BATCH at most
# (rows another worker promotes are skipped on PostgreSQL; SQLite has no row locks, and
# SQLAlchemy leaves the FOR UPDATE out there)
PROMOTE_DUE = T.update().where(
    T.c.id.in_(
        sa.select(T.c.id)
        .where(sa.text(models.DUE), T.c.run_after <= sa.bindparam("now",
                                                                  type_=models.UTCDateTime))
        .order_by(T.c.run_after).limit(DUE_BATCH).with_for_update(skip_locked=True)),
    sa.text(models.DUE),
).values(claimable=True).returning(T.c.id)


# -- progress -------------------------------------------------------------------------------

# The live status, recent messages and checkpoint of one running task (executemany; None keeps
# what is stored), while ``:b_node`` runs its attempt ``:b_attempt`` (None: any attempt)
SAVE_PROGRESS = T.update().where(*OWNED_ATTEMPT).values(
    heartbeat_at=sa.bindparam("b_now", type_=models.UTCDateTime),
    updated_at=sa.bindparam("b_now", type_=models.UTCDateTime),
    task_status=sa.func.coalesce(sa.bindparam("b_status", type_=sa.LargeBinary),
                                 T.c.task_status),
    messages=sa.func.coalesce(sa.bindparam("b_messages", type_=sa.LargeBinary),
                              T.c.messages),
    checkpoint=sa.func.coalesce(sa.bindparam("b_checkpoint", type_=sa.LargeBinary),
                                T.c.checkpoint),
)

# The same write on PostgreSQL as one statement that also reads what the caller needs: the rows
# (``[id, attempt, status, messages, checkpoint]``, bytes in hex) as one JSON text, in id order
# (the plan, a hash join probed by these rows, writes them in that order); only the rows the
# node still runs are written (node and attempt: the fencing token); returns (id,
# cancel_requested_at) of each row written
PG_SAVE_PROGRESS = """
UPDATE roadie_tasks AS t
SET heartbeat_at = %(now)s, updated_at = %(now)s,
    task_status = coalesce(decode(v.status, 'hex'), t.task_status),
    messages = coalesce(decode(v.messages, 'hex'), t.messages),
    checkpoint = coalesce(decode(v.checkpoint, 'hex'), t.checkpoint)
FROM (SELECT r->>0 AS id, r->>1 AS attempt, r->>2 AS status, r->>3 AS messages,
             r->>4 AS checkpoint
      FROM json_array_elements(%(rows)s::json) WITH ORDINALITY AS e(r, n) ORDER BY n) AS v
WHERE t.id = v.id::bigint AND (t.node || '') = %(node)s AND t.status = 1
  AND t.attempts = coalesce(v.attempt::int, t.attempts)
RETURNING t.id, t.cancel_requested_at"""


# -- the settle round on PostgreSQL ---------------------------------------------------------
#
# The common round of a worker is one statement (pg_settle_sql) made of the parts it needs:
# record final outcomes (task rows, attempt log, lock release) and the starts of tasks claimed
# ahead; make due delayed tasks claimable; claim waiting tasks that have no isolation key;
# return the rows; announce the changes. Candidates that need an isolation lock are left to
# the general claim (CLAIM_UPDATE, the same on both databases).

# Record: the outcomes (``v``), the starts of tasks claimed ahead (``began``), the finished
# task rows (``done``), their attempt log lines (``logged``) and their locks' release
PG_SETTLE_RECORD = """
v AS (
    -- the outcomes as one JSON text (bytes in hex): far less work for the client than ten
    -- arrays of as many values
    SELECT o.id, o.status, o.message, decode(o.result, 'hex') AS result, o.error,
           decode(o.task_status, 'hex') AS task_status, decode(o.messages, 'hex') AS messages,
           decode(o.checkpoint, 'hex') AS checkpoint, o.attempt, o.started
    FROM json_to_recordset(%(outcomes)s::json) AS o(
        id bigint, status smallint, message text, result text, error text, task_status text,
        messages text, checkpoint text, attempt int, started timestamptz)
),
began AS (
    UPDATE roadie_tasks AS t SET started_at = s.at
    FROM unnest(%(start_ids)s::bigint[], %(start_attempts)s::int[],
                %(start_ats)s::timestamptz[]) AS s(id, attempt, at)
    WHERE t.id = s.id AND (t.node || '') = %(node)s AND t.status = 1
      AND t.attempts = s.attempt AND t.started_at IS NULL
),
done AS (
    UPDATE roadie_tasks AS t
    SET status = v.status, status_message = v.message, completed = true, result = v.result,
        error = v.error, task_status = v.task_status, messages = v.messages,
        checkpoint = coalesce(v.checkpoint, t.checkpoint), finished_at = %(now)s,
        started_at = coalesce(t.started_at, v.started),
        updated_at = %(now)s
    FROM v WHERE t.id = v.id AND (t.node || '') = %(node)s AND t.status = 1
    -- (node || ''): found by id, never by walking the node index (a node's ended tasks too)
      AND t.attempts = coalesce(v.attempt, t.attempts)
    RETURNING t.*
),
logged AS (
    INSERT INTO roadie_attempts
        (task_id, attempt, node, status, message, error, started_at, finished_at)
    SELECT id, attempts, %(node)s, status, status_message, error, started_at, %(now)s FROM done
),
released AS (
    DELETE FROM roadie_locks WHERE task_id IN (SELECT id FROM done)
),
"""

# Due: make delayed tasks claimable. Only in a round every DUE_CHECK_INTERVAL, which runs with
# a custom plan (a generic plan of this UPDATE walked every delayed task's index entry).
PG_SETTLE_DUE = """due AS (
    -- = ANY(ARRAY(...)): the due ids first, then each by primary key, in any plan (as
    -- IN (...), the settle session's generic plan hashes every delayed task each time)
    UPDATE roadie_tasks SET claimable = true
    WHERE id = ANY(ARRAY(SELECT id FROM roadie_tasks
                         WHERE NOT claimable AND status = 0 AND run_after <= %(now)s
                         ORDER BY run_after LIMIT %(due_limit)s FOR UPDATE SKIP LOCKED))
      AND NOT claimable AND status = 0
    RETURNING id
),
"""

# One branch of the claim's candidates (``c``): up to ``%({limit})s`` claimable tasks of the
# executors in ``%({executors})s`` (one index range per executor and tag set), locked; the
# first ``%({start})s`` of them start now, the others are claimed ahead (``started_at`` NULL)
PG_CLAIM_BRANCH = """    (SELECT k.id, k.isolation_key, k.executor, k.priority,
            row_number() OVER (ORDER BY k.priority DESC, k.id) <= %({start})s AS start_now
     FROM unnest(%({executors})s::text[]) AS e(executor)
     CROSS JOIN unnest(%(tags)s::text[]) AS g(tags)
     CROSS JOIN LATERAL (
         SELECT t.id, t.isolation_key, t.executor, t.priority FROM roadie_tasks AS t
         WHERE t.claimable AND t.status IN (0, 4) AND t.executor = e.executor
           AND t.tags = g.tags AND t.run_after <= %(now)s
           AND NOT EXISTS (SELECT 1 FROM json_object_keys(t.plugins) AS p(key)
                           WHERE p.key <> ALL(%(plugins)s::text[]))
         ORDER BY t.priority DESC, t.id
         LIMIT %({limit})s
         FOR UPDATE OF t SKIP LOCKED
     ) AS k
     ORDER BY k.priority DESC, k.id
     LIMIT %({limit})s)"""

# Claim: the candidates of the thread and async slots ({branches}: PG_CLAIM_BRANCH joined by
# UNION ALL), then the claim of those without an isolation key (``u``)
PG_SETTLE_CLAIM = """c AS (
{branches}
),

u AS (
    UPDATE roadie_tasks AS t
    SET status = 1, node = %(node)s, heartbeat_at = %(now)s,
        started_at = CASE WHEN c.start_now THEN %(now)s::timestamptz END,
        attempts = t.attempts + 1, updated_at = %(now)s, status_message = ''
    FROM c
    WHERE t.id = c.id AND c.isolation_key IS NULL AND c.executor <> ALL(%(isolated)s::text[])
    RETURNING t.*
),
{slots}"""

# Slots: the candidates of executors with a limit (``%(slot_executors)s``, with their slots per
# key ``%(slot_counts)s``) take free slots of their keys (``took``), the best candidate of a key
# the lowest free slot; one another worker takes meanwhile is skipped (the candidate stays, for
# the general claim). A start that took a slot is stamped when it is claimed (clock_timestamp:
# after the end of the attempt that freed the slot). Rate-limited executors are not among them.
PG_SETTLE_SLOTS = """k AS (
    SELECT c.id, c.isolation_key AS key, s.slots,
           row_number() OVER (PARTITION BY c.isolation_key ORDER BY c.priority DESC, c.id) AS n
    FROM c JOIN unnest(%(slot_executors)s::text[], %(slot_counts)s::int[]) AS s(executor, slots)
      ON s.executor = c.executor
    WHERE c.isolation_key IS NOT NULL
),
free AS (
    SELECT w.key, f.slot, row_number() OVER (PARTITION BY w.key ORDER BY f.slot) AS n
    FROM (SELECT key, max(slots) AS slots, count(*) AS wanted FROM k GROUP BY key) AS w
    CROSS JOIN LATERAL (
        SELECT g.slot FROM generate_series(0, w.slots - 1) AS g(slot)
        WHERE NOT EXISTS (SELECT 1 FROM roadie_locks AS l WHERE l.key = w.key AND l.slot = g.slot)
        ORDER BY g.slot LIMIT w.wanted) AS f
),
took AS (
    INSERT INTO roadie_locks (key, slot, task_id, node, acquired_at)
    SELECT k.key, free.slot, k.id, %(node)s, %(now)s FROM k JOIN free USING (key, n)
    ON CONFLICT DO NOTHING RETURNING task_id
),
us AS (
    -- each by primary key (= ANY(ARRAY(...))): as a join, a plan could scan every task
    UPDATE roadie_tasks AS t
    SET status = 1, node = %(node)s, heartbeat_at = %(now)s,
        started_at = CASE WHEN (SELECT c.start_now FROM c WHERE c.id = t.id)
                          THEN clock_timestamp() END,
        attempts = t.attempts + 1, updated_at = %(now)s, status_message = ''
    WHERE t.id = ANY(ARRAY(SELECT task_id FROM took))
    RETURNING t.*
),
"""

# The rows the round returns, each with its ``kind``: finished tasks ({columns}: every column,
# or only DONE_CHANGED where the worker knows the rest), claimed tasks, and one candidate that
# needs an isolation lock, if any: all the caller needs to know of them (it then runs the
# general claim), found by primary key, not by a join
PG_SETTLE_DONE_ROWS = "SELECT 'done' AS kind, {columns} FROM done"
PG_SETTLE_CLAIMED_ROWS = "SELECT 'claimed' AS kind, u.* FROM u"
PG_SETTLE_KEYED_ROW = ("SELECT 'keyed' AS kind, t.* FROM roadie_tasks AS t "
                       "WHERE t.id = (SELECT min(id) FROM c WHERE c.id NOT IN (SELECT id FROM u))")

# What a finished task's row may hold that its worker does not know: what others write
# while it runs (heartbeats, cancel requests, dependents, checkpoints) and the start a
# round recorded. The rest of the finished record is the task as claimed plus its outcome.
DONE_CHANGED = ("id", "heartbeat_at", "cancel_requested_at", "cancel_requested_by",
                "checkpoint", "started_at", "isolation_key", "has_dependents", "fan_in")

# The statement: the parts' CTEs ({ctes}), the ids that changed ({changed}: of ``done`` and
# ``u``), the rows ({rows}), one NOTIFY of the changed ids, and {woken}: PG_SETTLE_WOKEN if
# due tasks were promoted
PG_SETTLE = """WITH {ctes}changed AS ({changed}),
rows AS ({rows})
SELECT rows.* FROM rows
LEFT JOIN (
    SELECT pg_notify('roadie_task_changed', string_agg(id::text, ',')) AS sent
    FROM changed HAVING count(*) > 0
) AS notified ON true
{woken}"""

# Announce the tasks that became due (one NOTIFY with the newest id)
PG_SETTLE_WOKEN = """LEFT JOIN (
    SELECT pg_notify('roadie_task_added', max(id)::text) AS sent FROM due HAVING count(*) > 0
) AS woken ON true
"""


def pg_claim_branch(executors: str, limit: str, start: str) -> str:
    """One branch of the PostgreSQL claim (PG_CLAIM_BRANCH) with its parameters' names."""
    return PG_CLAIM_BRANCH.format(executors=executors, limit=limit, start=start)


@functools.cache
def pg_settle_sql(record: bool, claim_sync: bool, claim_async: bool, due: bool,
                  known: tuple[str, ...] = (), slots: bool = False) -> str:
    """The settle statement with only the parts this round needs (a part with nothing to do
    still costs its share of every execution): ``record`` outcomes and starts, claim for
    threads, claim for async executors, make due delayed tasks claimable. With ``known``
    (the table's columns in the database's order: the branches of the result's UNION line
    up by position), finished tasks come back with only their ``DONE_CHANGED`` columns.
    With ``slots``, candidates of executors with a limit take their keys' slots here too
    (PG_SETTLE_SLOTS). One line."""
    branches = ([pg_claim_branch("executors", "limit", "start")] if claim_sync else []) + (
        [pg_claim_branch("executors_async", "limit_async", "start_async")]
        if claim_async else [])
    claim = bool(branches)
    ctes = (PG_SETTLE_RECORD if record else "") + (PG_SETTLE_DUE if due else "")
    if claim:
        ctes += PG_SETTLE_CLAIM.format(
            branches="\n    UNION ALL\n".join(branches),
            slots=PG_SETTLE_SLOTS if slots else "")
    slotted = slots and claim  # claimed tasks come from ``u`` and, with slots, ``us``
    changed = (["SELECT id FROM done"] if record else []) + (
        ["SELECT id FROM u"] if claim else []) + (["SELECT id FROM us"] if slotted else [])
    done_columns = ", ".join(c if c in DONE_CHANGED else f"NULL AS {c}"
                             for c in known) if known else "done.*"
    keyed_row = PG_SETTLE_KEYED_ROW.replace(
        "(SELECT id FROM u)", "(SELECT id FROM u UNION ALL SELECT id FROM us)"
    ) if slotted else PG_SETTLE_KEYED_ROW
    rows = ([PG_SETTLE_DONE_ROWS.format(columns=done_columns)] if record else []) + (
        [PG_SETTLE_CLAIMED_ROWS, keyed_row] if claim else []) + (
        ["SELECT 'claimed' AS kind, us.* FROM us"] if slotted else [])
    assert rows, "a settle statement records or claims"
    sql = PG_SETTLE.format(ctes=ctes, changed=" UNION ALL ".join(changed),
                           rows=" UNION ALL ".join(rows), woken=PG_SETTLE_WOKEN if due else "")
    # parameters in binary: psycopg dumps the arrays of a round in a third of the time
    return re.sub(r"%\((\w+)\)s", r"%(\1)b", _one_line(sql))


def _one_line(sql: str) -> str:
    """``sql`` without its comments and runs of white space: psycopg caches how it converts a
    query only for texts under 4,096 bytes, and converts a longer one on every execution."""
    lines = (line.split("--", 1)[0] for line in sql.splitlines())
    return " ".join(" ".join(lines).split())

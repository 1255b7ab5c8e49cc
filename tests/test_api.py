"""The task API: add, get, list, cancel, resume, delete, and its errors."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from pathlib import Path
from typing import Any

import pytest
import roadie
from roadie import Status, models
from roadie.store import utcnow


def test_status_values_and_labels_match_liferay() -> None:
    assert [(s.name, int(s), s.label) for s in Status] == [
        ("NEW", 0, "new"), ("IN_PROGRESS", 1, "in-progress"), ("FAILED", 2, "failed"),
        ("SUCCESSFUL", 3, "successful"), ("QUEUED", 4, "queued"), ("CANCELLED", 5, "cancelled"),
        ("WAITING", 6, "waiting"),  # not Liferay's: a parent waiting for its subtasks
    ]
    assert not Status.WAITING.is_final
    assert Status.parse("in-progress") is Status.IN_PROGRESS
    assert Status.parse("CANCELLED") is Status.CANCELLED
    with pytest.raises(ValueError, match="use one of: new, in-progress"):
        Status.parse("running")


def test_result_shortcuts() -> None:
    assert roadie.Result.SUCCESS.status is Status.SUCCESSFUL
    assert roadie.Result.failed("why") == roadie.Result(Status.FAILED, "why")
    with pytest.raises(ValueError, match="final status"):
        roadie.Result(Status.NEW)


def test_add_and_get_task(app: roadie.Roadie) -> None:
    task = app.add_task("roadie-examples:echo", {"n": 1, "when": dt.date(2026, 1, 2)},
                        name="hello", owner="alice", group="site-1")
    again = app.get_task(task.id)
    assert again.status is Status.NEW
    assert again.completed is False
    assert again.name == "hello" and again.owner == "alice" and again.group == "site-1"
    assert again.executor == "roadie-examples:echo"
    assert again.plugins == {"roadie-examples": "0.1.0"}
    assert again.context == {"n": 1, "when": dt.date(2026, 1, 2)}
    assert isinstance(again.context_bytes, bytes)
    assert again.created_at.tzinfo is not None
    assert again.attempts == 0


def test_executor_names_are_canonical(app: roadie.Roadie) -> None:
    task = app.add_task("Roadie_Examples:echo", {})
    assert task.executor == "roadie-examples:echo"


def test_unknown_executor_suggests_the_closest(app: roadie.Roadie) -> None:
    with pytest.raises(roadie.UnknownExecutor) as info:
        app.add_task("roadie-examples:cuont", {})
    message = str(info.value)
    assert "Did you mean 'roadie-examples:count'" in message
    assert "roadie-examples:echo" in message  # lists what is installed
    assert app.list_tasks() == []


def test_malformed_executor_name(app: roadie.Roadie) -> None:
    with pytest.raises(roadie.UnknownExecutor, match="must look like '<distribution>:<name>'"):
        app.add_task("count", {})


def test_context_must_be_a_mapping(app: roadie.Roadie) -> None:
    with pytest.raises(roadie.ContextEncodeError, match=r"must be a mapping.*not list"):
        app.add_task("roadie-examples:echo", [1, 2])  # type: ignore[arg-type]


def test_unencodable_context_names_key_and_type(app: roadie.Roadie) -> None:
    class Secret:
        pass

    with pytest.raises(roadie.ContextEncodeError) as info:
        app.add_task("roadie-examples:echo", {"rows": [{"ok": 1}, {"who": Secret()}]})
    assert 'context["rows"][1]["who"]' in str(info.value)
    assert "Secret" in str(info.value)
    assert app.list_tasks() == []


def test_list_tasks_filters_newest_first(app: roadie.Roadie) -> None:
    a = app.add_task("roadie-examples:echo", {}, owner="alice", group="g1")
    b = app.add_task("roadie-examples:noop", {}, owner="bob", group="g1")
    c = app.add_task("roadie-examples:echo", {}, owner="alice", group="g2")
    assert [t.id for t in app.list_tasks()] == [c.id, b.id, a.id]
    assert [t.id for t in app.list_tasks(owner="alice")] == [c.id, a.id]
    assert [t.id for t in app.list_tasks(group="g1")] == [b.id, a.id]
    assert [t.id for t in app.list_tasks(executor="roadie-examples:noop")] == [b.id]
    assert [t.id for t in app.list_tasks(limit=1, offset=1)] == [b.id]
    assert [t.id for t in app.list_tasks(status="new")] == [c.id, b.id, a.id]
    assert app.list_tasks(status=[Status.FAILED]) == []


def test_cancel_waiting_task_is_immediate(app: roadie.Roadie) -> None:
    task = app.add_task("roadie-examples:echo", {})
    cancelled = app.cancel_task(task.id, by="alice")
    assert cancelled.status is Status.CANCELLED
    assert cancelled.completed
    assert "cancelled by alice" in cancelled.status_message
    stats = app.run_worker(concurrency=1, until_idle=True)
    assert stats.finished == 0
    with pytest.raises(roadie.InvalidTransition, match="already ended"):
        app.cancel_task(task.id)


def test_resume_a_cancelled_task_runs_it(app: roadie.Roadie) -> None:
    task = app.add_task("roadie-examples:echo", {"x": 1})
    app.cancel_task(task.id)
    resumed = app.resume_task(task.id)
    assert resumed.status is Status.NEW and not resumed.completed
    app.run_worker(concurrency=1, until_idle=True)
    assert app.get_task(task.id).status is Status.SUCCESSFUL
    with pytest.raises(roadie.InvalidTransition, match="only failed or cancelled"):
        app.resume_task(task.id)


def test_delete_task(app: roadie.Roadie) -> None:
    task = app.add_task("roadie-examples:echo", {})
    app.delete_task(task.id)
    with pytest.raises(roadie.TaskNotFound, match=f"task {task.id} does not exist"):
        app.get_task(task.id)


@pytest.mark.parametrize("operation", ["get_task", "cancel_task", "delete_task",
                                       "resume_task", "get_task_status"])
def test_missing_task_ids_are_clear_errors(app: roadie.Roadie, operation: str) -> None:
    with pytest.raises(roadie.TaskNotFound, match="task 4242 does not exist"):
        getattr(app, operation)(4242)


def test_add_tasks_in_one_batch(app: roadie.Roadie) -> None:
    tasks = app.add_tasks([
        {"executor": "roadie-examples:echo", "context": {"i": i}, "name": f"t{i}"}
        for i in range(50)
    ])
    assert [t.context["i"] for t in tasks] == list(range(50))
    assert len({t.id for t in tasks}) == 50
    with pytest.raises(ValueError, match=r"tasks\[0\] has no 'executor'"):
        app.add_tasks([{"context": {}}])



def test_add_tasks_returns_each_task_as_stored(app: roadie.Roadie) -> None:
    # the batch path builds its records without reading them back: they must be get_task's
    failed = app.add_task("roadie-examples:echo", {})
    app.cancel_task(failed.id)
    open_dependency = app.add_task("roadie-examples:echo", {})
    with app.store.engine.begin() as conn:  # the serial executor's lock is held
        conn.execute(models.locks.insert().values(key="tests:serial", task_id=failed.id,
                                                  acquired_at=utcnow()))
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    items: list[dict[str, Any]] = [
        {"executor": "roadie-examples:echo", "context": {"i": i}, "name": f"t{i}",
         "owner": "ann" if i % 2 else None, "group": f"g{i % 3}", "priority": i % 4,
         "tags": ["b", "a"] if i % 5 == 0 else (), "timeout": 2.5 if i % 7 == 0 else None,
         "run_after": dt.datetime(2030, 1, 1, 12, tzinfo=paris) if i == 3 else None}
        for i in range(25)
    ]
    items += [{"executor": "tests:serial", "context": {}},
              {"executor": "roadie-examples:echo", "after": [failed.id]},
              {"executor": "roadie-examples:echo", "after": [open_dependency]}]
    added = app.add_tasks(items)
    assert [app.get_task(t.id) for t in added] == list(added)
    assert [t.status for t in added[-3:]] == [Status.QUEUED, Status.CANCELLED, Status.NEW]
    assert added[3].run_after == dt.datetime(2030, 1, 1, 11, tzinfo=dt.timezone.utc)

def test_a_batch_whose_tasks_share_their_values_comes_back_as_stored(
        app: roadie.Roadie) -> None:
    # the batch path sends only the columns some task sets and makes a field once when
    # every task has it alike: each record must still be get_task's
    plain = app.add_tasks([("roadie-examples:echo", {})] * 25)
    alike = app.add_tasks([{"executor": "roadie-examples:echo", "context": {"i": 1},
                            "owner": "ann", "priority": 2, "timeout": 5, "tags": ["a"]}] * 25)
    for added in (plain, alike):
        assert [app.get_task(t.id) for t in added] == list(added)
    assert {type(t.timeout) for t in alike} == {float}
    assert (plain[0].owner, plain[0].priority, plain[0].tags, plain[0].status_message) == (
        None, 0, frozenset(), "")
    assert plain[0].plugins is not plain[1].plugins  # each record's map is its own


class Counted:
    """Counts the capture calls and the added tasks of a batch."""

    def __init__(self) -> None:
        self.captured: list[dict[str, Any]] = []
        self.added: list[int] = []

    @roadie.hookimpl
    def roadie_capture_context(self, context: dict[str, Any]) -> dict[str, Any]:
        self.captured.append(context)
        return {"n": len(self.captured)}

    @roadie.hookimpl
    def roadie_task_added(self, task: roadie.TaskRecord) -> None:
        self.added.append(task.id)


def test_a_large_batch_of_pairs_comes_back_as_stored_with_a_hook_call_per_task(
        app: roadie.Roadie) -> None:
    # PostgreSQL makes a batch of pairs a chunk at a time while the database takes the rows
    # of the chunks made before (store.stream_tasks): the same records, hooks and order
    from roadie.app.adding import STREAM_CHUNK, STREAM_FROM

    counted = Counted()
    app.plugins.register(counted, name="counted")
    count = max(STREAM_FROM, 2 * STREAM_CHUNK + 7)
    items = [("roadie-examples:echo" if i % 3 else "roadie-examples:noop",
              {} if i % 2 else {"i": i, "s": "é" * (i % 4)}) for i in range(count)]
    added = app.add_tasks(items)
    assert [t.id for t in added] == sorted(t.id for t in added)
    assert [app.get_task(t.id) for t in added] == list(added)
    assert [t.context for t in added] == [c for _, c in items]
    assert [t.captured["n"] for t in added] == list(range(1, count + 1))
    assert counted.captured == [c for _, c in items]
    assert counted.added == [t.id for t in added]
    assert app.store.count_tasks() == {Status.NEW: count}


def test_a_large_batch_that_fails_late_stores_nothing(app: roadie.Roadie) -> None:
    from roadie.app.adding import STREAM_FROM

    items: list[Any] = [("roadie-examples:echo", {})] * (STREAM_FROM + 600)
    items[-3] = ("roadie-examples:echo", {"x": object()})
    with pytest.raises(roadie.ContextEncodeError, match=r'context\["x"\]'):
        app.add_tasks(items)
    assert app.store.count_tasks() == {}
    assert len(app.add_tasks(items[:STREAM_FROM])) == STREAM_FROM  # (the session is sound)


def test_the_streamed_batch_takes_as_many_tasks_as_it_was_told(app: roadie.Roadie) -> None:
    if not app.store.streams():
        pytest.skip("PostgreSQL only")
    from roadie.store import PlainTasks

    def chunk(n: int) -> PlainTasks:
        return PlainTasks(["roadie-examples:echo"] * n, [{"roadie-examples": "1"}] * n,
                          [b"\x80"] * n, [None] * n)

    with pytest.raises(ValueError, match="given 1 tasks, not 2"):
        app.store.stream_tasks(2, [chunk(1)])
    with pytest.raises(ValueError, match="given more than 2 tasks"):
        app.store.stream_tasks(2, [chunk(2), chunk(1)])
    with pytest.raises(ValueError, match="a list per field"):
        app.store.stream_tasks(2, [PlainTasks(["roadie-examples:echo"] * 2)])
    assert app.store.count_tasks() == {}
    assert [t.context for t in app.store.stream_tasks(3, [chunk(2), chunk(1)],
                                                      decoder=app.decode_for_task)] == [{}] * 3


def test_add_tasks_leaves_the_garbage_collector_as_it_found_it(app: roadie.Roadie) -> None:
    # a batch pauses Python's cyclic collector while it makes its objects, not longer
    import gc

    assert gc.isenabled()
    app.add_tasks([("roadie-examples:echo", {})] * 25)
    assert gc.isenabled()
    with pytest.raises(ValueError, match="has no 'executor'"):
        app.add_tasks([("roadie-examples:echo", {})] * 25 + [{"context": {}}])
    assert gc.isenabled()
    gc.disable()
    try:
        app.add_tasks([("roadie-examples:echo", {})] * 25)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_add_tasks_takes_pairs_and_names_a_bad_item(app: roadie.Roadie) -> None:
    [task] = app.add_tasks([("roadie-examples:echo", {"n": 1})])
    assert app.get_task(task.id).context == {"n": 1}
    with pytest.raises(TypeError, match=r"tasks\[1\] is a str; .*\(executor, context\) pair"):
        app.add_tasks([{"executor": "roadie-examples:echo"}, "roadie-examples:echo"])
    assert [t.id for t in app.list_tasks()] == [task.id]  # the batch added nothing


def test_add_tasks_from_an_iterable_goes_in_chunks(app: roadie.Roadie) -> None:
    items = ({"executor": "roadie-examples:echo", "context": {"i": i}} for i in range(25))
    added = app.add_tasks(items, chunk_size=10)
    assert len(added) == 25
    assert [t.context["i"] for t in added] == list(range(25))
    assert added[3].context == {"i": 3} and [t.id for t in added[-2:]] == list(added.ids[-2:])
    assert app.store.count_tasks() == {roadie.Status.NEW: 25}
    bad = iter([("roadie-examples:echo", {})] * 10 + [{"context": {}}])
    with pytest.raises(ValueError, match=r"tasks\[10\] has no 'executor'"):
        app.add_tasks(bad, chunk_size=10)
    assert app.store.count_tasks() == {roadie.Status.NEW: 35}  # the first chunk went in


def test_bursts_of_added_tasks_keep_the_planner_statistics_at_most_half_behind(
        tmp_path: Path) -> None:
    """PostgreSQL: the claim's plan needs row counts near the truth; add_tasks refreshes
    them as the table doubles (not on every call), on a thread of their own after the commit;
    adds in a caller's transaction, not yet committed, do not count."""
    import sqlalchemy as sa
    from roadie.testing import make_app

    from tests.conftest import PG_URL, require_postgres, reset_postgres

    require_postgres()
    reset_postgres()
    app = make_app(PG_URL, tmp_path)

    def estimated() -> float:
        with app.store.engine.connect() as conn:
            return float(conn.execute(sa.text(
                "SELECT reltuples FROM pg_class WHERE oid = 'roadie_tasks'::regclass"
            )).scalar())

    def analyses() -> int:
        with app.store.engine.connect() as conn:
            return int(conn.execute(sa.text(
                "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'roadie_tasks'"
            )).scalar())

    total = 0
    try:
        for size in (1500, 600, 600, 2000, 300, 5000):
            app.add_tasks([("roadie-examples:noop", {})] * size)
            total += size
            app.store.statistics.wait(30)  # (refreshed after the commit, on a thread)
            assert estimated() >= total / 2, f"after {total:,} tasks"
        analyzed = analyses()
        assert analyzed >= 3
        with app.store.engine.connect() as conn, conn.begin():
            app.add_tasks([("roadie-examples:noop", {})] * 3 * total, connection=conn)
        app.store.statistics.wait(30)
        assert analyses() == analyzed  # (the caller's to commit: not counted here)
    finally:
        app.close()


def test_unreachable_database_is_one_clear_line(tmp_path: object) -> None:
    app = roadie.Roadie("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with pytest.raises(roadie.DatabaseError) as info:
        app.list_tasks()
    message = str(info.value)
    assert "127.0.0.1:1" in message and "\n" not in message


def test_outdated_schema_says_what_to_run(db_url: str, tmp_path: object) -> None:
    import sqlalchemy as sa

    if db_url.startswith("postgresql"):
        engine = sa.create_engine(db_url)
        with engine.begin() as conn:
            from tests.conftest import ROADIE_TABLES

            for table in (*ROADIE_TABLES, "roadie_alembic_version"):
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {table} CASCADE"))
        engine.dispose()
        with pytest.raises(roadie.SchemaOutdatedError, match="run `roadie db upgrade`"):
            roadie.Roadie(db_url).list_tasks()
        roadie.Roadie(db_url).upgrade_schema()
        assert roadie.Roadie(db_url).list_tasks() == []
    else:
        # the embedded SQLite database upgrades itself on first use
        assert roadie.Roadie(db_url).list_tasks() == []
        with pytest.raises(roadie.SchemaOutdatedError, match="run `roadie db upgrade`"):
            roadie.Roadie(db_url.replace("roadie.db", "other.db"), auto_upgrade=False).list_tasks()


def test_schema_head_names_the_newest_migration() -> None:
    """The schema check reads ``SCHEMA_HEAD`` instead of loading Alembic: it must be the
    migrations' head, or every database would look outdated (or current when it is not)."""
    from pathlib import Path

    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from roadie import models

    config = Config()
    config.set_main_option("script_location", str(Path(models.__file__).parent / "migrations"))
    assert ScriptDirectory.from_config(config).get_current_head() == models.SCHEMA_HEAD


def test_older_schema_revision_is_refused(db_url: str) -> None:
    import sqlalchemy as sa

    app = roadie.Roadie(db_url, auto_upgrade=True)
    app.list_tasks()
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE roadie_alembic_version SET version_num = 'i16_task_trees'"))
    engine.dispose()
    try:
        with pytest.raises(roadie.SchemaOutdatedError,
                           match=f"i16_task_trees, older than this roadie's {models.SCHEMA_HEAD}"):
            roadie.Roadie(db_url, auto_upgrade=False).list_tasks()
    finally:
        engine = sa.create_engine(db_url)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE roadie_alembic_version SET version_num = :v"),
                         {"v": models.SCHEMA_HEAD})
        engine.dispose()
    assert roadie.Roadie(db_url, auto_upgrade=False).list_tasks() == []


def test_equal_looking_contexts_of_one_batch_keep_their_own_types(app: roadie.Roadie) -> None:
    contexts: list[dict[str, Any]] = [{}, {}, {"a": 1}, {"a": True}, {"a": 1.0}, {"a": 1},
                                      {"x": 0.0}, {"x": -0.0}, {"s": "x"}, {"s": b"x"},
                                      {"n": None}, {"a": 1, "b": 2}, {"b": 2, "a": 1}]
    added = app.add_tasks([("roadie-examples:echo", c) for c in contexts])
    got = [app.get_task(t.id).context for t in added]
    assert got == contexts
    assert [[(type(v), str(v)) for v in c.values()] for c in got] == [
        [(type(v), str(v)) for v in c.values()] for c in contexts]


class _AddedIds:
    def __init__(self) -> None:
        self.tasks: list[roadie.TaskRecord] = []

    @roadie.hookimpl
    def roadie_task_added(self, app: roadie.Roadie, task: roadie.TaskRecord) -> None:
        self.tasks.append(task)


def test_single_adds_from_many_threads_each_get_their_own_task(app: roadie.Roadie) -> None:
    """On PostgreSQL the adds made at once go in together (one statement per group); each
    caller still gets its own task, and a row the server refuses fails only its own add."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    hook = _AddedIds()
    app.plugins.register(hook, name="added-ids")
    bad = {5, 33} if app.store.is_postgres else set()  # names longer than the column
    start = threading.Barrier(20)

    def add(i: int) -> roadie.TaskRecord:
        if i < 20:
            start.wait(10)
        return app.add_task("roadie-examples:echo", {"i": i},
                            name="n" * 300 if i in bad else f"t{i}", priority=i % 4,
                            timeout=(2 if i % 2 else 2.5))

    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(add, i) for i in range(120)]
    failed = {i for i, f in enumerate(futures) if f.exception() is not None}
    assert failed == bad
    added = {i: f.result() for i, f in enumerate(futures) if i not in bad}
    assert len({t.id for t in added.values()}) == len(added)
    for i, task in added.items():
        assert (task.context, task.name, task.priority, task.timeout) == (
            {"i": i}, f"t{i}", i % 4, 2 if i % 2 else 2.5)
        assert app.get_task(task.id) == task
    assert sorted(t.id for t in hook.tasks) == sorted(t.id for t in added.values())
    assert len(app.list_tasks(limit=None)) == len(added)

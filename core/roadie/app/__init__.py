"""``roadie.Roadie``: the application object that adds, reads, cancels and runs tasks.

``Roadie`` is the facade: its methods read like a table of contents and the longer paths live
in the modules of this package, one concept each:

- ``adding``: the task-adding path (executor check, context encoding, captured context,
  isolation key, ``add_tasks`` in chunks);
- ``waiting``: why a waiting task is not running yet;
- ``recovery``: the crash policy applied to the tasks of dead workers;
- ``watching``: following tasks as they change (``watch``, and the async client's).

Schedules (``roadie.schedules``), task trees (``roadie.trees``), retention
(``roadie.retention``) and attachments (``roadie.attachments``) have modules of their own,
which the methods here call; every statement is in ``roadie.store``.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, cast

from roadie.app import adding, flow, recovery
from roadie.app.adding import ADD_CHUNK
from roadie.codec import TypeRegistry
from roadie.config import Settings
from roadie.errors import PluginError
from roadie.executor import Executor, Isolation
from roadie.hookcalls import notify_each, notify_hook
from roadie.limits import Limits
from roadie.plugins import Plugins
from roadie.records import (
    AttachmentInfo,
    AttemptRecord,
    ExecutorState,
    NodeRecord,
    TaskRecord,
)
from roadie.rollup import Rollup, Stats, check_window, read_stats
from roadie.status import Status
from roadie.store import Claimable, Fence, NewTask, Outcome, utcnow

if TYPE_CHECKING:
    from pathlib import Path

    from roadie.aio_client import AsyncRoadie
    from roadie.attachments import AttachmentStore
    from roadie.result import Result
    from roadie.running import RunningTask
    from roadie.schedules import ScheduleInfo
    from roadie.store import Store
    from roadie.worker import Worker, WorkerStats

__all__ = ["Roadie"]

log = logging.getLogger("roadie")
# seconds, at least (PostgreSQL; see Store): long enough for a caller that turns a big result
# into records inside its transaction on a slow machine, short enough to free a paused
# process's row locks soon after heartbeat_grace
IDLE_IN_TRANSACTION_TIMEOUT = 60.0


class Roadie:
    """The entry point of roadie: one database, the installed plugins, and the task API.

    ``Roadie()`` uses the embedded SQLite file (``ROADIE_URL`` or the data directory);
    ``Roadie("postgresql+psycopg://...")`` shares a PostgreSQL database with other nodes.
    The SQLite schema upgrades itself; PostgreSQL needs ``roadie db upgrade`` (or
    ``auto_upgrade=True``).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        blocked_plugins: Iterable[str] = (),
        entry_points: bool = True,
        auto_upgrade: bool | None = None,
        **setting_overrides: Any,
    ) -> None:
        # one rule: arguments win, then ROADIE_* variables, then defaults (roadie.config)
        if settings is None:
            self.settings = Settings(**setting_overrides)
        else:
            self.settings = settings.replace(**setting_overrides) if setting_overrides \
                else settings
        self.registry = TypeRegistry(max_size=self.settings.max_context_size)
        self.plugins = Plugins(self.registry, blocked=blocked_plugins, entry_points=entry_points,
                               envs_dir=self.settings.envs_path() if entry_points else None)
        if url is None and not os.environ.get("ROADIE_URL") and entry_points:
            url = self._url_from_plugins()
        self.url = url or self.settings.default_url()
        self._auto_upgrade = auto_upgrade
        self._store: Store | None = None
        self._store_lock = threading.Lock()
        self._attachment_store: AttachmentStore | None = None
        # the overview's counts not written yet (roadie.rollup: a worker writes them as it
        # settles, other paths at once)
        self.rollup = Rollup()
        self.clock: Callable[[], dt.datetime] = utcnow  # the time of schedules (tests set it)

    # -- plumbing ------------------------------------------------------------------------

    def _url_from_plugins(self) -> str | None:
        """A plugin's database URL, when none is given (``roadie_default_url``)."""
        try:
            return cast("str | None", self.plugins.hook.roadie_default_url(
                settings=self.settings))
        except Exception as exc:
            raise PluginError(
                f"cannot choose the database: hook roadie_default_url failed: "
                f"{type(exc).__name__}: {exc} (give the URL with --url or ROADIE_URL)") from exc

    @property
    def store(self) -> Store:
        """The database (connected, and schema checked, on first use)."""
        with self._store_lock:
            if self._store is None:
                from roadie.store import Store  # on first use: a host never loads SQLAlchemy

                store = Store(self.url,
                              synchronous_commit=self.settings.postgres_synchronous_commit,
                              idle_timeout=max(IDLE_IN_TRANSACTION_TIMEOUT,
                                               2 * self.settings.heartbeat_grace),
                              pooler=self.settings.pooler,
                              listen_url=self.settings.listen_url)
                auto = store.is_sqlite if self._auto_upgrade is None else self._auto_upgrade
                store.check_schema(auto_upgrade=auto)
                store.trees.on_cancelled = self._fire_cancelled
                self._store = store
            return self._store

    @functools.cached_property
    def aio(self) -> AsyncRoadie:
        """The awaitable counterparts of this app's calls, on an async database driver, for
        asyncio code: ``await app.aio.add_task(...)``, ``async for t in app.aio.watch(...)``
        (see ``roadie.AsyncRoadie``)."""
        from roadie.aio_client import AsyncRoadie

        return AsyncRoadie(self)

    def _on_store(self, store: Store) -> Roadie:
        """This app with its queries on ``store`` (a ``Store.bound`` view): the same calls,
        hooks and all, on another connection."""
        view = copy.copy(self)
        view.__dict__.pop("aio", None)
        view._store = store
        store.trees.on_cancelled = view._fire_cancelled
        return view

    def close(self) -> None:
        """Release the database connections."""
        if "aio" in self.__dict__:
            self.aio.forget()
        with self._store_lock:
            if self._store is not None:
                self._store.dispose()
                self._store = None

    def __enter__(self) -> Roadie:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def upgrade_schema(self) -> None:
        """Create or upgrade the database schema (``roadie db upgrade``); a database that a
        newer roadie upgraded is refused with ``SchemaNewerError``."""
        from roadie.store import Store

        store = Store(self.url, pooler=self.settings.pooler)
        try:
            store.upgrade()
        finally:
            store.dispose()

    def decode_for_task(self, record: TaskRecord, data: bytes, what: str) -> Any:
        """Decode one of a task's stored values inside its import context."""
        self.plugins.load()  # the plugins' types must be registered first
        return self.registry.decode(
            data, what=f"{what} of task {record.id}", namespaces=record.plugins,
            installed=self.plugins.is_installed,
        )

    # -- adding tasks --------------------------------------------------------------------

    def add_task(
        self,
        executor: str,
        context: Mapping[str, Any] | None = None,
        *,
        name: str = "",
        owner: str | None = None,
        group: str | None = None,
        priority: int = 0,
        run_after: dt.datetime | None = None,
        delay: float | None = None,
        tags: Iterable[str] = (),
        timeout: float | None = None,
        after: Iterable[int] = (),
        unique_key: str | None = None,
        connection: Any = None,
    ) -> TaskRecord:
        """Store a new task for ``executor`` (``"distribution:name"``) with its context map.

        The executor is checked against the installed plugins (or those that live workers
        advertise); the context is encoded with the type registry. Returns the stored task.
        With ``after=[ids]`` it waits (NEW) until those tasks have all succeeded, and ends
        CANCELLED if one of them fails or is cancelled. With ``unique_key``, while a task of
        this executor with that key has not ended, that task is returned and none is added.
        With ``connection`` (a SQLAlchemy ``Connection`` or ``Session``, a psycopg or sqlite3
        connection, on the app's database) the task is written inside that connection's
        transaction: workers see it once the caller commits, and a rollback leaves nothing.
        """
        if connection is not None:
            with self._in_transaction(connection) as app:
                return app.add_task(executor, context, name=name, owner=owner, group=group,
                                    priority=priority, run_after=run_after, delay=delay,
                                    tags=tags, timeout=timeout, after=after,
                                    unique_key=unique_key)
        spec = self._new_task(executor, context, {}, name=name, owner=owner, group=group,
                              priority=priority, run_after=run_after, delay=delay, tags=tags,
                              timeout=timeout, after=after, unique_key=unique_key)
        return self._add_new(spec)

    def _add_new(self, spec: NewTask) -> TaskRecord:
        """Store one task made by ``_new_task`` and fire ``roadie_task_added`` (unless it was
        an open task's unique key: that task comes back)."""
        added = self.store.insert_tasks([spec], decoder=self.decode_for_task)
        (task,) = added
        if task.id not in added.existing:
            self._task_added(task)
        return task

    def add_tasks(
        self, tasks: Iterable[Mapping[str, Any] | tuple[str, Mapping[str, Any] | None]], *,
        chunk_size: int = ADD_CHUNK, connection: Any = None,
    ) -> Sequence[TaskRecord]:
        """Add many tasks; each item holds ``add_task``'s arguments
        (``{"executor": ..., "context": ..., "name": ...}``) or is an
        ``(executor, context)`` pair.

        A list or tuple goes in one transaction (all or nothing) and comes back as a list.
        Any other iterable (a generator: millions of tasks) is read ``chunk_size`` items at a
        time, each chunk in its own transaction, in bounded memory; the tasks come back as a
        sequence that reads each record from the database when asked (it keeps only ids).
        With ``connection`` (see ``add_task``) every chunk goes in the caller's transaction.
        """
        if connection is not None:
            with self._in_transaction(connection) as app:
                added = adding.add_tasks(app, tasks, chunk_size=chunk_size)
            if isinstance(added, adding.AddedTasks):  # read on the app's own connections
                return adding.AddedTasks(self, added.ids)
            return added
        return adding.add_tasks(self, tasks, chunk_size=chunk_size)

    @contextlib.contextmanager
    def _in_transaction(self, connection: Any) -> Iterator[Roadie]:
        """This app with its statements inside the caller's transaction on ``connection``
        (``connection=`` of the adding calls; ``store.caller``)."""
        with self.store.joined(connection) as store:
            yield self._on_store(store)

    def _insert_subtasks(self, parent: RunningTask, specs: Sequence[NewTask]
                         ) -> list[TaskRecord]:
        """Store subtasks of the running task ``parent`` and fire
        ``roadie_task_added``; a host process sends them to its worker instead."""
        added = parent.guarded("subtasks", functools.partial(
            self.store.insert_tasks, specs, decoder=self.decode_for_task, parent=parent.fence))
        for task in added:
            self._task_added(task)
        return added

    def _subtask_page(self, parent_id: int, after: int, limit: int,
                      offset: int = 0) -> list[TaskRecord]:
        """A page of subtasks for ``roadie.Subtasks`` (a host asks its worker instead)."""
        from roadie.trees import subtask_page

        return subtask_page(self, parent_id, after, limit, offset)

    def _subtask_count(self, parent_id: int) -> int:
        """How many subtasks ``parent_id`` has, for ``roadie.Subtasks`` (a host asks its
        worker instead)."""
        return self.store.trees.subtask_count(parent_id)

    def _task_added(self, task: TaskRecord) -> None:
        for line in notify_hook(self, "roadie_task_added", app=self, task=task):
            log.warning("task %s: %s", task.id, line)

    def _tasks_added(self, tasks: Iterable[TaskRecord]) -> None:
        """``_task_added`` for each of ``tasks``, in order."""
        for task, line in notify_each(self, "roadie_task_added", "task", tasks, app=self):
            log.warning("task %s: %s", task.id, line)

    def _new_task(self, executor: str, context: Mapping[str, Any] | None,
                  resolved: dict[Any, Any], **options: Any) -> NewTask:
        """A task to insert from ``add_task``'s arguments (``roadie.app.adding.new_task``;
        subtasks and schedules make theirs here too)."""
        return adding.new_task(self, executor, context, resolved, **options)

    def _resolve_executor(
        self, qualified: str
    ) -> tuple[type[Executor] | None, dict[str, str], Isolation]:
        """The executor class (if installed here), the plugin versions it needs, and its
        isolation; falls back on what live nodes advertise (a host asks its worker)."""
        return adding.resolve_executor(self, qualified)

    def executor_limits(self, qualified: str) -> tuple[Limits, bool]:
        """An executor's flow control (``max_running``, ``rate_limit``) and whether it
        isolates its tasks by key; from its class, or as a worker declared them."""
        return flow.executor_limits(self, qualified)

    def isolation_key_function(self, qualified: str, executor_class: type[Executor],
                               isolation: Isolation | None = None) -> Any:
        """A function of a task row that gives its isolation key (for the claim), by the
        executor's isolation or ``isolation``."""
        return functools.partial(adding.isolation_key_of, qualified, executor_class,
                                 isolation or executor_class.isolation)

    # -- reading -------------------------------------------------------------------------

    def get_task(self, task_id: int) -> TaskRecord:
        """The task with ``task_id`` (raises ``roadie.TaskNotFound``)."""
        return self.store.get_task(task_id, decoder=self.decode_for_task)

    def get_task_status(self, task_id: int) -> dict[str, Any]:
        """The live status attributes of a task (progress, counters, ...), from any process.
        A parent waiting for its subtasks adds their counts by status and a percent."""
        record = self.get_task(task_id)
        status = record.task_status
        if record.status == Status.WAITING:
            from roadie.trees import tree_status

            status = {**status, **tree_status(self, record)}
        return status

    def list_tasks(
        self,
        *,
        status: Status | str | Iterable[Status | str] | None = None,
        executor: str | None = None,
        owner: str | None = None,
        group: str | None = None,
        name: str | None = None,
        schedule: str | None = None,
        limit: int | None = 100,
        offset: int = 0,
        name_contains: str | None = None,
        parent_id: int | None = None,
    ) -> list[TaskRecord]:
        """Tasks matching the filters, newest first (``schedule``: the tasks a schedule
        made; ``name_contains``: a case-insensitive part of the name; ``parent_id``: the
        subtasks of a task)."""
        statuses = None
        if status is not None:
            items = [status] if isinstance(status, (str, int, Status)) else list(status)
            statuses = [Status.parse(s) for s in items]
        return self.store.list_tasks(
            status=statuses, executor=executor, owner=owner, group=group, name=name,
            schedule=schedule, limit=limit, offset=offset, decoder=self.decode_for_task,
            name_contains=name_contains,
            parent_id=parent_id,
        )

    def task_counts(self) -> dict[tuple[Status, str], int]:
        """How many tasks each (status, executor) pair has (for dashboards and metrics)."""
        return self.store.count_tasks_by_executor()

    def queue_ages(self) -> dict[str, float]:
        """Per executor, how many seconds its longest-waiting due task has waited."""
        now = utcnow()
        return {e: max(0.0, (now - when).total_seconds())
                for e, when in self.store.oldest_due(now).items()}

    def attempts(self, task_id: int) -> list[AttemptRecord]:
        """The finished attempts of a task (attempt number, outcome, error, times)."""
        self.get_task(task_id)
        return self.store.attempts_of(task_id)

    def list_nodes(self, *, include_stopped: bool = False,
                   name: str | None = None) -> list[NodeRecord]:
        """The worker nodes registered in the database, newest first (only those named
        ``name``, when given: a name is reused when a worker restarts with ``--name``)."""
        return self.store.list_nodes(include_stopped=include_stopped, name=name)

    def waiting_reason(self, task: TaskRecord) -> str | None:
        """Why a waiting task is not running yet, or None when nothing stands in its way."""
        from roadie.app import waiting  # on first use: a worker never asks

        return waiting.waiting_reason(self, task)

    # -- changing ------------------------------------------------------------------------

    def cancel_task(self, task_id: int, *, by: str = "api") -> TaskRecord:
        """Cancel a task: a waiting one ends CANCELLED at once; a running one is asked to stop
        at its next safe point."""
        when = utcnow().isoformat(timespec="seconds")
        message = f"cancelled by {by} at {when}"
        task = self.store.cancel_task(task_id, by, message)
        if task.status == Status.CANCELLED:
            record = self.get_task(task_id)
            self.count_ended([record])
            notify_hook(self, "roadie_task_cancelled", task=record, message=record.status_message)
        self._fire_cancelled(self.store.trees.cancel_subtasks(
            task_id, by, f"{message} (its parent task {task_id} was cancelled)"))
        return self.get_task(task_id)

    def _fire_cancelled(self, records: list[TaskRecord]) -> None:
        """The cancel hooks of tasks a tree change ended (subtasks, dependents)."""
        if records:
            self.count_ended(records)
        for record in records:
            notify_hook(self, "roadie_task_cancelled", task=record,
                        message=record.status_message)

    def resume_task(self, task_id: int) -> TaskRecord:
        """Run a FAILED or CANCELLED task again: a new attempt on the same row and context.
        The attempt count goes on (it is never reset), so automatic retries resume only while
        it is below their limit (docs/operations.md, "Retries")."""
        self.store.resume_task(task_id)
        return self.get_task(task_id)

    def delete_task(self, task_id: int, *, tree: bool = False) -> None:
        """Delete a task that is not running, with its attempts and attachments. A parent
        whose subtasks have not all ended is refused unless ``tree`` (delete its whole tree)."""
        for deleted in self.store.delete_task(task_id, tree=tree):
            self.attachment_store.delete_all(deleted)

    def prune(self, older_than: dt.timedelta | str | Mapping[Status, dt.timedelta], *,
              statuses: Iterable[Status | str] | None = None) -> int:
        """Delete tasks that ended (successful, failed, cancelled; or only ``statuses``)
        longer than ``older_than`` ago (a timedelta, ``"30d"``, or one age per status), with
        their attempts and attachments, in short batches; returns how many. Tasks that have
        not ended are never touched."""
        from roadie.retention import cutoffs, parse_duration, prune

        if isinstance(older_than, str):
            older_than = parse_duration(older_than)
        chosen = None if statuses is None else [Status.parse(s) for s in statuses]
        return prune(self, cutoffs(older_than, chosen))

    # -- attachments ---------------------------------------------------------------------

    @property
    def attachment_store(self) -> AttachmentStore:
        """The attachment storage backend (from the ``roadie_attachment_store`` hook)."""
        with self._store_lock:
            if self._attachment_store is None:
                store = self.plugins.hook.roadie_attachment_store(app=self)
                if store is None:
                    raise PluginError("no plugin provides an attachment store (is the "
                                      "built-in roadie.builtins.attachments blocked?)")
                self._attachment_store = store
            return self._attachment_store

    def add_attachment(self, task_id: int, name: str, data: bytes | str | Path | IO[bytes], *,
                       media_type: str | None = None, fence: Fence | None = None
                       ) -> AttachmentInfo:
        """Keep a file with a task: bytes, a path, or a binary file object. (``fence``: set by
        ``RunningTask.attach``, which makes it a write of the running attempt.)"""
        from roadie.attachments import store_attachment

        return store_attachment(self, task_id, name, data, media_type=media_type, fence=fence)

    def list_attachments(self, task_id: int) -> list[AttachmentInfo]:
        """The attachments of a task."""
        self.get_task(task_id)
        return self.store.list_attachments(task_id)

    def open_attachment(self, task_id: int, name: str) -> IO[bytes]:
        """Open an attachment for reading (binary)."""
        from roadie.attachments import open_attachment

        return open_attachment(self, task_id, name)

    # -- schedules -----------------------------------------------------------------------

    def add_schedule(
        self,
        name: str,
        executor: str,
        context: Mapping[str, Any] | None = None,
        *,
        cron: str | None = None,
        every: float | dt.timedelta | None = None,
        timezone: str = "UTC",
        catch_up: str = "latest",
        jitter: float = 0.0,
        overlap: bool = True,
        replace: bool = False,
        connection: Any = None,
        **task_options: Any,
    ) -> ScheduleInfo:
        """Add a schedule that makes an ``executor`` task at every slot: ``cron="0 3 * * *"``
        (in ``timezone``) or ``every`` seconds (a number or a timedelta).

        ``catch_up`` (``"skip"``, ``"latest"``, ``"all"``) decides what happens to the slots
        missed while no worker ran; ``jitter`` delays each task by up to that many seconds;
        ``overlap=False`` skips a slot while the previous task has not ended. ``task_options``
        are ``add_task``'s ``name, owner, group, priority, tags, timeout``. Running workers
        fire each slot exactly once between them. With ``connection`` (see ``add_task``) the
        schedule is written inside the caller's transaction. See docs/schedules.md.
        """
        from roadie import schedules

        if connection is not None:
            with self._in_transaction(connection) as app:
                return app.add_schedule(
                    name, executor, context, cron=cron, every=every, timezone=timezone,
                    catch_up=catch_up, jitter=jitter, overlap=overlap, replace=replace,
                    **task_options)
        return schedules.add_schedule(
            self, name, executor, context, cron=cron, every=every, timezone=timezone,
            catch_up=catch_up, jitter=jitter, overlap=overlap, replace=replace,
            task_options=task_options)

    def list_schedules(self) -> list[ScheduleInfo]:
        """Every schedule, by name, with its next slot and, if it cannot fire, why."""
        from roadie import schedules

        return schedules.list_schedules(self)

    def get_schedule(self, name: str) -> ScheduleInfo:
        """One schedule (raises ``roadie.ScheduleNotFound``)."""
        from roadie import schedules

        return schedules.get_schedule(self, name)

    def remove_schedule(self, name: str) -> None:
        """Delete a schedule; the tasks it made stay."""
        from roadie import schedules

        schedules.remove_schedule(self, name)

    def pause_schedule(self, name: str) -> ScheduleInfo:
        """Stop a schedule firing; the slots until it is resumed are not caught up."""
        from roadie import schedules

        return schedules.pause_schedule(self, name)

    def resume_schedule(self, name: str) -> ScheduleInfo:
        """Let a paused schedule fire again, from its first slot after now."""
        from roadie import schedules

        return schedules.resume_schedule(self, name)

    # -- flow control ----------------------------------------------------------------------

    def pause_executor(self, name: str, *, by: str = "api") -> ExecutorState:
        """Stop new starts of executor ``name``'s tasks on every node (within a second, and
        until resumed, across restarts). Running tasks finish; adding tasks still works;
        its waiting tasks say why they wait."""
        return flow.set_paused(self, name, True, by)

    def resume_executor(self, name: str) -> ExecutorState:
        """Let a paused executor's tasks start again."""
        return flow.set_paused(self, name, False, "")

    def list_executors(self) -> list[ExecutorState]:
        """Every executor installed here, declared by a worker, or with waiting or running
        tasks: paused or not, its limits, and its waiting, held and running tasks."""
        return flow.list_executors(self)

    def stats(self, window: int | str = 3600) -> Stats:
        """The overview's numbers over the last ``window`` seconds (60 to 604800): tasks
        started and ended per bucket of time, the queue's depth, and per executor its waiting
        and running tasks, failures in the last hour and wait and run times (p50, p95). Read
        from the per-minute rollup and index-backed counts: cheap however many tasks the
        table holds. Raises ValueError for a bad window."""
        seconds = check_window(window)
        return read_stats(self.store, seconds, utcnow(), self.plugins.executor_names())

    def count_ended(self, records: Iterable[TaskRecord]) -> None:
        """Count tasks that ended outside a worker's settle (a cancel, a crash recovery) in
        the overview's rollup, and write it now (a failure is logged: only counts are lost)."""
        self.rollup.ended_tasks(records)
        try:
            self.rollup.flush(self.store)
        except Exception as exc:  # the next flush (a worker's) writes them
            log.warning("roadie: could not write the overview's counts yet: %s", exc)

    def run_schedule_now(self, name: str) -> TaskRecord:
        """Make one task of a schedule now, outside its slots."""
        from roadie import schedules

        return schedules.run_now(self, name)

    def fire_schedules(self, now: dt.datetime | None = None) -> list[TaskRecord]:
        """Fire the due schedules whose executors are installed here, as of ``now`` (default
        ``self.clock()``), and return the tasks made. Workers do this at every slot; call it
        yourself to fire without a worker, or with a controlled clock in tests."""
        from roadie import schedules

        return schedules.fire_due(self, now=now)

    # -- running -------------------------------------------------------------------------

    def worker(self, *, concurrency: int = 2, until_idle: bool = False,
               tags: Iterable[str] = (), name: str | None = None,
               handle_signals: bool | None = None, out_of_process: bool = False,
               async_concurrency: int | None = None) -> Worker:
        """A worker for this app (call ``.run()``; ``.stop()`` from another thread).
        ``out_of_process``: every executor runs in a host process. ``async_concurrency``:
        slots for async executors (default the setting, 100)."""
        from roadie.worker import Worker

        return Worker(self, concurrency=concurrency, until_idle=until_idle, tags=tags,
                      name=name, handle_signals=handle_signals, out_of_process=out_of_process,
                      async_concurrency=async_concurrency)

    def run_worker(self, concurrency: int = 2, *, until_idle: bool = False,
                   tags: Iterable[str] = (), name: str | None = None,
                   out_of_process: bool = False,
                   async_concurrency: int | None = None) -> WorkerStats:
        """Run a worker in this thread: until stopped (SIGINT/SIGTERM), or with
        ``until_idle`` until no task it can run is waiting (or due within a minute).
        ``out_of_process``: every executor runs in a host process."""
        return self.worker(concurrency=concurrency, until_idle=until_idle, tags=tags,
                           name=name, out_of_process=out_of_process,
                           async_concurrency=async_concurrency).run()

    def has_pending_work(self, can: Claimable) -> bool:
        """Whether a task that ``can`` runs is waiting and due within the pending horizon."""
        horizon = utcnow() + dt.timedelta(seconds=self.settings.pending_horizon)
        return self.store.count_pending(can, horizon) > 0

    def after_finish(self, record: TaskRecord, outcome: Outcome, result: Result | None,
                     error: BaseException | None) -> None:
        """Fire the ending hooks of a recorded attempt; failures are noted on the task."""
        if outcome.status == Status.SUCCESSFUL and result is not None:
            failures = notify_hook(self, "roadie_task_finished", task=record, result=result)
        elif outcome.status == Status.FAILED:
            failures = notify_hook(self, "roadie_task_failed", task=record,
                                   message=outcome.message, error=error)
        elif outcome.status == Status.CANCELLED:
            failures = notify_hook(self, "roadie_task_cancelled", task=record,
                                   message=outcome.message)
        else:
            failures = []
        if failures:
            self.store.append_error(record.id, "\n".join(failures))

    # -- crash recovery ------------------------------------------------------------------

    def recover_orphans(self, worker: Worker | None = None) -> int:
        """Find the running tasks of dead nodes and apply their crash policy; returns how
        many were handled."""
        return recovery.recover_orphans(self, worker)

    def apply_crash_policy(self, task: TaskRecord, worker: Worker | None, *, reason: str) -> bool:
        """End or requeue a task whose worker died, per its executor's crash policy."""
        return recovery.apply_crash_policy(self, task, worker, reason=reason)

    # -- watching ------------------------------------------------------------------------

    def watch(
        self,
        ids: Iterable[int] | None = None,
        *,
        interval: float = 0.2,
        timeout: float | None = None,
        until_done: bool = True,
        **filters: Any,
    ) -> Iterator[TaskRecord]:
        """Yield each task (by ``ids``, or by ``list_tasks`` filters) every time it changes.
        A parent waiting for its subtasks changes whenever one of them ends (its
        ``get_task_status`` counts them), so its progress is live too.

        Ends when every watched task has ended (``until_done``) or after ``timeout`` seconds.
        On PostgreSQL changes wake it at once (NOTIFY); otherwise it polls every ``interval``.
        """
        from roadie.app import watching  # on first use: a worker never watches

        return watching.watch(self, ids, filters, interval=interval, timeout=timeout,
                              until_done=until_done)

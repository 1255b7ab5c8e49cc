"""``roadie.Roadie``: the application object that adds, reads, cancels and runs tasks."""

from __future__ import annotations

import copy
import datetime as dt
import functools
import itertools
import logging
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, overload

from roadie.codec import TypeRegistry
from roadie.config import Settings
from roadie.errors import ContextEncodeError, DependencyError, PluginError, UnknownExecutor
from roadie.executor import CrashPolicy, Executor, Isolation
from roadie.hookcalls import notify_hook
from roadie.plugins import Plugins, split_executor_name
from roadie.records import (
    AttachmentInfo,
    AttemptRecord,
    NodeRecord,
    TaskDraft,
    TaskRecord,
    instance_of,
)
from roadie.status import FINAL_STATUSES, Status
from roadie.store import (
    CHANNEL_CHANGED,
    Claimable,
    Fence,
    NewTask,
    Outcome,
    Store,
    tags_key,
    utcnow,
)

if TYPE_CHECKING:
    from pathlib import Path

    from roadie.aio_client import AsyncRoadie
    from roadie.attachments import AttachmentStore
    from roadie.result import Result
    from roadie.running import RunningTask
    from roadie.schedules import ScheduleInfo
    from roadie.worker import Worker, WorkerStats

log = logging.getLogger("roadie")
ADD_CHUNK = 10_000  # add_tasks from an iterable: tasks per transaction
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
        self.url = url or self.settings.default_url()
        self.registry = TypeRegistry(max_size=self.settings.max_context_size)
        self.plugins = Plugins(self.registry, blocked=blocked_plugins, entry_points=entry_points,
                               envs_dir=self.settings.envs_path() if entry_points else None)
        self._auto_upgrade = auto_upgrade
        self._store: Store | None = None
        self._store_lock = threading.Lock()
        self._attachment_store: AttachmentStore | None = None
        self.clock: Callable[[], dt.datetime] = utcnow  # the time of schedules (tests set it)

    # -- plumbing ------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        """The database (connected, and schema checked, on first use)."""
        with self._store_lock:
            if self._store is None:
                store = Store(self.url,
                              synchronous_commit=self.settings.postgres_synchronous_commit,
                              idle_timeout=max(IDLE_IN_TRANSACTION_TIMEOUT,
                                               2 * self.settings.heartbeat_grace))
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
        """Create or upgrade the database schema (``roadie db upgrade``)."""
        store = Store(self.url)
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
    ) -> TaskRecord:
        """Store a new task for ``executor`` (``"distribution:name"``) with its context map.

        The executor is checked against the installed plugins (or those that live workers
        advertise); the context is encoded with the type registry. Returns the stored task.
        With ``after=[ids]`` it waits (NEW) until those tasks have all succeeded, and ends
        CANCELLED if one of them fails or is cancelled.
        """
        spec = self._new_task(executor, context, {}, name=name, owner=owner, group=group,
                              priority=priority, run_after=run_after, delay=delay, tags=tags,
                              timeout=timeout, after=after)
        (task,) = self.store.insert_tasks([spec], decoder=self.decode_for_task)
        self._task_added(task)
        return task

    def add_tasks(
        self, tasks: Iterable[Mapping[str, Any] | tuple[str, Mapping[str, Any] | None]], *,
        chunk_size: int = ADD_CHUNK,
    ) -> Sequence[TaskRecord]:
        """Add many tasks; each item holds ``add_task``'s arguments
        (``{"executor": ..., "context": ..., "name": ...}``) or is an
        ``(executor, context)`` pair.

        A list or tuple goes in one transaction (all or nothing) and comes back as a list.
        Any other iterable (a generator: millions of tasks) is read ``chunk_size`` items at a
        time, each chunk in its own transaction, in bounded memory; the tasks come back as a
        sequence that reads each record from the database when asked (it keeps only ids).
        """
        if isinstance(tasks, Sequence):
            return self._add_chunk(tasks, 0, {})
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        ids = array("q")
        resolved: dict[str, Any] = {}  # executor -> its resolution, once for every chunk
        items = iter(tasks)
        while chunk := list(itertools.islice(items, chunk_size)):
            ids.extend(t.id for t in self._add_chunk(chunk, len(ids), resolved))
        return AddedTasks(self, ids)

    def _add_chunk(self, tasks: Sequence[Any], first: int,
                   resolved: dict[str, Any]) -> list[TaskRecord]:
        """Add ``tasks`` (items ``first``... of the caller's) in one transaction."""
        specs = []
        for index, item in enumerate(tasks, first):
            arguments = task_arguments(index, item)
            try:
                executor = arguments.pop("executor")
            except KeyError:
                raise ValueError(f"tasks[{index}] has no 'executor'") from None
            context = arguments.pop("context", None)
            specs.append(self._new_task(executor, context, resolved, **arguments))
        added = self.store.insert_tasks(specs, decoder=self.decode_for_task)
        for task in added:
            self._task_added(task)
        return added

    def _insert_subtasks(self, parent: RunningTask, specs: Sequence[NewTask]
                         ) -> list[TaskRecord]:
        """Store subtasks of the running task ``parent`` and fire
        ``roadie_task_added``; a host process sends them to its worker instead."""
        added = parent.guarded("subtasks", functools.partial(
            self.store.insert_tasks, specs, decoder=self.decode_for_task, parent=parent.fence))
        for task in added:
            self._task_added(task)
        return added

    def _subtask_page(self, parent_id: int, after: int, limit: int) -> list[TaskRecord]:
        """A page of subtasks for ``subtasks_done`` (a host asks its worker instead)."""
        from roadie.trees import subtask_page

        return subtask_page(self, parent_id, after, limit)

    def _task_added(self, task: TaskRecord) -> None:
        for line in notify_hook(self, "roadie_task_added", app=self, task=task):
            log.warning("task %s: %s", task.id, line)

    def _new_task(
        self,
        executor: str,
        context: Mapping[str, Any] | None,
        resolved: dict[str, Any],
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
    ) -> NewTask:
        """A task to insert from ``add_task``'s arguments; ``resolved`` keeps what is the
        same for every task of one executor (its name, class, versions, isolation) for
        the whole ``add_tasks`` call."""
        known = resolved.get(executor)
        if known is None:
            try:
                dist, entry = split_executor_name(executor)
            except ValueError as exc:
                raise UnknownExecutor(str(exc)) from None
            qualified = f"{dist}:{entry}"
            known = resolved[executor] = (qualified, *self._resolve_executor(qualified))
        qualified, executor_class, plugin_versions, isolation = known
        if context is None:
            context = {}
        if not isinstance(context, Mapping):
            raise ContextEncodeError(
                f"the context of a {qualified} task must be a mapping (a dict of names to "
                f"values), not {type(context).__name__}"
            )
        context = dict(context)
        for key in context:
            if not isinstance(key, str):
                raise ContextEncodeError(
                    f"context keys must be strings; key {key!r} is {type(key).__name__}"
                )
        data, namespaces = self.registry.encode_with_namespaces(context, what="context")
        versions = dict(plugin_versions)
        for namespace in namespaces:
            versions.setdefault(namespace, self.plugins.version_of(namespace))
        captured = self._capture(qualified, context)
        isolation_key = None
        if isolation is not Isolation.NOT_ISOLATED:
            spec_view = TaskDraft(executor=qualified, name=name or "", owner=owner,
                                  group=group, context=context)
            isolation_key = self._isolation_key(qualified, executor_class, isolation,
                                                spec_view)
        if delay is not None:
            run_after = utcnow() + dt.timedelta(seconds=delay)
        if run_after is not None and run_after.tzinfo is None:
            raise ValueError("run_after must be timezone-aware (use datetime.now(timezone.utc))")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        return instance_of(NewTask, {
            "executor": qualified, "plugins": versions, "context": data, "name": name or "",
            "owner": owner, "group": group, "captured": captured, "isolation_key": isolation_key,
            "priority": int(priority), "run_after": run_after,
            "tags": tags_key(tags) if tags else "", "timeout": timeout, "parent_id": None,
            "after": _task_ids(after) if after else (),
        })

    def _resolve_executor(
        self, qualified: str
    ) -> tuple[type[Executor] | None, dict[str, str], Isolation]:
        """The executor class (if installed here), the plugin versions it needs, and its
        isolation; falls back on what live nodes advertise."""
        dist = qualified.partition(":")[0]
        if self.plugins.has_executor(qualified):
            version = {dist: self.plugins.version_of(dist)}
            try:
                executor_class = self.plugins.load_executor(qualified)
            except PluginError:
                # broken here: store it anyway; a worker records the error on the task
                return None, version, Isolation.NOT_ISOLATED
            return executor_class, version, executor_class.isolation
        grace = self.settings.heartbeat_grace
        now = utcnow()
        advertised: set[str] = set()
        for node in self.store.list_nodes():
            if not node.is_alive(now, grace):
                continue
            advertised.update(node.executors)
            if qualified in node.executors:
                isolation = Isolation(node.executors[qualified])
                if isolation is Isolation.CUSTOM:
                    raise UnknownExecutor(
                        f"executor {qualified!r} computes its isolation key in code: add its "
                        f"tasks from a process where plugin {dist!r} is installed"
                    )
                return None, {dist: node.plugins.get(dist, "0")}, isolation
        raise self.plugins.unknown_executor(qualified, advertised)

    def isolation_key_function(self, qualified: str, executor_class: type[Executor]) -> Any:
        """A function of a task row that gives its isolation key (for the claim)."""
        isolation = executor_class.isolation

        def key(row: Any) -> str | None:
            return self._isolation_key(qualified, executor_class, isolation, row)

        return key

    @staticmethod
    def _isolation_key(
        qualified: str, executor_class: type[Executor] | None, isolation: Isolation, task: Any
    ) -> str | None:
        if isolation is Isolation.NOT_ISOLATED:
            return None
        if isolation is Isolation.CLASS:
            return qualified
        if isolation is Isolation.GROUP:
            return f"{qualified}#group={task.task_group}"
        if isolation is Isolation.OWNER:
            return f"{qualified}#owner={task.owner}"
        if isolation is Isolation.TASK_NAME:
            return f"{qualified}#name={task.name}"
        if executor_class is None:
            return None
        custom = executor_class().isolation_key(task)
        return None if custom is None else f"{qualified}#{custom}"

    def _capture(self, qualified: str, context: dict[str, Any]) -> bytes | None:
        """The ``roadie_capture_context`` maps of every plugin, merged and encoded. Without
        hook wrappers the implementations are called directly, in pluggy's order (add_tasks
        calls this for every task); one that raises stops the add, naming its plugin."""
        from roadie.errors import HookFailure
        from roadie.hookcalls import call_hook

        impls = self.plugins.hook_impls("roadie_capture_context")
        if not impls:
            return None
        parts: list[Any] = []
        arguments = {"executor": qualified, "context": context}
        if any(impl.hookwrapper or impl.wrapper for impl in impls):
            try:
                parts = call_hook(self, "roadie_capture_context",
                                  self.plugins.hook.roadie_capture_context, **arguments)
            except HookFailure as exc:
                raise PluginError(f"cannot add the {qualified} task: {exc}") from exc
        else:
            for impl in impls:
                try:
                    parts.append(impl.function(*[arguments[a] for a in impl.argnames]))
                except Exception as exc:
                    raise PluginError(
                        f"cannot add the {qualified} task: hook roadie_capture_context of "
                        f"plugin {impl.plugin_name!r} failed: {type(exc).__name__}: {exc}"
                    ) from exc
        captured: dict[str, Any] = {}
        for part in parts:
            if part:
                captured.update(part)
        if not captured:
            return None
        return self.registry.encode(captured, what="captured context")

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

    def list_nodes(self, *, include_stopped: bool = False) -> list[NodeRecord]:
        """The worker nodes registered in the database."""
        return self.store.list_nodes(include_stopped=include_stopped)

    def waiting_reason(self, task: TaskRecord) -> str | None:
        """Why a waiting task is not running yet, or None when nothing stands in its way."""
        if task.status == Status.WAITING:
            return "waiting for its subtasks to end"
        if task.status not in (Status.NEW, Status.QUEUED):
            return None
        from roadie.treestore import BLOCKED

        if task.run_after >= BLOCKED:
            unmet = self.store.trees.unmet_dependencies(task.id)
            return f"waiting for tasks {', '.join(str(i) for i in unmet)}"
        if task.run_after > utcnow():
            return f"waiting: runs after {task.run_after.isoformat(timespec='seconds')}"
        if task.status == Status.QUEUED and task.isolation_key:
            holder = self.store.held_locks().get(task.isolation_key)
            if holder is not None:
                return f"queued: task {holder} holds isolation key {task.isolation_key!r}"
        now = utcnow()
        nodes = [n for n in self.list_nodes() if n.is_alive(now, self.settings.heartbeat_grace)]
        if not nodes:
            return "waiting: no worker is running (start one with `roadie worker`)"
        needs = dict(task.plugins)
        for node in nodes:
            if all(p in node.plugins for p in needs) and task.tags <= node.tags:
                return None
        missing_plugin = [p for p in needs if not any(p in n.plugins for n in nodes)]
        if missing_plugin:
            wanted = ", ".join(missing_plugin)
            return f"waiting: no worker has plugin {wanted}"
        return f"waiting: no worker has tags {', '.join(sorted(task.tags))}"

    # -- changing ------------------------------------------------------------------------

    def cancel_task(self, task_id: int, *, by: str = "api") -> TaskRecord:
        """Cancel a task: a waiting one ends CANCELLED at once; a running one is asked to stop
        at its next safe point."""
        when = utcnow().isoformat(timespec="seconds")
        message = f"cancelled by {by} at {when}"
        task = self.store.cancel_task(task_id, by, message)
        if task.status == Status.CANCELLED:
            record = self.get_task(task_id)
            notify_hook(self, "roadie_task_cancelled", task=record, message=record.status_message)
        self._fire_cancelled(self.store.trees.cancel_subtasks(
            task_id, by, f"{message} (its parent task {task_id} was cancelled)"))
        return self.get_task(task_id)

    def _fire_cancelled(self, records: list[TaskRecord]) -> None:
        """The cancel hooks of tasks a tree change ended (subtasks, dependents)."""
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
        **task_options: Any,
    ) -> ScheduleInfo:
        """Add a schedule that makes an ``executor`` task at every slot: ``cron="0 3 * * *"``
        (in ``timezone``) or ``every`` seconds (a number or a timedelta).

        ``catch_up`` (``"skip"``, ``"latest"``, ``"all"``) decides what happens to the slots
        missed while no worker ran; ``jitter`` delays each task by up to that many seconds;
        ``overlap=False`` skips a slot while the previous task has not ended. ``task_options``
        are ``add_task``'s ``name, owner, group, priority, tags, timeout``. Running workers
        fire each slot exactly once between them. See docs/schedules.md.
        """
        from roadie import schedules

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
        count = 0
        self.store.trees.sweep()  # fan-ins a crash interrupted
        nodes = {n.id: n for n in self.store.list_nodes(include_stopped=True)}
        for task in self.store.orphaned_tasks(self.settings.heartbeat_grace):
            if worker is not None and task.node == worker.id:
                continue  # this worker's own: its heartbeat lagged (a database outage)
            node = nodes.get(task.node or "")
            if node is None:
                reason = f"worker {task.node} is gone"
            else:
                seen = node.heartbeat_at.isoformat(timespec="seconds")
                reason = f"worker {node.name} stopped responding (last heartbeat {seen})"
            if self.apply_crash_policy(task, worker, reason=reason):
                count += 1
        self.store.promote_stranded()  # tasks parked behind a lock that nobody holds
        return count

    def apply_crash_policy(self, task: TaskRecord, worker: Worker | None, *, reason: str) -> bool:
        """End or requeue a task whose worker died, per its executor's crash policy."""
        record = self.get_task(task.id)
        try:
            executor_class = self.plugins.load_executor(record.executor)
            policy, max_attempts = executor_class.crash_policy, executor_class.max_crash_attempts
        except UnknownExecutor:
            if self._someone_else_has(record):
                return False  # a live node with the plugin applies the real policy
            policy, max_attempts = CrashPolicy.FAIL, 1
        except PluginError:
            policy, max_attempts = CrashPolicy.FAIL, 1
        progress = _progress_summary(record)
        grace = None if worker is not None and record.node == worker.id else \
            self.settings.heartbeat_grace  # another node's task: only while it stays dead
        if record.cancel_requested_at is not None:  # the cancel wins over any policy
            outcome = "cancelled"
            message = (f"cancelled by {record.cancel_requested_by or 'someone'}; {reason} "
                       f"before it stopped{progress}")
            done = self.store.take_over_orphan(record, Status.CANCELLED, message, grace=grace)
        elif record.started_at is None:  # claimed ahead, never started: whatever the policy
            outcome = "requeued"
            message = f"{reason} before it started the task; waiting again"
            done = self.store.take_over_orphan(record, Status.NEW, message, grace=grace)
        elif policy is not CrashPolicy.FAIL and record.attempts < max_attempts:
            outcome = policy.value
            again = ("resuming from its checkpoint" if policy is CrashPolicy.RESUME
                     else "retrying")
            message = f"{reason} during attempt {record.attempts}; {again}{progress}"
            done = self.store.take_over_orphan(record, Status.NEW, message, grace=grace,
                                               keep_checkpoint=policy is CrashPolicy.RESUME)
        else:
            outcome = "failed"
            limit = ("" if policy is CrashPolicy.FAIL
                     else f" after {record.attempts} of {max_attempts} attempts")
            message = f"{reason} while it ran{limit}{progress}"
            done = self.store.take_over_orphan(record, Status.FAILED, message, grace=grace)
        if done:
            updated = self.get_task(task.id)
            log.warning("task %s: %s", task.id, message)
            notify_hook(self, "roadie_task_orphaned", task=updated, node=record.node or "",
                        outcome=outcome)
            if outcome == "failed":
                notify_hook(self, "roadie_task_failed", task=updated, message=message, error=None)
            elif outcome == "cancelled":
                notify_hook(self, "roadie_task_cancelled", task=updated, message=message)
        return done

    def _someone_else_has(self, record: TaskRecord) -> bool:
        now = utcnow()
        return any(
            record.executor in node.executors
            for node in self.store.list_nodes()
            if node.is_alive(now, self.settings.heartbeat_grace)
        )

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
        watch = TaskWatch(ids, filters, until_done=until_done, timeout=timeout)
        changed = threading.Event()

        def on_change(channel: str, _payload: str) -> None:
            if channel == CHANNEL_CHANGED:
                changed.set()

        hub = self.store.listen()
        token = hub.subscribe(on_change)
        try:
            while True:
                changed.clear()
                tasks = watch.fetch(self)
                yield from watch.changes(self, tasks, interval)
                wait = watch.wait(tasks, interval)
                if wait is None:
                    return
                changed.wait(wait)
        finally:
            hub.unsubscribe(token)


class TaskWatch:
    """What ``watch`` (and its async twin) has seen: which tasks changed since the last look,
    and whether to go on."""

    def __init__(self, ids: Iterable[int] | None, filters: Mapping[str, Any], *,
                 until_done: bool, timeout: float | None) -> None:
        self.ids = None if ids is None else list(ids)
        self.filters = dict(filters)
        self.until_done = until_done
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self._seen: dict[int, tuple[dt.datetime, int, bytes | None, int]] = {}
        self._counted: dict[int, tuple[float, int]] = {}  # waiting parent: (when, ended)

    def fetch(self, app: Roadie) -> list[TaskRecord]:
        """The watched tasks as they are now."""
        if self.ids is not None:
            return app.store.list_tasks(ids=self.ids, limit=None, decoder=app.decode_for_task)
        return app.list_tasks(**self.filters, limit=None)

    def changes(self, app: Roadie, tasks: list[TaskRecord],
                interval: float) -> list[TaskRecord]:
        """The tasks among ``tasks`` that changed since the last look, by id (a parent
        waiting for its subtasks changes when more of them have ended)."""
        changed = []
        for task in sorted(tasks, key=lambda t: t.id):
            ended = (self._subtasks_ended(app, task, interval)
                     if task.status == Status.WAITING else 0)
            mark = (task.updated_at, int(task.status), task.status_bytes, ended)
            if self._seen.get(task.id) != mark:
                self._seen[task.id] = mark
                changed.append(task)
        return changed

    def _subtasks_ended(self, app: Roadie, task: TaskRecord, interval: float) -> int:
        """How many subtasks of a waiting parent have ended (counted at most once per
        ``interval``)."""
        from roadie.trees import tree_status

        last = self._counted.get(task.id)
        now = time.monotonic()
        if last is None or now - last[0] >= interval:
            last = (now, tree_status(app, task).get("subtasks_ended", 0))
            self._counted[task.id] = last
        return last[1]

    def wait(self, tasks: list[TaskRecord], interval: float) -> float | None:
        """How long to wait for the next change, or None when the watch is over."""
        if self.until_done and tasks and all(t.status in FINAL_STATUSES for t in tasks):
            return None
        if self.deadline is None:
            return interval
        left = self.deadline - time.monotonic()
        return None if left <= 0 else min(interval, left)


def _task_ids(ids: Iterable[int]) -> tuple[int, ...]:
    """The ``after=`` ids as ints (records are accepted too)."""
    found = []
    for item in ids:
        value = getattr(item, "id", item)
        if isinstance(value, bool) or not isinstance(value, int):
            raise DependencyError(f"after= takes task ids (ints), not {item!r}")
        found.append(value)
    return tuple(found)


def _progress_summary(record: TaskRecord) -> str:
    try:
        status = record.task_status
    except Exception:
        return ""
    if "done" not in status:
        return ""
    total = status.get("total")
    return f"; last progress {status['done']}" + (f" of {total}" if total is not None else "")


class AddedTasks(Sequence[TaskRecord]):
    """The tasks ``add_tasks`` added from an iterable: their ids, each record read from the
    database when asked (so it shows the task as it is now)."""

    def __init__(self, app: Roadie, ids: array[int]) -> None:
        self._app = app
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> TaskRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[TaskRecord]: ...

    def __getitem__(self, index: int | slice) -> TaskRecord | list[TaskRecord]:
        if isinstance(index, slice):
            return self._records(self.ids[index])
        return self._app.get_task(self.ids[index])

    def __iter__(self) -> Iterator[TaskRecord]:
        for start in range(0, len(self.ids), 1000):
            yield from self._records(self.ids[start:start + 1000])

    def _records(self, ids: Iterable[int]) -> list[TaskRecord]:
        wanted = list(ids)
        found = {t.id: t for t in self._app.store.list_tasks(
            ids=wanted, limit=None, decoder=self._app.decode_for_task)}
        return [found[i] for i in wanted if i in found]

    def __repr__(self) -> str:
        return f"<AddedTasks: {len(self.ids)} tasks>"


def task_arguments(index: int, item: Any) -> dict[str, Any]:
    """One ``add_tasks`` item as ``add_task``'s keyword arguments (a mapping, or an
    ``(executor, context)`` pair); anything else is refused naming its index."""
    if isinstance(item, Mapping):
        return dict(item)
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
        return {"executor": item[0], "context": item[1]}
    raise TypeError(
        f"tasks[{index}] is a {type(item).__name__}; each item must be a mapping of add_task's "
        "arguments ({'executor': 'dist:name', 'context': {...}, ...}) or an "
        "(executor, context) pair")

"""The task-adding path: from ``add_task``'s arguments to the rows to insert.

It checks the executor name (against the installed plugins, or those live workers advertise),
encodes the context with the type registry, collects the ``roadie_capture_context`` maps,
computes the isolation key, and reads ``add_tasks``' items a chunk at a time (on PostgreSQL a
large batch of plain pairs is made while the database takes it: ``store.stream_tasks``).
``Roadie``'s ``add_task``, ``add_tasks`` and ``_new_task`` call it; subtasks (``roadie.trees``)
and schedules (``roadie.schedules``) go through ``Roadie._new_task`` too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gc
import itertools
import operator
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, overload

from roadie.errors import (
    ContextEncodeError,
    DependencyError,
    HookFailure,
    PluginError,
    UnknownExecutor,
)
from roadie.executor import Executor, Isolation
from roadie.hookcalls import call_hook
from roadie.plugins import split_executor_name
from roadie.records import TaskDraft, TaskRecord, instance_of
from roadie.store import NewTask, PlainTasks, tags_key, utcnow

if TYPE_CHECKING:
    from roadie.app import Roadie

ADD_CHUNK = 10_000  # add_tasks from an iterable: tasks per transaction


def add_tasks(
    app: Roadie, tasks: Iterable[Mapping[str, Any] | tuple[str, Mapping[str, Any] | None]], *,
    chunk_size: int = ADD_CHUNK,
) -> Sequence[TaskRecord]:
    """``Roadie.add_tasks``: a list or tuple in one transaction; any other iterable
    ``chunk_size`` items at a time, each chunk in its own transaction."""
    if isinstance(tasks, Sequence):
        return add_chunk(app, tasks, 0, {})
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    ids = array("q")
    resolved: dict[Any, Any] = {}  # executor -> its resolution, once for every chunk
    items = iter(tasks)
    while chunk := list(itertools.islice(items, chunk_size)):
        ids.extend(t.id for t in add_chunk(app, chunk, len(ids), resolved))
    return AddedTasks(app, ids)


def add_chunk(app: Roadie, tasks: Sequence[Any], first: int,
              resolved: dict[Any, Any]) -> list[TaskRecord]:
    """Add ``tasks`` (items ``first``... of the caller's) in one transaction."""
    with collector_paused():
        return _add_chunk(app, tasks, first, resolved)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused (if it runs) while a batch makes its tasks
    and records: thousands of new objects, none in a cycle, that would set off collections
    (a full one over the process's whole heap every other batch of 5,000) costing more than
    the batch's own work. One chunk's objects at most; a cycle made meanwhile (by a hook) is
    collected once it runs again. With batches in several threads at once, the first to end
    resumes it: the others' remaining objects are collected as usual."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


STREAM_FROM = 1000  # tasks of a batch from which they are made while the database takes them
STREAM_CHUNK = 500  # tasks made (then sent) at a time


def _add_chunk(app: Roadie, tasks: Sequence[Any], first: int,
               resolved: dict[Any, Any]) -> list[TaskRecord]:
    if len(tasks) >= STREAM_FROM and app.store.streams() and _plain(app, tasks, resolved):
        added = app.store.stream_tasks(len(tasks), _plain_chunks(app, tasks, resolved),
                                       decoder=app.decode_for_task)
        app._tasks_added(added)
        return list(added)
    specs = []
    for index, item in enumerate(tasks, first):
        if type(item) is tuple and len(item) == 2 and type(item[0]) is str:  # (the most)
            specs.append(plain_task(app, item[0], item[1], resolved))
            continue
        arguments = task_arguments(index, item)
        try:
            executor = arguments.pop("executor")
        except KeyError:
            raise ValueError(f"tasks[{index}] has no 'executor'") from None
        context = arguments.pop("context", None)
        specs.append(app._new_task(executor, context, resolved, **arguments))
    added = app.store.insert_tasks(specs, decoder=app.decode_for_task)
    app._tasks_added(added if not added.existing
                     else [task for task in added if task.id not in added.existing])
    return list(added)


def _plain(app: Roadie, tasks: Sequence[Any], resolved: dict[Any, Any]) -> bool:
    """Whether every one of ``tasks`` is an ``(executor, context)`` pair of an executor that
    is not isolated and has no limits: tasks without options (``store.stream_tasks``)."""
    if set(map(type, tasks)) != {tuple} or set(map(len, tasks)) != {2}:
        return False
    executors = set(map(operator.itemgetter(0), tasks))
    if set(map(type, executors)) != {str}:
        return False
    for executor in executors:
        known = resolved.get(executor)
        if known is None:
            known = resolved[executor] = _resolved(app, executor)
        if known[5] != (None, None):  # (its fixed isolation key and width)
            return False
    return True


def _plain_chunks(app: Roadie, tasks: Sequence[tuple[str, Any]],
                  resolved: dict[Any, Any]) -> Iterator[PlainTasks]:
    """The tasks of ``(executor, context)`` pairs (of executors that ``_plain`` resolved),
    ``STREAM_CHUNK`` at a time."""
    for start in range(0, len(tasks), STREAM_CHUNK):
        chunk = PlainTasks()
        executors, plugins = chunk.executors, chunk.plugins
        contexts, captured = chunk.contexts, chunk.captured
        for executor, context in tasks[start:start + STREAM_CHUNK]:
            known = resolved[executor]
            qualified = known[0]
            versions, data, caught = task_content(app, resolved, qualified, known[2],
                                                  context_map(qualified, context))
            executors.append(qualified)
            plugins.append(versions)
            contexts.append(data)
            captured.append(caught)
        yield chunk


def new_task(
    app: Roadie,
    executor: str,
    context: Mapping[str, Any] | None,
    resolved: dict[Any, Any],
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
) -> NewTask:
    """A task to insert from ``add_task``'s arguments; ``resolved`` keeps what is the
    same for every task of one executor (its name, class, versions, isolation) for
    the whole ``add_tasks`` call."""
    known = resolved.get(executor)
    if known is None:
        known = resolved[executor] = _resolved(app, executor)
    qualified, executor_class, plugin_versions, isolation, limits, fixed_key = known
    context = context_map(qualified, context)
    versions, data, captured = task_content(app, resolved, qualified, plugin_versions, context)
    if fixed_key is not None:  # not isolated: the same for each of its tasks
        isolation_key, key_limit = fixed_key
    else:
        spec_view = TaskDraft(executor=qualified, name=name or "", owner=owner,
                              group=group, context=context)
        isolation_key = isolation_key_of(qualified, executor_class, isolation, spec_view)
        key_limit = None
        if isolation_key is not None:
            key_limit = limits.width(True)
        elif limits.controlled:  # its limits hold for the executor's tasks together
            isolation_key, key_limit = qualified, limits.width(False)
    if unique_key is not None and (not isinstance(unique_key, str) or not unique_key
                                   or len(unique_key) > 255):
        raise ValueError(f"unique_key of a {qualified} task must be a non-empty string of at "
                         f"most 255 characters, not {unique_key!r}")
    if delay is not None:
        run_after = utcnow() + dt.timedelta(seconds=delay)
    if run_after is not None and run_after.tzinfo is None:
        raise ValueError("run_after must be timezone-aware (use datetime.now(timezone.utc))")
    if timeout is not None:
        if timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        timeout = float(timeout)
    return instance_of(NewTask, {
        "plugins": versions, "context": data, "captured": captured,
        "executor": qualified, "name": name or "", "owner": owner, "group": group,
        "isolation_key": isolation_key, "priority": int(priority), "run_after": run_after,
        "tags": tags_key(tags) if tags else "", "timeout": timeout, "parent_id": None,
        "after": task_ids(after) if after else (),
        "unique_key": unique_key, "key_limit": key_limit if key_limit != 1 else None,
    })


_DEFAULTS = object()  # ``resolved``'s key of plain_task's task fields, per executor


def plain_task(app: Roadie, executor: str, context: Mapping[str, Any] | None,
               resolved: dict[Any, Any]) -> NewTask:
    """``new_task(app, executor, context, resolved)``: a task with every option at its
    default (an ``(executor, context)`` item of ``add_tasks``, the most common). Of an
    executor whose tasks share one isolation key, the option fields are made once per call
    (``resolved``) and copied; the others go through ``new_task``."""
    defaults = resolved.get((_DEFAULTS, executor))
    if defaults is None:
        task = new_task(app, executor, context, resolved)
        fields = dict(vars(task))
        for name in _CONTENT_FIELDS:
            del fields[name]
        fixed = resolved[executor][5] is not None
        resolved[_DEFAULTS, executor] = fields if fixed else False
        return task
    if defaults is False:  # isolated: a key per task
        return new_task(app, executor, context, resolved)
    known = resolved[executor]
    qualified = known[0]
    versions, data, captured = task_content(app, resolved, qualified, known[2],
                                            context_map(qualified, context))
    fields = defaults.copy()
    fields["plugins"], fields["context"], fields["captured"] = versions, data, captured
    return instance_of(NewTask, fields)


_CONTENT_FIELDS = ("plugins", "context", "captured")


def context_map(qualified: str, context: Mapping[str, Any] | None) -> dict[str, Any]:
    """A task's context as a new dict (of string keys; refused otherwise)."""
    if context is None:
        return {}
    if type(context) is not dict and not isinstance(context, Mapping):
        raise ContextEncodeError(
            f"the context of a {qualified} task must be a mapping (a dict of names to "
            f"values), not {type(context).__name__}"
        )
    context = dict(context)
    for key in context:
        if type(key) is not str and not isinstance(key, str):
            raise ContextEncodeError(
                f"context keys must be strings; key {key!r} is {type(key).__name__}"
            )
    return context


def task_content(app: Roadie, resolved: dict[Any, Any], qualified: str,
                 plugin_versions: Mapping[str, str], context: dict[str, Any]
                 ) -> tuple[dict[str, str], bytes, bytes | None]:
    """The fields of a task that its context makes: the plugin versions it needs (its
    executor's and its types'), its encoded context, and what the capture hooks captured."""
    data, namespaces = encoded(app, resolved, context, "context")
    versions = dict(plugin_versions)
    for namespace in namespaces:
        if namespace not in versions:
            versions[namespace] = app.plugins.version_of(namespace)
    return versions, data, capture(app, qualified, context, resolved)


def _resolved(app: Roadie, executor: str) -> tuple[Any, ...]:
    """What ``new_task`` needs of ``executor`` for each of its tasks: its qualified name,
    class, plugin versions, isolation, limits, and (not isolated) the isolation key and
    width of every task (None: computed per task)."""
    try:
        dist, entry = split_executor_name(executor)
    except ValueError as exc:
        raise UnknownExecutor(str(exc)) from None
    qualified = f"{dist}:{entry}"
    executor_class, plugin_versions, isolation = app._resolve_executor(qualified)
    limits = app.executor_limits(qualified)[0]
    fixed_key = None
    if isolation is Isolation.NOT_ISOLATED:
        fixed_key = ((qualified, limits.width(False)) if limits.controlled else (None, None))
    return qualified, executor_class, plugin_versions, isolation, limits, fixed_key


def resolve_executor(
    app: Roadie, qualified: str
) -> tuple[type[Executor] | None, dict[str, str], Isolation]:
    """The executor class (if installed here), the plugin versions it needs, and its
    isolation; falls back on what live nodes advertise."""
    dist = qualified.partition(":")[0]
    if app.plugins.has_executor(qualified):
        version = {dist: app.plugins.version_of(dist)}
        try:
            executor_class = app.plugins.load_executor(qualified)
        except PluginError:
            # broken here: store it anyway; a worker records the error on the task
            return None, version, Isolation.NOT_ISOLATED
        return executor_class, version, executor_class.isolation
    grace = app.settings.heartbeat_grace
    now = utcnow()
    advertised: set[str] = set()
    for node in app.store.list_nodes():
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
    raise app.plugins.unknown_executor(qualified, advertised)


def isolation_key_of(
    qualified: str, executor_class: type[Executor] | None, isolation: Isolation, task: Any
) -> str | None:
    """The isolation key of ``task`` (a task row or a ``TaskDraft``) for this executor."""
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


# value types whose equal values encode alike when their types are the same (not float:
# 0.0 and -0.0 are equal)
_PLAIN = frozenset({str, int, bool, bytes, type(None)})
_MISSING = object()
_EMPTY = object()  # ``resolved``'s key of the encoding of an empty map


def encoded(app: Roadie, resolved: dict[Any, Any], value: dict[str, Any],
            what: str) -> tuple[bytes, set[str]]:
    """``app.registry.encode_with_namespaces(value)``; within one adding call (``resolved``),
    a flat map of plain values equal to the previous one (the same keys in the same order,
    values of the same types, equal: ``{}``, the same caller's captured context) reuses its
    encoding."""
    if not value:  # (the most common context: its encoding once per call)
        empty = resolved.get(_EMPTY)
        if empty is None:
            empty = resolved[_EMPTY] = app.registry.encode_with_namespaces(value, what=what)
        return empty
    types = tuple(map(type, value.values()))
    memo = resolved.get((_MISSING, what))
    if memo is not None and memo[1] == types and memo[0] == tuple(value.items()):
        return memo[2], memo[3]  # (the types first: == of plain values only)
    data, namespaces = app.registry.encode_with_namespaces(value, what=what)
    if _PLAIN.issuperset(types):  # (the memo holds the values, not the map: hooks may change it)
        resolved[_MISSING, what] = (tuple(value.items()), types, data, namespaces)
    return data, namespaces


_CAPTURE = object()  # ``resolved``'s key of the capture hooks' functions for one call


def _capture_calls(app: Roadie) -> tuple[tuple[str, Any], ...] | None:
    """The ``roadie_capture_context`` implementations as (plugin, function of the executor
    and the context), in pluggy's order; None when some wrap the others (then pluggy calls
    them)."""
    impls = app.plugins.hook_impls("roadie_capture_context")
    if any(impl.hookwrapper or impl.wrapper for impl in impls):
        return None
    return tuple((impl.plugin_name, impl.function if impl.argnames == _CAPTURE_ARGS
                  else functools.partial(_by_name, impl.function, impl.argnames))
                 for impl in impls)


def _by_name(function: Any, names: tuple[str, ...], executor: str,
             context: dict[str, Any]) -> Any:
    """``function`` called with the capture hook's arguments it names, in its order."""
    given = {"executor": executor, "context": context}
    return function(*[given[name] for name in names])


_CAPTURE_ARGS = ("executor", "context")


def capture(app: Roadie, qualified: str, context: dict[str, Any],
            resolved: dict[Any, Any] | None = None) -> bytes | None:
    """The ``roadie_capture_context`` maps of every plugin, merged and encoded; called for
    every task. Without hook wrappers the implementations are called directly, in pluggy's
    order (looked up once per adding call, ``resolved``); one that raises stops the add,
    naming its plugin."""
    if resolved is None:
        calls = _capture_calls(app)
    elif _CAPTURE in resolved:
        calls = resolved[_CAPTURE]
    else:
        calls = resolved[_CAPTURE] = _capture_calls(app)
    if calls is None:
        try:
            parts = call_hook(app, "roadie_capture_context",
                              app.plugins.hook.roadie_capture_context, executor=qualified,
                              context=context)
        except HookFailure as exc:
            raise PluginError(f"cannot add the {qualified} task: {exc}") from exc
    else:
        parts = []
        for plugin, function in calls:
            try:
                part = function(qualified, context)
            except Exception as exc:
                raise PluginError(
                    f"cannot add the {qualified} task: hook roadie_capture_context of "
                    f"plugin {plugin!r} failed: {type(exc).__name__}: {exc}"
                ) from exc
            if part:
                parts.append(part)
    if not parts:
        return None
    if len(parts) == 1 and type(parts[0]) is dict:
        captured = parts[0]  # (only read)
    else:
        captured = {}
        for part in parts:
            if part:
                captured.update(part)
    if not captured:
        return None
    if resolved is None:
        return app.registry.encode(captured, what="captured context")
    return encoded(app, resolved, captured, "captured context")[0]


def task_ids(ids: Iterable[int]) -> tuple[int, ...]:
    """The ``after=`` ids as ints (records are accepted too)."""
    found = []
    for item in ids:
        value = getattr(item, "id", item)
        if isinstance(value, bool) or not isinstance(value, int):
            raise DependencyError(f"after= takes task ids (ints), not {item!r}")
        found.append(value)
    return tuple(found)


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
    if type(item) is tuple and len(item) == 2 and isinstance(item[0], str):  # (the most)
        return {"executor": item[0], "context": item[1]}
    if isinstance(item, Mapping):
        return dict(item)
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
        return {"executor": item[0], "context": item[1]}
    raise TypeError(
        f"tasks[{index}] is a {type(item).__name__}; each item must be a mapping of add_task's "
        "arguments ({'executor': 'dist:name', 'context': {...}, ...}) or an "
        "(executor, context) pair")

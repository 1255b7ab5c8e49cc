"""Every hook of roadie, in the order a task meets them.

Plugins implement these with ``@roadie.hookimpl`` in the module that their ``roadie.plugins``
entry point names. roadie's own behaviour (the default status translator, the local attachment
store, the logging of task events) is registered through the same hooks, from
``roadie.builtins``, and can be replaced by blocking those plugins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    import click

    from roadie.app import Roadie
    from roadie.attachments import AttachmentStore
    from roadie.config import Settings
    from roadie.executor import Executor
    from roadie.lifecycle import Delay, Veto
    from roadie.records import TaskRecord
    from roadie.result import Result
    from roadie.running import RunningTask
    from roadie.taskstatus import TaskStatus
    from roadie.web.extensions import WebExtensions
    from roadie.worker import Worker

hookspec = pluggy.HookspecMarker("roadie")
hookimpl = pluggy.HookimplMarker("roadie")


@hookspec
def roadie_register_types(register: Callable[..., Any]) -> None:
    """Register the plugin's context types before anything is encoded or decoded.

    ``register(cls, name=None, version=None, encode=None, decode=None, upgraders=None)``
    registers ``cls`` under ``"<your distribution>:<name>"``; dataclasses, Enums and classes
    with ``__roadie_encode__``/``__roadie_decode__`` need no functions. The namespace is always
    the registering plugin's distribution name. Return value: ignored.
    """


@hookspec
def roadie_capture_context(executor: str, context: dict[str, Any]) -> dict[str, Any] | None:
    """Capture the caller's ambient state (locale, tenant, user) when a task is added.

    Called in the process that calls ``add_task``. Return a small map of plain or registered
    values, or None; the maps of all plugins are merged (later plugins win on equal keys), stored
    with the task, and given back on the worker as ``task.captured`` to
    ``roadie_restore_context``.
    """


@hookspec
def roadie_task_added(app: Roadie, task: TaskRecord) -> None:
    """A task was stored (status NEW or QUEUED). Return value: ignored."""


@hookspec(firstresult=True)
def roadie_before_task(task: RunningTask) -> Veto | Delay | None:
    """A worker claimed ``task`` and is about to run it (its context is already decoded).

    Return ``roadie.Veto("why")`` to cancel the task with that reason, ``roadie.Delay(seconds,
    "why")`` to put it back to wait, or None to let it run. The first non-None answer wins.
    """


@hookspec
def roadie_restore_context(
    task: RunningTask, captured: dict[str, Any]
) -> AbstractContextManager[Any] | None:
    """Restore, on the worker, the state captured by ``roadie_capture_context``.

    Return a context manager (``contextlib.contextmanager`` reads well) or None; roadie enters
    every one returned around the execution of ``task`` and exits them after it, whatever the
    outcome.
    """


@hookspec(firstresult=True)
def roadie_execute_task(task: RunningTask, executor: Executor) -> Result | None:
    """Run the executor. roadie's built-in implementation (``trylast``) calls
    ``executor.execute(task)``; return a Result from your own to replace it.

    Wrap it with ``@hookimpl(wrapper=True)`` for logging, tracing, timing or a tenant context:
    ``result = yield`` gives the Result (or raises the executor's exception).
    """


@hookspec
def roadie_status_message(
    task: RunningTask, message: dict[str, Any], status: TaskStatus
) -> None:
    """A status message arrived from inside ``execute`` (``task.send_status`` or ``progress``).

    Update ``status`` (the task's live attribute map) from ``message``. The built-in
    implementation applies the executor's translator, or the default one that understands
    ``done``, ``total`` and ``message``. Runs in the executor's thread: keep it quick.
    """


@hookspec
def roadie_task_finished(task: TaskRecord, result: Result) -> None:
    """The task ended SUCCESSFUL (``result`` is what ``execute`` returned)."""


@hookspec
def roadie_task_failed(task: TaskRecord, message: str, error: BaseException | None) -> None:
    """The task ended FAILED; ``error`` is the exception, when there was one (a worker
    clears its traceback's frames once these hooks have run)."""


@hookspec
def roadie_task_cancelled(task: TaskRecord, message: str) -> None:
    """The task ended CANCELLED (before it started, or at a safe point while it ran)."""


@hookspec
def roadie_task_orphaned(task: TaskRecord, node: str, outcome: str) -> None:
    """A task of a dead worker ``node`` was found; ``outcome`` is what its crash policy did
    (``"failed"``, ``"retry"``, ``"resume"``, or ``"cancelled"`` when a cancel was pending),
    or ``"requeued"`` for a task the worker had claimed ahead and never started."""


@hookspec
def roadie_worker_started(worker: Worker) -> None:
    """A worker registered its node and is about to claim tasks."""


@hookspec
def roadie_worker_stopping(worker: Worker) -> None:
    """A worker is stopping: it claims nothing more."""


@hookspec
def roadie_register_commands(cli: click.Group) -> None:
    """Add commands to the ``roadie`` CLI: ``@cli.command()`` on the group given.

    A plugin may also add options to ``roadie worker``: append a ``click.Option`` with
    ``expose_value=False`` and a ``callback`` that keeps the value (an environment variable
    reaches ``-p`` worker processes too) to ``cli.commands["worker"].params``, and read it in
    ``roadie_worker_started`` (roadie-prometheus adds ``--metrics-port`` this way). For
    ``roadie worker`` the other built-in commands are not loaded (an idle worker would keep
    them in memory): ``cli.commands`` holds ``worker`` then, not necessarily the others."""


@hookspec(firstresult=True)
def roadie_default_url(settings: Settings) -> str | None:
    """Give the database URL when none is given: no ``url`` argument (or ``--url``) and no
    ``ROADIE_URL``. roadie-django answers with its backend's database when
    ``DJANGO_SETTINGS_MODULE`` is set. The first non-None answer wins; without one roadie uses
    the embedded SQLite file in the data directory."""


@hookspec(firstresult=True)
def roadie_attachment_store(app: Roadie) -> AttachmentStore | None:
    """Give the store that keeps task attachments. The built-in keeps a folder per task under
    the data directory; the first non-None answer wins."""


@hookspec
def roadie_web_extend(web: WebExtensions) -> None:
    """Add to the web app (``roadie web``, ``roadie.web.create_app``), once when it is made.

    ``web.add_page(slug, title, render)`` adds a page at ``/x/<slug>`` with a JSON twin at
    ``/x/<slug>.json``: ``render(app)`` returns rows (a list of maps, shown as a table) or one
    map (shown as labels and values). ``web.add_task_panel(title, render)`` adds a section to
    the task page and to the task's JSON (``panels``): ``render(app, task)`` returns a map of
    labels to values, or None for tasks it has nothing to say about. Both return plain data
    that the app escapes: a plugin never writes HTML. A failing render is shown with its
    error; the rest of the page works. ``web.add_text(path, render, media_type=...)`` serves
    ``render(app)`` (text or bytes) at a path of one segment for machines, behind the API's
    bearer token when the app has one (roadie-prometheus adds ``/metrics`` this way).
    """

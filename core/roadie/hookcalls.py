"""Calling the plugins' hooks so that a failure names its plugin: ``call_hook`` turns a raising
implementation into a ``HookFailure`` (the executor's own exceptions pass through), and
``notify_hook`` calls an observing hook on every plugin, each on its own (``notify_each``: for
each of many values)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from roadie.errors import Cancelled, HookFailure

if TYPE_CHECKING:
    from roadie.app import Roadie

log = logging.getLogger("roadie.lifecycle")  # the name docs/plugin-guide.md gives for failing hooks


def plugin_of_error(app: Roadie, hook_name: str, exc: BaseException) -> str:
    """The name of the plugin whose implementation of ``hook_name`` raised ``exc``."""
    caller = getattr(app.plugins.pm.hook, hook_name)
    codes = {impl.function.__code__: impl.plugin_name for impl in caller.get_hookimpls()}
    found = "unknown plugin"
    tb = exc.__traceback__
    while tb is not None:
        name = codes.get(tb.tb_frame.f_code)
        if name is not None:
            found = name
        tb = tb.tb_next
    return found


def mark_from_executor(exc: BaseException) -> None:
    """Mark an exception as raised by the executor's own code (not by a plugin's hook)."""
    with contextlib.suppress(AttributeError, TypeError):
        exc.__roadie_from_executor__ = True  # type: ignore[attr-defined]


def call_hook(app: Roadie, hook_name: str, caller: Callable[..., Any], **kwargs: Any) -> Any:
    """Call a hook; a raising implementation becomes a HookFailure naming its plugin."""
    try:
        return caller(**kwargs)
    except (Cancelled, HookFailure):
        raise
    except Exception as exc:
        if getattr(exc, "__roadie_from_executor__", False):
            raise
        plugin = plugin_of_error(app, hook_name, exc)
        raise HookFailure(
            f"hook {hook_name} of plugin {plugin!r} failed: {type(exc).__name__}: {exc}"
        ) from exc


def notify_hook(roadie: Roadie, hook_name: str, **kwargs: Any) -> list[str]:
    """Call an observing hook on every plugin, each on its own: a failing plugin neither stops
    the others nor the task. Returns one line per failure, naming the plugin."""
    return list(_notify(roadie, hook_name, _observers(roadie, hook_name), kwargs))


def notify_each(roadie: Roadie, hook_name: str, name: str, values: Iterable[Any],
                **kwargs: Any) -> Iterator[tuple[Any, str]]:
    """``notify_hook`` for each of ``values`` (as argument ``name``), with the plugins'
    implementations looked up once (``add_tasks``: a call per task); yields each value with
    each line of its failures."""
    observers = _observers(roadie, hook_name)
    for value in values:
        kwargs[name] = value
        for line in _notify(roadie, hook_name, observers, kwargs):
            yield value, line


def _observers(roadie: Roadie, hook_name: str) -> list[tuple[str, Callable[..., Any],
                                                             tuple[str, ...]]]:
    """The plain (not wrapping) implementations of ``hook_name``: plugin, function and
    argument names."""
    return [(impl.plugin_name, impl.function, tuple(impl.argnames))
            for impl in roadie.plugins.hook_impls(hook_name)
            if not (impl.hookwrapper or impl.wrapper)]


def _notify(roadie: Roadie, hook_name: str,
            observers: list[tuple[str, Callable[..., Any], tuple[str, ...]]],
            kwargs: dict[str, Any]) -> Iterator[str]:
    """Call each of ``observers`` with ``kwargs``, each on its own; yields a line per
    failure, naming the plugin (and logs it)."""
    trace = roadie.plugins.trace_call if roadie.plugins.tracing else None
    for plugin, function, names in observers:
        if trace is not None:
            trace(hook_name, plugin, kwargs)
        try:
            function(*[kwargs[n] for n in names])
        except Exception as exc:
            line = (f"hook {hook_name} of plugin {plugin!r} failed: "
                    f"{type(exc).__name__}: {exc}")
            log.warning(line, exc_info=exc)
            yield line

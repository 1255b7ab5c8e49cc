"""Deprecated hooks and names: how a hook spec or a class attribute is marked, and the warning a
plugin that uses one gets.

roadie's policy (docs/deprecation-policy.md): a hook is never removed or changed without first
being deprecated for at least one minor release. A deprecated spec keeps working; each plugin
that implements it gets a ``DeprecationWarning`` when it is registered, naming the plugin, the
hook, the release that deprecated it and what to use instead::

    @hookspec
    @deprecated_hook(since="0.3", replacement="roadie_task_ended", removal="0.5")
    def roadie_task_finished(task, result): ...
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pluggy

F = TypeVar("F", bound=Callable[..., Any])

ATTRIBUTE = "roadie_deprecated"


@dataclass(frozen=True)
class HookDeprecation:
    """Why and since when a hook spec is deprecated, and what replaces it."""

    since: str
    replacement: str
    removal: str | None = None

    def message(self, plugin: str, hook: str) -> str:
        """The warning text for ``plugin``, which implements ``hook``."""
        removal = (
            f"it will be removed in roadie {self.removal}" if self.removal
            else "it will be removed in a later minor release"
        )
        return (
            f"plugin {plugin!r} implements hook {hook!r}, deprecated since roadie {self.since}: "
            f"use {self.replacement} instead ({removal})"
        )


def deprecated_hook(
    *, since: str, replacement: str, removal: str | None = None
) -> Callable[[F], F]:
    """Mark a hook spec deprecated (put it below ``@hookspec``)."""

    def mark(function: F) -> F:
        setattr(function, ATTRIBUTE, HookDeprecation(since, replacement, removal))
        return function

    return mark


def deprecation_of(spec_function: Callable[..., Any] | None) -> HookDeprecation | None:
    """The deprecation of a hook spec function, or None when it is current."""
    return getattr(spec_function, ATTRIBUTE, None) if spec_function is not None else None


def warn_deprecated_hooks(pm: pluggy.PluginManager, plugin: object, name: str) -> None:
    """Warn once per deprecated hook that the plugin registered as ``name`` implements.

    The warning points at the plugin's implementation, so the plugin's author sees where to
    change their code.
    """
    for caller in pm.get_hookcallers(plugin) or []:
        spec = caller.spec
        deprecation = deprecation_of(spec.function if spec is not None else None)
        if deprecation is None:
            continue
        for impl in caller.get_hookimpls():
            if impl.plugin is not plugin:
                continue
            code = getattr(impl.function, "__code__", None)
            warnings.warn_explicit(
                DeprecationWarning(deprecation.message(name, caller.name)),
                DeprecationWarning,
                filename=code.co_filename if code else "<plugin>",
                lineno=code.co_firstlineno if code else 0,
                module=getattr(impl.function, "__module__", None),
            )


class DeprecatedAlias:
    """A class attribute renamed to ``replacement``: reading the old name warns and reads the
    new one. A subclass that still sets the old name is caught by ``check_aliases``."""

    def __init__(self, replacement: str, *, since: str, removal: str | None = None) -> None:
        self.replacement = replacement
        self.since = since
        self.removal = removal
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def message(self, owner: type) -> str:
        """The warning text for class ``owner``."""
        removal = f"it will be removed in roadie {self.removal}" if self.removal \
            else "it will be removed in a later minor release"
        return (f"{owner.__module__}.{owner.__qualname__}.{self.name} is deprecated since "
                f"roadie {self.since}: use {self.replacement} instead ({removal})")

    def __get__(self, instance: object, owner: type) -> Any:
        warnings.warn(self.message(owner), DeprecationWarning, stacklevel=2)
        return getattr(owner, self.replacement)


def check_aliases(cls: type) -> None:
    """For a new subclass: move each value it sets under a deprecated name to the new name
    (unless it sets both), with a ``DeprecationWarning`` naming the class."""
    for base in cls.__mro__[1:]:
        for name, alias in vars(base).items():
            if not isinstance(alias, DeprecatedAlias) or name not in vars(cls):
                continue
            value = vars(cls)[name]
            if isinstance(value, DeprecatedAlias):
                continue
            warnings.warn(alias.message(cls), DeprecationWarning, stacklevel=3)
            if alias.replacement not in vars(cls):
                setattr(cls, alias.replacement, value)

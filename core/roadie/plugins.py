"""The plugin manager: entry point discovery, built-in plugins, import contexts.

Executors are found through the ``roadie.executors`` entry point group and named
``"<distribution>:<entry name>"``; hook modules through ``roadie.plugins``. Listing plugins
imports nothing; an executor is imported the first time a task needs it. A plugin that fails
to load is recorded as broken with its error and never stops the others.

Environment variables (debugging needs no code change):

- ``ROADIE_BLOCK_PLUGINS``: comma-separated distributions (or built-in names) not to load.
- ``ROADIE_LOAD_PLUGINS``: when set, only these distributions load (built-ins always do,
  unless blocked).
- ``ROADIE_TRACE_HOOKS``: when set, every hook call is printed with its arguments and results.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from roadie import hookspecs
from roadie.codec import TypeRegistry
from roadie.deprecation import warn_deprecated_hooks
from roadie.errors import PluginError, UnknownExecutor

if TYPE_CHECKING:
    from roadie.executor import Executor

EXECUTOR_GROUP = "roadie.executors"
PLUGIN_GROUP = "roadie.plugins"

BUILTIN_PLUGINS = (
    "roadie.builtins.execute",
    "roadie.builtins.translator",
    "roadie.builtins.attachments",
    "roadie.builtins.events_log",
    "roadie.builtins.schedules",
)

TASK_SCOPED_HOOKS = (
    "roadie_before_task",
    "roadie_restore_context",
    "roadie_execute_task",
    "roadie_status_message",
)


def canonical_name(name: str) -> str:
    """A distribution name in its canonical form (``Roadie_Examples`` -> ``roadie-examples``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def split_executor_name(qualified: str) -> tuple[str, str]:
    """``"dist:name"`` -> ``("dist", "name")``; raises ValueError for another shape."""
    dist, sep, name = qualified.partition(":")
    if not sep or not dist or not name:
        raise ValueError(
            f"executor name {qualified!r} must look like '<distribution>:<name>', "
            f"for example 'roadie-examples:count'"
        )
    return canonical_name(dist), name


@dataclass
class PluginInfo:
    """What is known of one plugin distribution, without importing it."""

    name: str
    version: str
    executors: dict[str, str] = field(default_factory=dict)  # entry name -> "module:Class"
    hook_modules: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)
    error: str | None = None
    builtin: bool = False
    blocked: bool = False
    env: str | None = None  # the environment it lives in (None: this process's own)
    also_in: list[str] = field(default_factory=list)  # other environments that have it


def _env_names(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {canonical_name(n) for n in value.split(",") if n.strip()}


class Plugins:
    """The plugins of one ``Roadie``: its hook manager, its executors and its type registry."""

    def __init__(
        self,
        registry: TypeRegistry,
        *,
        blocked: Iterable[str] = (),
        only: Iterable[str] | None = None,
        entry_points: bool = True,
        envs_dir: Path | None = None,
    ) -> None:
        self.registry = registry
        self.envs_dir = envs_dir
        self.env_errors: dict[str, str] = {}
        self._envs_state = ""
        self.pm = pluggy.PluginManager("roadie")
        self.pm.add_hookspecs(hookspecs)
        env_blocked = _env_names("ROADIE_BLOCK_PLUGINS") or set()
        self.blocked = {canonical_name(n) for n in blocked} | env_blocked
        env_only = _env_names("ROADIE_LOAD_PLUGINS")
        self.only = {canonical_name(n) for n in only} if only is not None else env_only
        self.use_entry_points = entry_points
        self.infos: dict[str, PluginInfo] = {}
        self._executor_refs: dict[str, tuple[str, Any]] = {}  # qualified -> (dist, entry point)
        self._executors: dict[str, type[Executor]] = {}
        self._executor_errors: dict[str, str] = {}
        self._global_plugins: set[str] = set()
        self._subset_callers: dict[tuple[str, frozenset[str]], Any] = {}
        self._impls: dict[str, tuple[Any, ...]] = {}  # hook name -> hook_impls()
        self._lock = threading.RLock()
        self._loaded = False  # loading began (under the lock)
        self._ready = False  # loading ended: read without the lock
        self.tracing = False
        if os.environ.get("ROADIE_TRACE_HOOKS"):
            self._enable_tracing()

    # -- loading -------------------------------------------------------------------------

    def load(self) -> None:
        """Register the built-ins, discover entry points and import the hook modules (once)."""
        if self._ready:  # every task asks: no lock once loaded
            return
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            for module_name in BUILTIN_PLUGINS:
                short = module_name.rsplit(".", 1)[1]
                if {canonical_name(short), canonical_name(module_name)} & self.blocked:
                    continue
                module = importlib.import_module(module_name)
                self.pm.register(module, name=module_name)
                self._global_plugins.add(module_name)
            if self.use_entry_points:
                self._discover()
                for info in self.infos.values():
                    if not info.blocked and info.error is None:
                        self._import_hook_modules(info)
            self._ready = True  # (hook_impls keeps nothing until then)

    def _allowed(self, dist: str) -> bool:
        if dist in self.blocked:
            return False
        return self.only is None or dist in self.only

    def _discover(self) -> None:
        # The standard library's importlib.metadata: SQLAlchemy imports it anyway, where the
        # importlib-metadata backport would cost a worker about 1 MB more. A distribution's
        # metadata is parsed once for its name and version, not again for each entry point.
        seen: dict[str, PluginInfo] = {}
        names: dict[int, str] = {}  # id(distribution) -> canonical name
        found = importlib.metadata.entry_points()
        for group in (EXECUTOR_GROUP, PLUGIN_GROUP):
            for ep in found.select(group=group):
                dist_meta = ep.dist
                if dist_meta is None:
                    continue
                dist = names.get(id(dist_meta))
                if dist is None:
                    metadata = dist_meta.metadata
                    dist = names[id(dist_meta)] = canonical_name(metadata["Name"])
                    if dist not in seen:
                        seen[dist] = PluginInfo(dist, metadata["Version"] or "0")
                        seen[dist].blocked = not self._allowed(dist)
                info = seen[dist]
                if group == EXECUTOR_GROUP:
                    info.executors[ep.name] = ep.value
                    if not info.blocked:
                        self._executor_refs[f"{dist}:{ep.name}"] = (dist, ep)
                else:
                    info.hook_modules.append(ep.value)
        self._discover_envs(seen)
        self.infos.update(seen)

    def _discover_envs(self, seen: dict[str, PluginInfo]) -> None:
        """Add the executors of every environment (none is imported here). The rule for a
        distribution found in several places: this process's own environment wins, then the
        environments in name order; the others are listed in ``PluginInfo.also_in``."""
        if self.envs_dir is None:
            return
        self._envs_state = self._current_envs_state()
        self.env_errors.clear()
        if not self._envs_state:  # no environment
            return
        from roadie.envs.discovery import EnvEntryPoint, probe_env
        from roadie.envs.layout import env_names
        from roadie.errors import EnvError

        for env in env_names(self.envs_dir):
            try:
                found = probe_env(Path(self.envs_dir) / env)
            except EnvError as exc:
                self.env_errors[env] = str(exc)
                continue
            for name, data in sorted(found["plugins"].items()):
                dist = canonical_name(name)
                if dist in seen:
                    seen[dist].also_in.append(env)
                    continue
                info = seen[dist] = PluginInfo(dist, data.get("version") or "0", env=env)
                info.blocked = not self._allowed(dist)
                for entry, meta in data.get("executors", {}).items():
                    info.executors[entry] = meta.get("target", "")
                    if not info.blocked:
                        qualified = f"{dist}:{entry}"
                        self._executor_refs[qualified] = (dist, EnvEntryPoint(env, qualified,
                                                                               meta))
                info.hooks = [f"{m} (in its environment)" for m in data.get("hook_modules", [])]

    def _current_envs_state(self) -> str:
        """``envs_state`` of the environments directory: "" when there is none (the usual
        case), found without importing roadie.envs, which a worker then never needs."""
        if self.envs_dir is None or not Path(self.envs_dir).is_dir():
            return ""
        from roadie.envs.discovery import envs_state

        return envs_state(self.envs_dir)

    def refresh_envs(self) -> bool:
        """Look at the environments again if any changed; returns whether one did."""
        if self.envs_dir is None or not self._loaded:
            return False
        if self._current_envs_state() == self._envs_state:
            return False
        from roadie.envs.discovery import EnvEntryPoint

        with self._lock:
            for qualified, (_, ep) in list(self._executor_refs.items()):
                if isinstance(ep, EnvEntryPoint):
                    del self._executor_refs[qualified]
                    self._executors.pop(qualified, None)
                    self._executor_errors.pop(qualified, None)
            for name, info in list(self.infos.items()):
                if info.env is not None:
                    del self.infos[name]
                else:
                    info.also_in.clear()
            self._discover_envs(self.infos)
        return True

    def _import_hook_modules(self, info: PluginInfo) -> None:
        for module_name in info.hook_modules:
            try:
                module = importlib.import_module(module_name)
            except Exception as exc:
                info.error = f"cannot import hook module {module_name!r}: {_describe(exc)}"
                return
            try:
                self.register(
                    module, name=info.name, is_global=bool(getattr(module, "ROADIE_GLOBAL", False))
                )
            except PluginError as exc:
                info.error = str(exc)
                return
        info.hooks = self.hooks_of(info.name)

    def register(self, plugin: ModuleType | object, *, name: str, is_global: bool = True) -> None:
        """Register a hook implementation object under a distribution name.

        Its ``roadie_register_types`` runs at once with a registrar bound to ``name``.
        ``is_global`` plugins see the task-scoped hooks of every task; others only those of
        tasks that name them (their import context).
        """
        with self._lock:
            dist = canonical_name(name)
            try:
                self.pm.register(plugin, name=dist)
            except ValueError as exc:
                raise PluginError(
                    f"plugin {dist!r} is registered already (one hook module per distribution)"
                ) from exc
            warn_deprecated_hooks(self.pm, plugin, dist)
            if is_global:
                self._global_plugins.add(dist)
            self._subset_callers.clear()
            self._impls.clear()
            register_types = getattr(plugin, "roadie_register_types", None)
            if register_types is not None:
                try:
                    register_types(register=self.registry.registrar(dist))
                except Exception as exc:
                    info = self.infos.setdefault(dist, PluginInfo(dist, "0"))
                    info.error = f"roadie_register_types failed: {_describe(exc)}"
                    raise PluginError(f"plugin {dist!r}: {info.error}") from exc

    def unregister(self, name: str) -> None:
        """Remove a plugin's hooks and types (used by tests)."""
        with self._lock:
            plugin = self.pm.get_plugin(name)
            if plugin is not None:
                self.pm.unregister(plugin)
            self.registry.unregister_namespace(name)
            self._global_plugins.discard(name)
            self._subset_callers.clear()
            self._impls.clear()

    def register_executor(self, qualified: str, executor: type[Executor]) -> None:
        """Make an executor class available under ``"dist:name"`` without an entry point."""
        dist, _ = split_executor_name(qualified)
        qualified = f"{dist}:{qualified.partition(':')[2]}"
        with self._lock:
            self._executors[qualified] = executor
            self._executor_refs[qualified] = (dist, None)
            info = self.infos.setdefault(dist, PluginInfo(dist, "0"))
            target = f"{executor.__module__}:{executor.__qualname__}"
            info.executors[qualified.partition(":")[2]] = target

    # -- queries -------------------------------------------------------------------------

    def executor_names(self) -> list[str]:
        """Every executor this process can run (without importing any)."""
        self.load()
        return sorted(self._executor_refs)

    def has_executor(self, qualified: str) -> bool:
        """Whether an executor of that canonical name is installed here, or in an
        environment (imports nothing)."""
        self.load()
        if qualified not in self._executor_refs and self.refresh_envs():
            return qualified in self._executor_refs
        return qualified in self._executor_refs

    def versions(self) -> dict[str, str]:
        """Installed, loadable plugin distributions and their versions."""
        self.load()
        return {n: i.version for n, i in sorted(self.infos.items()) if not i.blocked}

    def version_of(self, dist: str) -> str:
        """The installed version of a plugin distribution ("0" if unknown)."""
        self.load()
        info = self.infos.get(dist)
        return info.version if info is not None and not info.blocked else "0"

    def is_installed(self, dist: str) -> bool:
        """Whether plugin distribution ``dist`` is installed (and not blocked) here."""
        self.load()
        info = self.infos.get(canonical_name(dist))
        if info is not None:
            return not info.blocked
        try:
            importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            return False
        return self._allowed(canonical_name(dist))

    def hooks_of(self, name: str) -> list[str]:
        """The hooks that the plugin registered under ``name`` implements."""
        plugin = self.pm.get_plugin(name)
        if plugin is None:
            return []
        return sorted(c.name for c in self.pm.get_hookcallers(plugin) or [])

    def builtin_infos(self) -> list[PluginInfo]:
        """The built-in plugins, as PluginInfo rows."""
        rows = []
        for module_name in BUILTIN_PLUGINS:
            info = PluginInfo(module_name, "builtin", builtin=True)
            info.hooks = self.hooks_of(module_name)
            info.blocked = self.pm.get_plugin(module_name) is None
            rows.append(info)
        return rows

    # -- executors -----------------------------------------------------------------------

    def load_executor(self, qualified: str) -> type[Executor]:
        """Import (once) and return the executor class named ``"dist:name"``."""
        loaded = self._executors.get(qualified)  # the common case: by its canonical name
        if loaded is not None:
            return loaded
        from roadie.executor import Executor

        self.load()
        dist, name = split_executor_name(qualified)
        qualified = f"{dist}:{name}"
        with self._lock:
            if qualified in self._executors:
                return self._executors[qualified]
            if qualified in self._executor_errors:
                raise PluginError(self._executor_errors[qualified])
            ref = self._executor_refs.get(qualified)
            if ref is None:
                raise self.unknown_executor(qualified)
            _, ep = ref
            try:
                loaded = ep.load()
            except Exception as exc:
                message = (
                    f"plugin {dist!r} is broken: its executor {name!r} ({ep.value}) failed to "
                    f"import: {_describe(exc)}"
                )
                self._executor_errors[qualified] = message
                self.infos[dist].error = message
                raise PluginError(message) from exc
            if not (isinstance(loaded, type) and issubclass(loaded, Executor)):
                message = (
                    f"plugin {dist!r}: entry point {name!r} ({ep.value}) is not a "
                    f"roadie.Executor subclass"
                )
                self._executor_errors[qualified] = message
                raise PluginError(message)
            self._executors[qualified] = loaded
            return loaded

    def unknown_executor(self, qualified: str, extra: Iterable[str] = ()) -> UnknownExecutor:
        """The error for an executor name that nothing provides, with the closest names."""
        import difflib

        known = sorted({*self._executor_refs, *extra})
        close = difflib.get_close_matches(qualified, known, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        listing = ", ".join(known) if known else "none (install a plugin, e.g. roadie-examples)"
        dist = qualified.partition(":")[0]
        blocked = f" Plugin {dist!r} is blocked." if canonical_name(dist) in self.blocked else ""
        return UnknownExecutor(
            f"unknown executor {qualified!r}.{hint}{blocked} Installed executors: {listing}"
        )

    def executor_error(self, qualified: str) -> str | None:
        """The load error of an executor, if it failed to load."""
        return self._executor_errors.get(qualified)

    # -- hooks ---------------------------------------------------------------------------

    @property
    def hook(self) -> Any:
        """The hooks, as called for everything that is not task-scoped."""
        self.load()
        return self.pm.hook

    def hook_impls(self, name: str) -> tuple[Any, ...]:
        """The implementations of hook ``name`` in the order pluggy calls them (the last
        registered first), looked up once until a plugin is registered or unregistered:
        ``add_tasks`` asks for every task."""
        found = self._impls.get(name)
        if found is None:
            self.load()
            found = tuple(reversed(getattr(self.pm.hook, name).get_hookimpls()))
            if self._ready:
                self._impls[name] = found
        return found

    def task_hook(self, name: str, task_plugins: Iterable[str]) -> Callable[..., Any]:
        """A task-scoped hook, called only on the built-ins, the global plugins and the
        plugins that the task names (its import context)."""
        self.load()
        scope = frozenset(task_plugins)
        caller = self._subset_callers.get((name, scope))  # made once; read without the lock
        if caller is not None:
            return caller
        with self._lock:
            caller = self._subset_callers.get((name, scope))
            if caller is None:
                keep = self._global_plugins | scope
                remove = [
                    plugin for plugin_name, plugin in self.pm.list_name_plugin()
                    if plugin_name not in keep
                ]
                caller = self.pm.subset_hook_caller(name, remove) if remove else getattr(
                    self.pm.hook, name
                )
                if not self.tracing:
                    caller = _DirectCall.of(caller) or caller
                self._subset_callers[(name, scope)] = caller
            return caller

    def _enable_tracing(self) -> None:
        self.tracing = True
        self.pm.trace.root.setwriter(sys.stderr.write)
        self.pm.enable_tracing()

    def trace_call(self, hook_name: str, plugin_name: str, kwargs: dict[str, Any]) -> None:
        """Print a hook call made one plugin at a time (when ROADIE_TRACE_HOOKS is set)."""
        if self.tracing:
            arguments = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
            sys.stderr.write(f"  {hook_name} [{plugin_name}] ({arguments})\n")


class _DirectCall:
    """A task-scoped hook whose implementations are all plain functions (no wrapper), called
    as pluggy calls them, in the same order, without its dispatch: checking the arguments,
    filtering the subset of plugins and copying the list on every call, which cost about as
    much as the implementations themselves (a worker calls these hooks for every task). The
    implementations are fixed when it is made: ``Plugins.register`` and ``unregister`` drop
    it."""

    __slots__ = ("_caller", "_first", "_functions")

    def __init__(self, caller: Any, functions: tuple[tuple[Callable[..., Any],
                                                         tuple[str, ...]], ...],
                 first: bool) -> None:
        self._caller = caller
        self._functions = functions
        self._first = first

    @classmethod
    def of(cls, caller: Any) -> _DirectCall | None:
        """The direct call of ``caller``'s implementations, or None when one of them is a
        wrapper or takes optional arguments (pluggy's own dispatch then)."""
        impls = caller.get_hookimpls()
        if any(impl.hookwrapper or impl.wrapper or impl.kwargnames for impl in impls):
            return None
        first = bool(caller.spec is not None and caller.spec.opts.get("firstresult"))
        return cls(caller, tuple((impl.function, tuple(impl.argnames))
                                 for impl in reversed(impls)), first)

    def __call__(self, **kwargs: Any) -> Any:
        results = []
        for function, names in self._functions:
            result = function(*[kwargs[name] for name in names])
            if result is not None:
                if self._first:
                    return result
                results.append(result)
        return None if self._first else results

    def get_hookimpls(self) -> list[Any]:
        """The implementations, as pluggy's caller lists them."""
        impls: list[Any] = self._caller.get_hookimpls()
        return impls


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()

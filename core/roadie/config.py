"""Settings: defaults, overridden by ``ROADIE_*`` environment variables, overridden by arguments.

One rule everywhere: an argument given in code wins, then the ``ROADIE_<FIELD>`` variable, then
the default. ``Settings()``, ``Settings.from_env()`` and ``Roadie()`` all follow it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roadie.errors import ConfigurationError


def default_data_dir() -> Path:
    """Where the embedded database and attachments live: ROADIE_DATA_DIR or the user's data
    directory."""
    configured = os.environ.get("ROADIE_DATA_DIR")
    if configured:
        return Path(configured)
    import platformdirs  # only here: a process told its data directory never loads it

    return Path(platformdirs.user_data_dir("roadie"))


@dataclass(init=False)
class Settings:
    """Every tunable of roadie. Each field comes from the keyword argument of the same name,
    else from ``ROADIE_<FIELD>`` (upper case), else from its default."""

    data_dir: Path = field(default_factory=default_data_dir)
    heartbeat_interval: float = 5.0
    heartbeat_grace: float = 30.0
    status_interval: float = 0.25
    cancel_poll_interval: float = 1.0
    sqlite_poll_interval: float = 0.1
    postgres_poll_interval: float = 2.0
    max_status_messages: int = 50
    child_width: int = 4
    max_context_size: int = 4 * 1024 * 1024
    max_attachment_size: int = 256 * 1024 * 1024
    pending_horizon: float = 60.0
    postgres_synchronous_commit: str = "on"
    prefetch: int = 128  # tasks claimed ahead of the free threads, at most (docs: claiming ahead)
    prefetch_short: float = 0.1  # claim ahead only while tasks run shorter than this
    prefetch_hold: float = 1.0  # a task claimed ahead and not started by then is put back
    async_concurrency: int = 100
    max_tasks_per_host: int = 10000
    max_host_memory_mb: int = 0
    cancel_grace: float = 5.0
    host_start_timeout: float = 60.0
    envs_dir: str = ""
    retention: str = ""  # off; "30d" or "successful=7d,failed=30d": workers delete older ones
    retention_interval: float = 60.0
    # ROADIE_POOLER=transaction: behind PgBouncer, Supavisor or pgcat in transaction mode
    pooler: str = "none"
    # ROADIE_LISTEN_URL: a direct PostgreSQL connection for LISTEN only (behind a pooler)
    listen_url: str = ""
    aio_pool_size: int = 10  # PostgreSQL sessions of the async client's adds, per event loop
    tune_gc: bool = True  # a worker in the main thread tunes the garbage collector as it runs

    def __init__(self, **values: Any) -> None:
        fields = {f.name: f for f in dataclasses.fields(self)}
        unknown = set(values) - set(fields)
        if unknown:
            raise ConfigurationError(
                f"unknown setting(s): {', '.join(sorted(unknown))}; the settings are: "
                f"{', '.join(fields)}")
        for name, f in fields.items():
            if name in values:
                value = values[name]
            elif (raw := os.environ.get(f"ROADIE_{name.upper()}")) is not None:
                value = _parse(name, f.type, raw)
            elif f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
            else:
                value = f.default
            if name == "data_dir":
                value = Path(value)
            setattr(self, name, value)

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Defaults, then environment variables, then ``overrides`` (the same as
        ``Settings(**overrides)``)."""
        return cls(**overrides)

    def replace(self, **overrides: Any) -> Settings:
        """A copy with ``overrides`` applied (unknown names raise ConfigurationError)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values.update(overrides)
        return type(self)(**values)

    def default_url(self) -> str:
        """ROADIE_URL, or the embedded SQLite file in the data directory."""
        return os.environ.get("ROADIE_URL") or f"sqlite:///{self.data_dir / 'roadie.db'}"

    def envs_path(self) -> Path:
        """Where environments live: ROADIE_ENVS_DIR, or ``envs`` in the data directory."""
        return Path(self.envs_dir) if self.envs_dir else self.data_dir / "envs"

    def poll_interval(self, postgres: bool) -> float:
        """How long a worker sleeps between claims when nothing wakes it."""
        return self.postgres_poll_interval if postgres else self.sqlite_poll_interval


_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True,
             "0": False, "false": False, "no": False, "off": False}


def _parse(name: str, kind: Any, raw: str) -> Any:
    kind = str(kind)
    try:
        if kind == "float":
            return float(raw)
        if kind == "int":
            return int(raw)
        if kind == "Path":
            return Path(raw)
        if kind == "bool":
            return _BOOLEANS[raw.strip().lower()]
        if kind.startswith("tuple"):
            return tuple(p.strip() for p in raw.split(",") if p.strip())
    except (ValueError, KeyError):
        raise ConfigurationError(
            f"environment variable ROADIE_{name.upper()}={raw!r} is not a valid {kind}"
            + (" (use 1 or 0, true or false, yes or no, on or off)" if kind == "bool" else "")
        ) from None
    return raw

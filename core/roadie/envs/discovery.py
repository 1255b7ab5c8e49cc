"""Find the executors of every environment without importing their code here.

``probe_env`` runs the environment's Python on ``roadie.envs.probe`` and caches the answer in
the environment's folder, keyed by its state (the names and times of its installed
distributions), so a worker or an app pays for it only after the environment changed.
``env_executor`` turns a probed executor into a stand-in class: it carries the attributes
the worker and the app need (isolation, limits, crash policy, attempts, timeout, its
environment) and can only run in a host of that environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from roadie.envs.layout import env_names
from roadie.errors import EnvError, UnknownExecutor
from roadie.executor import CrashPolicy, Executor, Isolation
from roadie.limits import Rate

CACHE_FILE = "roadie-plugins.json"


PROBE_FORMAT = 2  # what a probe records; a cached answer of another format is probed again


def _site_packages(path: Path) -> list[Path]:
    return sorted((path / "lib").glob("python*/site-packages"))


def env_state(path: Path) -> str:
    """A fingerprint of what is installed in the environment at ``path``."""
    digest = hashlib.sha256()
    for site in _site_packages(path):
        try:
            entries = sorted(os.scandir(site), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name.endswith((".dist-info", ".pth", ".egg-link")):
                digest.update(f"{entry.name}:{entry.stat().st_mtime_ns}\n".encode())
    return digest.hexdigest()


def envs_state(envs_dir: Path | None) -> str:
    """A fingerprint of every environment in ``envs_dir`` (changes when any of them does)."""
    if envs_dir is None:
        return ""
    return "|".join(f"{name}={env_state(Path(envs_dir) / name)}"
                    for name in env_names(envs_dir))


def probe_env(path: Path) -> dict[str, Any]:
    """What the environment at ``path`` holds (``probe``'s answer), from the cache if fresh."""
    state = env_state(path)
    cache = path / CACHE_FILE
    try:
        cached = json.loads(cache.read_text())
        if cached.get("state") == state and cached.get("format") == PROBE_FORMAT:
            return dict(cached["probe"])
    except (OSError, ValueError, KeyError):
        pass
    python = path / "bin" / "python"
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    try:
        result = subprocess.run([str(python), "-m", "roadie.envs.probe"], capture_output=True,
                                text=True, env=environ, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvError(f"environment {path.name!r}: cannot run its Python: {exc}") from exc
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise EnvError(f"environment {path.name!r}: listing its plugins failed: {tail}")
    found: dict[str, Any] = json.loads(result.stdout)
    tmp = cache.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps({"state": state, "format": PROBE_FORMAT, "probe": found}))
        tmp.replace(cache)
    except OSError:
        pass
    return found


class EnvEntryPoint:
    """Stands for an entry point of an environment (``value`` and ``load`` as importlib's)."""

    def __init__(self, env: str, qualified: str, meta: dict[str, Any]) -> None:
        self.env = env
        self.qualified = qualified
        self.meta = meta
        self.value = f"{meta.get('target', '?')} (in environment {env!r})"

    def load(self) -> type[Executor]:
        """The stand-in executor class; raises the import error the probe saw, if any."""
        if self.meta.get("error"):
            raise ImportError(self.meta["error"])
        return env_executor(self.env, self.qualified, self.meta)


def env_executor(env: str, qualified: str, meta: dict[str, Any]) -> type[Executor]:
    """A stand-in for an executor of environment ``env``: it only runs in that env's hosts."""

    def execute(self: Executor, task: Any) -> Any:
        raise RuntimeError(f"executor {qualified!r} lives in environment {env!r}: it runs in "
                           f"a host process of that environment, never in the worker")

    def isolation_key(self: Executor, task: Any) -> str | None:
        raise UnknownExecutor(
            f"executor {qualified!r} of environment {env!r} computes its isolation key in "
            f"code, which the app cannot run outside that environment"
        )

    attributes = {
        "isolation": Isolation(meta.get("isolation", Isolation.NOT_ISOLATED.value)),
        "crash_policy": CrashPolicy(meta.get("crash_policy", CrashPolicy.FAIL.value)),
        # "max_attempts": what environments probed before roadie 0.2 wrote
        "max_crash_attempts": int(meta.get("max_crash_attempts", meta.get("max_attempts", 3))),
        "timeout": meta.get("timeout"),
        "max_running": meta.get("max_running"),
        "rate_limit": Rate(*meta["rate_limit"]) if meta.get("rate_limit") else None,
        "out_of_process": True,
        "roadie_env": env,
        "execute": execute,
        "isolation_key": isolation_key,
        "__module__": "roadie.envs.discovery",
        "__doc__": f"{qualified} from environment {env!r} (runs in its hosts)",
    }
    name = qualified.replace(":", "_").replace("-", "_")
    return type(f"EnvExecutor_{name}", (Executor,), attributes)

"""Create, install into, list and remove environments (``roadie env create|install|list|remove``).

An environment is a venv under ``<envs dir>/NAME`` (the envs dir is ``ROADIE_ENVS_DIR``, or
``envs`` in the data directory) holding roadie's runtime, at the worker's version and from the
same source when roadie was installed from a local path, and the plugins installed into it.

Speed: the first environment made with a given Python pays for installing roadie's runtime
once, into a template (``<envs dir>/.runtime/...``); later ones copy that template, which
takes a fraction of a second. Environments do not see the worker's packages (no
``--system-site-packages``): isolation is the point, so a plugin's dependency is always its
own version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roadie.envs.discovery import probe_env
from roadie.envs.layout import env_names, env_path, python_of
from roadie.errors import EnvError

RUNTIME_DIR = ".runtime"


@dataclass
class EnvInfo:
    """One environment: where it is, its Python, and its plugins with their executors."""

    name: str
    path: Path
    python: str
    python_version: str
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None


def runtime_spec() -> list[str]:
    """How pip installs the roadie this worker runs: its local source (editable or not) when
    it came from a local path, else ``roadie==<version>``."""
    import importlib_metadata

    dist = importlib_metadata.distribution("roadie")
    direct = dist.read_text("direct_url.json")
    if direct:
        data = json.loads(direct)
        url = data.get("url", "")
        if url.startswith("file://"):
            source = url.removeprefix("file://")
            if data.get("dir_info", {}).get("editable"):
                return ["-e", source]
            return [source]
    return [f"roadie=={dist.version}"]


def _pip(python: Path | str, *arguments: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pip", "--python", str(python), *arguments]
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(command, capture_output=True, text=True, env=environ, check=False)


def _pip_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (result.stderr or result.stdout).splitlines()
             if line.strip() and not line.startswith("WARNING: Location")]
    return "\n".join(lines[-15:]) or f"pip exited with code {result.returncode}"


def _make_venv(python: str, path: Path) -> None:
    result = subprocess.run([python, "-m", "venv", "--without-pip", str(path)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise EnvError(f"cannot make a venv with {python}: "
                       f"{(result.stderr or result.stdout).strip()}")


def _runtime_template(envs_dir: Path, python: str) -> Path:
    """A venv with roadie's runtime for ``python``, made once and copied by ``create_env``."""
    spec = runtime_spec()
    real = os.path.realpath(python)
    key = hashlib.sha256(json.dumps([real, spec, _roadie_version()]).encode()).hexdigest()[:16]
    template = Path(envs_dir) / RUNTIME_DIR / key
    if (template / "pyvenv.cfg").exists():
        return template
    template.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix="building-", dir=template.parent))
    try:
        _make_venv(python, building / "venv")
        result = _pip(building / "venv" / "bin" / "python", "install", "-q", *spec)
        if result.returncode != 0:
            raise EnvError(f"cannot install roadie's runtime ({' '.join(spec)}) with "
                           f"{python}:\n{_pip_error(result)}")
        try:
            (building / "venv").rename(template)
        except OSError:  # another process made it first
            if not (template / "pyvenv.cfg").exists():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return template


def _roadie_version() -> str:
    import importlib_metadata

    return importlib_metadata.version("roadie")


def _copy_venv(template: Path, target: Path) -> None:
    shutil.copytree(template, target, symlinks=True)
    old, new = str(template).encode(), str(target).encode()
    for script in (target / "bin").iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        data = script.read_bytes()
        if old in data:
            script.write_bytes(data.replace(old, new))
    config = target / "pyvenv.cfg"
    config.write_text(config.read_text().replace(str(template), str(target)))


def create_env(envs_dir: Path, name: str, *, python: str | None = None) -> EnvInfo:
    """Make environment ``name`` with roadie's runtime (EnvError if it exists already)."""
    target = env_path(envs_dir, name)
    if target.exists():
        raise EnvError(f"environment {name!r} exists already in {envs_dir} "
                       f"(`roadie env remove {name}` first, or choose another name)")
    interpreter = python or sys.executable
    if not shutil.which(interpreter) and not Path(interpreter).exists():
        raise EnvError(f"no Python at {interpreter!r} (give --python the path of an "
                       f"interpreter, 3.10 or later)")
    template = _runtime_template(envs_dir, interpreter)
    staging = target.with_name(f".{name}.creating")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _copy_venv(template, staging)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return describe(envs_dir, name)


def install(envs_dir: Path, name: str, specs: list[str]) -> EnvInfo:
    """Install plugin distributions (as pip takes them) into environment ``name``.

    A failed install raises EnvError with pip's error; pip resolves and builds everything
    before it changes the environment, and rolls back a half-done install, so the
    environment stays as it was.
    """
    python = python_of(envs_dir, name)
    if not specs:
        raise EnvError("name at least one distribution to install (as pip takes them)")
    result = _pip(python, "install", "-q", *specs)
    if result.returncode != 0:
        raise EnvError(f"cannot install {' '.join(specs)} into environment {name!r}; "
                       f"it is unchanged. pip said:\n{_pip_error(result)}")
    return describe(envs_dir, name)


def remove_env(envs_dir: Path, name: str) -> None:
    """Delete environment ``name`` (EnvError if there is none)."""
    python_of(envs_dir, name)
    shutil.rmtree(env_path(envs_dir, name))


def describe(envs_dir: Path, name: str) -> EnvInfo:
    """An environment with its Python and plugins (found by running its Python)."""
    path = env_path(envs_dir, name)
    try:
        found = probe_env(path)
    except EnvError as exc:
        return EnvInfo(name, path, str(path / "bin" / "python"), "?", error=str(exc))
    return EnvInfo(name, path, found["python"], found["version"], found["plugins"])


def list_envs(envs_dir: Path) -> list[EnvInfo]:
    """Every environment, described."""
    return [describe(envs_dir, name) for name in env_names(envs_dir)]

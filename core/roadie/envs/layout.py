"""Where environments live: ``<envs dir>/NAME``, a venv; valid names, folders, and each one's
Python (``manage`` and ``discovery`` both build on it)."""

from __future__ import annotations

import re
from pathlib import Path

from roadie.errors import EnvError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(name: str) -> str:
    """``name`` if it is a valid environment name; otherwise EnvError saying what is valid."""
    if not NAME_PATTERN.match(name or "") or name in (".", ".."):
        raise EnvError(f"invalid environment name {name!r}: use letters, digits, '.', '_' or "
                       f"'-' (at most 64, starting with a letter or digit)")
    return name


def env_path(envs_dir: Path, name: str) -> Path:
    """The folder of environment ``name``."""
    return Path(envs_dir) / check_name(name)


def python_of(envs_dir: Path, name: str) -> Path:
    """The Python of environment ``name`` (EnvError if there is no such environment)."""
    path = env_path(envs_dir, name)
    python = path / "bin" / "python"
    if not python.exists():
        raise EnvError(f"no environment named {name!r} in {envs_dir} "
                       f"(create it with `roadie env create {name}`)")
    return python


def env_names(envs_dir: Path) -> list[str]:
    """The environments in ``envs_dir``, by name."""
    root = Path(envs_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if NAME_PATTERN.match(p.name) and (p / "pyvenv.cfg").exists())

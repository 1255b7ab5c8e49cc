"""Exported trees of roadie (``git archive COMMIT core plugins``) measured beside this
checkout: bytecode as an installed package has it, and the environment that puts a tree's
code first on the path."""

from __future__ import annotations

import compileall
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # this checkout
PLUGINS = ["roadie-examples", "roadie-prometheus", "roadie-opentelemetry", "roadie-django"]


def compile_tree(tree: Path) -> None:
    """Compile ``tree``'s ``core/`` and ``plugins/`` to bytecode, as an installed package has
    it (written even under PYTHONDONTWRITEBYTECODE)."""
    for part in ("core", "plugins"):
        if not compileall.compile_dir(tree / part, quiet=1):
            sys.exit(f"could not compile {tree / part}")


def environ(tree: Path | None, tmp: Path) -> dict[str, str]:
    """The environment of a measured process: ``tree``'s core and plugins first, if given."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["ROADIE_DATA_DIR"] = str(tmp)
    if tree is not None:
        paths = [str(tree / "core")] + [str(tree / "plugins" / p) for p in PLUGINS
                                        if (tree / "plugins" / p).is_dir()]
        env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep)
    return env

"""Start a plugin distribution, ``roadie-NAME``, in one command (``roadie plugin new NAME``).

The files come from the templates in ``roadie/starter_template`` (``*.tmpl``, with
``$dist``, ``$package``, ``$title`` and ``$roadie_requirement`` filled in; ``package/`` becomes
the import package). Right after creation, ``pip install -e . && pytest`` passes inside the
new folder. An existing folder is never written to.
"""

from __future__ import annotations

import re
from importlib import resources
from importlib.metadata import version
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

from roadie.errors import StarterError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
TEMPLATE_FOLDER = "starter_template"


def plugin_names(name: str) -> tuple[str, str]:
    """``"my-thing"`` -> ``("roadie-my-thing", "roadie_my_thing")``; raises StarterError."""
    short = name.strip()
    if short.startswith("roadie-"):
        short = short[len("roadie-"):]
    if not NAME_PATTERN.fullmatch(short):
        raise StarterError(
            f"invalid plugin name {name!r}: use lower-case letters, digits and single hyphens, "
            f"starting with a letter (for example 'acme-export'); the distribution is then "
            f"called 'roadie-<name>'"
        )
    return f"roadie-{short}", f"roadie_{short.replace('-', '_')}"


def _requirement() -> str:
    """``roadie>=X.Y,<X.(Y+2)``: this release up to the next-but-one minor release (the
    installed distribution's version, which ``roadie --version`` prints too)."""
    major, minor = (int(part) for part in version("roadie").split(".")[:2])
    return f"roadie>={major}.{minor},<{major}.{minor + 2}"


def create_plugin(name: str, directory: Path | str = ".") -> Path:
    """Create the plugin ``roadie-<name>`` in ``directory``; return its folder."""
    dist, package = plugin_names(name)
    target = Path(directory) / dist
    if target.exists():
        raise StarterError(
            f"{target} exists already; roadie never overwrites a folder: choose another name "
            f"or another --dir"
        )
    values = {
        "dist": dist,
        "package": package,
        "title": dist.replace("-", " ").title().replace("Roadie ", "roadie "),
        "roadie_requirement": _requirement(),
    }
    files = dict(_render(resources.files("roadie") / TEMPLATE_FOLDER, Path(), values, package))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        target.mkdir()
    except FileExistsError:
        raise StarterError(f"{target} exists already; roadie never overwrites a folder") from None
    for relative, text in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return target


def _render(
    folder: Traversable, relative: Path, values: dict[str, str], package: str
) -> list[tuple[Path, str]]:
    files = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            if entry.name == "__pycache__":
                continue
            name = package if entry.name == "package" else entry.name
            files += _render(entry, relative / name, values, package)
        elif entry.name.endswith(".tmpl"):
            text = Template(entry.read_text()).substitute(values)
            files.append((relative / entry.name.removesuffix(".tmpl"), text))
    return files

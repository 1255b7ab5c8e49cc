"""Write one section of ``bench/RESULTS.md``, keeping the others.

Each benchmark owns one ``## <name>`` section. ``write_section`` replaces that section (or adds
it at the end) with a line saying when, where and how it was measured, then the content.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import shlex
import sys
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
TITLE = "# roadie benchmark results"
INTRO = (
    "Written by the scripts in this folder (see README.md); each section is replaced when its "
    "script runs again. Machines here are noisy: compare figures from one run, not across days."
)


def machine() -> str:
    """A short description of this machine: cores, Python, platform."""
    return (f"{os.cpu_count()} cores (nproc {len(os.sched_getaffinity(0))}), "
            f"Python {platform.python_version()}, {platform.system()} {platform.machine()}")


def command() -> str:
    """The command line that ran this process (relative to the repository root)."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(Path(__file__).resolve().parent.parent)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *sys.argv[1:]])


def write_section(name: str, content: str, path: Path = RESULTS) -> None:
    """Replace section ``## name`` of RESULTS.md with ``content`` (plus the date, machine and
    command), keeping every other section where it is."""
    stamp = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    body = (f"## {name}\n\n_{stamp} · {machine()} · `{command()}`_\n\n"
            f"{content.strip()}\n")
    text = path.read_text() if path.exists() else f"{TITLE}\n\n{INTRO}\n"
    # a section runs from its heading to the next "## " heading (or the end)
    pattern = re.compile(rf"^## {re.escape(name)}[ \t]*\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: body + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + body
    path.write_text(text.rstrip("\n") + "\n")
    print(f"wrote section {name!r} of {path}")


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (also readable as printed text)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])

"""Write one section of ``bench/RESULTS.md``, keeping the others.

Each benchmark owns one ``## <name>`` section. ``write_section`` replaces that section (or adds
it at the end) with a line saying when, where and how it was measured, then the content.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
TITLE = "# roadie benchmark results"
LOAD_AT_START = os.getloadavg()[0]  # this module is imported when a benchmark starts
INTRO = (
    "Written by the scripts in this folder (see README.md); each section is replaced when its "
    "script runs again. Machines here are noisy: compare figures from one run, not across days."
)


def machine() -> str:
    """A short description of this machine: cores, Python, platform, how busy it was."""
    return (f"nproc {len(os.sched_getaffinity(0))}, Python {platform.python_version()}, "
            f"{platform.system()} {platform.machine()}, load average {LOAD_AT_START:.1f} at start")


def code_version() -> str:
    """The commit measured, and whether core/ had uncommitted changes (with their hash)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return ""

    import roadie  # what the benchmark measures may come from elsewhere (PYTHONPATH)

    imported = Path(roadie.__file__).resolve().parent
    if imported != root / "core" / "roadie":
        return f"roadie imported from {imported} (not this checkout)"
    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    diff = git("diff", "HEAD", "--", "core")
    if not diff:
        return f"commit {head}"
    digest = hashlib.sha1(diff.encode()).hexdigest()[:8]
    return f"commit {head} + uncommitted core/ changes (diff {digest})"


CODE_AT_START = code_version()  # what this benchmark process loaded


def command() -> str:
    """The command line that ran this process (relative to the repository root)."""
    script = Path(sys.argv[0])
    with contextlib.suppress(ValueError):  # a script outside the repository: keep its path
        script = script.resolve().relative_to(Path(__file__).resolve().parent.parent)
    return shlex.join(["python", str(script), *sys.argv[1:]])


def write_section(name: str, content: str, path: Path = RESULTS) -> None:
    """Replace section ``## name`` of RESULTS.md with ``content`` (plus the date, machine and
    command), keeping every other section where it is."""
    stamp = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    body = (f"## {name}\n\n_{stamp} · {machine()} · {CODE_AT_START} · `{command()}`_\n\n"
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

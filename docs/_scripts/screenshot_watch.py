"""Render docs/images/roadie-watch.png: `roadie watch` in a terminal while a worker runs tasks.

Run it by hand when the watch view changes (it needs tmux, and chromium for the PNG):

    .venv/bin/python docs/_scripts/screenshot_watch.py

It adds a few example tasks to a throwaway data directory, starts a worker and `roadie watch`
in a tmux window of 100x12, captures the window with its colours mid-run, renders that through
rich to SVG, and has headless chromium turn the SVG into a PNG.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.text import Text

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
OUT = ROOT / "docs" / "images" / "roadie-watch.png"
SESSION = "roadie-docs-shot"


def main() -> None:
    data = Path(tempfile.mkdtemp(prefix="roadie-shot-"))
    env = {k: v for k, v in os.environ.items() if k != "ROADIE_URL"}
    env["ROADIE_DATA_DIR"] = str(data)
    roadie = str(BIN / "roadie")
    tasks = [
        ("count", '{"n": 200, "delay": 0.05}', "export site-1"),
        ("count", '{"n": 120, "delay": 0.08}', "re-index documents"),
        ("count", '{"n": 400, "delay": 0.03}', "import users.csv"),
        ("count", '{"n": 50, "delay": 0.02}', "thumbnails"),
        ("fail", "{}", "nightly report"),
        ("serial", '{"seconds": 8}', "rebuild search index"),
    ]
    for executor, context, name in tasks:
        subprocess.run([roadie, "submit", f"roadie-examples:{executor}", "--context", context,
                        "--name", name], env=env, check=True, capture_output=True)
    worker = subprocess.Popen([roadie, "worker", "--concurrency", "4"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        subprocess.run(["tmux", "new-session", "-d", "-s", SESSION, "-x", "100", "-y", "12",
                        f"ROADIE_DATA_DIR={data} {roadie} watch; sleep 60"], check=True)
        time.sleep(4.5)  # a tool run by hand: let the bars fill part-way before the capture
        captured = subprocess.run(["tmux", "capture-pane", "-p", "-e", "-t", SESSION],
                                  check=True, capture_output=True, text=True).stdout
    finally:
        subprocess.run(["tmux", "kill-session", "-t", SESSION], check=False)
        worker.terminate()
        worker.wait(30)
        shutil.rmtree(data, ignore_errors=True)
    console = Console(record=True, width=100, force_terminal=True, color_system="truecolor",
                      file=open(os.devnull, "w"))  # noqa: SIM115 - only recording
    console.print(Text.from_ansi(captured.rstrip("\n")))
    svg_text = console.export_svg(title="roadie watch")
    box = re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg_text)
    assert box is not None, "rich's SVG has no viewBox"
    width, height = float(box.group(1)), float(box.group(2))
    page = Path(tempfile.mkdtemp()) / "watch.html"
    box_style = f"width:{width}px;height:{height}px"
    page.write_text(f'<html><body style="margin:0"><div style="{box_style}">{svg_text}</div>'
                    f"</body></html>")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", f"--screenshot={OUT}",
                    f"--window-size={int(width)},{int(height)}",
                    "--default-background-color=00000000", page.as_uri()], check=True,
                   capture_output=True)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

"""A client process for load tests and bench/soak.py: for a while, adds tasks (one by one and in
batches), cancels, resumes and deletes some of them, and writes what it did as JSON.

    python -m tests.churn URL SECONDS SEED OUT.json

Refusals a user expects (deleting a running task, cancelling one that ended: InvalidTransition)
are counted; any other error is recorded with its message, so a test can say that none (for
example "database is locked") reached the caller.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import roadie
from roadie.errors import InvalidTransition, TaskNotFound

MIX: list[tuple[str, dict[str, Any]]] = [
    ("roadie-examples:noop", {}),
    ("roadie-examples:count", {"n": 5, "delay": 0.02}),
    ("roadie-examples:fail", {"reason": "on purpose"}),
    ("roadie-examples:serial", {"seconds": 0.02}),
    ("roadie-examples:wait", {"seconds": 0.05}),
]


def churn(url: str, seconds: float, seed: int) -> dict[str, Any]:
    """Do it; returns ``added``, ``deleted`` (ids), ``counts`` (per operation), ``refused``
    (expected refusals) and ``errors`` (anything else, as text)."""
    rng = random.Random(seed)
    app = roadie.Roadie(url)
    added: list[int] = []
    deleted: set[int] = set()
    counts: dict[str, int] = {}
    refused = 0
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        roll = rng.random()
        live = [i for i in added[-200:] if i not in deleted]
        try:
            if roll < 0.45 or not live:
                op = "add"
                executor, context = rng.choice(MIX)
                added.append(app.add_task(executor, context, group=rng.choice("ab")).id)
            elif roll < 0.55:
                op = "add_tasks"
                items = [rng.choice(MIX) for _ in range(rng.randint(2, 30))]
                added.extend(t.id for t in app.add_tasks(items))
            elif roll < 0.75:
                op = "cancel"
                app.cancel_task(rng.choice(live), by="churn")
            elif roll < 0.85:
                op = "resume"
                app.resume_task(rng.choice(live))
            else:
                op = "delete"
                victim = rng.choice(live)
                app.delete_task(victim)
                deleted.add(victim)
            counts[op] = counts.get(op, 0) + 1
        except (InvalidTransition, TaskNotFound):
            refused += 1
        except Exception as exc:  # what a user would see: must never happen
            errors.append(f"{type(exc).__name__}: {exc}")
        time.sleep(rng.random() * 0.01)
    app.close()
    return {"added": added, "deleted": sorted(deleted), "counts": counts, "refused": refused,
            "errors": errors}


def main(argv: list[str]) -> int:
    url, seconds, seed, out = argv
    report = churn(url, float(seconds), int(seed))
    Path(out).write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

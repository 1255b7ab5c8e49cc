"""A parent's page: its subtasks as a tree, and a timeline of where the time went.

Both are read with a bounded number of queries, whatever the size of the tree: the tree shows
at most ``TREE_ROWS`` tasks (breadth first, oldest first, ``TREE_DEPTH`` levels) and links to
the filtered task list for the rest; the timeline draws the parent and its first
``TIMELINE_ROWS`` subtasks. The timeline is SVG computed here and drawn by the template, so it
needs no script and no other origin; its rows come with a table of the same figures.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from roadie.status import Status
from roadie.store import utcnow
from roadie.web.views import task_summary

if TYPE_CHECKING:
    from roadie.app import Roadie
    from roadie.records import AttemptRecord, TaskRecord

TREE_ROWS = 200
"""How many subtasks (all levels together) a parent's page lists at most."""
TREE_DEPTH = 4
"""How many levels below the parent the tree reads."""
TIMELINE_ROWS = 100
"""How many subtasks the timeline draws (the first ones, oldest first)."""

# The timeline's geometry, in SVG user units (the picture scales to the page's width).
WIDTH = 960
LABELS = 230          # the left column: one label per row
RIGHT = 16
AXIS = 26             # the top band: the time ticks
ROW = 22
ATTEMPT_HEIGHT = 14
SPAN_HEIGHT = 4
_STEPS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120,
          300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800)


def _labels(counts: Mapping[Status, int]) -> dict[str, int]:
    return {status.label: n for status, n in sorted(counts.items())}


def tree_view(app: Roadie, task: TaskRecord,
              counts: Mapping[str, int] | None = None) -> dict[str, Any] | None:
    """The subtasks of ``task`` as nested dicts (``task_summary`` of each, plus
    ``children``, ``total``: how many subtasks it has, and ``more``: how many of them are not
    listed), breadth first and oldest first, at most ``TREE_ROWS`` of them; None when it has
    no subtask. ``counts``: its subtasks per status label, when already read."""
    if counts is None:
        counts = _labels(app.store.trees.subtask_counts_of([task.id]).get(task.id, {}))
    if not counts:
        return None
    root: dict[str, Any] = {"id": task.id, "children": [], "total": sum(counts.values()),
                            "more": 0}
    budget = TREE_ROWS
    level = [root]
    shown = 0
    for _depth in range(TREE_DEPTH):
        below: list[dict[str, Any]] = []
        for node in level:
            node["more"] = node["total"]
            if not node["total"] or budget <= 0:
                continue
            ids = app.store.trees.subtask_ids(node["id"], limit=budget)
            records = sorted(app.store.list_tasks(ids=ids, limit=None,
                                                  decoder=app.decode_for_task),
                             key=lambda r: r.id)
            budget -= len(records)
            node["more"] = max(0, node["total"] - len(records))
            for record in records:
                child = {**task_summary(record), "record": record, "children": [],
                         "total": 0, "more": 0, "subtasks": None}
                node["children"].append(child)
                below.append(child)
        if not below:
            break
        shown += len(below)
        nested = app.store.trees.subtask_counts_of([c["id"] for c in below])
        for child in below:
            found = nested.get(child["id"])
            if found:
                child.update(task_summary(child["record"], _labels(found)))
                child["total"] = sum(found.values())
                child["more"] = child["total"]
        level = [c for c in below if c["total"]]
    return {"children": root["children"], "total": root["total"], "more": root["more"],
            "shown": shown, "limit": TREE_ROWS}


def shown_ids(tree: Mapping[str, Any] | None) -> list[int]:
    """The ids of every subtask the tree lists (the page watches them live)."""
    found: list[int] = []
    pending = list(tree["children"]) if tree else []
    while pending:
        node = pending.pop(0)
        found.append(node["id"])
        pending.extend(node["children"])
    return found


# -- the timeline ---------------------------------------------------------------------------


def duration_text(seconds: float) -> str:
    """A short duration: ``850 ms``, ``4.2 s``, ``3 min 5 s``, ``2 h 10 min``, ``3 d 4 h``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def _clock(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _bars_of(record: TaskRecord, attempts: Sequence[AttemptRecord], now: dt.datetime,
             subtask: bool) -> list[dict[str, Any]]:
    """A subtask's lifetime (created to ended, or now), then one bar per attempt: those
    finished, and the one that runs now."""
    bars: list[dict[str, Any]] = []
    if subtask:
        end = record.finished_at or now
        bars.append({"kind": "span", "status": record.status.label, "start": record.created_at,
                     "end": max(end, record.created_at), "what": "from added to ended"
                     if record.finished_at else "added, not ended yet",
                     "open": record.finished_at is None})
    for attempt in attempts:
        start = attempt.started_at or attempt.finished_at
        bars.append({"kind": "attempt", "status": attempt.status.label, "start": start,
                     "end": max(attempt.finished_at, start),
                     "what": f"attempt {attempt.attempt}", "open": False,
                     "message": attempt.message})
    if record.status == Status.IN_PROGRESS and record.started_at is not None:
        bars.append({"kind": "attempt", "status": record.status.label,
                     "start": record.started_at, "end": max(now, record.started_at),
                     "what": f"attempt {record.attempts} (running)", "open": True,
                     "message": record.status_message})
    return bars


def _step(span: float) -> float:
    for step in _STEPS:
        if span / step <= 6:
            return step
    return _STEPS[-1]


def timeline_view(app: Roadie, task: TaskRecord, subtasks: Sequence[TaskRecord],
                  more: int = 0) -> dict[str, Any]:
    """The Gantt chart of ``task`` and ``subtasks`` (``more``: how many subtasks it leaves
    out): rows with their bars placed in SVG units, the time ticks, and the words of its
    accessible name. Reads every attempt in one query."""
    now = utcnow()
    records = [task, *subtasks]
    attempts = app.store.attempts_of_tasks([r.id for r in records])
    rows: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        rows.append({"id": record.id, "name": record.name, "status": record.status.label,
                     "parent": index == 0,
                     "bars": _bars_of(record, attempts.get(record.id, []), now, index > 0)})
    times = [b[k] for row in rows for b in row["bars"] for k in ("start", "end")]
    start = min([task.created_at, *times])
    end = max([*times, start])
    span = max((end - start).total_seconds(), 0.001)
    chart = WIDTH - LABELS - RIGHT
    height = AXIS + ROW * len(rows) + 6

    def x_of(when: dt.datetime) -> float:
        return round(LABELS + chart * (when - start).total_seconds() / span, 2)

    bars = []
    for number, row in enumerate(rows):
        top = AXIS + ROW * number
        row["y"] = top + ROW / 2 + 4
        for bar in row["bars"]:
            tall = ATTEMPT_HEIGHT if bar["kind"] == "attempt" else SPAN_HEIGHT
            x = x_of(bar["start"])
            seconds = (bar["end"] - bar["start"]).total_seconds()
            bar.update(x=x, width=max(round(x_of(bar["end"]) - x, 2), 1.5),
                       y=round(top + (ROW - tall) / 2, 2), height=tall,
                       seconds=seconds, duration=duration_text(seconds),
                       started=_clock(bar["start"]),
                       ended="not yet" if bar["open"] else _clock(bar["end"]),
                       task_id=row["id"], task_name=row["name"])
            bars.append(bar)
    step = _step(span)
    ticks = []
    at = 0.0
    while at <= span + 1e-9:
        ticks.append({"x": round(LABELS + chart * at / span, 2),
                      "label": "0" if at == 0 else "+" + duration_text(at)})
        at += step
    parent_attempts = sum(1 for b in rows[0]["bars"] if b["kind"] == "attempt")
    ended = [r for r in subtasks if r.finished_at is not None]
    longest = max(ended, key=lambda r: r.finished_at - r.created_at,  # type: ignore[operator]
                  default=None)
    summary = (f"From {_clock(start)} over {duration_text(span)}: task {task.id} "
               f"({task.status.label}) with {parent_attempts} attempt"
               f"{'' if parent_attempts == 1 else 's'} and {len(subtasks)} subtask"
               f"{'' if len(subtasks) == 1 else 's'} drawn")
    if more:
        summary += f" ({more} more not drawn)"
    if longest is not None and longest.finished_at is not None:
        summary += (f"; the longest subtask, {longest.id} {longest.name!r}, took "
                    f"{duration_text((longest.finished_at - longest.created_at).total_seconds())}"
                    " from added to ended")
    return {"rows": rows, "bars": bars, "ticks": ticks, "width": WIDTH, "height": height,
            "labels": LABELS, "right": WIDTH - RIGHT, "axis": AXIS, "summary": summary + ".",
            "title": f"Timeline of task {task.id}: {parent_attempts} attempt"
                     f"{'' if parent_attempts == 1 else 's'} and {len(subtasks)} subtask"
                     f"{'' if len(subtasks) == 1 else 's'} over {duration_text(span)}",
            "more": more,
            "start": _clock(start), "now": _clock(now)}


def records_of(tree: Mapping[str, Any] | None, limit: int = TIMELINE_ROWS) -> list[TaskRecord]:
    """The records of the tree's first ``limit`` direct subtasks."""
    if not tree:
        return []
    return [child["record"] for child in tree["children"][:limit]]

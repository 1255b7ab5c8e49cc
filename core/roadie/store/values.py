"""What callers hand the store and get back (new tasks, what a worker can run, outcomes,
fences, snapshots), and the small helpers every part of the store shares."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from roadie.limits import Rate
from roadie.records import NodeRecord, TaskRecord
from roadie.status import Status

MAX_TAGS_PER_NODE = 10
# The execution options of a statement that a worker runs once, as it starts (its node, its
# executors' limits, their schedules): compiled for that once, not kept in SQLAlchemy's cache
# of compiled statements, where each would stay for the life of the process (from 15 KB to
# 170 KB; issue 31: idle memory).
RUN_ONCE: Mapping[str, Any] = {"compiled_cache": None}


_now, _UTC = dt.datetime.now, dt.timezone.utc  # (looked up once: every attempt asks a few times)


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return _now(_UTC)


def tags_key(tags: Iterable[str]) -> str:
    """How a set of tags is stored: sorted and comma-joined ('' for none)."""
    cleaned = sorted({t.strip() for t in tags if t.strip()})
    for tag in cleaned:
        if "," in tag:
            raise ValueError(f"tag {tag!r} may not contain a comma")
    return ",".join(cleaned)


def claimable_at(status: int, run_after: dt.datetime, now: dt.datetime) -> bool:
    """Whether a task written now with ``status`` and ``run_after`` goes to the claim index:
    not one QUEUED behind a held lock, nor one delayed into the future."""
    return status != int(Status.QUEUED) and run_after <= now


def tag_subsets(tags: Iterable[str]) -> list[str]:
    """Every stored tags value a node with ``tags`` may run (all subsets, as keys)."""
    items = sorted(set(tags))
    if len(items) > MAX_TAGS_PER_NODE:
        raise ValueError(f"a node may have at most {MAX_TAGS_PER_NODE} tags")
    return [
        ",".join(combo) for size in range(len(items) + 1)
        for combo in itertools.combinations(items, size)
    ]


@dataclass(frozen=True)
class NewTask:
    """A task to insert (made by the app from ``add_task`` arguments)."""

    executor: str
    plugins: Mapping[str, str]
    context: bytes
    name: str = ""
    owner: str | None = None
    group: str | None = None
    captured: bytes | None = None
    isolation_key: str | None = None
    priority: int = 0
    run_after: dt.datetime | None = None
    tags: str = ""
    timeout: float | None = None
    parent_id: int | None = None  # a subtask of this task
    after: tuple[int, ...] = ()  # runs once these tasks have succeeded
    unique_key: str | None = None  # an open task of the executor with this key is returned
    key_limit: int | None = None  # its isolation key's width (None: 1, serial)


@dataclass
class PlainTasks:
    """Tasks without options (``NewTask``'s defaults but for these fields), a list per
    field, one item per task: what ``stream_tasks`` takes a chunk at a time."""

    executors: list[str] = field(default_factory=list)
    plugins: list[Mapping[str, str]] = field(default_factory=list)
    contexts: list[bytes] = field(default_factory=list)
    captured: list[bytes | None] = field(default_factory=list)


class Added(list[TaskRecord]):
    """The tasks ``insert_tasks`` stored, in order; ``existing`` holds the ids of those that
    were there already (an open task with the same unique key), not added now."""

    def __init__(self, records: Iterable[TaskRecord] = (),
                 existing: frozenset[int] = frozenset()) -> None:
        super().__init__(records)
        self.existing = existing


@dataclass(frozen=True)
class Claimable:
    """What a worker can run: its executors (with their isolation and flow control) and
    tags. ``slots``: how many tasks of one key may run at once, for executors with a limit
    (a keyed task of an executor not in it runs alone, serial; None: it takes no slot, a key
    limited only by a rate). ``rates``: the rates of executors that have one."""

    executors: Sequence[str]
    isolated: Mapping[str, Any]  # executor -> callable(row) -> key, for executors that isolate
    plugins: Mapping[str, str]
    tag_keys: Sequence[str]
    slots: Mapping[str, int | None] = field(default_factory=dict)
    rates: Mapping[str, Rate] = field(default_factory=dict)


@dataclass(frozen=True)
class Settled:
    """What one ``settle`` transaction did: the attempts it recorded, the tasks it claimed,
    and how many candidates it parked instead (their isolation key was taken): a round that
    parked some may find runnable tasks behind them at once."""

    finished: list[TaskRecord]
    claimed: list[TaskRecord]
    parked: int = 0
    throttled_until: dt.datetime | None = None  # a head waits for its rate until then


@dataclass(frozen=True)
class Snapshot:
    """The state of the database at one moment (``Store.snapshot``)."""

    at: dt.datetime
    tasks: list[TaskRecord]
    attempt_log_counts: dict[int, int]  # task id -> lines in the attempt log
    nodes: list[NodeRecord]
    locks: dict[str, int]  # isolation key (with its slot, when not 0) -> task id


@dataclass(frozen=True)
class Fence:
    """The token of one attempt: the task, the node running it and its attempt number.

    Every write an attempt makes carries it, and the database refuses the write (``WHERE node
    = :node AND attempts = :attempt AND status = IN_PROGRESS``) once the task was taken over:
    requeued or failed by crash recovery, and perhaps claimed again since. Attempt numbers only
    grow, so a stale attempt can never match again.
    """

    task_id: int
    node: str
    attempt: int


@dataclass(frozen=True)
class Outcome:
    """How one attempt of a task ended, as the worker writes it."""

    task_id: int
    status: Status
    message: str
    result: bytes | None = None
    error: str | None = None
    task_status: bytes | None = None
    messages: bytes | None = None
    checkpoint: bytes | None = None
    run_after: dt.datetime | None = None  # for a task put back to NEW (retry, delay)
    attempt_counts: bool = True
    attempt: int | None = None  # the attempt's fencing token (None: any attempt of the node)
    started_at: dt.datetime | None = None  # when it started, if claimed ahead and not recorded


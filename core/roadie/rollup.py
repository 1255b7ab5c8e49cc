"""The overview's numbers: the per-minute rollup that workers add to as they settle, and the
statistics read from it (``Roadie.stats``, ``/api/stats``, the ``/overview`` page).

Each process gathers what it counts in a ``Rollup`` (attempts started, tasks ended per final
status, wait and run times as log-spaced histograms) per minute and executor, and writes it
in one short transaction: a worker's maintenance once a second and when the worker stops,
other processes (a cancel, a crash recovery) at once. Histogram bucket 0 holds times under
1 ms, bucket ``i`` times in [2^(i-1), 2^i) ms, the last one everything longer; percentiles are
interpolated inside a bucket on a log scale (so within a factor of 2, usually much closer).
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from roadie.rollup_columns import ROLLUP_BUCKETS, ROLLUP_COUNTS, ROLLUP_HISTOGRAMS
from roadie.status import Status

if TYPE_CHECKING:
    from roadie.records import TaskRecord
    from roadie.store import Store

log = logging.getLogger("roadie.rollup")

COLUMNS = ROLLUP_COUNTS + ROLLUP_HISTOGRAMS
_INDEX = {name: i for i, name in enumerate(COLUMNS)}
_WAIT, _RUN = _INDEX["wait_0"], _INDEX["run_0"]
_ENDED = {Status.SUCCESSFUL: _INDEX["succeeded"], Status.FAILED: _INDEX["failed"],
          Status.CANCELLED: _INDEX["cancelled"]}
_ENDED_BY_INT = {int(status): column for status, column in _ENDED.items()}
_MINUTE = dt.timedelta(minutes=1)
MIN_WINDOW, MAX_WINDOW = 60, 7 * 86400  # seconds a stats window may span
# bucket widths of the throughput series: the smallest that gives at most MAX_POINTS points
STEPS = (60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
MAX_POINTS = 180
HOURLY_AFTER = 86400  # windows longer than this (seconds) read the hourly rollup
HOURLY_TIMES_FROM = 6 * 3600  # and windows from this long on read wait and run times from it
KEEP_AT_LEAST = dt.timedelta(days=8)  # retention never prunes the rollup younger than this


def minute_of(when: dt.datetime) -> dt.datetime:
    """The start of ``when``'s minute."""
    return when.replace(second=0, microsecond=0)


def bucket_of(seconds: float) -> int:
    """The histogram bucket of a duration."""
    ms = seconds * 1000.0
    if not ms >= 1.0:  # (negative clock steps and NaN too)
        return 0
    return min(math.frexp(ms)[1], ROLLUP_BUCKETS - 1)


def percentile(histogram: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a histogram, in milliseconds; None when it is empty."""
    total = sum(histogram)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(histogram):
        if n and seen + n >= rank:
            within = (rank - seen) / n
            if i == 0:
                return within
            low = float(2 ** (i - 1))
            if i == len(histogram) - 1:
                return low
            return low * 2.0 ** within
        seen += n
    return float(2 ** (len(histogram) - 2))


class Rollup:
    """What one process counted and has not written yet (thread-safe). A start or an end is
    only appended to a deque (atomic, no lock: the worker's threads and claim loop call it
    for every task) and folded into the per-minute rows when they are written."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[tuple[dt.datetime, str], list[int]] = {}
        # (executor, at, waited) for a start, (executor, at, int(status), ran) for an end:
        # of atoms only, so that the garbage collector stops tracking them at once (held
        # for up to a second, thousands of them would make it run full collections)
        self._events: collections.deque[tuple[Any, ...]] = collections.deque()

    def _row(self, at: dt.datetime, executor: str) -> list[int]:
        key = (minute_of(at), executor)
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = [0] * len(COLUMNS)
        return row

    def started(self, executor: str, at: dt.datetime, waited: float) -> None:
        """An attempt of ``executor`` started ``at``, ``waited`` seconds after it was due."""
        self._events.append((executor, at, waited))

    def ended(self, executor: str, status: Status, at: dt.datetime,
              ran: float | None = None) -> None:
        """An attempt or a task of ``executor`` ended ``at``: a final ``status`` counts the
        task; ``ran`` (seconds, when it ran) goes to the run times."""
        self._events.append((executor, at, int(status), ran))

    def ended_many(self, ends: Iterable[tuple[str, Status, dt.datetime, float | None]],
                   ) -> None:
        """``ended`` for each of ``ends`` (executor, status, at, ran): a worker's settled
        batch."""
        self._events.extend((executor, at, int(status), ran)
                            for executor, status, at, ran in ends)

    def _fold(self) -> None:
        """Count the appended starts and ends into the rows (under the lock). Runs of events
        of one executor and minute (nearly all of them: a worker folds a second's worth) go
        to the row found for the first, without building its key again."""
        events = self._events
        found: dict[str, tuple[dt.datetime, dt.datetime, list[int]]] = {}
        bucket, wait, run, ended = bucket_of, _WAIT, _RUN, _ENDED_BY_INT
        while events:
            try:
                event = events.popleft()
            except IndexError:  # (another flush took the last one)
                break
            executor, at = event[0], event[1]
            cached = found.get(executor)
            if cached is not None and cached[0] <= at < cached[1]:
                row = cached[2]
            else:
                start = minute_of(at)
                row = self._row(start, executor)
                found[executor] = (start, start + _MINUTE, row)
            if len(event) == 3:  # a start: (executor, at, waited)
                row[0] += 1
                row[wait + bucket(event[2])] += 1
            else:  # an end: (executor, at, status, ran)
                column = ended.get(event[2])
                if column is not None:
                    row[column] += 1
                if event[3] is not None:
                    row[run + bucket(event[3])] += 1

    def ended_tasks(self, records: Iterable[TaskRecord]) -> None:
        """Tasks that ended outside a worker's settle (a cancel, a crash recovery)."""
        for record in records:
            if record.status in _ENDED:
                self.ended(record.executor, record.status,
                           record.finished_at or record.updated_at)

    def __bool__(self) -> bool:
        return bool(self._rows) or bool(self._events)

    def flush(self, store: Store) -> int:
        """Write what was counted (one transaction, ``Store.add_rollup``); returns how many
        rows. On a failure it is kept for the next flush and the error raised."""
        return self.write_with(store.add_rollup)

    def write_with(self, write: Callable[[list[dict[str, Any]]], Any]) -> int:
        """Hand what was counted to ``write``, as rows that ``Store.add_rollup`` takes (none
        when nothing was: a stopping worker's ``Store.add_rollup_and_stop`` still marks its
        node); returns how many rows. On a failure they are kept for the next flush and the
        error raised."""
        with self._lock:
            self._fold()
            rows, self._rows = self._rows, {}
        try:
            write([{"at": at, "executor": executor, **dict(zip(COLUMNS, row, strict=True))}
                   for (at, executor), row in rows.items()])
        except Exception:
            with self._lock:
                for key, row in rows.items():
                    mine = self._rows.setdefault(key, [0] * len(COLUMNS))
                    for i, n in enumerate(row):
                        mine[i] += n
            raise
        return len(rows)


# -- reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    """One point of the throughput series: what started and ended in [at, at + step)."""

    at: dt.datetime
    started: int
    succeeded: int
    failed: int
    cancelled: int


@dataclass(frozen=True)
class DepthSample:
    """The queue's depth at a minute (a sample by worker maintenance, or now)."""

    at: dt.datetime
    waiting: int
    running: int


@dataclass(frozen=True)
class ExecutorStats:
    """One executor's queue now, its failures in the last hour, and its wait and run times
    over the window (milliseconds; None without a sample)."""

    executor: str
    waiting: int
    running: int
    failed_last_hour: int
    wait_p50_ms: float | None
    wait_p95_ms: float | None
    run_p50_ms: float | None
    run_p95_ms: float | None


@dataclass(frozen=True)
class Stats:
    """``Roadie.stats``: the throughput series (``step`` seconds a bucket), the queue's depth
    over the window, and per executor its queue and times."""

    window: int
    step: int
    now: dt.datetime
    buckets: list[Bucket]
    depth: list[DepthSample]
    executors: list[ExecutorStats]

    def as_json(self) -> dict[str, Any]:
        """The ``/api/stats`` document."""
        return {
            "buckets": [{"at": b.at.isoformat(), "started": b.started,
                         "succeeded": b.succeeded, "failed": b.failed,
                         "cancelled": b.cancelled} for b in self.buckets],
            "executors": [{"executor": e.executor, "waiting": e.waiting, "running": e.running,
                           "failed_last_hour": e.failed_last_hour,
                           "wait_p50_ms": _ms(e.wait_p50_ms), "wait_p95_ms": _ms(e.wait_p95_ms),
                           "run_p50_ms": _ms(e.run_p50_ms), "run_p95_ms": _ms(e.run_p95_ms)}
                          for e in self.executors],
        }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def duration(ms: float | None) -> str:
    """A duration in words: 850 ms, 12.5 s, 3.2 min, 1.5 h."""
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"
    seconds = ms / 1000
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def check_window(window: Any) -> int:
    """``window`` as whole seconds; raises ValueError saying what is allowed."""
    if isinstance(window, bool) or not isinstance(window, (int, str)):
        raise ValueError(f"window={window!r}: give a whole number of seconds")
    try:
        seconds = int(str(window).strip())
    except ValueError:
        raise ValueError(f"window={window!r} is not a whole number of seconds (for example "
                         f"3600 for an hour)") from None
    if not MIN_WINDOW <= seconds <= MAX_WINDOW:
        raise ValueError(f"window={seconds} is out of range: from {MIN_WINDOW} seconds to "
                         f"{MAX_WINDOW} (7 days)")
    return seconds


def step_of(window: int) -> int:
    """The throughput series' bucket width for ``window`` seconds (an hour at least beyond
    HOURLY_AFTER: those windows read the hourly rollup)."""
    for step in STEPS:
        if window / step <= MAX_POINTS and (window <= HOURLY_AFTER or step >= 3600):
            return step
    return STEPS[-1]


def read_stats(store: Store, window: int, now: dt.datetime,
               names: Iterable[str] = ()) -> Stats:
    """The statistics of the last ``window`` seconds (see ``Stats``), per executor for
    ``names`` and every executor with tasks open or counted in the window. Windows longer
    than HOURLY_AFTER read the hourly rollup (from the start of the window's first hour), and
    so do the wait and run times of windows from HOURLY_TIMES_FROM on."""
    step = step_of(window)
    hourly = window > HOURLY_AFTER
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    last = epoch + dt.timedelta(seconds=(now - epoch).total_seconds() // step * step)
    first = last - dt.timedelta(seconds=step * (math.ceil(window / step) - 1))
    sums: dict[dt.datetime, list[int]] = {}
    for at, *ended in store.rollup_counts(first, hourly=hourly):
        start = epoch + dt.timedelta(seconds=(at - epoch).total_seconds() // step * step)
        into = sums.setdefault(start, [0, 0, 0, 0])
        for i, n in enumerate(ended):
            into[i] += n
    buckets = []
    at = first
    while at <= last:
        buckets.append(Bucket(at, *sums.get(at, (0, 0, 0, 0))))
        at += dt.timedelta(seconds=step)
    counts = store.executor_counts()
    since = now - dt.timedelta(seconds=window)
    if hourly:
        since = since.replace(minute=0, second=0, microsecond=0)
    depth = [DepthSample(when, w, r) for when, w, r in store.rollup_depth(since, hourly=hourly)]
    depth.append(DepthSample(now, sum(c[0] for c in counts.values()),
                             sum(c[2] for c in counts.values())))
    # the histograms (28 + 28 sums a row) of windows from 6 hours on come from the hours,
    # from the start of the window's first hour
    hourly_times = window >= HOURLY_TIMES_FROM
    times = store.rollup_times(since.replace(minute=0, second=0, microsecond=0)
                               if hourly_times else since, hourly=hourly_times)
    failed = store.rollup_failed(minute_of(now) - dt.timedelta(minutes=59))
    executors = []
    for name in sorted(set(names) | set(counts) | set(times) | set(failed)):
        waiting, _, running = counts.get(name, (0, 0, 0))
        waits, runs = times.get(name, ([], []))
        executors.append(ExecutorStats(
            name, waiting, running, failed.get(name, 0), percentile(waits, 0.5),
            percentile(waits, 0.95), percentile(runs, 0.5), percentile(runs, 0.95)))
    return Stats(window, step, now, buckets, depth, executors)


def retention_cutoff(cutoffs: Iterable[dt.datetime], now: dt.datetime) -> dt.datetime | None:
    """Before when retention deletes the rollup's minutes: the oldest of the tasks' cutoffs
    (the rollup outlives every task it counted), never younger than KEEP_AT_LEAST."""
    times = list(cutoffs)
    if not times:
        return None
    return min(min(times), now - KEEP_AT_LEAST)

"""Schedules: recurring rules (cron in a time zone, or a fixed interval) that make tasks.

There is no scheduler process to keep alive. Every running worker takes part: a thread of each
worker wakes at the next due slot and tries to fire it. Firing is one transaction that moves
the schedule on to its next slot (a compare-and-set on the schedule's version) and inserts the
slot's task; a unique index on ``roadie_tasks (schedule, scheduled_for)`` turns any second
insert of a slot into a no-op. So each slot fires exactly once however many workers run, and a
worker killed while it fires loses nothing: its transaction never committed, and another worker
fires the slot.

Time rules (documented in docs/schedules.md):

- ``Every`` slots are multiples of the interval since the Unix epoch (UTC): ``every=60`` fires
  at the top of each minute.
- ``Cron`` is evaluated in the schedule's time zone (zoneinfo) by cronsim. When the clocks
  spring forward, a job whose hour field names an hour that does not exist that day runs once,
  at the moment of the jump (02:30 runs at 03:00); when they fall back, such a job runs once,
  on the first pass through the repeated hour. Jobs whose hour field is ``*`` (or a step) run
  in every hour that really happens: one run fewer on the spring day, one more in autumn.
- A slot that no worker fired within ``LATE_AFTER`` seconds of its time was missed (workers
  were down); ``catch_up`` decides: ``"skip"`` none, ``"latest"`` the newest missed one, or
  ``"all"`` (at most ``MAX_CATCH_UP`` of them, the newest).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import random
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from roadie.errors import (
    DatabaseError,
    PluginError,
    RoadieError,
    ScheduleError,
    ScheduleNotFound,
)
from roadie.store import CHANNEL_SCHEDULES

if TYPE_CHECKING:
    from roadie.app import Roadie
    from roadie.records import TaskRecord
    from roadie.store.schedules import ScheduleRow

log = logging.getLogger("roadie.schedules")

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
CATCH_UP = ("skip", "latest", "all")
MAX_CATCH_UP = 100  # "all" fires at most this many missed slots (the newest)
LATE_AFTER = 10.0  # seconds: a slot not fired by then was missed
MIN_INTERVAL = 0.1  # seconds
TASK_OPTIONS = ("name", "owner", "group", "priority", "tags", "timeout")
_SCAN_LIMIT = 20_000  # slots walked in one firing before jumping ahead (long downtimes)

_MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day-of-month", 1, 31), ("month", 1, 12),
           ("day-of-week", 0, 7))


def zone_of(name: str) -> ZoneInfo:
    """The time zone called ``name`` (IANA, e.g. ``"Europe/Berlin"``); a clear error if there
    is none."""
    if not isinstance(name, str) or not name.strip():
        raise ScheduleError(f"time zone {name!r} is not a name: use an IANA name such as "
                            f"'Europe/Berlin' or 'UTC'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {name!r}: use an IANA name such as "
                            f"'Europe/Berlin' or 'UTC'") from None


# -- rules ---------------------------------------------------------------------------------


class Rule:
    """What ``Cron`` and ``Every`` share: the options of the schedule and of its tasks.

    ``context`` is the context map of every task it makes; ``catch_up`` is ``"skip"``,
    ``"latest"`` or ``"all"``; ``jitter`` delays each task by up to that many seconds (at
    random); ``overlap=False`` skips a slot while the schedule's previous task has not ended;
    ``task_options`` are ``add_task``'s ``name, owner, group, priority, tags, timeout``.
    """

    def __init__(self, *, context: Mapping[str, Any] | None = None, catch_up: str = "latest",
                 jitter: float = 0.0, overlap: bool = True, **task_options: Any) -> None:
        self.context = dict(context or {})
        self.catch_up = check_catch_up(catch_up)
        self.jitter = check_jitter(jitter)
        self.overlap = bool(overlap)
        self.task_options = check_task_options(task_options)

    def next_after(self, when: dt.datetime) -> dt.datetime:
        """The first slot strictly after ``when`` (timezone-aware), in UTC."""
        return next(self.slots_after(when))

    def slots_after(self, when: dt.datetime) -> Iterator[dt.datetime]:
        """The slots strictly after ``when``, in order, in UTC (endless)."""
        raise NotImplementedError

    def describe(self) -> str:
        """A short human description (``cron '0 3 * * *' in Europe/Berlin``, ``every 30 s``)."""
        raise NotImplementedError

    def columns(self) -> dict[str, Any]:
        """How the rule is stored: cron, every, timezone."""
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        """The schedule options, as ``add_schedule`` takes them."""
        return {"catch_up": self.catch_up, "jitter": self.jitter, "overlap": self.overlap,
                **self.task_options}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


class Cron(Rule):
    """A cron rule: five fields (minute hour day-of-month month day-of-week, or a macro such as
    ``@daily``) evaluated in ``timezone``. ``schedule = roadie.Cron("0 3 * * *",
    timezone="Europe/Berlin")`` on an executor class declares a schedule."""

    def __init__(self, expression: str, timezone: str = "UTC", **options: Any) -> None:
        super().__init__(**options)
        self.expression, self.zone = _compiled_cron(expression, timezone)
        self.timezone = timezone

    def slots_after(self, when: dt.datetime) -> Iterator[dt.datetime]:
        from cronsim import CronSim

        when = _aware(when)
        previous = when
        for local in CronSim(self.expression, when.astimezone(self.zone)):
            slot = local.astimezone(UTC)
            # cronsim can step back when it starts inside a repeated (fall-back) hour:
            # keep only slots that move forward
            if slot > previous:
                previous = slot
                yield slot

    def describe(self) -> str:
        return f"cron {self.expression!r} in {self.timezone}"

    def columns(self) -> dict[str, Any]:
        return {"cron": self.expression, "every": None, "timezone": self.timezone}


class Every(Rule):
    """A fixed interval: ``Every(seconds=30)``, ``Every(dt.timedelta(minutes=5))`` or
    ``Every(minutes=5)``. Slots are multiples of the interval since the Unix epoch (UTC), so
    ``Every(seconds=60)`` fires at the top of each minute."""

    def __init__(self, seconds: float | dt.timedelta | None = None, *, minutes: float = 0,
                 hours: float = 0, days: float = 0, **options: Any) -> None:
        super().__init__(**options)
        total = check_interval(seconds if seconds is not None else 0, allow_zero=True)
        for label, amount, factor in (("minutes", minutes, 60), ("hours", hours, 3600),
                                      ("days", days, 86400)):
            total += check_interval(amount, what=label, allow_zero=True) * factor
        self.seconds = check_interval(total)
        self._micros = round(self.seconds * 1_000_000)

    def slots_after(self, when: dt.datetime) -> Iterator[dt.datetime]:
        micros = _micros_since_epoch(_aware(when))
        index = micros // self._micros + 1
        while True:
            yield EPOCH + dt.timedelta(microseconds=index * self._micros)
            index += 1

    def describe(self) -> str:
        return f"every {format_seconds(self.seconds)}"

    def columns(self) -> dict[str, Any]:
        return {"cron": None, "every": self.seconds, "timezone": "UTC"}


def format_seconds(seconds: float) -> str:
    """``30 s``, ``5 min``, ``2 h``, ``1 d``, ``90 s``."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _aware(when: dt.datetime) -> dt.datetime:
    if when.tzinfo is None:
        raise ValueError(f"naive datetime {when!r}: pass a timezone-aware time")
    return when


def _micros_since_epoch(when: dt.datetime) -> int:
    delta = when - EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


@functools.lru_cache(maxsize=256)
def _compiled_cron(expression: str, timezone: str) -> tuple[str, ZoneInfo]:
    """Check a cron expression (through cronsim) and its zone; returns the five fields and the
    zone. Errors name the expression and the field."""
    from cronsim import CronSim, CronSimError

    if not isinstance(expression, str):
        raise ScheduleError(f"a cron expression is a string such as '0 3 * * *', not "
                            f"{type(expression).__name__}")
    zone = zone_of(timezone)
    text = " ".join(expression.split())
    text = _MACROS.get(text.lower(), text)
    fields = text.split(" ") if text else []
    if len(fields) != 5:
        raise ScheduleError(
            f"invalid cron expression {expression!r}: it has {len(fields)} field(s); cron needs "
            f"5 (minute hour day-of-month month day-of-week) or a macro such as @daily")
    try:
        iterator = CronSim(text, dt.datetime(2000, 1, 1, tzinfo=zone))
        next(iterator)
    except CronSimError as exc:
        raise ScheduleError(_cron_problem(expression, fields, str(exc))) from None
    except StopIteration:
        raise ScheduleError(f"cron expression {expression!r} never fires") from None
    return text, zone


def _cron_problem(expression: str, fields: list[str], reason: str) -> str:
    """A clear message for a cron expression cronsim refused (it says ``Bad minute``)."""
    for (label, low, high), field in zip(_FIELDS, fields, strict=True):
        if label not in reason:
            continue
        for part in field.split(","):
            base, _, step = part.partition("/")
            if step and (not step.isdigit() or int(step) == 0):
                return (f"invalid cron expression {expression!r}: {label} step {step!r} must "
                        f"be a whole number of at least 1")
            for number in re.findall(r"\d+", base):
                if not low <= int(number) <= high:
                    return (f"invalid cron expression {expression!r}: {label} {number} is out "
                            f"of range ({low}-{high})")
        return (f"invalid cron expression {expression!r}: {label} field {field!r} is not "
                f"valid (use numbers {low}-{high}, *, ranges a-b, steps */n, lists a,b)")
    return f"invalid cron expression {expression!r}: {reason}"


# -- checks --------------------------------------------------------------------------------


def check_interval(value: Any, *, what: str = "every", allow_zero: bool = False) -> float:
    """Seconds from a number or a timedelta; a clear error for anything else."""
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ScheduleError(f"{what}={value!r}: give a number of seconds or a timedelta")
    if allow_zero and seconds == 0:
        return 0.0
    if not math.isfinite(seconds) or seconds < MIN_INTERVAL:
        raise ScheduleError(f"{what}={value!r}: an interval must be at least {MIN_INTERVAL:g} "
                            f"seconds")
    return seconds


def check_catch_up(value: Any) -> str:
    """``"skip"``, ``"latest"`` or ``"all"``."""
    if value not in CATCH_UP:
        raise ScheduleError(f"catch_up={value!r}: use one of {', '.join(CATCH_UP)}")
    return str(value)


def check_jitter(value: Any) -> float:
    """A number of seconds, 0 or more."""
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value < 0:
        raise ScheduleError(f"jitter={value!r}: give a number of seconds, 0 or more")
    return float(value)


def check_task_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Only ``add_task``'s options that make sense for every slot."""
    unknown = sorted(set(options) - set(TASK_OPTIONS))
    if unknown:
        raise ScheduleError(f"unknown task option(s) {', '.join(unknown)}: a schedule's tasks "
                            f"take {', '.join(TASK_OPTIONS)}")
    return dict(options)


def check_name(name: Any) -> str:
    """A schedule name: 1 to 255 printable characters."""
    if not isinstance(name, str) or not name.strip() or len(name) > 255 or \
            any(not c.isprintable() for c in name):
        raise ScheduleError(f"schedule name {name!r}: use 1 to 255 printable characters")
    return name


def make_rule(*, cron: str | None, every: float | dt.timedelta | None, timezone: str,
              **options: Any) -> Rule:
    """A Cron or an Every from ``add_schedule``'s arguments (exactly one of them)."""
    if (cron is None) == (every is None):
        raise ScheduleError("give exactly one of cron='0 3 * * *' or every=<seconds>")
    if cron is not None:
        return Cron(cron, timezone=timezone, **options)
    if timezone != "UTC":
        zone_of(timezone)
        raise ScheduleError(f"timezone={timezone!r} applies to cron schedules only; interval "
                            f"slots are counted in UTC")
    return Every(every, **options)


# -- what is stored ------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleInfo:
    """A schedule as stored, with its next slot and, when it cannot fire, why."""

    name: str
    executor: str
    origin: str  # "api" (add_schedule / CLI) or "executor" (a class attribute)
    cron: str | None
    every: dt.timedelta | None
    timezone: str
    catch_up: str
    jitter: float
    overlap: bool
    paused: bool
    task_name: str
    owner: str | None
    group: str | None
    priority: int
    tags: frozenset[str]
    timeout: float | None
    next_at: dt.datetime | None  # the next slot, UTC (None while paused)
    last_slot: dt.datetime | None
    last_task_id: int | None
    last_fired_by: str | None
    note: str
    created_at: dt.datetime
    updated_at: dt.datetime
    problem: str | None = None  # e.g. the executor is installed nowhere: it does not fire

    @property
    def rule(self) -> Rule:
        """The rule as a Cron or an Every."""
        return rule_of(self.cron, self.every.total_seconds() if self.every else None,
                       self.timezone)

    @property
    def description(self) -> str:
        """``cron '0 3 * * *' in Europe/Berlin`` or ``every 30 s``."""
        return self.rule.describe()

    @property
    def state(self) -> str:
        """``paused``, ``broken`` (see ``problem``) or ``active``."""
        if self.paused:
            return "paused"
        return "broken" if self.problem else "active"

    @property
    def next_local(self) -> dt.datetime | None:
        """The next slot in the schedule's own time zone."""
        if self.next_at is None:
            return None
        return self.next_at.astimezone(zone_of(self.timezone))


@functools.lru_cache(maxsize=512)
def rule_of(cron: str | None, every: float | None, timezone: str) -> Rule:
    """The rule of a stored schedule (cached: firing needs it every slot)."""
    if cron is not None:
        return Cron(cron, timezone=timezone)
    return Every(every)


@dataclass(frozen=True)
class FirePlan:
    """What one firing of a due schedule does."""

    slots: list[dt.datetime]  # the slots to make tasks for, oldest first
    next_at: dt.datetime  # the slot after now
    missed: int  # missed slots that are not fired (catch_up)
    note: str


def plan_firing(rule: Rule, next_at: dt.datetime, now: dt.datetime, *, catch_up: str,
                overlap: bool = True, late_after: float = LATE_AFTER) -> FirePlan:
    """The slots from ``next_at`` up to ``now`` that fire: every slot still on time (less
    than ``late_after`` seconds late), and of the missed ones what ``catch_up`` says."""
    late_cut = now - dt.timedelta(seconds=late_after)
    on_time: list[dt.datetime] = []
    missed: deque[dt.datetime] = deque(maxlen=MAX_CATCH_UP)
    missed_count = 0
    first_missed: dt.datetime | None = None
    more = False
    slot = next_at
    slots = rule.slots_after(next_at)
    walked = 0
    while slot <= now:
        if slot < late_cut:
            missed_count += 1
            missed.append(slot)
            first_missed = first_missed or slot
        else:
            on_time.append(slot)
        walked += 1
        if walked == _SCAN_LIMIT:  # a very long downtime: jump to the newest slots
            more = True
            gap = (slot - next_at) / walked
            restart = late_cut - gap * (MAX_CATCH_UP + 1)
            slots = rule.slots_after(max(restart, slot))
        slot = next(slots)
    if catch_up == "all":
        caught = list(missed)
    elif catch_up == "latest":
        caught = list(missed)[-1:]
    else:
        caught = []
    chosen = caught + on_time
    note = ""
    if missed_count:
        first = first_missed.isoformat(timespec="seconds") if first_missed else "?"
        last = missed[-1].isoformat(timespec="seconds")
        note = (f"{'more than ' if more else ''}{missed_count} slot(s) from {first} to {last} "
                f"were missed (no worker ran); catch_up={catch_up!r} fired {len(caught)}")
    if not overlap and len(chosen) > 1:
        chosen = chosen[-1:]  # without overlap, the newest slot stands for all
        note = (note + "; " if note else "") + "overlap=False: only the newest slot fired"
    return FirePlan(chosen, slot, missed_count + len(on_time) - len(chosen), note)


# -- the operations behind Roadie's schedule methods ----------------------------------------


def add_schedule(app: Roadie, name: str, executor: str, context: Mapping[str, Any] | None,
                 *, cron: str | None, every: float | dt.timedelta | None, timezone: str,
                 catch_up: str, jitter: float, overlap: bool, replace: bool,
                 task_options: Mapping[str, Any]) -> ScheduleInfo:
    """``Roadie.add_schedule``."""
    name = check_name(name)
    rule = make_rule(cron=cron, every=every, timezone=timezone, context=context,
                     catch_up=catch_up, jitter=jitter, overlap=overlap, **task_options)
    now = app.clock()
    row = _row(app, name, executor, rule, origin="api", now=now)
    app.store.schedules.add(row, replace=replace, now=now)
    return get_schedule(app, name)


def _row(app: Roadie, name: str, executor: str, rule: Rule, *, origin: str,
         now: dt.datetime) -> dict[str, Any]:
    """A schedule row: the rule, its options, and the template of its tasks (the context
    encoded once, with the checks of ``add_task``)."""
    options = dict(rule.task_options)
    options.setdefault("name", name)
    try:
        spec = app._new_task(executor, rule.context, {}, **options)
    except TypeError as exc:
        raise ScheduleError(f"schedule {name!r}: {exc}") from None
    return {
        "name": name, "executor": spec.executor, "origin": origin, **rule.columns(),
        "catch_up": rule.catch_up, "jitter": rule.jitter, "overlap": rule.overlap,
        "task_name": spec.name, "owner": spec.owner, "task_group": spec.group,
        "plugins": dict(spec.plugins), "context": spec.context, "captured": spec.captured,
        "isolation_key": spec.isolation_key, "key_limit": spec.key_limit,
        "priority": spec.priority, "tags": spec.tags,
        "timeout": spec.timeout, "next_at": rule.next_after(now),
    }


def get_schedule(app: Roadie, name: str) -> ScheduleInfo:
    """One schedule by name (raises ScheduleNotFound)."""
    row = app.store.schedules.get(name)
    if row is None:
        raise _not_found(app, name)
    return _info(row, _problems(app, [row]).get(row.name))


def list_schedules(app: Roadie) -> list[ScheduleInfo]:
    """Every schedule, by name, with why it cannot fire when it cannot."""
    rows = app.store.schedules.all()
    problems = _problems(app, rows)
    return [_info(row, problems.get(row.name)) for row in rows]


def remove_schedule(app: Roadie, name: str) -> None:
    """Delete a schedule (its tasks stay). A schedule an installed executor declares comes
    back with the next worker: pause it instead."""
    info = get_schedule(app, name)
    if info.origin == "executor" and info.problem is None:
        raise ScheduleError(
            f"schedule {name!r} is declared by executor {info.executor} (its class attribute "
            f"`schedule`), and workers that have it add it again: pause it instead "
            f"(`roadie schedules pause {name}`), or remove the attribute")
    app.store.schedules.remove(name)


def pause_schedule(app: Roadie, name: str) -> ScheduleInfo:
    """Stop firing until resumed (the slots in between are not caught up)."""
    if not app.store.schedules.set_paused(name, True, None, now=app.clock()):
        raise _not_found(app, name)
    return get_schedule(app, name)


def resume_schedule(app: Roadie, name: str) -> ScheduleInfo:
    """Fire again, from the first slot after now."""
    row = app.store.schedules.get(name)
    if row is None:
        raise _not_found(app, name)
    now = app.clock()
    rule = rule_of(row.cron, row.every, row.timezone)
    app.store.schedules.set_paused(name, False, rule.next_after(now), now=now)
    return get_schedule(app, name)


def run_now(app: Roadie, name: str) -> TaskRecord:
    """Make one task of a schedule now, outside its slots (``roadie schedules run-now``)."""
    if app.store.schedules.get(name) is None:
        raise _not_found(app, name)
    task = app.store.schedules.run_now(name, now=app.clock(), decoder=app.decode_for_task)
    if task is None:
        raise _not_found(app, name)
    app._task_added(task)
    return task


def fire_due(app: Roadie, *, now: dt.datetime | None = None, node: str = "api",
             executors: list[str] | None = None) -> list[TaskRecord]:
    """Fire every due schedule whose executor is among ``executors`` (default: those that
    load here), once, as of ``now``; returns the tasks made. What each worker does at each
    due slot; safe to call from any number of processes at once."""
    now = now or app.clock()
    if executors is None:
        executors = firing_executors(app)
    made: list[TaskRecord] = []
    for row in app.store.schedules.due(now, executors):
        try:
            rule = rule_of(row.cron, row.every, row.timezone)
        except ScheduleError as exc:  # e.g. a zone this machine's tzdata lacks: not the others
            log.warning("schedule %s cannot fire here: %s", row.name, exc)
            continue
        assert row.next_at is not None
        plan = plan_firing(rule, row.next_at, now, catch_up=row.catch_up, overlap=row.overlap)
        slots = [(slot, _jittered(slot, row.jitter)) for slot in plan.slots]
        tasks = app.store.schedules.fire(row, slots, plan.next_at, plan.note, node=node,
                                         now=now, decoder=app.decode_for_task)
        for task in tasks or ():
            app._task_added(task)
        made.extend(tasks or ())
    return made


def _jittered(slot: dt.datetime, jitter: float) -> dt.datetime:
    if jitter <= 0:
        return slot
    return slot + dt.timedelta(seconds=random.uniform(0, jitter))


def firing_executors(app: Roadie) -> list[str]:
    """The executors whose schedules this process fires: those installed here that load."""
    names = []
    for qualified in app.plugins.executor_names():
        try:
            app.plugins.load_executor(qualified)
        except RoadieError:
            continue
        names.append(qualified)
    return names


def declared_rules(app: Roadie, executors: list[str]) -> dict[str, Rule]:
    """The schedules executors declare with their ``schedule`` class attribute, by executor
    name (which is also the schedule's name)."""
    found: dict[str, Rule] = {}
    for qualified in executors:
        try:
            executor_class = app.plugins.load_executor(qualified)
        except RoadieError:
            continue
        rule = getattr(executor_class, "schedule", None)
        if rule is None:
            continue
        if not isinstance(rule, Rule):
            log.warning("executor %s: its class attribute `schedule` must be a roadie.Cron or "
                        "roadie.Every, not %r; ignored", qualified, rule)
            continue
        found[qualified] = rule
    return found


def sync_declared(app: Roadie, executors: list[str]) -> list[str]:
    """Store the schedules that ``executors`` declare (named after the executor), update the
    changed ones, and delete those they no longer declare; returns the declared names."""
    rows = []
    now = app.clock()
    for qualified, rule in declared_rules(app, executors).items():
        try:
            rows.append(_row(app, qualified, qualified, rule, origin="executor", now=now))
        except RoadieError as exc:
            log.warning("executor %s declares a schedule that cannot be stored: %s",
                        qualified, exc)
    app.store.schedules.sync(rows, executors, now=now)
    return [row["name"] for row in rows]


def _not_found(app: Roadie, name: str) -> ScheduleNotFound:
    names = [row.name for row in app.store.schedules.all()]
    known = f" (schedules: {', '.join(names[:10])})" if names else " (there are no schedules)"
    return ScheduleNotFound(f"no schedule named {name!r}{known}")


def _problems(app: Roadie, rows: list[ScheduleRow]) -> dict[str, str]:
    """Why schedules cannot fire: their executor is installed neither here nor on a live
    worker, or it is broken here."""
    problems: dict[str, str] = {}
    advertised: set[str] | None = None
    for row in rows:
        if app.plugins.has_executor(row.executor):
            try:
                app.plugins.load_executor(row.executor)
                continue
            except PluginError as exc:
                local_error: str | None = str(exc)
            except RoadieError as exc:
                local_error = str(exc)
        else:
            local_error = None
        if advertised is None:
            from roadie.store import utcnow

            now = utcnow()
            advertised = {
                name for node in app.store.list_nodes()
                if node.is_alive(now, app.settings.heartbeat_grace) for name in node.executors
            }
        if row.executor in advertised:
            continue
        dist = row.executor.partition(":")[0]
        problems[row.name] = local_error or (
            f"executor {row.executor} is not installed here and no running worker has it: "
            f"the schedule does not fire until a worker with plugin {dist} runs")
    return problems


def _info(row: ScheduleRow, problem: str | None) -> ScheduleInfo:
    return ScheduleInfo(
        name=row.name, executor=row.executor, origin=row.origin, cron=row.cron,
        every=dt.timedelta(seconds=row.every) if row.every is not None else None,
        timezone=row.timezone, catch_up=row.catch_up, jitter=row.jitter, overlap=row.overlap,
        paused=row.paused, task_name=row.task_name, owner=row.owner, group=row.task_group,
        priority=row.priority, tags=frozenset(t for t in row.tags.split(",") if t),
        timeout=row.timeout, next_at=row.next_at, last_slot=row.last_slot,
        last_task_id=row.last_task_id, last_fired_by=row.last_fired_by, note=row.note,
        created_at=row.created_at, updated_at=row.updated_at, problem=problem,
    )


# -- the firing thread of a worker ----------------------------------------------------------


class Scheduler:
    """The thread of a worker that fires its share of schedules.

    It syncs the schedules its executors declare, then sleeps until the next due slot (or at
    most ``refresh`` seconds, to see schedules other processes changed; on PostgreSQL a
    NOTIFY wakes it at once) and fires what is due.
    """

    def __init__(self, app: Roadie, *, node: str, refresh: float | None = None,
                 on_database_error: Callable[[BaseException], None] | None = None) -> None:
        self.app = app
        self.node = node
        self.on_database_error = on_database_error  # the worker's outage log, when given
        if refresh is None:
            refresh = app.settings.heartbeat_interval if app.store.is_postgres else 1.0
        self.refresh = refresh
        self.fired = 0
        self._still_due = 0  # ticks in a row after which a slot was still due
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Scheduler:
        """Start the thread."""
        self._thread = threading.Thread(target=self._main, name="roadie-schedules", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (a firing in progress completes or rolls back as a whole)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _on_notification(self, channel: str, _payload: str) -> None:
        if channel == CHANNEL_SCHEDULES:
            self._wake.set()

    def _main(self) -> None:
        hub = self.app.store.listen()
        token = hub.subscribe(self._on_notification)
        executors: list[str] | None = None
        try:
            while not self._stop.is_set():
                self._wake.clear()
                wait = self.refresh
                try:
                    found = firing_executors(self.app)  # (environments may come and go)
                    if found != executors:
                        sync_declared(self.app, found)
                        executors = found
                    wait = self.tick(executors)
                except DatabaseError as exc:
                    if self.on_database_error is None:
                        log.warning("schedules: %s", exc)
                    else:  # said once, then every so often, with how long it has lasted
                        self.on_database_error(exc)
                except RoadieError as exc:
                    log.warning("schedules: %s", exc)
                except Exception:  # keep firing whatever happens
                    log.exception("schedules: firing failed")
                self._wake.wait(wait)
        finally:
            hub.unsubscribe(token)

    def tick(self, executors: list[str]) -> float:
        """Fire what is due; returns how long to sleep before the next slot."""
        self.fired += len(fire_due(self.app, node=self.node, executors=executors))
        next_due = self.app.store.schedules.next_due(executors)
        if next_due is None:
            return self.refresh
        seconds = (next_due - self.app.clock()).total_seconds()
        if seconds > 0:
            self._still_due = 0
            return min(self.refresh, seconds)
        # due again at once (a slot came while firing), or a schedule that cannot fire: do
        # not spin on the database
        self._still_due += 1
        return 0.01 if self._still_due <= 2 else self.refresh


"""Flow control an executor declares: how many of its tasks run at once (``max_running``) and
how often they may start (``rate_limit``), on all nodes together, per isolation key when it
has one. The claim enforces both in the database (``roadie.store.locks``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from roadie.executor import Executor

# A key limited only by a rate keeps this many of its waiting tasks claimable at most (its
# heads); the rest are parked, as a serial key's backlog is. Enough to start ``count`` at once.
RATE_HEADS = 100


@dataclass(frozen=True)
class Rate:
    """At most ``count`` starts in any ``per`` seconds (a sliding window, not a bucket that
    refills: no window of ``per`` seconds ever holds more than ``count`` starts)."""

    count: int
    per: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"Rate count must be a whole number of at least 1, not "
                             f"{self.count!r}")
        if not isinstance(self.per, int | float) or self.per <= 0:
            raise ValueError(f"Rate per must be a positive number of seconds, not {self.per!r}")

    def __str__(self) -> str:
        per = f"{self.per:g} s" if self.per != 1 else "second"
        return f"{self.count} per {per}"


@dataclass(frozen=True)
class Limits:
    """An executor's flow control, as the claim and the add need it."""

    max_running: int | None = None
    rate: Rate | None = None

    @property
    def controlled(self) -> bool:
        """Whether the executor has a limit or a rate."""
        return self.max_running is not None or self.rate is not None

    def width(self, isolated: bool) -> int | None:
        """How many tasks of one key may be active (running or claimable) at once: its
        ``max_running``; 1 for an isolation key without one (serial); for a key limited only
        by a rate, the claimable ones (RATE_HEADS at most). None: not limited."""
        if self.max_running is not None:
            return self.max_running
        if isolated:
            return 1
        if self.rate is not None:
            return min(self.rate.count, RATE_HEADS)
        return None

    def takes_slot(self, isolated: bool) -> bool:
        """Whether a running task of a key holds one of its slots (a limit on how many run)."""
        return self.max_running is not None or isolated

    def describe(self) -> str:
        """The limits in words (for tables and waiting reasons), '' for none."""
        parts = []
        if self.max_running is not None:
            parts.append(f"max_running {self.max_running}")
        if self.rate is not None:
            parts.append(f"rate {self.rate}")
        return ", ".join(parts)


def limits_of(executor_class: type[Executor]) -> Limits:
    """The flow control ``executor_class`` declares, checked (a clear error names it)."""
    name = executor_class.__qualname__
    max_running = getattr(executor_class, "max_running", None)
    if max_running is not None and (isinstance(max_running, bool)
                                    or not isinstance(max_running, int) or max_running < 1):
        raise ValueError(f"{name}.max_running must be None or a whole number of at least 1, "
                         f"not {max_running!r}")
    rate = getattr(executor_class, "rate_limit", None)
    if rate is not None and not isinstance(rate, Rate):
        raise ValueError(f"{name}.rate_limit must be None or a roadie.Rate(count, per=seconds), "
                         f"not {rate!r}")
    return Limits(max_running, rate)

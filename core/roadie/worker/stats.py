"""The counters of one worker run (``roadie.WorkerStats``): what ``Worker.run`` and
``Roadie.run_worker`` return. The parts of the worker count into the same object as they go."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class WorkerStats:
    """Counters of one worker run."""

    claimed: int = 0
    finished: int = 0
    claims: int = 0
    progress_writes: int = 0
    recovered: int = 0
    pruned: int = 0
    refused_writes: int = 0  # writes of attempts taken over by another node
    released: int = 0  # tasks claimed ahead (prefetch) and put back unstarted
    by_status: dict[str, int] = field(default_factory=dict)

"""The garbage collector while a worker runs (the ``tune_gc`` setting).

A worker's attempts make no cyclic garbage: what an attempt allocates is freed by reference
counting as it ends (a drain of 8,000 async tasks left the same 3,400 unreachable objects as
one of 500, all from start-up; a failed attempt's traceback is cleared once its hooks ran,
``lifecycle.release_error``). Yet with Python's default thresholds the collector runs a
young collection every 700 allocations and, from time to time, a full one, and each walks
every object alive: the imported modules, SQLAlchemy's caches, and the hundreds or thousands
of attempts in flight on the event loop. In a fan-out of 10,000 async tasks on 2,000 slots
that was a third of the worker's CPU, and each full collection held the GIL for about 0.1 s.

So while it runs, a worker that owns its process (it runs in the main thread: ``roadie
worker``, or ``app.run_worker()`` from a script) moves the objects made before it out of the
collector's reach (``gc.freeze``) and collects young objects less often. Cycles that
executors or plugins make are still collected, in batches of GEN0_THRESHOLD allocations rather
than 700. When the worker returns, the collector is as it was. A process whose collector was
already tuned (other thresholds, objects frozen, or collection disabled) is left alone, and so
is every process when ``tune_gc`` is off.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("roadie.worker")
PYTHON_THRESHOLDS = (700, 10, 10)  # CPython's defaults: a process that kept them is untuned
GEN0_THRESHOLD = 10_000  # allocations between young collections while a worker runs


@contextmanager
def tuned_collector(wanted: bool) -> Iterator[bool]:
    """Tune the collector for a worker's run (when ``wanted`` and the process's collector is
    untuned), and put it back as it was after; yields whether it was tuned."""
    if not wanted or not gc.isenabled() or gc.get_freeze_count() \
            or gc.get_threshold() != PYTHON_THRESHOLDS:
        yield False
        return
    gc.freeze()  # (no walk looks at what exists now until the worker returns: the modules,
    # the caches and the app live as long as the process anyway)
    gc.set_threshold(GEN0_THRESHOLD, *PYTHON_THRESHOLDS[1:])
    log.debug("roadie: garbage collector tuned while the worker runs")
    try:
        yield True
    finally:
        gc.set_threshold(*PYTHON_THRESHOLDS)
        gc.unfreeze()

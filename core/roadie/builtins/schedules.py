"""The built-in firing of schedules: every worker runs a ``roadie.schedules.Scheduler`` thread
from ``roadie_worker_started`` to ``roadie_worker_stopping``. Block this plugin
(``ROADIE_BLOCK_PLUGINS=schedules``) for workers that should not fire schedules."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from roadie.hookspecs import hookimpl
from roadie.schedules import Scheduler

if TYPE_CHECKING:
    from roadie.worker import Worker

_schedulers: dict[str, Scheduler] = {}
_lock = threading.Lock()


@hookimpl
def roadie_worker_started(worker: Worker) -> None:
    scheduler = Scheduler(worker.app, node=worker.id, on_database_error=worker.outage.failed)
    with _lock:
        _schedulers[worker.id] = scheduler
    scheduler.start()


@hookimpl
def roadie_worker_stopping(worker: Worker) -> None:
    with _lock:
        scheduler = _schedulers.pop(worker.id, None)
    if scheduler is not None:
        scheduler.stop()

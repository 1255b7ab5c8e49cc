"""The worker and app of this process, which the gauges read: apart from the metrics, so that
the hooks note them without importing prometheus_client."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from roadie import Roadie
    from roadie.worker import Worker


class _State:
    """The worker of this process (set by ``roadie_worker_started``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.worker: Worker | None = None
        self.app: Roadie | None = None
        self.server: Any = None


STATE = _State()

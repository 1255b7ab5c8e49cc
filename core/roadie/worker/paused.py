"""Paused executors, as this worker's claim sees them: the set is read every
PAUSE_CHECK_INTERVAL (so a pause takes effect on every node within a second), and the claim
leaves those executors out: their tasks stay where they are in the claim index, and no claim
walks them."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING

from roadie.errors import RoadieError
from roadie.store import Claimable

if TYPE_CHECKING:
    from roadie.worker import Worker

log = logging.getLogger("roadie.worker")
PAUSE_CHECK_INTERVAL = 0.5  # seconds between two reads of the paused executors


class PausedExecutors:
    """The worker's claimables without the executors paused now."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._store = worker.store
        self._paused: frozenset[str] = frozenset()
        self._next_check = 0.0
        self._filtered: dict[int, Claimable | None] = {}  # id(claimable) -> without paused

    def seed(self, paused: frozenset[str]) -> None:
        """Take ``paused`` as the set read now (read with the node's registration)."""
        self._next_check = time.monotonic() + PAUSE_CHECK_INTERVAL
        self._changed(paused)

    def refresh(self) -> bool:
        """Read the paused executors if it is time; returns whether the set changed."""
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + PAUSE_CHECK_INTERVAL
        try:
            paused = self._store.paused_executors()
        except RoadieError:  # the round itself meets the outage and says so
            return False
        return self._changed(paused)

    def _changed(self, paused: frozenset[str]) -> bool:
        if paused == self._paused:
            return False
        ours = set(self._worker._claimable.executors) if self._worker._claimable else set()
        for name in sorted((paused - self._paused) & ours):
            log.info("roadie: executor %s is paused: its tasks wait", name)
        for name in sorted((self._paused - paused) & ours):
            log.info("roadie: executor %s is resumed", name)
        self._paused = paused
        self._filtered.clear()
        return True

    def without_paused(self, claimable: Claimable | None) -> Claimable | None:
        """``claimable`` without the paused executors (None when none is left)."""
        if claimable is None or not self._paused:
            return claimable
        key = id(claimable)
        if key not in self._filtered:
            executors = [e for e in claimable.executors if e not in self._paused]
            self._filtered[key] = (dataclasses.replace(claimable, executors=executors)
                                   if executors else None)
        return self._filtered[key]

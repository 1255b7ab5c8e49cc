"""A context type of this plugin: registered in ``hooks.roadie_register_types``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import roadie


@roadie.context_type(version=2, upgraders={1: lambda data: {**data, "unit": "items"}})
@dataclass(frozen=True)
class Batch:
    """A slice of work: where it starts, how many items, in what unit, and when it was planned."""

    start: int
    size: int
    unit: str = "items"
    planned: dt.datetime | None = None

"""The names of roadie's worker nodes, as Django's results show them. A module without Django:
a worker that does not run Django tasks notes its name here without importing Django."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import roadie

_node_names: dict[str, str] = {}
_node_lock = threading.Lock()


def node_names(app: roadie.Roadie, node_ids: Iterable[str | None]) -> list[str]:
    """The names of roadie worker nodes (``host:pid`` unless named), by their ids; a node
    whose row is gone keeps its id."""
    ids = [n or "" for n in node_ids]
    with _node_lock:
        missing = {n for n in ids if n and n not in _node_names}
    if missing:
        found = {n.id: n.name for n in app.list_nodes(include_stopped=True)}
        with _node_lock:
            _node_names.update(found)
    with _node_lock:
        return [_node_names.get(n, n) for n in ids]


def remember_node(node_id: str, name: str) -> None:
    """Note the name of a node of this process (a worker, when it starts)."""
    with _node_lock:
        _node_names[node_id] = name

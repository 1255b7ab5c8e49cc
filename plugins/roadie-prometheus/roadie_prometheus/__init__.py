"""Prometheus metrics for roadie: ``roadie worker --metrics-port P`` serves them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from roadie_prometheus.metrics import REGISTRY, render, serve

__all__ = ["REGISTRY", "render", "serve"]


def __getattr__(name: str) -> Any:
    # roadie_prometheus.metrics imports prometheus_client (about 2 MB): on first use, so that
    # an idle worker without --metrics-port never loads it
    if name in __all__:
        from roadie_prometheus import metrics

        return getattr(metrics, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

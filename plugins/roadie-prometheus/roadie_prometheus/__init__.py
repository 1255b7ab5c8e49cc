"""Prometheus metrics for roadie: ``roadie worker --metrics-port P`` serves them."""

from roadie_prometheus.metrics import REGISTRY, render, serve

__all__ = ["REGISTRY", "render", "serve"]

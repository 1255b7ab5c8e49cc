"""roadie-django: a Django Tasks backend on roadie.

``TASKS = {"default": {"BACKEND": "roadie_django.RoadieBackend"}}``; run the tasks with
``python manage.py roadie worker`` (or ``roadie worker`` with ``DJANGO_SETTINGS_MODULE`` and
``ROADIE_URL`` set). See docs/django.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from roadie_django.backend import RoadieBackend
    from roadie_django.context import RoadieTaskContext

__all__ = ["RoadieBackend", "RoadieTaskContext"]


def __getattr__(name: str) -> Any:
    # loaded on first use: a roadie worker imports this package for its executors, and must
    # not import Django's task framework (or need Django settings) before a task asks
    if name == "RoadieBackend":
        from roadie_django.backend import RoadieBackend

        return RoadieBackend
    if name == "RoadieTaskContext":
        from roadie_django.context import RoadieTaskContext

        return RoadieTaskContext
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

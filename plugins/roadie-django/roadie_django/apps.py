"""The Django app of roadie-django: ``python manage.py roadie``, and the system check of
roadie's schema (``manage.py migrate`` and ``manage.py check --database`` run it)."""

from __future__ import annotations

from django.apps import AppConfig


class RoadieDjangoConfig(AppConfig):
    """Add ``"roadie_django"`` to ``INSTALLED_APPS`` for the ``roadie`` management command
    and the schema check."""

    name = "roadie_django"
    verbose_name = "roadie"

    def ready(self) -> None:
        """Register the system check of roadie's schema."""
        from roadie_django import checks  # noqa: F401

"""The Django app of roadie-django (for ``python manage.py roadie``)."""

from __future__ import annotations

from django.apps import AppConfig


class RoadieDjangoConfig(AppConfig):
    """Add ``"roadie_django"`` to ``INSTALLED_APPS`` for the ``roadie`` management command."""

    name = "roadie_django"
    verbose_name = "roadie"

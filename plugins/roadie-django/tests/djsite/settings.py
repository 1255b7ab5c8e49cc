"""The settings of the test project: Django's ``default`` database is a SQLite file, ``pg``
the PostgreSQL test database; a roadie backend on each (and one on a second, empty
PostgreSQL database for the schema checks)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from sqlalchemy.engine import make_url

DIRECTORY = Path(os.environ["ROADIE_DJANGO_TEST_DIR"])
PG_URL = os.environ["ROADIE_DJANGO_TEST_PG_URL"]
PG2_URL = os.environ["ROADIE_DJANGO_TEST_PG2_URL"]


def _postgres(url: str) -> dict[str, str]:
    parsed = make_url(url)
    return {"ENGINE": "django.db.backends.postgresql", "NAME": parsed.database or "",
            "USER": parsed.username or "", "PASSWORD": parsed.password or "",
            "HOST": parsed.host or "", "PORT": str(parsed.port or "")}


SECRET_KEY = "only-for-the-tests-of-roadie-django"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
ROOT_URLCONF = "djsite.urls"
INSTALLED_APPS = ["roadie_django", "shop"]
if importlib.util.find_spec("django.tasks") is None:  # Django < 6: the backport
    INSTALLED_APPS.append("django_tasks")
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(DIRECTORY / "site.db")},
    "pg": _postgres(PG_URL),
    "memory": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
}
QUEUES = ["default", "emails"]
TASKS = {
    "default": {"BACKEND": "roadie_django.RoadieBackend", "QUEUES": QUEUES},
    "pg": {"BACKEND": "roadie_django.RoadieBackend", "QUEUES": QUEUES,
           "OPTIONS": {"database": "pg"}},
    "empty": {"BACKEND": "roadie_django.RoadieBackend", "OPTIONS": {"url": PG2_URL}},
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

"""The ASGI application of the test project: Django, with roadie's dashboard at /roadie
(as docs/django.md shows)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djsite.settings")

from django.core.asgi import get_asgi_application

django_app = get_asgi_application()  # sets Django up: import the backends after it

from roadie.web import create_app  # noqa: E402
from roadie_django.compat import default_task_backend  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.routing import Mount  # noqa: E402

application = Starlette(routes=[
    Mount("/roadie", app=create_app(default_task_backend.app,
                                    token=os.environ.get("ROADIE_WEB_TOKEN"))),
    Mount("/", app=django_app),
])

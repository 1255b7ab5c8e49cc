"""roadie's dashboard mounted beside Django in one ASGI application (djsite/asgi.py, as
docs/django.md shows): /roadie/... is the dashboard and its API, everything else Django."""

from __future__ import annotations

import importlib
import sys

import pytest
from djhelpers import empty
from roadie_django.compat import task_backends
from shop.models import Order
from shop.tasks import add
from starlette.testclient import TestClient

TOKEN = "a-token-for-the-dashboard-test"


def test_the_dashboard_is_mounted_beside_django(monkeypatch: pytest.MonkeyPatch) -> None:
    empty("default")
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "djsite.settings")  # restored after
    monkeypatch.setenv("ROADIE_WEB_TOKEN", TOKEN)
    monkeypatch.delitem(sys.modules, "djsite.asgi", raising=False)
    asgi = importlib.import_module("djsite.asgi")
    result = add.enqueue(2, 3)
    Order.objects.create(item="green paint")
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(asgi.application) as client:
        listed = client.get("/roadie/api/tasks", headers=bearer)
        assert listed.status_code == 200
        (task,) = listed.json()["tasks"]
        assert (task["id"], task["name"]) == (int(result.id), "shop.tasks.add")
        assert client.get("/roadie/api/tasks").status_code == 401  # the token is needed
        page = client.get("/roadie/login")
        assert page.status_code == 200 and 'name="token"' in page.text
        assert 'action="/roadie/login"' in page.text  # links follow the mount path
        assert client.get("/orders/count").json() == {"orders": 1}  # Django's URLconf
        assert client.get("/nowhere").status_code == 404
    assert task_backends["default"].app.get_task(int(result.id)).name == "shop.tasks.add"

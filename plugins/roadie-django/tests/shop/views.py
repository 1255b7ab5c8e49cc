"""Views that enqueue tasks."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, JsonResponse

from shop.models import Order
from shop.tasks import add, ship


class Refused(Exception):
    """Raised by a view after it enqueued, to roll its transaction back."""


def place_order(request: HttpRequest) -> JsonResponse:
    """Save an order and enqueue its shipping in one transaction (``?fail=1``: then fail)."""
    backend = request.POST.get("backend", "default")
    database = request.POST.get("database", "default")
    with transaction.atomic(using=database):
        order = Order.objects.using(database).create(item=request.POST["item"])
        result = ship.using(backend=backend).enqueue(order.pk, database)
        if request.GET.get("fail"):
            raise Refused(f"order {order.pk} refused after task {result.id} was enqueued")
    return JsonResponse({"order": order.pk, "task": result.id})


def count_orders(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"orders": Order.objects.count()})


def ping(request: HttpRequest) -> JsonResponse:
    """Enqueue outside any transaction (autocommit)."""
    result = add.using(backend=request.GET.get("backend", "default")).enqueue(1, 2)
    return JsonResponse({"task": result.id})

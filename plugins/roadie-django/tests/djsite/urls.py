"""The test project's URLs."""

from django.urls import path
from shop import views

urlpatterns = [
    path("orders/", views.place_order),
    path("orders/count", views.count_orders),
    path("ping/", views.ping),
]

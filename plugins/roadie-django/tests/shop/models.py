"""Rows that tasks and views write."""

from django.db import models


class Order(models.Model):
    """An order, placed by a view that enqueues its shipping in the same transaction."""

    item = models.CharField(max_length=100)


class Event(models.Model):
    """Something a task did, in the order it did it."""

    label = models.CharField(max_length=100)

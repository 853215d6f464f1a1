"""The one place that queues the webhook workers' task, on its own Celery queue (``WEBHOOK_QUEUE``): a slow or
dead receiver ties up the webhook worker's threads only, never the workers that send WeChat messages.

Tests swap ``enqueue`` for an in-process list; everything here goes through it."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import transaction

from pushhub.celery import app as celery_app

log = logging.getLogger(__name__)

DRAIN_ENDPOINT = "webhooks.drain_endpoint"
SWEEP = "webhooks.sweep"


def enqueue(endpoint_id: Any) -> None:
    """Queue a drain of the endpoint's due events."""
    celery_app.send_task(DRAIN_ENDPOINT, args=[str(endpoint_id)], queue=settings.WEBHOOK_QUEUE)


def drain_soon(endpoint_ids: Iterable[Any]) -> None:
    for endpoint_id in dict.fromkeys(str(pk) for pk in endpoint_ids):
        try:
            enqueue(endpoint_id)
        except (
            Exception
        ):  # kombu/redis connection errors vary by transport; the events are safe in the outbox
            log.exception("could not queue webhook endpoint %s; beat's sweep will", endpoint_id)


def drain_after_commit(endpoint_ids: Iterable[Any]) -> None:
    """Once the caller's transaction commits (now, outside one), queue the endpoints' drains."""
    ids = list(endpoint_ids)
    transaction.on_commit(lambda: drain_soon(ids))

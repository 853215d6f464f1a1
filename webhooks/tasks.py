"""Celery tasks of the webhook workers: thin wrappers over ``webhooks.dispatch``, queued by ``webhooks.queue``
on the webhook queue (the drain) and by beat (the sweep)."""

from __future__ import annotations

from celery import shared_task

from webhooks import dispatch


@shared_task(name="webhooks.drain_endpoint", acks_late=True, ignore_result=True)
def drain_endpoint(endpoint_id: str) -> int:
    """POST the endpoint's due events."""
    return dispatch.drain_endpoint(endpoint_id)


@shared_task(name="webhooks.sweep", ignore_result=True)
def sweep() -> int:
    """Beat: queue drains for endpoints with due events (retries, and drains a lost message never ran)."""
    return dispatch.sweep()

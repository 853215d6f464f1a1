"""A tenant's webhook endpoints: create, change, rotate the secret, delete, send a test, resend an event.

Every change is audited (never with the secret). The secret is ``whsec_`` + base64 of 32 random bytes (the
Standard Webhooks format), stored encrypted like an AppSecret and shown only when made.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from pushhub.api import ApiError
from tenants.models import Tenant
from tenants.services import audit
from webhooks import guard, outbox, queue
from webhooks.models import EventDispatch, WebhookAttempt, WebhookEndpoint, WebhookEvent

MAX_ENDPOINTS = 20  # per tenant
DESCRIPTION_MAX = 200


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def endpoints_for(tenant: Tenant) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.for_tenant(tenant)


def clean_events(events: Any) -> list[str]:
    """A non-empty list of known event types, or ["*"]; 400 ``validation_error`` (field ``events``) otherwise."""
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise ApiError(
            400, "validation_error", 'events must be a non-empty list of event types, or ["*"]', "events"
        )
    unknown = [e for e in events if e != "*" and e not in outbox.EVENT_TYPES]
    if unknown:
        raise ApiError(
            400,
            "validation_error",
            f'unknown event type {unknown[0]!r}; known: {", ".join(outbox.EVENT_TYPES)} (or "*")',
            "events",
        )
    return ["*"] if "*" in events else list(dict.fromkeys(events))


def clean_description(description: Any) -> str:
    if description is None:
        return ""
    if not isinstance(description, str) or len(description) > DESCRIPTION_MAX:
        raise ApiError(
            400,
            "validation_error",
            f"description must be text of at most {DESCRIPTION_MAX} characters",
            "description",
        )
    return description.strip()


def create_endpoint(
    tenant: Tenant, *, url: Any, events: Any, description: Any = "", actor: str = "system"
) -> tuple[WebhookEndpoint, str]:
    """A new enabled endpoint and its secret (the only time the secret is returned)."""
    url = guard.validate_url(url)
    events = clean_events(events)
    description = clean_description(description)
    secret = new_secret()
    with transaction.atomic():
        # Count under a lock on the tenant row: two concurrent creates cannot both take the 20th place.
        Tenant.objects.select_for_update().filter(pk=tenant.pk).values_list("pk", flat=True).first()
        if endpoints_for(tenant).count() >= MAX_ENDPOINTS:
            raise ApiError(
                409,
                "too_many_webhooks",
                f"a tenant has at most {MAX_ENDPOINTS} webhook endpoints; delete one first",
            )
        endpoint = WebhookEndpoint(tenant=tenant, url=url, events=events, description=description)
        endpoint.set_secret(secret)
        endpoint.save()
        audit(tenant, actor, "webhook.create", "webhook", endpoint.pk, url=url, events=events)
    return endpoint, secret


def update_endpoint(endpoint: WebhookEndpoint, *, actor: str = "system", **changes: Any) -> WebhookEndpoint:
    """PATCH: url, events, enabled, description. Enabling clears the failing state."""
    fields: dict[str, Any] = {}
    if "url" in changes:
        fields["url"] = guard.validate_url(changes["url"])
    if "events" in changes:
        fields["events"] = clean_events(changes["events"])
    if "description" in changes:
        fields["description"] = clean_description(changes["description"])
    if "enabled" in changes:
        if not isinstance(changes["enabled"], bool):
            raise ApiError(400, "validation_error", "enabled must be true or false", "enabled")
        fields["enabled"] = changes["enabled"]
        if changes["enabled"] and not endpoint.enabled:
            fields["failing_since"] = None
        fields["disabled_reason"] = ""
    changed = {name: value for name, value in fields.items() if getattr(endpoint, name) != value}
    if not changed:
        return endpoint
    with transaction.atomic():
        for name, value in changed.items():
            setattr(endpoint, name, value)
        endpoint.save(update_fields=[*changed, "updated_at"])
        audit(
            endpoint.tenant,
            actor,
            "webhook.update",
            "webhook",
            endpoint.pk,
            **{name: value for name, value in changed.items() if name in {"url", "events", "enabled"}},
        )
    if changed.get("enabled"):
        # Events that waited while it was disabled go now.
        queue.drain_after_commit([endpoint.pk])
    return endpoint


def rotate_secret(endpoint: WebhookEndpoint, *, actor: str = "system") -> str:
    """A new secret; every later attempt (retries of older events included) is signed with it only."""
    secret = new_secret()
    with transaction.atomic():
        endpoint.set_secret(secret)
        endpoint.save(update_fields=["secret_ciphertext", "updated_at"])
        audit(endpoint.tenant, actor, "webhook.rotate_secret", "webhook", endpoint.pk)
    return secret


def delete_endpoint(endpoint: WebhookEndpoint, *, actor: str = "system") -> None:
    """Gone, with its pending events and its attempts log."""
    with transaction.atomic():
        audit(endpoint.tenant, actor, "webhook.delete", "webhook", endpoint.pk, url=endpoint.url)
        endpoint.delete()


def send_test(endpoint: WebhookEndpoint, *, actor: str = "system") -> WebhookEvent:
    """A ``webhook.test`` event for this endpoint only (whatever types it wants)."""
    if not endpoint.enabled:
        raise ApiError(409, "webhook_disabled", "the endpoint is disabled; enable it to send a test event")
    data = {"webhook_id": str(endpoint.pk), "message": "PushHub test event", "sent_by": actor}
    with transaction.atomic():
        (event,) = outbox.record(endpoint.tenant_id, outbox.WEBHOOK_TEST, [data], endpoint_ids=[endpoint.pk])
    return event


def resend(endpoint: WebhookEndpoint, event_id: str, *, actor: str = "system") -> EventDispatch:
    """Send the event to this endpoint again, now, with the same ``webhook-id`` (and a fresh retry schedule).
    404 for an event this endpoint never had."""
    now = timezone.now()
    with transaction.atomic():
        dispatch = (
            EventDispatch.objects.select_for_update()
            .filter(endpoint=endpoint, event_id=event_id, event__tenant_id=endpoint.tenant_id)
            .first()
        )
        if dispatch is None:
            raise ApiError(404, "not_found", "This endpoint has no event with that id.")
        EventDispatch.objects.filter(pk=dispatch.pk).update(
            status=EventDispatch.Status.PENDING,
            retries=0,
            next_attempt_at=now,
            leased_until=None,
            finished_at=None,
        )
        audit(endpoint.tenant, actor, "webhook.resend", "webhook", endpoint.pk, event_id=event_id)
    if endpoint.enabled:
        queue.drain_after_commit([endpoint.pk])
    dispatch.refresh_from_db()
    return dispatch


def attempts_for(endpoint: WebhookEndpoint) -> QuerySet[WebhookAttempt]:
    return WebhookAttempt.objects.filter(endpoint=endpoint).select_related("event")

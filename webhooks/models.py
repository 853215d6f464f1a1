"""Webhook endpoints of a tenant, the events recorded for them (the outbox) and every attempt to send one.

- ``WebhookEndpoint``: a URL of the tenant's, the event types it wants, its signing secret (Fernet ciphertext,
  like an AppSecret).
- ``WebhookEvent``: what happened, written in the same transaction as the state change it reports. Its id is
  the ``webhook-id`` header on every attempt, resends included.
- ``EventDispatch``: one event for one endpoint: the outbox row the workers drain (pending → succeeded | failed),
  with its retry schedule and the lease of the worker sending it.
- ``WebhookAttempt``: the log of each POST (status code, error, at most 1 KiB of the answer).
"""

from __future__ import annotations

import secrets
import uuid

from django.db import models
from django.db.models import Q

from pushhub import crypto
from tenants.models import Tenant, TenantScopedQuerySet


def new_event_id() -> str:
    """``msg_`` + 22 url-safe characters (128 random bits): Standard Webhooks' recommended id shape."""
    return "msg_" + secrets.token_urlsafe(16)


class WebhookEndpoint(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.CharField(max_length=2000)
    # Event types (webhooks.events.EVENT_TYPES) or ["*"].
    events = models.JSONField(default=list)
    description = models.CharField(max_length=200, blank=True, default="")
    enabled = models.BooleanField(default=True)
    # Why it is disabled: "" (enabled, or by a person), "failing" (5 days of failed events, by the workers).
    disabled_reason = models.CharField(max_length=20, blank=True, default="")
    # When its events started failing (the first failed attempt after a success); None while it answers.
    failing_since = models.DateTimeField(null=True, blank=True)
    secret_ciphertext = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["created_at"]
        verbose_name = "webhook endpoint"

    def __str__(self) -> str:
        return self.url

    def set_secret(self, secret: str) -> None:
        self.secret_ciphertext = crypto.encrypt(secret)

    def get_secret(self) -> str:
        return crypto.decrypt(self.secret_ciphertext)

    def wants(self, event_type: str) -> bool:
        return "*" in self.events or event_type in self.events


class WebhookEvent(models.Model):
    id = models.CharField(primary_key=True, max_length=40, default=new_event_id, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="webhook_events")
    type = models.CharField(max_length=40)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        verbose_name = "webhook event"

    def __str__(self) -> str:
        return f"{self.type} {self.id}"


class EventDispatch(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"

    # dispatch_unique_endpoint (event, endpoint) is the event's index.
    event = models.ForeignKey(
        WebhookEvent, on_delete=models.CASCADE, related_name="dispatches", db_index=False
    )
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="dispatches")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)  # every POST ever made (numbers the attempts log)
    retries = models.PositiveIntegerField(
        default=0
    )  # failed POSTs since it was last (re)sent: the backoff step
    next_attempt_at = models.DateTimeField()
    # A worker owns the dispatch while this is in the future (its guarded UPDATE set it).
    leased_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["event", "endpoint"], name="dispatch_unique_endpoint")]
        indexes = [
            # What the drainers and the sweep look for: an endpoint's due pending dispatches.
            models.Index(
                fields=["endpoint", "next_attempt_at"],
                condition=Q(status="pending"),
                name="dispatch_pending_due",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} → {self.endpoint_id} ({self.status})"


class WebhookAttempt(models.Model):
    dispatch = models.ForeignKey(EventDispatch, on_delete=models.CASCADE, related_name="attempt_log")
    # webhook_attempt_endpoint (endpoint, -created_at) is the endpoint's index.
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="attempt_log", db_index=False
    )
    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="+")
    attempt = models.PositiveIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=255, blank=True, default="")
    response_body = models.TextField(blank=True, default="")  # at most 1 KiB of the answer
    duration_ms = models.PositiveIntegerField(default=0)
    # When the next attempt is due (None: this one succeeded, or it was the last).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["endpoint", "-created_at"], name="webhook_attempt_endpoint")]

    def __str__(self) -> str:
        return f"{self.event_id} #{self.attempt}: {self.status_code or self.error}"

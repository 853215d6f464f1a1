"""The outbox: events are recorded in the caller's transaction, next to the state change they report.

``record`` writes one ``WebhookEvent`` per payload and one ``EventDispatch`` per enabled endpoint of the tenant
that wants its type, in the transaction of whoever calls it (a push finishing, a chunk's outcomes, a
subscription changing): if that transaction rolls back, no event; if it commits, the event is there for the
workers even if this process dies the next instant. Draining is queued after the commit, and beat's sweep
(``dispatch.sweep``) finds whatever a lost queue message left behind.

A tenant with no endpoint wanting a type pays one small query (``interest``) and writes nothing.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from pushhub.sql import pg_array, prepared_cursor
from webhooks import queue
from webhooks.models import EventDispatch, WebhookEndpoint, WebhookEvent, new_event_id

PUSH_FINISHED = "push.finished"
DELIVERIES_FAILED = "deliveries.failed"
USER_UNREACHABLE = "user.unreachable"
SUBSCRIPTION_CHANGED = "subscription.changed"
MESSAGE_OPENED = "message.opened"
WEBHOOK_TEST = "webhook.test"
EVENT_TYPES = (
    PUSH_FINISHED,
    DELIVERIES_FAILED,
    USER_UNREACHABLE,
    SUBSCRIPTION_CHANGED,
    MESSAGE_OPENED,
    WEBHOOK_TEST,
)
# deliveries.failed carries at most this many deliveries: a broadcast that fails makes hundreds of calls,
# not one per recipient.
FAILED_PER_EVENT = 500


@dataclass
class Interest:
    """Which of the tenant's enabled endpoints want which event types (read once per state change)."""

    tenant_id: int
    endpoints: list[tuple[Any, list[str]]] = field(default_factory=list)

    def endpoints_for(self, event_type: str) -> list[Any]:
        return [pk for pk, events in self.endpoints if "*" in events or event_type in events]

    def wants(self, event_type: str) -> bool:
        return bool(self.endpoints_for(event_type))


# The last interest this thread read (a Celery or gunicorn thread): see ``interest``'s ``reuse_within``.
_last_read = threading.local()


def interest(tenant_id: int, reuse_within: float = 0.0) -> Interest:
    """The tenant's enabled endpoints and the event types each wants. ``reuse_within`` seconds: the answer
    this thread read for the tenant at most that long ago, if any, instead of a query (a one-user push's
    chunk asks when it writes its outcome and again when the push finishes, milliseconds apart). An
    endpoint enabled in between is missed by that one event, as one enabled just after it would be."""
    if reuse_within > 0:
        last = getattr(_last_read, "value", None)
        if last is not None and last[0] == tenant_id and time.monotonic() - last[1] <= reuse_within:
            return last[2]
    found = _read_interest(tenant_id)
    _last_read.value = (tenant_id, time.monotonic(), found)
    return found


def forget_interest() -> None:
    """Nothing this thread read before may be reused (a task's start: reuse stays within one task)."""
    _last_read.value = None


def _read_interest(tenant_id: int) -> Interest:
    if connection.vendor != "postgresql":
        endpoints = WebhookEndpoint.objects.filter(tenant_id=tenant_id, enabled=True).values_list(
            "pk", "events"
        )
        return Interest(tenant_id, list(endpoints))
    # Fixed SQL: every chunk's write and every finished push asks this, and the ORM's compile of it was a
    # tenth of a one-user push's worker CPU. Django has psycopg hand jsonb over as text (JSONField decodes
    # it): decoded here, or a membership test would be a substring test.
    with prepared_cursor() as cursor:
        cursor.execute(
            f"SELECT id, events FROM {WebhookEndpoint._meta.db_table} WHERE tenant_id = %s AND enabled",
            [tenant_id],
        )
        rows = cursor.fetchall()
    return Interest(
        tenant_id, [(pk, json.loads(events) if isinstance(events, str) else events) for pk, events in rows]
    )


def record(
    tenant_id: int,
    event_type: str,
    payloads: Iterable[dict],
    *,
    known: Interest | None = None,
    endpoint_ids: list[Any] | None = None,
) -> list[WebhookEvent]:
    """Record an event of ``event_type`` per payload for the endpoints that want it (or for ``endpoint_ids``
    only: a test event, a resend); in the caller's transaction. Returns the events (none: nobody wanted it)."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    targets = (
        endpoint_ids if endpoint_ids is not None else (known or interest(tenant_id)).endpoints_for(event_type)
    )
    payloads = list(payloads)
    if not targets or not payloads:
        return []
    now = timezone.now()
    events = [
        WebhookEvent(id=new_event_id(), tenant_id=tenant_id, type=event_type, data=data, created_at=now)
        for data in payloads
    ]
    if connection.vendor == "postgresql":
        _insert_postgresql(events, targets, now)
    else:
        with transaction.atomic():
            WebhookEvent.objects.bulk_create(events)
            EventDispatch.objects.bulk_create(
                [
                    EventDispatch(event=event, endpoint_id=endpoint_id, next_attempt_at=now, created_at=now)
                    for event in events
                    for endpoint_id in targets
                ]
            )
    queue.drain_after_commit(targets)
    return events


def _insert_postgresql(events: list[WebhookEvent], targets: list[Any], now) -> None:
    """The events and their dispatches in one statement. A broadcast's flush records up to 500 events
    (``user.unreachable``) inside the sending worker's transaction, where the ORM's two bulk inserts of model
    instances cost about a fifth of the worker's CPU per delivery."""
    event_table, dispatch_table = WebhookEvent._meta.db_table, EventDispatch._meta.db_table
    with prepared_cursor(len(events)) as cursor:
        cursor.execute(
            f"""
            WITH recorded AS (
                INSERT INTO {event_table} (id, tenant_id, type, data, created_at)
                SELECT v.id, %(tenant)s, %(type)s, v.data::jsonb, %(now)s
                FROM unnest(%(ids)s::text[], %(data)s::text[]) AS v(id, data)
                RETURNING id
            )
            INSERT INTO {dispatch_table} (event_id, endpoint_id, status, attempts, retries, next_attempt_at,
                                          created_at)
            SELECT recorded.id, endpoint.id, 'pending', 0, 0, %(now)s, %(now)s
            FROM recorded CROSS JOIN unnest(%(endpoints)s::uuid[]) AS endpoint(id)
            """,
            {
                "tenant": events[0].tenant_id,
                "type": events[0].type,
                "now": now,
                "ids": pg_array([event.pk for event in events], "text"),
                "data": pg_array([json.dumps(event.data, ensure_ascii=False) for event in events], "text"),
                "endpoints": pg_array(targets, "uuid"),
            },
        )


def in_batches(items: list, size: int = FAILED_PER_EVENT) -> list[list]:
    return [items[start : start + size] for start in range(0, len(items), size)]

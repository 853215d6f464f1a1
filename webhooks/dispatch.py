"""The webhook workers: drain an endpoint's due events, one POST each, signed, with retries and backoff.

A drain (``drain_endpoint``) holds one of the endpoint's few slots (``WEBHOOK_ENDPOINT_CONCURRENCY``, a cache
key with a lease), so one slow or dead receiver occupies at most that many of the webhook worker's threads and
every other endpoint keeps its pace. It claims up to CLAIM_BATCH due dispatches by a guarded lease
(``leased_until``), POSTs each in turn (``transport``), and records every RECORD_BATCH answers (the attempts and
each dispatch's next step) in one transaction:

- a 2xx answer within ``WEBHOOK_TIMEOUT``: succeeded; the endpoint is no longer failing;
- anything else: again after ``RETRY_SCHEDULE[n]`` seconds (±20 % jitter), failed after the last; an endpoint
  whose events have failed without a success for ``WEBHOOK_DISABLE_AFTER_DAYS`` is disabled (audited).

``sweep`` (beat, every ``WEBHOOK_SWEEP_SECONDS``) queues a drain for each endpoint with due events: retries
whose time has come, and events whose queued drain was lost (a worker killed after the state change commit).
Delivery is at least once: a worker killed between POSTs and their record sends those events again (at most
RECORD_BATCH), with the same ``webhook-id``.
"""

from __future__ import annotations

import json
import logging
import random
import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from pushhub import metrics
from pushhub.api import iso_utc
from tenants.services import audit
from webhooks import guard, queue, transport
from webhooks.models import EventDispatch, WebhookAttempt, WebhookEndpoint, WebhookEvent

log = logging.getLogger(__name__)

# Seconds before the 2nd … 8th attempt (../shared/API.md "Webhooks"): about 5 s, 5 min, 30 min, 2 h, 5 h,
# 10 h, 10 h; the event fails after the 8th.
RETRY_SCHEDULE = (5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
JITTER = 0.2
CLAIM_BATCH = 50  # dispatches a drain leases at a time
RECORD_BATCH = 10  # answers written per transaction (a killed worker sends at most these again)
DRAIN_BUDGET = 30.0  # seconds a drain runs before it queues itself again (keeps tasks short)
# A drain that sees this many failures in a row, and no success, stops until the next sweep: a dead receiver
# is probed, not hammered, and its slot is free for the rest of the time. A receiver that answered 2xx in this
# drain is up: its refusals are each event's to retry on the schedule (at 50 % refused, five in a row come
# every ~60 attempts; pausing then left the endpoint idle until the sweep, at ~10 events/s).
PAUSE_AFTER_FAILURES = 5
SWEEP_BATCH = 1000  # endpoints queued per sweep


def _slot_key(endpoint_id: Any, slot: int) -> str:
    return f"webhooks:drain:{endpoint_id}:{slot}"


def _hold_seconds() -> float:
    """How long a drain can hold a slot or a leased dispatch: it starts no POST after DRAIN_BUDGET, the last
    one ends within WEBHOOK_TIMEOUT, and everything it holds is let go right after (margin: 30 s). A killed
    worker's leases and slot expire after this."""
    return DRAIN_BUDGET + settings.WEBHOOK_TIMEOUT + 30


def _slot_lease() -> int:
    return int(_hold_seconds()) + 1


def _take_slot(endpoint_id: Any) -> str | None:
    for slot in range(max(1, settings.WEBHOOK_ENDPOINT_CONCURRENCY)):
        key = _slot_key(endpoint_id, slot)
        if cache.add(key, 1, timeout=_slot_lease()):
            return key
    return None


def backoff(retries: int) -> float | None:
    """Seconds before the next attempt after ``retries`` failed ones (None: that was the last)."""
    if retries > len(RETRY_SCHEDULE):
        return None
    base = RETRY_SCHEDULE[retries - 1] * settings.WEBHOOK_RETRY_SCALE
    return base * random.uniform(1 - JITTER, 1 + JITTER)


def _due(endpoint_id: Any, now: datetime):
    return EventDispatch.objects.filter(
        endpoint_id=endpoint_id, status=EventDispatch.Status.PENDING, next_attempt_at__lte=now
    ).filter(Q(leased_until__isnull=True) | Q(leased_until__lt=now))


def _claim(endpoint_id: Any) -> tuple[list[EventDispatch], datetime]:
    """Lease up to CLAIM_BATCH due dispatches of the endpoint; the lease time is this drain's token."""
    now = timezone.now()
    lease = now + timedelta(seconds=_hold_seconds())
    with transaction.atomic():
        ids = list(
            _due(endpoint_id, now)
            .select_for_update(skip_locked=True)
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[:CLAIM_BATCH]
        )
        if ids:
            EventDispatch.objects.filter(pk__in=ids).update(leased_until=lease)
    if not ids:
        return [], lease
    rows = list(EventDispatch.objects.filter(pk__in=ids).select_related("event").order_by("next_attempt_at"))
    return rows, lease


def body_of(event: WebhookEvent) -> bytes:
    """What every attempt of the event POSTs (byte for byte the same on a retry or resend)."""
    document = {"type": event.type, "timestamp": iso_utc(event.created_at), "data": event.data}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def signed_headers(secret: str, event_id: str, body: bytes, at: datetime) -> dict[str, str]:
    """Standard Webhooks' three headers (the ``standardwebhooks`` package signs)."""
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(event_id, at, body),
    }


def drain_endpoint(endpoint_id: Any) -> int:
    """Send the endpoint's due events (within DRAIN_BUDGET); how many attempts were made."""
    endpoint = WebhookEndpoint.objects.filter(pk=endpoint_id).first()
    if endpoint is None or not endpoint.enabled:
        return 0
    slot = _take_slot(endpoint.pk)
    if slot is None:
        return 0  # enough drains on this endpoint already
    deadline = time.monotonic() + DRAIN_BUDGET
    attempts = failures_in_a_row = 0
    answered = False  # a 2xx in this drain: the receiver is up
    try:
        secret = endpoint.get_secret()
        while endpoint.enabled and not _paused(failures_in_a_row, answered) and time.monotonic() < deadline:
            rows, lease = _claim(endpoint.pk)
            if not rows:
                break
            # Once per batch: a person may have disabled it or changed its URL meanwhile.
            endpoint.refresh_from_db(fields=["enabled", "failing_since", "url"])
            results: list[tuple[EventDispatch, transport.Answer]] = []
            for index, dispatch in enumerate(rows):
                if (
                    not endpoint.enabled
                    or _paused(failures_in_a_row, answered)
                    or time.monotonic() >= deadline
                ):
                    _unlease(rows[index:], lease)  # left for the next drain
                    break
                answer = _post(endpoint, secret, dispatch)
                results.append((dispatch, answer))
                attempts += 1
                failures_in_a_row = 0 if answer.ok else failures_in_a_row + 1
                answered = answered or answer.ok
                if len(results) >= RECORD_BATCH:
                    endpoint, results = record_attempts(endpoint, results, lease), []
            endpoint = record_attempts(endpoint, results, lease)
    finally:
        cache.delete(slot)
    if not endpoint.enabled or _paused(failures_in_a_row, answered):
        return attempts  # the sweep comes back for it
    if time.monotonic() >= deadline or _due(endpoint.pk, timezone.now()).exists():
        # Out of time, or events recorded while this drain held the last slot (their own drain found no
        # slot free): drain again at once rather than at the next sweep.
        queue.drain_soon([endpoint.pk])
    return attempts


def _paused(failures_in_a_row: int, answered: bool) -> bool:
    return failures_in_a_row >= PAUSE_AFTER_FAILURES and not answered


def _unlease(rows: list[EventDispatch], lease: datetime) -> None:
    if rows:
        EventDispatch.objects.filter(pk__in=[row.pk for row in rows], leased_until=lease).update(
            leased_until=None
        )


def _post(endpoint: WebhookEndpoint, secret: str, dispatch: EventDispatch) -> transport.Answer:
    """POST one event, signed now, to the address the SSRF guard approves now."""
    event = dispatch.event
    body = body_of(event)
    try:
        target = guard.check(endpoint.url)
    except guard.BlockedUrl as exc:
        return transport.Answer(None, "", f"refused: {exc}"[:255], 0)
    return transport.post(target, body, signed_headers(secret, event.pk, body, timezone.now()))


def record_attempt(
    endpoint: WebhookEndpoint, dispatch: EventDispatch, lease: datetime, answer: transport.Answer
) -> WebhookEndpoint:
    return record_attempts(endpoint, [(dispatch, answer)], lease)


def record_attempts(
    endpoint: WebhookEndpoint, results: list[tuple[EventDispatch, transport.Answer]], lease: datetime
) -> WebhookEndpoint:
    """Write a batch of answers (attempts log, each dispatch's next step, the endpoint's failing state) in one
    transaction; the endpoint as it is now."""
    if not results:
        return endpoint
    # Attempts made, counted whatever of them is written below (a dispatch deleted meanwhile included).
    metrics.webhook_attempts((answer.status_code, answer.error) for _, answer in results)
    now = timezone.now()
    succeeded = [dispatch.pk for dispatch, answer in results if answer.ok]
    log: list[WebhookAttempt] = []
    with transaction.atomic():
        updated = 0
        if succeeded:
            updated += EventDispatch.objects.filter(pk__in=succeeded, leased_until=lease).update(
                status=EventDispatch.Status.SUCCEEDED,
                finished_at=now,
                attempts=F("attempts") + 1,
                leased_until=None,
            )
        next_steps: dict[int, datetime | None] = {}
        for dispatch, answer in results:
            if answer.ok:
                continue
            retries = dispatch.retries + 1
            delay = backoff(retries)
            if delay is None:
                changes = {"status": EventDispatch.Status.FAILED, "finished_at": now, "retries": retries}
                next_steps[dispatch.pk] = None
            else:
                next_steps[dispatch.pk] = now + timedelta(seconds=delay)
                changes = {"retries": retries, "next_attempt_at": next_steps[dispatch.pk]}
            updated += EventDispatch.objects.filter(pk=dispatch.pk, leased_until=lease).update(
                attempts=F("attempts") + 1, leased_until=None, **changes
            )
        kept = {dispatch.pk for dispatch, _ in results}
        if updated < len(results):
            # Leases lost (a resend meanwhile) still log their attempt; dispatches deleted with their endpoint
            # while in flight have nothing to log to.
            kept = set(EventDispatch.objects.filter(pk__in=kept).values_list("pk", flat=True))
        for dispatch, answer in results:
            if dispatch.pk in kept:
                log.append(
                    WebhookAttempt(
                        dispatch_id=dispatch.pk,
                        endpoint_id=endpoint.pk,
                        event_id=dispatch.event_id,
                        attempt=dispatch.attempts + 1,
                        status_code=answer.status_code,
                        error=answer.error[:255],
                        response_body=answer.body,
                        duration_ms=answer.duration_ms,
                        next_attempt_at=next_steps.get(dispatch.pk),
                        created_at=now,
                    )
                )
        WebhookAttempt.objects.bulk_create(log)
        if not kept:
            return endpoint
        last_success = max((i for i, (_, answer) in enumerate(results) if answer.ok), default=-1)
        if last_success >= 0 and endpoint.failing_since is not None:
            WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=None)
            endpoint.failing_since = None
        if any(not answer.ok for _, answer in results[last_success + 1 :]):
            _note_failure(endpoint, now)
            endpoint.refresh_from_db(fields=["enabled", "failing_since", "disabled_reason", "url"])
    return endpoint


def _note_failure(endpoint: WebhookEndpoint, now: datetime) -> None:
    """The endpoint failed once more: failing since now (if it was not), disabled after the allowed days."""
    WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=True).update(failing_since=now)
    cutoff = now - timedelta(days=settings.WEBHOOK_DISABLE_AFTER_DAYS)
    disabled = WebhookEndpoint.objects.filter(pk=endpoint.pk, enabled=True, failing_since__lte=cutoff).update(
        enabled=False, disabled_reason="failing"
    )
    if disabled:
        audit(
            endpoint.tenant,
            "system",
            "webhook.disable",
            "webhook",
            str(endpoint.pk),
            reason="failing",
            days=settings.WEBHOOK_DISABLE_AFTER_DAYS,
        )
        log.warning(
            "webhook endpoint %s disabled: failing for %s days",
            endpoint.pk,
            settings.WEBHOOK_DISABLE_AFTER_DAYS,
        )


def sweep(now: datetime | None = None) -> int:
    """Queue a drain for every enabled endpoint with due, unleased events; how many were queued."""
    now = now or timezone.now()
    endpoint_ids = list(
        EventDispatch.objects.filter(
            status=EventDispatch.Status.PENDING, next_attempt_at__lte=now, endpoint__enabled=True
        )
        .filter(Q(leased_until__isnull=True) | Q(leased_until__lt=now))
        .order_by()
        .values_list("endpoint_id", flat=True)
        .distinct()[:SWEEP_BATCH]
    )
    queue.drain_soon(endpoint_ids)
    return len(endpoint_ids)

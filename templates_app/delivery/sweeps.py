"""Beat's sweeps (``templates_app.run_scheduled_pushes``, every 15 s): start scheduled pushes that are due,
resume pushes whose workers died."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from templates_app.delivery import lanes, ledger, progress, queue
from templates_app.delivery.start import start_scheduled
from templates_app.delivery.timing import stall_after
from templates_app.models import Delivery, Push

SWEEP_BATCH = 100  # scheduled pushes started per beat


def start_due_pushes(now: datetime | None = None) -> int:
    """Scheduled pushes whose send_at has come: queued (once), explicit recipients claimed, delivery queued."""
    now = now or timezone.now()
    due = list(
        Push.objects.filter(status=Push.Status.SCHEDULED, send_at__lte=now)
        .order_by("send_at")
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    started = 0
    for push_id in due:
        push = ledger.load_push(push_id)
        if push and start_scheduled(push):
            progress.touch_progress(push_id, force=True)
            lanes.remember(push)
            queue.enqueue_push(push_id)
            started += 1
    return started


def resume_stalled_pushes(stall_seconds: float | None = None) -> int:
    """Pushes with work left and no progress for DELIVERY_STALL_AFTER: their tasks died with a worker (or
    were never queued). Re-queue the enumeration and the pending deliveries; duplicates are harmless.
    A push whose rows are all settled but whose status was never moved on is finished here."""
    stall = stall_after() if stall_seconds is None else stall_seconds
    now, wall = timezone.now(), time.time()
    threshold = now - timedelta(seconds=stall)
    candidates = Push.objects.filter(
        Q(status__in=ledger.ACTIVE) | Q(status=Push.Status.CANCELED, pending__gt=0)
    ).values_list("pk", "status", "enumerated", "created_at")
    resumed = 0
    for push_id, status, enumerated, created_at in candidates:
        last = progress.last_progress(push_id)
        if (last is not None and last > wall - stall) or (last is None and created_at > threshold):
            continue
        progress.touch_progress(push_id, force=True)
        if status == Push.Status.QUEUED or (status == Push.Status.RUNNING and not enumerated):
            if not progress.is_locked(push_id):
                queue.enqueue_push(push_id)
                resumed += 1
        pending = Delivery.objects.filter(push_id=push_id, status=Delivery.Status.PENDING)
        cursor, size, any_pending = 0, settings.PUSH_CHUNK_SIZE, False
        while ids := list(pending.filter(pk__gt=cursor).order_by("pk").values_list("pk", flat=True)[:size]):
            queue.enqueue_chunk(push_id, ids)
            cursor, any_pending = ids[-1], True
        if any_pending:
            resumed += 1
        elif status in ledger.ACTIVE and enumerated:
            ledger.reconcile_counters(push_id)
            ledger.maybe_finish(push_id)
        elif status == Push.Status.CANCELED:
            ledger.reconcile_counters(push_id)
    return resumed

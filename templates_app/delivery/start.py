"""``deliver_push``: start (or resume) a push, enumerate its recipients and fan them out as chunks.

Explicit recipients of an immediate push were prepared in the request (``pushes.start``); here they are only
queued. ``@all`` is enumerated a page at a time (claim, write the rows, queue the chunk), so the first
chunks are sending while later pages are still being enumerated. Scheduled pushes start here too.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import Exists, F, OuterRef
from django.db.models.functions import Coalesce
from django.utils import timezone

from formids.models import MiniUser
from pushhub.sql import ids_in, texts_in
from templates_app.delivery import ledger, progress, queue
from templates_app.models import Delivery, Push
from templates_app.pushes.recipients import prepare_recipients, users_with_credit


def deliver_push(push_id: Any) -> str:
    """Start (or resume) a push: enumerate and fan out its chunks. Safe to run again for the same push:
    a cursor in the cache skips what was already queued, ``prepare_recipients`` skips existing rows."""
    push = ledger.load_push(push_id)
    if push is None:
        return "missing"
    now = timezone.now()
    if push.status == Push.Status.DONE:
        return "skipped"
    if push.status == Push.Status.SCHEDULED:
        if push.send_at and push.send_at > now:
            return "not_due"
        if not start_scheduled(push):
            return "skipped"
        push = ledger.load_push(push_id)
    if push.status in ledger.ACTIVE:
        ledger.mark_running(push.pk, now)
    owner = progress.take_lock(push.pk)
    if owner is None:
        return "busy"  # another worker is enumerating this push right now
    try:
        progress.touch_progress(push.pk, force=True)
        if push.status == Push.Status.CANCELED:
            _fan_out_pending(push, owner)  # prepared after the cancel: the chunks give the credits back
            return "canceled"
        if push.to_all and not push.enumerated:
            if not _enumerate_all(push, owner):  # queues each page as it goes
                return "canceled"
        elif not push.to_all:
            if not push.enumerated:  # a scheduled push whose start was interrupted
                _prepare_listed_recipients(push)
            _fan_out_pending(push, owner)
    finally:
        progress.drop_lock(push.pk, owner)
    _mark_enumerated(push)
    ledger.maybe_finish(push.pk)
    return "started"


def start_scheduled(push: Push) -> bool:
    """scheduled → queued, once (two beats, or a beat and a redelivery, never both start it)."""
    if not Push.objects.filter(pk=push.pk, status=Push.Status.SCHEDULED).update(status=Push.Status.QUEUED):
        return False
    if not push.to_all:
        push.status = Push.Status.QUEUED
        _prepare_listed_recipients(push)
    return True


def _prepare_listed_recipients(push: Push) -> None:
    prepare_recipients(push, push.to)
    _mark_enumerated(push)


def _mark_enumerated(push: Push) -> None:
    Push.objects.filter(pk=push.pk, enumerated=False).update(
        enumerated=True,
        recipients=Coalesce(F("recipients"), 0),
        no_credit=Coalesce(F("no_credit"), 0),
        opted_out=Coalesce(F("opted_out"), 0),
    )


def _enumerate_all(push: Push, owner: str) -> bool:
    """``@all``: claim and queue PUSH_CHUNK_SIZE users at a time, resuming after the last page queued.
    False if the push was canceled meanwhile."""
    size = settings.PUSH_CHUNK_SIZE
    cursor = progress.get_cursor(push.pk, "users")
    # Users a run already prepared hold claimed (no longer usable) credits: they stay in the enumeration,
    # so a page prepared by a run that died before queueing it is queued by the next one.
    prepared = Delivery.objects.filter(push_id=push.pk, openid=OuterRef("openid"))
    recipients = users_with_credit(push.template, extra=Exists(prepared))
    users = MiniUser.objects.filter(app_id=push.app_id)
    while True:
        # The next block of the app's users by id, then those of them with a credit: the credit tests run
        # per user of the block (index probes). One query "next 500 users with a credit" made PostgreSQL
        # hash every credit of the app for every page: quadratic, 31 s of its CPU for 100k users.
        block = list(users.filter(pk__gt=cursor).order_by("pk").values_list("pk", flat=True)[:size])
        if not block:
            return True
        cursor = block[-1]
        page = list(recipients.filter(pk__in=ids_in(block)).order_by("pk").values_list("pk", "openid"))
        if not page:  # a block of users without credits: still progress
            progress.set_cursor(push.pk, "users", cursor)
            progress.renew_lock(push.pk, owner)
            continue
        openids = [openid for _, openid in page]
        prepare_recipients(push, openids)
        # This page's pending rows: the new ones, and any an interrupted run prepared but maybe never queued.
        ids = list(
            Delivery.objects.filter(push=push, openid__in=texts_in(openids), status=Delivery.Status.PENDING)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        queue.enqueue_chunk(push.pk, ids)
        progress.set_cursor(push.pk, "users", cursor)
        progress.renew_lock(push.pk, owner)
        progress.touch_progress(push.pk)
        if Push.objects.filter(pk=push.pk, status=Push.Status.CANCELED).exists():
            return False


def _fan_out_pending(push: Push, owner: str) -> int:
    """Queue the pending deliveries not queued yet (explicit recipients), in chunks; returns how many."""
    size = settings.PUSH_CHUNK_SIZE
    cursor = progress.get_cursor(push.pk, "deliveries")
    queued = 0
    while True:
        ids = list(
            Delivery.objects.filter(push=push, status=Delivery.Status.PENDING, pk__gt=cursor)
            .order_by("pk")
            .values_list("pk", flat=True)[:size]
        )
        if not ids:
            return queued
        queue.enqueue_chunk(push.pk, ids)
        queued += len(ids)
        cursor = ids[-1]
        progress.set_cursor(push.pk, "deliveries", cursor)
        progress.renew_lock(push.pk, owner)

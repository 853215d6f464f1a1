"""``deliver_push``: start (or resume) a push, enumerate its recipients and fan them out as chunks.

Listed recipients (openids, aliases) of an immediate push were prepared in the request (``pushes.start``);
here they are only queued. Broadcasts (``@all``, a tag segment) are enumerated a page at a time (claim, write
the rows, queue the chunk), so the first chunks are sending while later pages are still being enumerated.
Scheduled pushes start here too.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef
from django.db.models.functions import Coalesce
from django.utils import timezone

from formids.models import MiniUser
from pushhub.sql import any_of, ids_in
from templates_app.delivery import ledger, progress, queue
from templates_app.models import Delivery, Push
from templates_app.pushes.addressing import Addressing
from templates_app.pushes.recipients import prepare_listed, prepare_recipients, users_with_credit

# A page of a broadcast waits for at most this many blocks of users before it is queued short: the first
# messages of a sparse segment leave without waiting for PUSH_CHUNK_SIZE members to be found.
PAGE_MAX_BLOCKS = 20


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
        if push.is_broadcast and not push.enumerated:
            if not _enumerate(push, owner):  # queues each page as it goes
                return "canceled"
        elif not push.is_broadcast:
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
    if not push.is_broadcast:
        push.status = Push.Status.QUEUED
        _prepare_listed_recipients(push)
    return True


def _prepare_listed_recipients(push: Push) -> None:
    """Claim for the listed recipients of a push that is starting now (aliases are resolved here). The rows and
    the ``enumerated`` mark commit together: a start that dies is redone whole, and never resolves the
    aliases a second time after some were prepared (an alias moved meanwhile would reach both users)."""
    with transaction.atomic():
        prepare_listed(push)
        _mark_enumerated(push)


def _mark_enumerated(push: Push) -> None:
    Push.objects.filter(pk=push.pk, enumerated=False).update(
        enumerated=True,
        recipients=Coalesce(F("recipients"), 0),
        no_credit=Coalesce(F("no_credit"), 0),
        opted_out=Coalesce(F("opted_out"), 0),
    )


def _enumerate(push: Push, owner: str) -> bool:
    """A broadcast: ``@all``, or a segment (the same walk, with the segment's tag probes). Claim and queue
    its recipients PUSH_CHUNK_SIZE at a time, resuming after the last one queued. False if the push was
    canceled meanwhile."""
    size = settings.PUSH_CHUNK_SIZE
    # Users a run already prepared hold claimed (no longer usable) credits: they stay in the enumeration,
    # so a page prepared by a run that died before queueing it is queued by the next one.
    prepared = Delivery.objects.filter(push_id=push.pk, openid=OuterRef("openid"))
    segment = Addressing.of(push).segment
    recipients = users_with_credit(push.template, extra=Exists(prepared), segment=segment)
    users = MiniUser.objects.filter(app_id=push.app_id)
    # The cursor: every user up to this id is queued or not a recipient.
    scanned = progress.get_cursor(push.pk, "users")
    page: list[tuple[int, str]] = []  # recipients found and not queued yet, by id
    blocks = 0  # scanned since the page's first recipient was found
    while True:
        # The next block of the app's users by id, then those of them the push reaches: the credit (and
        # tag) tests run per user of the block (index probes). One query "next 500 users with a credit"
        # made PostgreSQL hash every credit of the app for every page: quadratic, 31 s of its CPU for 100k
        # users. A segment's blocks yield fewer recipients: pages fill up across blocks, so its chunks are
        # as full as @all's.
        block = list(users.filter(pk__gt=scanned).order_by("pk").values_list("pk", flat=True)[:size])
        if block:
            scanned = block[-1]
            page += recipients.filter(pk__in=ids_in(block)).order_by("pk").values_list("pk", "openid")
            blocks = blocks + 1 if page else 0
        while len(page) >= size or (page and (not block or blocks >= PAGE_MAX_BLOCKS)):
            batch, page, blocks = page[:size], page[size:], 0
            _queue_page(push, [openid for _, openid in batch])
            progress.set_cursor(push.pk, "users", batch[-1][0])
            if Push.objects.filter(pk=push.pk, status=Push.Status.CANCELED).exists():
                return False
        if not page:  # everything scanned is queued (or reaches nobody): still progress
            progress.set_cursor(push.pk, "users", scanned)
        progress.renew_lock(push.pk, owner)
        progress.touch_progress(push.pk)
        if not block:
            return True


def _queue_page(push: Push, openids: list[str]) -> None:
    """Claim for a page of a broadcast's recipients and queue it as one chunk."""
    prepared = prepare_recipients(push, openids)
    ids = prepared.pending
    if prepared.existing:  # and any pending rows an interrupted run prepared but maybe never queued
        # = ANY(array): IN (SELECT unnest(…)) was planned as a scan of all the push's pending rows per page.
        ids = list(
            Delivery.objects.filter(any_of(Delivery, "openid", openids, "text"), push=push)
            .filter(status=Delivery.Status.PENDING)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
    queue.enqueue_chunk(push.pk, ids)


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

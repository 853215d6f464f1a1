"""Opens (../shared/API.md "Opens and the in-app inbox"): the mini-program was opened from a sent message, and
the SDK reported the ``ph=<ref>`` its page carried (``POST /sdk/v1/{appid}/opens``).

An open counts once per delivery. The guarded UPDATE that sets ``Delivery.opened_at`` decides the one winner
(only a sent delivery of this user, in a push of this app, not opened yet), so two reports racing each other
can't both count; only the winner bumps ``Push.opened`` and the funnel, marks the inbox message read and
records ``message.opened``, all in the transaction of that UPDATE.

Lock order: the delivery row (sent rows only, which no chunk write locks), then the push row, then the
funnel's day row, the order in which a chunk write (``ledger.write``: push first) takes the last two. The
push and the funnel's row are the hot ones (every open of a broadcast hits them), so they come last: each is
held only until the commit.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from formids import funnel
from formids.models import MiniUser
from pushhub.api import ApiError, iso_utc
from templates_app.models import Delivery, InboxMessage, Push
from templates_app.opens_ref import parse_ref
from tenants.models import MiniProgram
from webhooks import outbox

NOT_FOUND_MESSAGE = "No such message for this user."


@cache
def _open_sql() -> str:
    """The guarded UPDATE (built once: table names from the models); the subquery checks the push is this
    app's in the same statement. RETURNING names only the updated table's columns: SQLite refuses any other."""
    delivery, push = (m._meta.db_table for m in (Delivery, Push))
    return (
        f'UPDATE {delivery} SET "opened_at" = %s '
        'WHERE "id" = %s AND "opened_at" IS NULL AND "status" = %s AND "openid" = %s '
        f'AND "push_id" IN (SELECT p."id" FROM {push} p WHERE p."app_id" = %s) '
        'RETURNING "push_id"'
    )


def not_found() -> ApiError:
    return ApiError(404, "not_found", NOT_FOUND_MESSAGE)


def record_open(app: MiniProgram, user: MiniUser, ref, now: datetime | None = None) -> bool:
    """``user`` opened the message ``ref`` names. True for the first open of that delivery, False for a
    repeat (answered the same, counted once). 404 ``not_found`` for a malformed or forged ref (no query), and
    for a delivery that is another user's, another app's, not sent, or unknown: one answer for all, so a
    ref says nothing about deliveries that aren't the caller's."""
    delivery_id = parse_ref(ref)
    if delivery_id is None:
        raise not_found()
    now = now or timezone.now()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(_open_sql(), [now, delivery_id, Delivery.Status.SENT, user.openid, app.pk])
            won = cursor.fetchone()
        if won is None:
            if _already_opened(app, user.openid, delivery_id):
                return False
            raise not_found()
        push_id = Push._meta.pk.to_python(won[0])  # SQLite returns the UUID's hex
        template_id = Push.objects.filter(pk=push_id).values_list("template__template_id", flat=True).get()
        InboxMessage.objects.filter(delivery_id=delivery_id, read_at=None).update(read_at=now)
        _record_opened_event(app, user, push_id, now)
        Push.objects.filter(pk=push_id).update(opened=F("opened") + 1)
        funnel.record_open(app.pk, user.openid, template_id, now)
    return True


def _already_opened(app: MiniProgram, openid: str, delivery_id: int) -> bool:
    """The loser's question (a repeat, or a report that lost a race): is it this user's sent delivery in
    this app, opened already?"""
    return Delivery.objects.filter(
        pk=delivery_id,
        openid=openid,
        status=Delivery.Status.SENT,
        push__app_id=app.pk,
        opened_at__isnull=False,
    ).exists()


def _record_opened_event(app: MiniProgram, user: MiniUser, push_id, opened_at: datetime) -> None:
    known = outbox.interest(app.tenant_id)
    if not known.wants(outbox.MESSAGE_OPENED):
        return
    outbox.record(
        app.tenant_id,
        outbox.MESSAGE_OPENED,
        [
            {
                "push_id": str(push_id),
                "app": app.appid,
                "openid": user.openid,
                "alias": user.alias or None,
                "opened_at": iso_utc(opened_at),
            }
        ],
        known=known,
    )

"""The in-app inbox (../shared/API.md "Opens and the in-app inbox"): a user's sent messages as the mini-program
shows them (SDK ``inbox()``, ``markRead()``, the ``pushhub-inbox`` component).

- ``add_sent`` / ``remove_failed``: the delivery ledger's hooks, inside its transactions: a row per sent
  delivery (one INSERT per write), gone again when WeChat's sent-event turns the delivery failed.
- ``page``: one user's messages, newest first, keyset on (sent_at, id) through the ``inbox_user_recent`` index,
  with an opaque cursor; ``mark_read`` and ``unread_count``.

Every read goes through ``InboxMessage.objects.for_user(app_id, openid)``: one app's, one user's.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import connection
from django.db.models import Q
from django.utils import timezone

from pushhub.api import ApiError, iso_utc
from pushhub.sql import pg_array, prepared_cursor
from templates_app.models import Delivery, InboxMessage, Push

PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
MAX_READ_IDS = 500
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_ID = 2**63 - 1  # bigint: a larger id is no message of anyone's (and no database error)


# --- the ledger's hooks ----------------------------------------------------------------------------
def add_sent(push: Push, rows: Iterable[Delivery], sent_at: datetime) -> None:
    """One inbox row per newly sent delivery of ``push`` (the caller checked the app's ``inbox_enabled``):
    one INSERT, in the caller's transaction. A delivery already there (a write repeated after a lost
    connection) is skipped by its unique ``delivery_id``."""
    rows = list(rows)
    if connection.vendor == "postgresql":
        # Two arrays and unnest: with bulk_create (model instances, 5 parameters per row) a 500-row chunk's
        # write took 2.5 times as long as without the inbox; with this, 1.5 times (bench.inbox).
        with prepared_cursor(len(rows)) as cursor:
            cursor.execute(
                f"""
                INSERT INTO {InboxMessage._meta.db_table} (app_id, openid, push_id, delivery_id, sent_at)
                SELECT %s, v.openid, %s, v.delivery_id, %s
                FROM unnest(%s::bigint[], %s::text[]) AS v(delivery_id, openid)
                ON CONFLICT (delivery_id) DO NOTHING
                """,
                [
                    push.app_id,
                    push.pk,
                    sent_at,
                    pg_array([row.pk for row in rows], "bigint"),
                    pg_array([row.openid for row in rows], "text"),
                ],
            )
        return
    InboxMessage.objects.bulk_create(
        [
            InboxMessage(
                app_id=push.app_id, openid=row.openid, push_id=push.pk, delivery_id=row.pk, sent_at=sent_at
            )
            for row in rows
        ],
        ignore_conflicts=True,
    )


def remove_failed(delivery_id: int) -> None:
    """WeChat's sent-event said the message did not reach the user: it leaves their inbox."""
    InboxMessage.objects.filter(delivery_id=delivery_id).delete()


# --- the cursor ------------------------------------------------------------------------------------
def encode_cursor(sent_at: datetime, pk: int) -> str:
    """The position after a message, opaque to the client (base64 of "microseconds:id")."""
    micros = (sent_at - EPOCH) // timedelta(microseconds=1)  # exact: no float on the way
    return base64.urlsafe_b64encode(f"{micros}:{pk}".encode()).decode().rstrip("=")


def bad_cursor() -> ApiError:
    return ApiError(400, "validation_error", "cursor is not one this endpoint gave out.", field="cursor")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """(sent_at, id) from a cursor ``encode_cursor`` made; 400 (field ``cursor``) for anything else."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        micros_text, _, pk_text = text.partition(":")
        if not (micros_text.isdigit() and pk_text.isdigit()):
            raise ValueError(text)
        micros, pk = int(micros_text), int(pk_text)
        if not 0 < pk <= MAX_ID:
            raise ValueError(text)
        sent_at = EPOCH + timedelta(microseconds=micros)
    except (ValueError, binascii.Error, OverflowError, OSError, UnicodeDecodeError):
        raise bad_cursor() from None
    return sent_at, pk


# --- reading -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InboxPage:
    results: list[dict]
    next_cursor: str | None
    unread: int


def unread_count(app_id: int, openid: str) -> int:
    return InboxMessage.objects.for_user(app_id, openid).filter(read_at__isnull=True).count()


def message_payload(message: InboxMessage, push: Push) -> dict:
    """A message as the contract shows it: the template's title, its fields (names from the catalogue, in
    the template's order, with the push's values) and the push's page (no ``ph``: opening the message from
    the inbox is not a notification open)."""
    template = push.template
    fields = []
    for field in template.fields:
        value = push.data.get(field["key"])
        if isinstance(value, dict) and "value" in value:
            fields.append({"name": field.get("name") or field["key"], "value": str(value["value"])})
    return {
        "id": str(message.pk),
        "title": template.title,
        "fields": fields,
        "page": push.page,
        "sent_at": iso_utc(message.sent_at),
        "read": message.read_at is not None,
    }


def page(app_id: int, openid: str, cursor: str = "", limit: int = PAGE_SIZE) -> InboxPage:
    """One page of the user's messages, newest first: one query for the page (a range of the
    ``inbox_user_recent`` index from the cursor), one for their pushes and templates, one for the unread
    count."""
    messages = InboxMessage.objects.for_user(app_id, openid)
    if cursor:
        sent_at, pk = decode_cursor(cursor)
        # sent_at <= the cursor's bounds the index range; the Q steps over the messages already shown.
        messages = messages.filter(sent_at__lte=sent_at).filter(Q(sent_at__lt=sent_at) | Q(pk__lt=pk))
    rows = list(messages.order_by("-sent_at", "-id").only("id", "push_id", "sent_at", "read_at")[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    pushes = Push.objects.select_related("template").only(
        "id", "data", "page", "template__title", "template__fields"
    )
    by_id = {push.pk: push for push in pushes.filter(pk__in={row.push_id for row in rows})} if rows else {}
    return InboxPage(
        results=[message_payload(row, by_id[row.push_id]) for row in rows],
        next_cursor=encode_cursor(rows[-1].sent_at, rows[-1].pk) if more else None,
        unread=unread_count(app_id, openid),
    )


# --- read marks ----------------------------------------------------------------------------------------
def mark_read(app_id: int, openid: str, ids: Iterable[int] | None = None, *, everything: bool = False) -> int:
    """Mark the user's messages with these ids (or all of them) read; ids that are not the user's are
    ignored (they match no row of the user's). Idempotent: a message read stays read at its first time.
    Returns the unread count after."""
    unread = InboxMessage.objects.for_user(app_id, openid).filter(read_at__isnull=True)
    if not everything:
        unread = unread.filter(pk__in=list(ids or ()))
    unread.update(read_at=timezone.now())
    return unread_count(app_id, openid)

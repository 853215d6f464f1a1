"""A push and a delivery as the API answers them (``GET /api/v1/pushes/{id}``, the trigger's status URL,
``…/deliveries``)."""

from __future__ import annotations

from collections import defaultdict

from formids.models import MiniUser, UserTag
from pushhub.api import iso_utc
from pushhub.sql import texts_in
from templates_app.models import Delivery, Push


def push_payload(push: Push) -> dict:
    return {
        "id": str(push.pk),
        "template": str(push.template_id),
        "app": push.app.appid,
        "status": push.status,
        "to": push.to,
        "counts": {
            "recipients": push.recipients,
            "sent": push.sent,
            "failed": push.failed,
            "no_credit": push.no_credit,
            "opted_out": push.opted_out,
            "pending": push.pending,
            "held": push.held,
            "opened": push.opened,
        },
        "send_at": iso_utc(push.send_at),
        "created_at": iso_utc(push.created_at),
        "started_at": iso_utc(push.started_at),
        "finished_at": iso_utc(push.finished_at),
    }


def delivery_payloads(push: Push, deliveries: list[Delivery]) -> list[dict]:
    """A page of the push's deliveries, each with its user's ``alias`` and ``tags`` as they are now (the
    user object everywhere gains both: ../shared/API.md "Audience"); two queries, whatever the page size."""
    users = {
        openid: (pk, alias)
        for pk, openid, alias in MiniUser.objects.filter(
            app_id=push.app_id, openid__in=texts_in([d.openid for d in deliveries])
        ).values_list("pk", "openid", "alias")
    }
    tags = defaultdict(list)
    rows = UserTag.objects.filter(user_id__in=[pk for pk, _ in users.values()]).order_by("tag")
    for user_id, tag in rows.values_list("user_id", "tag"):
        tags[user_id].append(tag)
    answer = []
    for delivery in deliveries:
        pk, alias = users.get(delivery.openid, (None, None))
        answer.append(delivery_payload(delivery, alias=alias, tags=tags.get(pk, [])))
    return answer


def delivery_payload(delivery: Delivery, *, alias: str | None = None, tags: list[str] | None = None) -> dict:
    errcode = delivery.errcode
    return {
        "openid": delivery.openid,
        "alias": alias,
        "tags": tags or [],
        "status": delivery.status,
        "errcode": int(errcode) if errcode.lstrip("-").isdigit() else (errcode or None),
        "errmsg": delivery.errmsg or None,
        "attempts": delivery.attempts,
        "msgid": str(delivery.msgid) if delivery.msgid is not None else None,
        "sent_at": iso_utc(delivery.sent_at),
        "opened_at": iso_utc(delivery.opened_at),
    }

"""A push and a delivery as the API answers them (``GET /api/v1/pushes/{id}``, the trigger's status URL,
``…/deliveries``)."""

from __future__ import annotations

from pushhub.api import iso_utc
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
        },
        "send_at": iso_utc(push.send_at),
        "created_at": iso_utc(push.created_at),
        "started_at": iso_utc(push.started_at),
        "finished_at": iso_utc(push.finished_at),
    }


def delivery_payload(delivery: Delivery) -> dict:
    errcode = delivery.errcode
    return {
        "openid": delivery.openid,
        "status": delivery.status,
        "errcode": int(errcode) if errcode.lstrip("-").isdigit() else (errcode or None),
        "errmsg": delivery.errmsg or None,
        "attempts": delivery.attempts,
        "msgid": str(delivery.msgid) if delivery.msgid is not None else None,
        "sent_at": iso_utc(delivery.sent_at),
    }

"""templates_app's webhook events (../shared/API.md "Webhooks"), recorded by ``webhooks.outbox`` in the
transaction of the state change they report:

- ``push.finished``: a push became done or canceled (``ledger.maybe_finish``, ``pushes.start``);
- ``deliveries.failed``: deliveries a write settled as failed, ≤ 500 a event (``ledger.write``, and WeChat's
  sent-event turning a sent delivery into a failed one);
- ``user.unreachable``: a send used the user's last usable credit for the template.

Each reads the tenant's interest once; a tenant with no endpoint wanting the type pays that one query.
"""

from __future__ import annotations

from collections.abc import Sequence

from formids.models import MiniUser
from pushhub.sql import texts_in
from templates_app.models import Delivery, Push, Template
from templates_app.pushes.payloads import push_payload
from templates_app.pushes.recipients import has_usable_credit
from webhooks import outbox


def push_finished(push_id, tenant_id: int | None = None) -> None:
    """The push as it is now (call it in the transaction that finished it). With the push's ``tenant_id``
    (the caller has it) the push is read only when one of the tenant's endpoints wants the event."""
    known = outbox.interest(tenant_id) if tenant_id is not None else None
    if known is not None and not known.wants(outbox.PUSH_FINISHED):
        return
    push = Push.objects.select_related("app").filter(pk=push_id).first()
    if push is None:
        return
    known = known or outbox.interest(push.tenant_id)
    if not known.wants(outbox.PUSH_FINISHED):
        return
    body = push_payload(push)
    data = {
        "push_id": body["id"],
        "app": body["app"],
        "template": body["template"],
        "status": body["status"],
        "counts": body["counts"],
        "finished_at": body["finished_at"],
    }
    outbox.record(push.tenant_id, outbox.PUSH_FINISHED, [data], known=known)


def _aliases(app_id: int, openids: Sequence[str]) -> dict[str, str | None]:
    return dict(
        MiniUser.objects.filter(app_id=app_id, openid__in=texts_in(openids), alias__isnull=False).values_list(
            "openid", "alias"
        )
    )


def after_outcomes(push: Push, failed: Sequence[Delivery], spent_openids: Sequence[str]) -> None:
    """What a write of outcomes tells the tenant: its failed deliveries (attempted ones: a cancel is the
    tenant's own doing), and the users whose credit it spent and who have no usable one left."""
    failed = [row for row in failed if row.errcode != "canceled"]
    if not failed and not spent_openids:
        return
    known = outbox.interest(push.tenant_id)
    if failed and known.wants(outbox.DELIVERIES_FAILED):
        deliveries_failed(push, failed, known)
    if spent_openids and known.wants(outbox.USER_UNREACHABLE):
        _users_unreachable(push, spent_openids, known)


def deliveries_failed(push: Push, rows: Sequence[Delivery], known: outbox.Interest | None = None) -> None:
    aliases = _aliases(push.app_id, [row.openid for row in rows])
    items = [
        {
            "openid": row.openid,
            "alias": aliases.get(row.openid),
            "errcode": int(row.errcode) if row.errcode.lstrip("-").isdigit() else (row.errcode or None),
            "errmsg": row.errmsg or None,
        }
        for row in rows
    ]
    outbox.record(
        push.tenant_id,
        outbox.DELIVERIES_FAILED,
        [
            {
                "push_id": str(push.pk),
                "app": push.app.appid,
                "template": str(push.template_id),
                "deliveries": batch,
            }
            for batch in outbox.in_batches(items)
        ],
        known=known,
    )


def _users_unreachable(push: Push, openids: Sequence[str], known: outbox.Interest) -> None:
    template: Template = push.template
    gone = list(
        MiniUser.objects.filter(app_id=push.app_id, openid__in=texts_in(list(dict.fromkeys(openids))))
        .filter(~has_usable_credit(template))
        .values_list("openid", "alias")
    )
    outbox.record(
        push.tenant_id,
        outbox.USER_UNREACHABLE,
        [
            {"app": push.app.appid, "openid": openid, "alias": alias, "template_id": template.template_id}
            for openid, alias in gone
        ],
        known=known,
    )

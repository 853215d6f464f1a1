"""formids' webhook events (../shared/API.md "Webhooks"): ``subscription.changed``, recorded in the transaction
that applies the user's answer (``webhooks.outbox``)."""

from __future__ import annotations

from collections.abc import Mapping

from tenants.models import MiniProgram
from webhooks import outbox


def subscriptions_changed(
    app: MiniProgram, openid: str, alias: str | None, answers: Mapping[str, str]
) -> None:
    """One ``subscription.changed`` per template the user answered (``accept``, ``reject``, ``ban`` …)."""
    if not answers:
        return
    outbox.record(
        app.tenant_id,
        outbox.SUBSCRIPTION_CHANGED,
        [
            {"app": app.appid, "openid": openid, "alias": alias or None, "template_id": tid, "status": status}
            for tid, status in answers.items()
        ],
    )

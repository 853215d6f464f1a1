"""Signal receivers of templates_app. ``connect()`` is called once from TemplatesAppConfig.ready()."""

from __future__ import annotations

from formids.hooks import subscribe_message_sent
from templates_app.delivery import ledger


def on_subscribe_message_sent(sender, *, app, msgid, errcode, errstatus="", **kwargs) -> None:
    """WeChat's subscribe_msg_sent_event: a failure reported after the send was accepted marks the
    delivery failed. Runs inside the transaction that stores the event."""
    ledger.record_sent_event(app, msgid, errcode, errstatus)


def connect() -> None:
    subscribe_message_sent.connect(
        on_subscribe_message_sent, dispatch_uid="templates_app.subscribe_message_sent"
    )

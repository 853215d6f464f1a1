"""Building blocks for the delivery tests and bench/broadcast.py: templates known to both PushHub and the
sandbox, users with matching credits on both sides (bulk inserts, so thousands take a moment), pushes."""

from __future__ import annotations

import hashlib
import secrets
from collections import Counter
from datetime import timedelta

import pytest
from django.db.models import Count
from django.utils import timezone

from formids.models import Credit, MiniUser
from pushhub import crypto
from pushhub.wechat.sandbox import services as sandbox
from pushhub.wechat.sandbox.models import (
    SandboxApp,
    SandboxFormId,
    SandboxMessage,
    SandboxSubscription,
    SandboxUser,
)
from templates_app import tasks
from templates_app.delivery import queue as delivery_queue
from templates_app.models import Delivery, Push, Template
from templates_app.pushes.addressing import parse_to
from templates_app.pushes.recipients import prepare_listed

FIELDS = {
    "formid": [{"key": "keyword1", "name": "订单号"}, {"key": "keyword2", "name": "金额"}],
    "subscribe": [{"key": "character_string1", "name": "订单号"}, {"key": "thing2", "name": "商品"}],
}
DATA = {
    "formid": {"keyword1": {"value": "A123"}, "keyword2": {"value": "¥99.00", "color": "#173177"}},
    "subscribe": {"character_string1": {"value": "A123"}, "thing2": {"value": "机械键盘"}},
}


def make_template(app, kind: str = "formid", *, long_term: bool = False) -> Template:
    """A template in both the sandbox's WeChat account and the catalogue; ``long_term``: a subscribe
    template of WeChat's type 3."""
    fields = FIELDS[kind]
    content = "".join(f"{f['name']}:{{{{{f['key']}.DATA}}}}\n" for f in fields)
    wechat = sandbox.add_template(
        app.appid, kind=kind, title="订单通知", content=content, type=3 if long_term else 2
    )
    token = secrets.token_urlsafe(24)
    subscription = ""
    if kind == "subscribe":
        subscription = Template.Subscription.LONG_TERM if long_term else Template.Subscription.ONE_TIME
    return Template.objects.create(
        app=app,
        kind=kind,
        template_id=wechat.template_id,
        title="订单通知",
        fields=fields,
        subscription=subscription,
        page="pages/order?id=1",
        trigger_token_hash=hashlib.sha256(token.encode()).hexdigest(),
        trigger_token_ciphertext=crypto.encrypt(token),
    )


def new_openid() -> str:
    return "oDlv" + secrets.token_hex(12)


def seed_users(
    app,
    count: int,
    *,
    formids: int = 0,
    prepay: int = 0,
    subscribe: Template | None = None,
    subscriptions: int = 1,
    push_enabled: bool = True,
    in_wechat: bool = True,
) -> list[str]:
    """``count`` users of ``app`` known to PushHub and (``in_wechat``) to the sandbox, each with ``formids``
    formIds and ``prepay`` prepay_ids that both sides know, and ``subscriptions`` accepts of ``subscribe``
    (a long-term template: one standing subscription)."""
    wechat_app = SandboxApp.objects.get(appid=app.appid)
    openids = [new_openid() for _ in range(count)]
    now = timezone.now()
    if in_wechat:
        SandboxUser.objects.bulk_create([SandboxUser(app=wechat_app, openid=o) for o in openids])
    MiniUser.objects.bulk_create(
        [MiniUser(app=app, openid=o, push_enabled=push_enabled) for o in openids], batch_size=500
    )
    users = dict(MiniUser.objects.filter(app=app, openid__in=openids).values_list("openid", "pk"))
    wechat_ids, credits = [], []
    for openid in openids:
        for kind, n, uses in (("formid", formids, 1), ("prepay", prepay, 3)):
            for _ in range(n):
                value = secrets.token_hex(16)
                wechat_ids.append(
                    SandboxFormId(app=wechat_app, openid=openid, value=value, kind=kind, uses_left=uses)
                )
                credits.append(
                    Credit(
                        app=app,
                        user_id=users[openid],
                        kind=kind,
                        value=value,
                        uses_left=uses,
                        expires_at=now + timedelta(days=7),
                    )
                )
        if subscribe is not None and subscribe.is_long_term:  # a standing subscription: one row
            credits.append(
                Credit(app=app, user_id=users[openid], kind="long_term", template_id=subscribe.template_id)
            )
        elif subscribe is not None:
            credits += [
                Credit(app=app, user_id=users[openid], kind="subscribe", template_id=subscribe.template_id)
                for _ in range(subscriptions)
            ]
    if in_wechat:
        SandboxFormId.objects.bulk_create(wechat_ids, batch_size=500)
        if subscribe is not None:
            SandboxSubscription.objects.bulk_create(
                [
                    SandboxSubscription(
                        app=wechat_app,
                        openid=o,
                        template_id=subscribe.template_id,
                        credits=1 if subscribe.is_long_term else subscriptions,
                    )
                    for o in openids
                ],
                batch_size=500,
            )
    Credit.objects.bulk_create(credits, batch_size=500)
    return openids


def make_push(template: Template, to="@all", *, send_at=None, **fields) -> Push:
    """A push as the trigger endpoint makes it (``to`` as a send body gives it): listed recipients (openids,
    aliases) prepared (claimed) at once, broadcasts (``@all``, ``{"tags": …}``) and scheduled pushes left to
    the workers."""
    addressing = parse_to(to)
    scheduled = send_at is not None
    unknown = addressing.is_broadcast or scheduled
    push = Push.objects.create(
        tenant=template.app.tenant,
        app=template.app,
        template=template,
        status=Push.Status.SCHEDULED if scheduled else Push.Status.QUEUED,
        audience=addressing.audience,
        to=addressing.as_json(),
        data=DATA[template.kind],
        page=template.page,
        send_at=send_at,
        recipients=None if unknown else 0,
        no_credit=None if unknown else 0,
        opted_out=None if unknown else 0,
        **fields,
    )
    if not unknown:
        prepare_listed(push)
        Push.objects.filter(pk=push.pk).update(enumerated=True)
        push.refresh_from_db()
    return push


def inbox_counts(appid: str) -> Counter:
    """Messages per openid in the sandbox's inbox."""
    rows = SandboxMessage.objects.filter(app__appid=appid).values_list("openid").annotate(n=Count("pk"))
    return Counter(dict(rows))


def row_counts(push: Push) -> dict[str, int]:
    counts = dict.fromkeys(Delivery.Status.values, 0)
    counts.update(dict(push.deliveries.values_list("status").annotate(n=Count("pk"))))
    return counts


def assert_counters_match_rows(push: Push) -> None:
    push.refresh_from_db()
    rows = row_counts(push)
    counters = {name: getattr(push, name) for name in rows}
    assert counters == rows, (counters, rows)
    assert push.recipients == sum(rows.values()) + (push.opted_out or 0)


def forget_redis_queue(url: str, queue: str) -> None:
    """Remove what a test queue leaves in a shared Redis: the queue, kombu's bindings of its exchange, and
    messages a killed worker left unacknowledged (kombu would restore them into the queue an hour later)."""
    import json

    import redis

    client = redis.Redis.from_url(url)
    client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
    for tag, payload in client.hscan_iter("unacked"):
        try:
            routing_key = json.loads(payload)[2]
        except (ValueError, IndexError, TypeError):
            continue
        if routing_key == queue:
            client.hdel("unacked", tag)
            client.zrem("unacked_index", tag)


def deliver_push_killed_at_second_page(push: Push, monkeypatch) -> None:
    """Run deliver_push and let its worker die (SystemExit) as it queues the second page of recipients: that
    page is claimed and its rows written, but it is never queued. The queue works normally afterwards."""
    queue_chunk = delivery_queue.enqueue_chunk
    calls = []

    def dies_on_the_second_page(push_id, ids, countdown=None):
        calls.append(ids)
        if len(calls) == 2:
            raise SystemExit("worker killed")
        queue_chunk(push_id, ids, countdown)

    monkeypatch.setattr(delivery_queue, "enqueue_chunk", dies_on_the_second_page)
    with pytest.raises(SystemExit):
        tasks.deliver_push(str(push.pk))
    monkeypatch.setattr(delivery_queue, "enqueue_chunk", queue_chunk)

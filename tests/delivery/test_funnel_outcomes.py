"""The funnel's sent / failed counters from real sends through the sandbox: per push template (a formId
template's under its own id), with the app's DailyStat; and WeChat's later sent-event failure moving one."""

from __future__ import annotations

import pytest
from django.utils import timezone

from formids.hooks import subscribe_message_sent
from formids.models import DailyStat, TemplateDailyStat
from templates_app import tasks
from templates_app.models import Delivery

from .helpers import make_push, seed_users

pytestmark = pytest.mark.django_db(transaction=True)


def counters(app, template) -> tuple[int, int]:
    row = TemplateDailyStat.objects.filter(
        app=app, template_id=template.template_id, day=timezone.now().date()
    ).first()
    return (row.sent, row.failed) if row else (0, 0)


def test_a_broadcast_counts_sent_and_failed_under_its_template(
    app, formid_template, subscribe_template, task_queue
):
    seed_users(app, 4, subscribe=subscribe_template)
    seed_users(app, 2, subscribe=subscribe_template, in_wechat=False)  # WeChat knows no such users: failed
    seed_users(app, 3, formids=1)

    for template in (subscribe_template, formid_template):
        tasks.deliver_push(str(make_push(template).pk))
        task_queue.run()

    assert counters(app, subscribe_template) == (4, 2)
    assert counters(app, formid_template) == (3, 0)
    daily = DailyStat.objects.get(app=app, day=timezone.now().date())
    assert (daily.sent, daily.failed) == (7, 2)


def test_a_failure_reported_later_by_wechat_moves_one_from_sent_to_failed(
    app, subscribe_template, task_queue
):
    users = seed_users(app, 2, subscribe=subscribe_template)
    push = make_push(subscribe_template, users)
    tasks.deliver_push(str(push.pk))
    task_queue.run()
    refused = push.deliveries.order_by("pk").first()

    for _ in range(2):  # WeChat retries its event push: counted once
        subscribe_message_sent.send(
            sender=type(app),
            app=app,
            openid=refused.openid,
            template_id=subscribe_template.template_id,
            msgid=refused.msgid,
            errcode=43101,
            errstatus="failed:user refuse to accept the msg",
        )

    assert counters(app, subscribe_template) == (1, 1)
    daily = DailyStat.objects.get(app=app, day=timezone.now().date())
    assert (daily.sent, daily.failed) == (1, 1)


def test_the_stats_survive_the_deliveries(app, subscribe_template, task_queue, read_api):
    """The numbers are aggregate rows: with the push's deliveries gone (retention), the endpoint says the same."""
    seed_users(app, 3, subscribe=subscribe_template)
    tasks.deliver_push(str(make_push(subscribe_template).pk))
    task_queue.run()
    url = f"/api/v1/apps/{app.appid}/stats?template={subscribe_template.template_id}"
    before = read_api.get(url).json()
    assert before["days"][-1]["sent"] == 3

    Delivery.objects.filter(push__app=app).delete()

    assert read_api.get(url).json() == before

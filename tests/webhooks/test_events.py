"""What the tenant is told: push.finished, deliveries.failed (batched), user.unreachable, subscription.changed,
each recorded with the state change it reports (the outbox) and delivered to a verifying receiver."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from formids.models import MiniUser
from templates_app import webhook_events
from templates_app.delivery import ledger
from templates_app.delivery import queue as delivery_queue
from templates_app.delivery.chunk import deliver_chunk
from templates_app.models import Delivery, Push
from templates_app.pushes.start import cancel_push
from tests.delivery.helpers import DATA, make_push, make_template, seed_users
from tests.sdk_helpers import sdk_client, url
from tests.test_wechat_events import OPENID, WeChatPush, popup
from webhooks import dispatch, outbox, queue, services
from webhooks.models import EventDispatch, WebhookEvent

pytestmark = pytest.mark.django_db(transaction=True)


def events_of(receiver, event_type: str) -> list[dict]:
    return [e for e in receiver.verified_events() if e["type"] == event_type]


def test_push_finished_when_a_broadcast_is_done(app, endpoint, receiver, task_queue, drains):
    template = make_template(app, "formid")
    seed_users(app, 3, formids=2)
    push = make_push(template, "@all")
    delivery_queue.enqueue_push(push.pk)
    task_queue.run()
    drains.run()
    (finished,) = events_of(receiver, "push.finished")
    assert finished["data"] == {
        "push_id": str(push.pk),
        "app": app.appid,
        "template": str(template.pk),
        "status": "done",
        "counts": {
            "recipients": 3,
            "sent": 3,
            "failed": 0,
            "no_credit": 0,
            "opted_out": 0,
            "pending": 0,
            "held": 0,
            "opened": 0,
        },
        "finished_at": finished["data"]["finished_at"],
    }
    assert events_of(receiver, "user.unreachable") == [], "every user still has a formId"
    assert events_of(receiver, "deliveries.failed") == []


def test_push_finished_for_a_canceled_push(app, endpoint, receiver, drains):
    template = make_template(app, "formid")
    openids = seed_users(app, 2, formids=1)
    push = make_push(template, openids)
    cancel_push(push)
    drains.run()
    (finished,) = events_of(receiver, "push.finished")
    assert finished["data"]["status"] == "canceled"
    assert finished["data"]["counts"]["failed"] == 2
    assert events_of(receiver, "deliveries.failed") == [], "a cancel is the tenant's own doing"


def test_push_finished_at_once_when_nobody_has_a_credit(app, endpoint, receiver, api, drains):
    template = make_template(app, "formid")
    openids = seed_users(app, 2)
    body = {"to": openids, "data": DATA["formid"]}
    response = api.post(f"/api/v1/templates/{template.pk}/pushes", body, format="json")
    assert response.status_code == 202, response.json()
    drains.run()
    (finished,) = events_of(receiver, "push.finished")
    assert finished["data"]["status"] == "done" and finished["data"]["counts"]["no_credit"] == 2


def test_failed_deliveries_are_reported_in_batches_with_aliases(app, endpoint, receiver, task_queue, drains):
    template = make_template(app, "formid")
    ghosts = seed_users(app, 3, formids=1, in_wechat=False)  # WeChat does not know them: 40003
    MiniUser.objects.filter(app=app, openid=ghosts[0]).update(alias="user-1")
    push = make_push(template, ghosts)
    delivery_queue.enqueue_push(push.pk)
    task_queue.run()
    drains.run()
    failed = events_of(receiver, "deliveries.failed")
    assert len(failed) == 1
    data = failed[0]["data"]
    assert data["push_id"] == str(push.pk)
    assert sorted(d["openid"] for d in data["deliveries"]) == sorted(ghosts)
    by_openid = {d["openid"]: d for d in data["deliveries"]}
    assert by_openid[ghosts[0]]["alias"] == "user-1" and by_openid[ghosts[1]]["alias"] is None
    assert by_openid[ghosts[0]]["errcode"] == 40003 and by_openid[ghosts[0]]["errmsg"]


def test_at_most_500_deliveries_a_event(app, tenant, endpoint, drains):
    template = make_template(app, "formid")
    push = make_push(template, "@all")
    rows = [
        Delivery(push=push, openid=f"o{n}", status="failed", errcode="40003", errmsg="x") for n in range(1201)
    ]
    with transaction.atomic():
        webhook_events.deliveries_failed(push, rows)
    sizes = sorted(len(e.data["deliveries"]) for e in WebhookEvent.objects.filter(type="deliveries.failed"))
    assert sizes == [201, 500, 500]


def test_user_unreachable_when_the_last_credit_is_used(app, endpoint, receiver, task_queue, drains):
    template = make_template(app, "formid")
    last, spare = seed_users(app, 1, formids=1), seed_users(app, 1, formids=2)
    MiniUser.objects.filter(app=app, openid=last[0]).update(alias="vip-7")
    push = make_push(template, [*last, *spare])
    delivery_queue.enqueue_push(push.pk)
    task_queue.run()
    drains.run()
    (gone,) = events_of(receiver, "user.unreachable")
    assert gone["data"] == {
        "app": app.appid,
        "openid": last[0],
        "alias": "vip-7",
        "template_id": template.template_id,
    }


def test_subscription_changed_from_the_sdk_report(app, endpoint, receiver, drains):
    template = make_template(app, "subscribe")
    phone = sdk_client(app, "oPhone0000000000000000000001")
    MiniUser.objects.filter(app=app, openid="oPhone0000000000000000000001").update(alias="a-1")
    results = {template.template_id: "reject", "NOT_IN_THE_CATALOGUE": "accept"}
    response = phone.post(url(app, "subscriptions"), {"results": results}, format="json")
    assert response.status_code == 200
    drains.run()
    (changed,) = events_of(receiver, "subscription.changed")
    assert changed["data"] == {
        "app": app.appid,
        "openid": "oPhone0000000000000000000001",
        "alias": "a-1",
        "template_id": template.template_id,
        "status": "reject",
    }


def test_subscription_changed_from_wechat_events(client, sandbox_app, endpoint, receiver, drains):
    app = sandbox_app
    app.credit_source = "events"
    app.save(update_fields=["credit_source"])
    wechat = WeChatPush(client, app)
    assert wechat.plain(popup(("T_A", "accept"), ("T_B", "reject"))).status_code == 200
    drains.run()
    changes = {
        (e["data"]["template_id"], e["data"]["status"]) for e in events_of(receiver, "subscription.changed")
    }
    assert changes == {("T_A", "accept"), ("T_B", "reject")}
    assert {e["data"]["openid"] for e in events_of(receiver, "subscription.changed")} == {OPENID}


def test_an_endpoint_gets_only_the_types_it_wants(tenant, endpoint, receiver, drains):
    only_finished, secret = services.create_endpoint(
        tenant, url=receiver.url + "?only", events=["push.finished"]
    )
    with transaction.atomic():
        outbox.record(tenant.pk, outbox.SUBSCRIPTION_CHANGED, [{"x": 1}])
    assert list(EventDispatch.objects.values_list("endpoint_id", flat=True)) == [endpoint.pk]


def test_the_interest_lists_each_enabled_endpoint_with_its_event_types(tenant, other_tenant, receiver):
    wanting, _ = services.create_endpoint(
        tenant, url=receiver.url, events=["push.finished", "user.unreachable"]
    )
    everything, _ = services.create_endpoint(tenant, url=receiver.url + "?all", events=["*"])
    disabled, _ = services.create_endpoint(tenant, url=receiver.url + "?off", events=["*"])
    disabled.enabled = False
    disabled.save(update_fields=["enabled"])
    services.create_endpoint(other_tenant, url=receiver.url, events=["*"])  # another tenant's: not listed

    interest = outbox.interest(tenant.pk)
    assert sorted(interest.endpoints, key=lambda e: str(e[0])) == sorted(
        [(wanting.pk, ["push.finished", "user.unreachable"]), (everything.pk, ["*"])], key=lambda e: str(e[0])
    )  # the types as a list, not as JSON text
    assert set(interest.endpoints_for("user.unreachable")) == {wanting.pk, everything.pk}
    assert interest.endpoints_for("message.opened") == [everything.pk]


def test_a_tenant_without_endpoints_records_nothing(tenant, other_tenant, receiver, drains):
    services.create_endpoint(other_tenant, url=receiver.url, events=["*"])
    assert outbox.record(tenant.pk, outbox.PUSH_FINISHED, [{"x": 1}]) == []
    assert not WebhookEvent.objects.filter(tenant=tenant).exists()


def test_no_event_without_the_state_change(app, endpoint, drains):
    """The outbox shares the state change's transaction: rolled back together."""
    template = make_template(app, "formid")
    push = make_push(template, "@all")
    Push.objects.filter(pk=push.pk).update(enumerated=True, status="running")
    with pytest.raises(RuntimeError), transaction.atomic():
        assert ledger.maybe_finish(push.pk)
        raise RuntimeError("the worker dies before the commit")
    assert Push.objects.get(pk=push.pk).status == "running"
    assert not WebhookEvent.objects.exists() and drains.queued == []
    assert ledger.maybe_finish(push.pk)
    assert WebhookEvent.objects.get().type == "push.finished"


def test_a_finish_no_endpoint_wants_is_its_update_alone(app, drains):
    """Nobody wants push.finished: the push becomes done in one autocommitted UPDATE (after the interest,
    read here: a chunk's own write has usually read it already), and nothing is recorded."""
    if connection.vendor != "postgresql":
        pytest.skip("the autocommitted finish is PostgreSQL's (elsewhere the transaction as before)")
    push = make_push(make_template(app, "formid"), "@all")
    Push.objects.filter(pk=push.pk).update(enumerated=True, status="running")
    with CaptureQueriesContext(connection) as queries:
        assert ledger.maybe_finish(push.pk, app.tenant_id)
    assert [q["sql"].split()[0] for q in queries] == ["SELECT", "UPDATE"]
    assert Push.objects.get(pk=push.pk).status == "done"
    assert not WebhookEvent.objects.exists() and drains.queued == []
    assert not ledger.maybe_finish(push.pk, app.tenant_id), "finished once"


def test_an_endpoint_added_after_a_chunk_hears_the_next_push_finish(
    app, tenant, receiver, task_queue, drains, monkeypatch
):
    """A chunk's finish may reuse the interest its own write read, never one an earlier chunk of the same
    thread read before the tenant added an endpoint."""
    monkeypatch.setattr(ledger, "INTEREST_REUSE_SECONDS", 600.0)  # however slow the machine
    template = make_template(app, "formid")
    (openid,) = seed_users(app, 1, formids=1)
    first = make_push(template, [openid])
    delivery_queue.enqueue_push(first.pk)
    task_queue.run()  # its chunk, in this thread: sent and finished with nobody listening
    assert Push.objects.get(pk=first.pk).status == "done"
    _endpoint, receiver.secret = services.create_endpoint(tenant, url=receiver.url, events=["push.finished"])
    # A push whose one delivery is settled already: its chunk loads nothing and goes straight to the finish.
    second = make_push(template, "@all")
    Push.objects.filter(pk=second.pk).update(enumerated=True, status="running")
    delivery = Delivery.objects.create(push=second, openid=openid, status=Delivery.Status.SENT)
    deliver_chunk(second.pk, [delivery.pk])
    assert Push.objects.get(pk=second.pk).status == "done"
    drains.run()
    (finished,) = events_of(receiver, "push.finished")
    assert finished["data"]["push_id"] == str(second.pk)


def test_a_crash_after_the_state_change_still_delivers(app, endpoint, receiver, monkeypatch):
    """The push finished and committed, then the process died before it queued the webhook drain (the
    broker was unreachable, or the worker was killed): beat's sweep finds the event and it is delivered."""
    template = make_template(app, "formid")
    push = make_push(template, "@all")
    Push.objects.filter(pk=push.pk).update(enumerated=True, status="running")

    def broker_gone(endpoint_id):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(queue, "enqueue", broker_gone)
    assert ledger.maybe_finish(push.pk)
    assert receiver.received == []
    drained = []
    monkeypatch.setattr(queue, "enqueue", drained.append)
    assert dispatch.sweep() == 1
    for endpoint_id in drained:
        dispatch.drain_endpoint(endpoint_id)
    (finished,) = events_of(receiver, "push.finished")
    assert finished["data"]["push_id"] == str(push.pk)


def test_every_event_goes_to_every_endpoint_that_wants_it(tenant, endpoint, receiver, drains):
    second, _ = services.create_endpoint(tenant, url=receiver.url + "?second", events=["user.unreachable"])
    payloads = [{"openid": f"o{n}", "alias": "用户", "template_id": "T"} for n in range(3)]
    with transaction.atomic():
        events = outbox.record(tenant.pk, outbox.USER_UNREACHABLE, payloads)
    assert [event.data for event in WebhookEvent.objects.order_by("data__openid")] == payloads
    pairs = set(EventDispatch.objects.values_list("event_id", "endpoint_id"))
    assert pairs == {(event.pk, e.pk) for event in events for e in (endpoint, second)}
    assert all(d.status == "pending" and d.next_attempt_at for d in EventDispatch.objects.all())

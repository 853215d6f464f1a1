"""Long-term subscriptions through the delivery pipeline, against the sandbox over real HTTP: one accept serves
any number of sends (concurrent ones too), 43101 ends it (and then user.unreachable), @all and the dry run
count standing subscribers, a long-term accept releases held deliveries, and a send whose outcome was lost is
never repeated."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from formids import services as credits
from formids.models import Credit
from pushhub.wechat.errors import WeChatTimeout
from pushhub.wechat.sandbox import services as sandbox
from pushhub.wechat.sandbox.models import SandboxSubscription
from templates_app import tasks
from templates_app.delivery import ledger
from templates_app.delivery import queue as delivery_queue
from templates_app.delivery.job import Job
from templates_app.delivery.outcomes import classify
from templates_app.models import Delivery, Push
from tenants import services as tenant_services
from tests.sdk_helpers import sdk_client
from webhooks import services as webhook_services
from webhooks.models import WebhookEvent

from .helpers import assert_counters_match_rows, inbox_counts, make_push, make_template, seed_users

pytestmark = pytest.mark.django_db(transaction=True)

DATA = ["A123", "机械键盘"]


@pytest.fixture
def long_term(app):
    return make_template(app, "subscribe", long_term=True)


@pytest.fixture
def hooked(tenant, settings):
    """An endpoint wanting every event: the outbox records them (not delivered here)."""
    settings.WEBHOOK_ALLOW_PRIVATE = True
    return webhook_services.create_endpoint(tenant, url="http://127.0.0.1:9/hook", events=["*"], actor="t")[0]


def send(api, template, body):
    return api.post(f"/api/v1/templates/{template.pk}/pushes", body, format="json")


def accept(app, template, openid) -> None:
    """The user taps accept on the long-term template in WeChat, and the SDK reports it."""
    sandbox.accept_subscriptions(app.appid, openid, {template.template_id: "accept"})
    response = sdk_client(app, openid).post(
        f"/sdk/v1/{app.appid}/subscriptions", {"results": {template.template_id: "accept"}}, format="json"
    )
    assert response.status_code == 200, response.content


def standing(app, openid) -> list[Credit]:
    return list(Credit.objects.filter(app=app, user__openid=openid, kind="long_term", state="available"))


def unreachable_events() -> list[dict]:
    return [e.data for e in WebhookEvent.objects.filter(type="user.unreachable")]


def test_one_accept_serves_three_pushes_in_a_row_and_still_stands(api, app, long_term, task_queue, hooked):
    (user,) = seed_users(app, 1)
    accept(app, long_term, user)

    for _ in range(3):
        response = send(api, long_term, {"to": [user], "data": DATA})
        assert response.status_code == 202, response.content
        assert response.json()["no_credit"] == []
        task_queue.run()

    assert inbox_counts(app.appid) == {user: 3}
    assert list(Delivery.objects.values_list("status", flat=True)) == ["sent"] * 3
    assert len(standing(app, user)) == 1
    assert api.get(f"/api/v1/apps/{app.appid}/quota").json()["credits"]["long_term"] == {
        long_term.template_id: 1
    }
    assert unreachable_events() == [], "the subscription still stands after each send"


def test_concurrent_claims_both_get_the_standing_subscription(app, long_term):
    (user,) = seed_users(app, 1, subscribe=long_term)
    got: list[int] = []
    errors: list[Exception] = []
    barrier = threading.Barrier(2)

    def claimer(holder: str) -> None:
        try:
            barrier.wait()
            claimed = credits.claim_credits(
                app,
                template_kind="long_term",
                template_id=long_term.template_id,
                openids=[user],
                claimed_by=holder,
            )
            got.append(claimed[user].id)
        except Exception as exc:  # asserted below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claimer, args=(f"push:{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert len(got) == 2 and len(set(got)) == 1
    assert Credit.objects.get(pk=got[0]).state == "available", "a claim leaves it standing"


def test_two_pushes_running_at_once_each_send(app, long_term, task_queue):
    users = seed_users(app, 5, subscribe=long_term)
    pushes = [make_push(long_term, users) for _ in range(2)]
    assert [p.pending for p in pushes] == [5, 5]

    def run(push: Push) -> None:
        try:
            tasks.deliver_chunk(str(push.pk), list(push.deliveries.values_list("pk", flat=True)))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(push,)) for push in pushes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert inbox_counts(app.appid) == {openid: 2 for openid in users}
    for push in pushes:
        push.refresh_from_db()
        assert (push.status, push.sent) == ("done", 5)
        assert_counters_match_rows(push)
    assert Credit.objects.filter(kind="long_term", state="available").count() == 5


def test_one_time_credits_and_long_term_subscriptions_never_stand_in_for_each_other(app, long_term):
    one_time = make_template(app, "subscribe")
    (user,) = seed_users(app, 1, subscribe=long_term)
    (other,) = seed_users(app, 1, subscribe=one_time)

    def claim(template, openid):
        return credits.claim_credits(
            app,
            template_kind=template.credit_kind,
            template_id=template.template_id,
            openids=[openid],
            claimed_by="t",
        )

    # The same template id with the other kind of credit: neither serves.
    Credit.objects.create(app=app, user_id=standing(app, user)[0].user_id, kind="subscribe", template_id="X")
    assert claim(one_time, user) == {}
    assert (
        credits.claim_credits(
            app, template_kind="subscribe", template_id=long_term.template_id, openids=[user], claimed_by="t"
        )
        == {}
    )
    assert claim(long_term, other) == {}
    assert set(claim(long_term, user)) == {user}


def test_43101_fails_the_delivery_and_ends_the_subscription(api, app, long_term, task_queue, hooked):
    (user,) = seed_users(app, 1, subscribe=long_term)
    # The user turned it off in WeChat and PushHub was not told (no event push configured).
    sandbox.configure_events(app.appid, url="", token="", aes_key="")
    sandbox.turn_off_subscription(app.appid, user, long_term.template_id)

    response = send(api, long_term, {"to": [user], "data": DATA})
    assert response.json()["no_credit"] == []
    task_queue.run()

    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.errcode) == ("failed", "43101")
    assert standing(app, user) == []
    assert Credit.objects.get(kind="long_term").state == "expired"
    assert unreachable_events() == [
        {"app": app.appid, "openid": user, "alias": None, "template_id": long_term.template_id}
    ]
    # Ended: the next push has nobody to send to, and WeChat is not asked again.
    again = send(api, long_term, {"to": [user], "data": DATA}).json()
    assert again["no_credit"] == [user]
    assert sandbox.stats(app.appid)["sends_by_errcode"] == {"43101": 1}


def test_43101_ends_only_the_subscription_the_send_stood_on(app, long_term):
    """A user who turned the template off and on again since the send stands on a new subscription: the
    send's 43101 does not end it."""
    (user,) = seed_users(app, 1, subscribe=long_term)
    old = standing(app, user)[0]
    credits.end_long_term(app, old.user, [long_term.template_id])  # a change event …
    credits.start_long_term(app, old.user, [long_term.template_id], source="sdk")  # … then an accept

    assert credits.end_subscriptions([old.pk]) == 0
    (new,) = standing(app, user)
    assert new.pk != old.pk
    assert credits.end_subscriptions([new.pk]) == 1
    assert standing(app, user) == []


def test_at_all_reaches_the_subscribers_and_the_dry_run_counts_them(api, app, long_term, task_queue):
    subscribers = seed_users(app, 3, subscribe=long_term)
    seed_users(app, 1, subscribe=make_template(app, "subscribe"))  # another template's one-time credit
    seed_users(app, 1, formids=2)  # formIds serve no subscribe template
    (off,) = seed_users(app, 1, subscribe=long_term, push_enabled=False)

    dry = api.post(
        f"/api/v1/templates/{long_term.pk}/pushes?dry_run=1", {"to": "@all", "data": DATA}, format="json"
    )
    assert dry.status_code == 200, dry.content
    assert dry.json() == {"recipients": 6, "reachable": 3, "no_credit": 2, "opted_out": 1}

    response = send(api, long_term, {"to": "@all", "data": DATA})
    assert response.status_code == 202, response.content
    task_queue.run()

    assert inbox_counts(app.appid) == {openid: 1 for openid in subscribers}
    push = Push.objects.get()
    assert (push.status, push.sent, push.opted_out, push.no_credit) == ("done", 3, 1, 0)
    assert off not in inbox_counts(app.appid)
    # Again: the subscriptions stand, so @all reaches the same three.
    send(api, long_term, {"to": "@all", "data": DATA})
    task_queue.run()
    assert inbox_counts(app.appid) == {openid: 2 for openid in subscribers}


def test_a_long_term_accept_reported_by_the_sdk_sends_the_held_message(api, app, long_term, task_queue):
    (waiting,) = seed_users(app, 1)
    push_id = send(api, long_term, {"to": [waiting], "data": DATA, "hold": 600}).json()["push_id"]
    assert Push.objects.get(pk=push_id).held == 1

    accept(app, long_term, waiting)
    task_queue.run()

    assert inbox_counts(app.appid) == {waiting: 1}
    assert Push.objects.get(pk=push_id).status == "done"
    assert len(standing(app, waiting)) == 1, "the send did not use it up"


def test_a_long_term_accept_pushed_by_wechat_sends_the_held_message(api, app, long_term, task_queue):
    app = tenant_services.update_app(app, credit_source="events")
    (waiting,) = seed_users(app, 1)
    push_id = send(api, long_term, {"to": [waiting], "data": DATA, "hold": 600}).json()["push_id"]

    # WeChat (the sandbox) pushes subscribe_msg_popup_event to PushHub over HTTP once the user accepts.
    sandbox.accept_subscriptions(app.appid, waiting, {long_term.template_id: "accept"})
    task_queue.run()

    assert inbox_counts(app.appid) == {waiting: 1}
    assert Push.objects.get(pk=push_id).status == "done"
    assert len(standing(app, waiting)) == 1


def test_a_send_whose_answer_was_lost_is_not_repeated_and_the_subscription_stands(app, long_term, task_queue):
    """A worker SIGKILLed between marking the attempt and recording the answer: the message may have gone
    out, so the next run reports it ambiguous instead of sending again; the subscription is not used up."""
    (user,) = seed_users(app, 1, subscribe=long_term)
    push = make_push(long_term, [user])
    row = push.deliveries.select_related("credit").get()
    (marked,) = ledger.mark_attempts([Job.of(row)])  # the attempt was committed, then the worker died
    Delivery.objects.filter(pk=row.pk).update(updated_at=timezone.now() - timedelta(hours=1))

    delivery_queue.enqueue_push(push.pk)
    task_queue.run()

    row.refresh_from_db()
    assert (row.status, row.errcode) == ("failed", "timeout_ambiguous")
    assert inbox_counts(app.appid) == {}
    assert len(standing(app, user)) == 1


def test_a_timeout_on_a_long_term_send_is_ambiguous_and_never_retried_blindly():
    outcome = classify(WeChatTimeout("read timed out"), credit_kind="long_term", earlier_attempt=False)
    assert (outcome.action, outcome.settle, outcome.errcode) == ("failed", "consume", "timeout_ambiguous")


def test_the_sandbox_sends_a_long_term_template_while_it_is_on_and_answers_43101_once_off(app, long_term):
    (user,) = seed_users(app, 1)
    sandbox.accept_subscriptions(app.appid, user, {long_term.template_id: "accept"})
    sandbox.accept_subscriptions(app.appid, user, {long_term.template_id: "accept"})
    row = SandboxSubscription.objects.get(openid=user)
    assert row.credits == 1, "a long-term template is on or off, not counted"
    sandbox.accept_subscriptions(app.appid, user, {long_term.template_id: "reject"})
    row.refresh_from_db()
    assert row.credits == 0


def test_a_subscription_ended_after_the_push_was_prepared_is_not_sent(app, long_term, task_queue):
    (user,) = seed_users(app, 1, subscribe=long_term)
    push = make_push(long_term, [user])
    assert push.deliveries.get().status == "pending"
    response = sdk_client(app, user).post(
        f"/sdk/v1/{app.appid}/subscriptions", {"results": {long_term.template_id: "reject"}}, format="json"
    )
    assert response.status_code == 200

    delivery_queue.enqueue_push(push.pk)
    task_queue.run()

    assert push.deliveries.get().status == "no_credit"
    assert inbox_counts(app.appid) == {}
    assert sandbox.stats(app.appid)["sends_ok"] == 0

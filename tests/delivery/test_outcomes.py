"""What each WeChat answer does to a delivery and its credit: retries, token resets, retired API, lost
answers (41029), spent formIds (41028), ambiguous subscribe timeouts, final errors."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from formids import services as credits
from formids.models import Credit, MiniUser
from pushhub.wechat.sandbox import services as sandbox
from pushhub.wechat.sandbox.models import SandboxFormId, SandboxSubscription
from templates_app import tasks
from templates_app.models import Delivery

from .helpers import assert_counters_match_rows, inbox_counts, make_push, seed_users

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_20_percent_error_rate_still_delivers_everything_once(app, formid_template, task_queue, settings):
    settings.PUSH_CHUNK_SIZE = 10
    settings.DELIVERY_MAX_ATTEMPTS = 10
    users = seed_users(app, 40, formids=1)
    sandbox.set_knobs(app.appid, error_rate=0.2)
    push = make_push(formid_template)

    tasks.deliver_push(str(push.pk))
    task_queue.run()

    assert inbox_counts(app.appid) == {openid: 1 for openid in users}
    push.refresh_from_db()
    assert (push.status, push.sent, push.failed) == ("done", 40, 0)
    assert sandbox.stats(app.appid)["sends_by_errcode"].get("-1", 0) > 0
    retried = [countdown for task, _, countdown in task_queue.history if countdown]
    assert retried and all(0 < c <= settings.DELIVERY_RETRY_MAX for c in retried)
    assert Delivery.objects.filter(push=push, attempts__gt=1).exists()
    assert not Credit.objects.filter(app=app, state="claimed").exists()
    assert_counters_match_rows(push)


def test_transient_errors_give_up_after_the_last_attempt_and_return_the_credit(
    app, formid_template, task_queue, settings
):
    settings.DELIVERY_MAX_ATTEMPTS = 3
    [alice] = seed_users(app, 1, formids=1)
    sandbox.set_knobs(app.appid, error_rate=1.0)
    push = make_push(formid_template, [alice])

    tasks.deliver_push(str(push.pk))
    task_queue.run()

    row = Delivery.objects.get(push=push)
    assert (row.status, row.errcode, row.attempts) == ("failed", "-1", 3)
    assert row.credit.state == "available" and row.credit.claimed_by == ""
    push.refresh_from_db()
    assert (push.status, push.failed) == ("done", 1)
    assert_counters_match_rows(push)


def test_a_token_reset_mid_broadcast_recovers(app, formid_template, task_queue, settings):
    settings.PUSH_CHUNK_SIZE = 10
    users = seed_users(app, 30, formids=1)
    push = make_push(formid_template)
    tasks.deliver_push(str(push.pk))
    task_queue.run_one()  # the first chunk, with the first token

    assert sandbox.reset_tokens(app.appid) >= 1  # every token dies at once (a 40001 storm)
    task_queue.run()

    assert inbox_counts(app.appid) == {openid: 1 for openid in users}
    # The cached token answered 40001 (the sandbox counts no call it cannot attribute to an app): one
    # refresh for all the threads that hit it, and no delivery lost or sent twice.
    assert sandbox.stats(app.appid)["tokens_issued"] == 2
    assert not Delivery.objects.filter(push=push, attempts__gt=1).exists()
    push.refresh_from_db()
    assert (push.status, push.sent) == ("done", 30)


def test_a_retired_formid_api_fails_with_45103_and_gives_the_credits_back(app, formid_template, task_queue):
    users = seed_users(app, 3, formids=1)
    sandbox.set_knobs(app.appid, formid_retired=True)
    push = make_push(formid_template, users)

    tasks.deliver_push(str(push.pk))
    task_queue.run()

    assert set(push.deliveries.values_list("status", "errcode", "errmsg")) == {
        ("failed", "45103", "api_retired")
    }
    assert Credit.objects.filter(app=app, state="available").count() == 3
    assert inbox_counts(app.appid) == {}
    push.refresh_from_db()
    assert (push.status, push.failed) == ("done", 3)
    assert_counters_match_rows(push)


def test_a_subscribe_timeout_is_ambiguous_and_never_sent_twice(app, subscribe_template, task_queue, settings):
    settings.WECHAT_READ_TIMEOUT = 0.3
    [alice] = seed_users(app, 1, subscribe=subscribe_template, subscriptions=2)
    sandbox.set_knobs(app.appid, timeout_rate=1.0, timeout_seconds=1.0)
    push = make_push(subscribe_template, [alice])

    tasks.deliver_push(str(push.pk))
    task_queue.run()

    row = Delivery.objects.get(push=push)
    assert (row.status, row.errcode, row.attempts) == ("failed", "timeout_ambiguous", 1)
    assert row.credit.state == "consumed"
    assert [c for _, _, c in task_queue.history if c] == []  # no retry was queued
    assert len(sandbox.inbox(app.appid, alice)) == 1  # WeChat did deliver it, once
    assert SandboxSubscription.objects.get(openid=alice).credits == 1
    push.refresh_from_db()
    assert (push.status, push.failed) == ("done", 1)


def test_a_formid_send_whose_answer_was_lost_counts_as_sent(app, formid_template, task_queue, settings):
    settings.WECHAT_READ_TIMEOUT = 0.3
    [alice] = seed_users(app, 1, formids=2)
    sandbox.set_knobs(app.appid, timeout_rate=1.0, timeout_seconds=1.0)
    push = make_push(formid_template, [alice])
    tasks.deliver_push(str(push.pk))
    task_queue.run_one()  # WeChat delivers, the answer never comes: a formId send is retried

    row = Delivery.objects.get(push=push)
    assert (row.status, row.errcode, row.attempts) == ("pending", "timeout", 1)
    assert row.credit.state == "claimed"
    sandbox.set_knobs(app.appid, timeout_rate=0.0)
    task_queue.run()  # the retry: WeChat answers 41029 (that formId was used — by us)

    row.refresh_from_db()
    assert (row.status, row.attempts) == ("sent", 2)
    assert row.credit.state == "consumed"
    assert len(sandbox.inbox(app.appid, alice)) == 1
    assert Credit.objects.filter(user__openid=alice, state="available").count() == 1  # the other formId
    assert sandbox.stats(app.appid)["sends_by_errcode"] == {"0": 1, "41029": 1}
    assert_counters_match_rows(push)


def test_an_invalid_formid_moves_on_to_the_users_next_one(app, formid_template, task_queue):
    [alice] = seed_users(app, 1, formids=1)
    [bob] = seed_users(app, 1)
    soon = timezone.now() + timedelta(days=2)
    user = Credit.objects.get(user__openid=alice).user
    # Two formIds WeChat never issued (41028), expiring first so they are claimed first.
    Credit.objects.create(app=app, user=user, kind="formid", value="bogusformid000001", expires_at=soon)
    Credit.objects.create(
        app=app, user=user, kind="formid", value="bogusformid000002", expires_at=soon + timedelta(hours=1)
    )
    bob_user = MiniUser.objects.get(app=app, openid=bob)
    Credit.objects.create(app=app, user=bob_user, kind="formid", value="bogusformid000003", expires_at=soon)
    push = make_push(formid_template, [alice, bob])

    tasks.deliver_push(str(push.pk))
    task_queue.run()

    sent = Delivery.objects.get(push=push, openid=alice)
    assert (sent.status, sent.attempts) == ("sent", 3)
    assert sent.credit.value not in ("bogusformid000001", "bogusformid000002")
    assert len(sandbox.inbox(app.appid, alice)) == 1
    failed = Delivery.objects.get(push=push, openid=bob)
    assert (failed.status, failed.errcode) == ("failed", "41028")
    assert set(Credit.objects.filter(value__startswith="bogus").values_list("state", flat=True)) == {
        "consumed"
    }
    assert not Credit.objects.filter(app=app, state="claimed").exists()
    assert_counters_match_rows(push)


def test_a_third_spent_formid_ends_the_delivery(app, formid_template, task_queue):
    [alice] = seed_users(app, 1, formids=4)
    for wechat_formid in SandboxFormId.objects.filter(openid=alice).order_by("pk")[:3]:
        SandboxFormId.objects.filter(pk=wechat_formid.pk).update(uses_left=0)  # used outside PushHub
    Credit.objects.filter(value__in=SandboxFormId.objects.filter(uses_left=0).values("value")).update(
        expires_at=timezone.now() + timedelta(days=1)
    )
    push = make_push(formid_template, [alice])

    tasks.deliver_push(str(push.pk))
    task_queue.run()

    row = Delivery.objects.get(push=push)
    assert (row.status, row.errcode, row.attempts) == ("failed", "41029", 3)
    assert Credit.objects.filter(user__openid=alice, state="available").count() == 1
    assert inbox_counts(app.appid) == {}


def test_a_refused_subscription_spends_the_credit(app, subscribe_template, task_queue):
    [alice] = seed_users(app, 1, subscribe=subscribe_template)
    SandboxSubscription.objects.filter(openid=alice).update(credits=0)  # WeChat disagrees with our count
    push = make_push(subscribe_template, [alice])

    tasks.deliver_push(str(push.pk))
    task_queue.run()

    row = Delivery.objects.get(push=push)
    assert (row.status, row.errcode) == ("failed", "43101")
    assert row.credit.state == "consumed"


def test_a_final_error_gives_the_credit_back(app, formid_template, task_queue):
    [ghost] = seed_users(app, 1, formids=1, in_wechat=False)  # WeChat does not know this openid
    push = make_push(formid_template, [ghost])

    tasks.deliver_push(str(push.pk))
    task_queue.run()

    row = Delivery.objects.get(push=push)
    assert (row.status, row.errcode, row.attempts) == ("failed", "40003", 1)
    assert row.credit.state == "available"
    assert_counters_match_rows(push)


def test_a_lost_answers_formid_keeps_its_claim_through_the_stale_sweep(
    app, formid_template, task_queue, settings
):
    """The retry of a send whose answer was lost must use the same formId (WeChat answers 41029 if the
    message went out). Had the stale-claim sweep released it, the retry would take the user's other formId:
    a second message."""
    settings.WECHAT_READ_TIMEOUT = 0.3
    [alice] = seed_users(app, 1, formids=2)
    sandbox.set_knobs(app.appid, timeout_rate=1.0, timeout_seconds=1.0)
    push = make_push(formid_template, [alice])
    tasks.deliver_push(str(push.pk))
    task_queue.run_one()  # delivered, the answer lost: the delivery waits for its retry, claim held
    used = Delivery.objects.get(push=push).credit_id
    other = Credit.objects.filter(user__openid=alice).exclude(pk=used).get()
    other.expires_at = timezone.now() + timedelta(days=2)  # sooner: a new claim would pick it
    other.save(update_fields=["expires_at"])

    assert credits.release_stale(timedelta(microseconds=1)) == 0  # the pending delivery owns the claim
    sandbox.set_knobs(app.appid, timeout_rate=0.0)
    task_queue.run()

    row = Delivery.objects.get(push=push)
    assert (row.status, row.credit_id) == ("sent", used)
    assert len(sandbox.inbox(app.appid, alice)) == 1
    assert Credit.objects.get(pk=other.pk).state == "available"
    assert_counters_match_rows(push)

"""Cancel, scheduled pushes, redelivered and duplicate chunks, stalled pushes, the sent-event receiver,
the rate limit."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from formids.hooks import subscribe_message_sent
from formids.models import Credit
from pushhub.wechat.sandbox import services as sandbox
from templates_app import tasks
from templates_app.delivery import ledger, outcomes, timing
from templates_app.delivery.job import Job
from templates_app.delivery.send_pool import SendRateLimiter
from templates_app.models import Delivery, Push
from templates_app.pushes.start import cancel_push

from .helpers import assert_counters_match_rows, inbox_counts, make_push, seed_users

pytestmark = pytest.mark.django_db(transaction=True)


# --- cancel ------------------------------------------------------------------------------------------
def test_cancel_before_the_chunks_run_sends_nothing_and_returns_the_credits(app, formid_template, task_queue):
    users = seed_users(app, 6, formids=1)
    push = make_push(formid_template)
    tasks.deliver_push(str(push.pk))  # enumerated and claimed, chunks queued

    cancel_push(push)
    task_queue.run()

    assert inbox_counts(app.appid) == {}
    assert Credit.objects.filter(app=app, state="available").count() == len(users)
    push.refresh_from_db()
    assert (push.status, push.failed, push.pending) == ("canceled", 6, 0)
    assert set(push.deliveries.values_list("errcode", flat=True)) == {"canceled"}
    assert_counters_match_rows(push)


def test_a_chunk_of_a_canceled_push_gives_its_claims_back(app, formid_template, task_queue):
    users = seed_users(app, 3, formids=1)
    push = make_push(formid_template, users)
    # Prepared after the cancel went through (a race with the enumeration): rows pending, credits claimed.
    Push.objects.filter(pk=push.pk).update(status="canceled")

    report = tasks.deliver_chunk(str(push.pk), list(push.deliveries.values_list("pk", flat=True)))

    assert report["failed"] == 3
    assert Credit.objects.filter(app=app, state="available").count() == 3
    assert sandbox.stats(app.appid)["sends_ok"] == 0
    assert_counters_match_rows(push)


def test_cancel_mid_broadcast_stops_the_rest(app, formid_template, task_queue, settings):
    settings.PUSH_CHUNK_SIZE = 5
    seed_users(app, 15, formids=1)
    push = make_push(formid_template)
    tasks.deliver_push(str(push.pk))
    task_queue.run_one()

    cancel_push(push)
    task_queue.run()

    push.refresh_from_db()
    assert (push.status, push.sent, push.failed, push.pending) == ("canceled", 5, 10, 0)
    assert sum(inbox_counts(app.appid).values()) == 5
    assert not Credit.objects.filter(app=app, state="claimed").exists()
    assert_counters_match_rows(push)


# --- scheduled -----------------------------------------------------------------------------------------
def test_a_scheduled_push_runs_when_due_and_not_before(app, formid_template, task_queue):
    users = seed_users(app, 3, formids=1)
    push = make_push(formid_template, users, send_at=timezone.now() + timedelta(hours=1))

    assert tasks.run_scheduled_pushes() == {"started": 0, "resumed": 0, "unparked": 0}
    assert tasks.deliver_push(str(push.pk)) == "not_due"
    assert task_queue.names() == [] and not push.deliveries.exists()
    assert not Credit.objects.filter(app=app, state="claimed").exists()

    Push.objects.filter(pk=push.pk).update(send_at=timezone.now() - timedelta(seconds=1))
    assert tasks.run_scheduled_pushes()["started"] == 1
    assert tasks.run_scheduled_pushes()["started"] == 0  # a second beat does not start it again
    push.refresh_from_db()
    assert (push.status, push.enumerated, push.recipients, push.pending) == ("queued", True, 3, 3)
    task_queue.run()

    assert inbox_counts(app.appid) == {openid: 1 for openid in users}
    push.refresh_from_db()
    assert push.status == "done"
    assert_counters_match_rows(push)


def test_a_scheduled_at_all_push_enumerates_when_it_runs(app, formid_template, task_queue):
    push = make_push(formid_template, send_at=timezone.now() + timedelta(minutes=5))
    users = seed_users(app, 4, formids=1)  # joined after the push was made: still reached

    Push.objects.filter(pk=push.pk).update(send_at=timezone.now())
    tasks.run_scheduled_pushes()
    task_queue.run()

    assert inbox_counts(app.appid) == {openid: 1 for openid in users}
    push.refresh_from_db()
    assert (push.status, push.recipients) == ("done", 4)


def test_a_canceled_scheduled_push_never_runs(app, formid_template, task_queue):
    seed_users(app, 2, formids=1)
    push = make_push(formid_template, send_at=timezone.now() + timedelta(minutes=5))
    cancel_push(push)
    Push.objects.filter(pk=push.pk).update(send_at=timezone.now())

    assert tasks.run_scheduled_pushes()["started"] == 0
    assert tasks.deliver_push(str(push.pk)) == "canceled"
    assert task_queue.names() == []


# --- attempts whose outcome was never recorded -------------------------------------------------------
def _interrupted(push, seconds_ago: float) -> Delivery:
    """A delivery whose worker committed the attempt and then died (or is still waiting for WeChat)."""
    row = push.deliveries.get()
    Delivery.objects.filter(pk=row.pk).update(
        attempts=1, updated_at=timezone.now() - timedelta(seconds=seconds_ago)
    )
    return row


def test_a_subscribe_attempt_left_unrecorded_is_never_repeated(app, subscribe_template, task_queue):
    [alice] = seed_users(app, 1, subscribe=subscribe_template)
    push = make_push(subscribe_template, [alice])
    row = _interrupted(push, seconds_ago=600)

    tasks.deliver_chunk(str(push.pk), [row.pk])

    row.refresh_from_db()
    assert (row.status, row.errcode) == ("failed", "timeout_ambiguous")
    assert row.credit.state == "consumed"
    assert sandbox.stats(app.appid)["sends_ok"] == 0
    assert_counters_match_rows(push)


def test_a_formid_attempt_left_unrecorded_is_sent_again(app, formid_template, task_queue):
    [alice] = seed_users(app, 1, formids=1)
    push = make_push(formid_template, [alice])
    row = _interrupted(push, seconds_ago=600)  # it never reached WeChat

    tasks.deliver_chunk(str(push.pk), [row.pk])

    row.refresh_from_db()
    assert (row.status, row.attempts) == ("sent", 2)
    assert len(sandbox.inbox(app.appid, alice)) == 1


def test_an_attempt_still_in_flight_elsewhere_is_left_alone(app, subscribe_template, task_queue):
    [alice] = seed_users(app, 1, subscribe=subscribe_template)
    push = make_push(subscribe_template, [alice])
    row = _interrupted(push, seconds_ago=1)

    report = tasks.deliver_chunk(str(push.pk), [row.pk])

    assert report["deferred"] == 1
    [(task, args, countdown)] = task_queue.history
    assert (task, args[1]) == ("deliver_chunk", [row.pk])
    assert 100 < countdown <= timing.in_flight_lease() + 1
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("pending", 1)
    assert sandbox.stats(app.appid)["sends_ok"] == 0


def test_duplicate_chunks_running_at_once_send_each_message_once(app, subscribe_template, task_queue):
    users = seed_users(app, 30, subscribe=subscribe_template, subscriptions=2)
    push = make_push(subscribe_template, users)
    ids = list(push.deliveries.values_list("pk", flat=True))
    reports = []

    def run():
        try:
            reports.append(tasks.deliver_chunk(str(push.pk), ids))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(r["sent"] for r in reports) == 30
    assert inbox_counts(app.appid) == {openid: 1 for openid in users}
    assert sandbox.stats(app.appid)["sends_ok"] == 30
    push.refresh_from_db()
    assert push.status == "done"
    assert_counters_match_rows(push)


# --- the stall sweep --------------------------------------------------------------------------------------
def test_the_sweep_requeues_a_push_whose_chunks_were_lost(app, formid_template, task_queue, settings):
    settings.PUSH_CHUNK_SIZE = 4
    users = seed_users(app, 10, formids=1)
    push = make_push(formid_template)
    tasks.deliver_push(str(push.pk))
    task_queue.run_one()
    task_queue.pending.clear()  # the worker died with the other chunks (a broker without redelivery)

    assert tasks.run_scheduled_pushes() == {"started": 0, "resumed": 0, "unparked": 0}  # progress is recent
    assert tasks.run_scheduled_pushes(stall_seconds=0)["resumed"] == 1
    task_queue.run()

    assert inbox_counts(app.appid) == {openid: 1 for openid in users}
    push.refresh_from_db()
    assert (push.status, push.sent) == ("done", 10)
    assert_counters_match_rows(push)


def test_the_sweep_restarts_an_enumeration_that_died(app, formid_template, task_queue, settings):
    settings.PUSH_CHUNK_SIZE = 4
    users = seed_users(app, 10, formids=1)
    push = make_push(formid_template)
    Push.objects.filter(pk=push.pk).update(status="running", started_at=timezone.now())

    tasks.run_scheduled_pushes(stall_seconds=0)
    task_queue.run()

    assert inbox_counts(app.appid) == {openid: 1 for openid in users}
    push.refresh_from_db()
    assert push.status == "done" and push.enumerated


def test_the_sweep_repairs_counters_and_finishes_a_push(app, formid_template, task_queue):
    users = seed_users(app, 2, formids=1)
    push = make_push(formid_template, users)
    tasks.deliver_push(str(push.pk))
    task_queue.run()
    Push.objects.filter(pk=push.pk).update(status="running", sent=0, pending=2)

    tasks.run_scheduled_pushes(stall_seconds=0)

    push.refresh_from_db()
    assert (push.status, push.sent, push.pending) == ("done", 2, 0)


# --- WeChat's subscribe_msg_sent_event ---------------------------------------------------------------
def _sent_event(app, row, errcode, errstatus="failed"):
    subscribe_message_sent.send(
        sender=type(app),
        app=app,
        openid=row.openid,
        template_id="x",
        msgid=row.msgid,
        errcode=errcode,
        errstatus=errstatus,
    )


def test_a_failure_reported_by_wechat_turns_a_sent_delivery_failed(app, subscribe_template, task_queue):
    users = seed_users(app, 2, subscribe=subscribe_template)
    push = make_push(subscribe_template, users)
    tasks.deliver_push(str(push.pk))
    task_queue.run()
    ok, refused = push.deliveries.order_by("pk")

    _sent_event(app, ok, 0, "success")
    _sent_event(app, refused, 43101, "failed:user refuse to accept the msg")
    _sent_event(app, refused, 43101, "failed:user refuse to accept the msg")  # WeChat's retry

    ok.refresh_from_db()
    refused.refresh_from_db()
    assert ok.status == "sent"
    assert (refused.status, refused.errcode, refused.errmsg) == (
        "failed",
        "43101",
        "failed:user refuse to accept the msg",
    )
    push.refresh_from_db()
    assert (push.sent, push.failed) == (1, 1)
    assert_counters_match_rows(push)


def test_a_failure_reported_before_the_answer_is_applied_when_it_is_recorded(app, subscribe_template):
    [alice] = seed_users(app, 1, subscribe=subscribe_template)
    push = make_push(subscribe_template, [alice])
    row = push.deliveries.get()
    row.msgid = 2_000_000_000_000_012_345
    assert ledger.record_sent_event(app, row.msgid, 43101, "failed") == "early"  # nothing to mark yet

    job = Job.of(row)
    ledger.write(push, [(job, outcomes.Outcome(outcomes.SENT, outcomes.CONSUME))])

    row.refresh_from_db()
    assert (row.status, row.errcode) == ("failed", "43101")
    assert_counters_match_rows(push)


def test_sent_events_pushed_by_the_sandbox_before_the_answer_harm_nothing(
    app, subscribe_template, task_queue
):
    sandbox.set_knobs(app.appid, push_sent_events=True)
    users = seed_users(app, 3, subscribe=subscribe_template)
    push = make_push(subscribe_template, users)

    tasks.deliver_push(str(push.pk))
    task_queue.run()

    assert sandbox.stats(app.appid)["event_pushes"]["ok"] == 3
    push.refresh_from_db()
    assert (push.status, push.sent) == ("done", 3)


# --- rate limit ------------------------------------------------------------------------------------------
def test_the_rate_limit_is_shared_through_the_cache(db):
    first = SendRateLimiter("wxlimit", rate=100)  # 10 per 100 ms window
    second = SendRateLimiter("wxlimit", rate=100)  # another worker, same app
    started = time.monotonic()
    granted = []
    while sum(granted) < 40:
        granted.append(first.acquire(8))
        granted.append(second.acquire(8))
    assert time.monotonic() - started >= 0.2  # 40+ permits need at least 4 windows
    assert max(granted) <= 8

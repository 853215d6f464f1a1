"""Pushes reach the sandbox's inbox exactly once: one recipient, a list, @all, formId and subscribe."""

from __future__ import annotations

import pytest

from formids.models import Credit
from pushhub.wechat.sandbox import services as sandbox
from templates_app import tasks
from templates_app.models import Delivery, Push
from templates_app.opens_ref import make_ref

from .helpers import (
    assert_counters_match_rows,
    deliver_push_killed_at_second_page,
    inbox_counts,
    make_push,
    seed_users,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_single_recipient_gets_the_message_once(app, formid_template, task_queue):
    [alice] = seed_users(app, 1, formids=2)
    push = make_push(formid_template, [alice])

    assert tasks.deliver_push(str(push.pk)) == "started"
    task_queue.run()

    [message] = sandbox.inbox(app.appid, alice)
    assert message.template_id == formid_template.template_id
    assert message.data == {
        "keyword1": {"value": "A123"},
        "keyword2": {"value": "¥99.00", "color": "#173177"},
    }
    row = Delivery.objects.get(push=push)
    assert (
        message.page == f"pages/order?id=1&ph={make_ref(row.pk)}"
    )  # the open ref (tests/delivery/test_open_refs.py)
    push.refresh_from_db()
    assert (push.status, push.sent, push.pending) == ("done", 1, 0)
    assert push.started_at and push.finished_at
    row = Delivery.objects.get(push=push)
    assert (row.status, row.attempts, row.errcode) == ("sent", 1, "")
    assert row.sent_at is not None and row.credit.state == "consumed"
    assert Credit.objects.filter(user__openid=alice, state="available").count() == 1
    assert_counters_match_rows(push)


def test_users_without_credit_are_no_credit_and_never_called(app, formid_template, task_queue):
    reachable = seed_users(app, 5, formids=1)
    broke = seed_users(app, 2)
    push = make_push(formid_template, reachable + broke)

    tasks.deliver_push(str(push.pk))
    task_queue.run()

    push.refresh_from_db()
    assert (push.status, push.recipients, push.sent, push.no_credit) == ("done", 7, 5, 2)
    assert set(inbox_counts(app.appid)) == set(reachable)
    assert sandbox.stats(app.appid)["sends_by_errcode"] == {"0": 5}
    assert set(push.deliveries.filter(status="no_credit").values_list("openid", flat=True)) == set(broke)
    assert_counters_match_rows(push)


def test_at_all_reaches_every_user_with_a_credit_once(app, formid_template, task_queue, settings):
    settings.PUSH_CHUNK_SIZE = 10
    reachable = seed_users(app, 25, formids=1, prepay=1)
    seed_users(app, 5)  # no credit: not a recipient of @all
    opted_out = seed_users(app, 2, formids=1, push_enabled=False)
    push = make_push(formid_template)

    tasks.deliver_push(str(push.pk))
    assert task_queue.names() == ["deliver_chunk"] * 3
    task_queue.run()

    assert inbox_counts(app.appid) == {openid: 1 for openid in reachable}
    push.refresh_from_db()
    assert (push.status, push.enumerated) == ("done", True)
    assert (push.recipients, push.sent, push.no_credit, push.opted_out, push.pending) == (27, 25, 0, 2, 0)
    assert not Delivery.objects.filter(push=push, openid__in=opted_out).exists()
    # The soonest-expiring credit is used; prepay_ids and formIds expire together here, so one each is left.
    assert Credit.objects.filter(app=app, state="claimed").count() == 0
    assert_counters_match_rows(push)


def test_at_all_with_nobody_to_reach_is_done_at_once(app, formid_template, task_queue):
    seed_users(app, 3)
    push = make_push(formid_template)

    tasks.deliver_push(str(push.pk))

    assert task_queue.names() == []
    push.refresh_from_db()
    assert (push.status, push.recipients, push.no_credit, push.opted_out) == ("done", 0, 0, 0)


def test_a_subscribe_push_records_the_msgid(app, subscribe_template, task_queue):
    users = seed_users(app, 3, subscribe=subscribe_template)
    push = make_push(subscribe_template, users, lang="en_US", miniprogram_state="trial")

    tasks.deliver_push(str(push.pk))
    task_queue.run()

    messages = {m.openid: m for m in sandbox.inbox(app.appid)}
    assert set(messages) == set(users)
    for row in push.deliveries.all():
        assert row.status == "sent" and row.msgid == messages[row.openid].msgid
        assert row.credit.state == "consumed"
    message = messages[users[0]]
    assert (message.lang, message.miniprogram_state) == ("en_US", "trial")
    assert message.data == {"character_string1": {"value": "A123"}, "thing2": {"value": "机械键盘"}}
    assert_counters_match_rows(push)


def test_a_redelivered_chunk_sends_nothing_twice(app, formid_template, task_queue):
    users = seed_users(app, 4, formids=2)
    push = make_push(formid_template, users)
    tasks.deliver_push(str(push.pk))
    [(_, args)] = list(task_queue.pending)

    task_queue.run()
    assert tasks.deliver_chunk(*args)["sent"] == 0  # acks_late: the same message again

    assert inbox_counts(app.appid) == {openid: 1 for openid in users}
    assert sandbox.stats(app.appid)["sends_ok"] == 4
    assert_counters_match_rows(push)


def test_a_redelivered_deliver_push_does_not_queue_chunks_again(app, formid_template, task_queue, settings):
    settings.PUSH_CHUNK_SIZE = 2
    users = seed_users(app, 5, formids=1)
    push = make_push(formid_template, users)

    tasks.deliver_push(str(push.pk))
    tasks.deliver_push(str(push.pk))

    assert task_queue.names() == ["deliver_chunk"] * 3
    task_queue.run()
    push.refresh_from_db()
    assert push.status == "done" and push.sent == 5


def test_a_canceled_or_finished_push_is_skipped(app, formid_template, task_queue):
    users = seed_users(app, 2, formids=1)
    push = make_push(formid_template, users)
    Push.objects.filter(pk=push.pk).update(status="done")
    assert tasks.deliver_push(str(push.pk)) == "skipped"
    assert tasks.deliver_push("00000000-0000-0000-0000-000000000000") == "missing"
    assert task_queue.names() == []


def test_an_interrupted_enumeration_resumes_where_it_stopped(
    app, formid_template, task_queue, settings, monkeypatch
):
    settings.PUSH_CHUNK_SIZE = 4
    users = seed_users(app, 10, formids=1)
    push = make_push(formid_template)
    deliver_push_killed_at_second_page(push, monkeypatch)  # page 2 claimed and written, never queued
    assert task_queue.names() == ["deliver_chunk"]
    assert push.deliveries.count() == 8

    assert tasks.deliver_push(str(push.pk)) == "started"  # the redelivered task
    assert [len(args[1]) for _, args in task_queue.pending] == [4, 4, 2]  # page 1 is not queued again
    task_queue.run()

    assert inbox_counts(app.appid) == {openid: 1 for openid in users}
    push.refresh_from_db()
    assert (push.status, push.recipients, push.sent) == ("done", 10, 10)
    assert_counters_match_rows(push)


def test_at_all_walks_past_blocks_of_users_without_credit(app, formid_template, task_queue, settings):
    # Users are enumerated by id a block at a time; whole blocks without a credit must not end the walk.
    settings.PUSH_CHUNK_SIZE = 10
    seed_users(app, 25)  # ids first: two and a half blocks of nobody reachable
    reachable = seed_users(app, 12, formids=1)
    seed_users(app, 15)

    tasks.deliver_push(str(push_id := make_push(formid_template).pk))
    task_queue.run()

    push = Push.objects.get(pk=push_id)
    assert (push.status, push.recipients, push.sent, push.no_credit) == ("done", 12, 12, 0)
    assert inbox_counts(app.appid) == {openid: 1 for openid in reachable}
    assert_counters_match_rows(push)


def test_a_round_keeps_at_most_its_concurrency_in_flight(settings):
    import asyncio

    from templates_app.delivery.send_pool import SendPool

    now, peak = [0], [0]

    async def send(job, token):  # runs on the process's sending loop
        now[0] += 1
        peak[0] = max(peak[0], now[0])
        await asyncio.sleep(0.01)
        now[0] -= 1
        if job == 13:
            raise RuntimeError("boom")  # an unexpected error is this job's result, not the round's end
        return {"errcode": 0, "job": job}

    pool = SendPool(4, send)
    for n in range(40):
        pool.submit(n)
    pool.close()
    assert peak[0] == 4
    assert sorted(job for job, _, _ in pool.results) == list(range(40))
    [(failed, error)] = [(job, error) for job, _, error in pool.results if error]
    assert failed == 13 and isinstance(error, RuntimeError)


def test_windows_handed_over_at_once_are_all_answered_and_the_round_waits_for_room():
    """The round hands each window to the loop in one go (submit_all) and waits until fewer than a window
    are outstanding: every job is answered exactly once, never more than the pool's size in flight, and the
    wait returns only once there is room (an answer wakes the round only then)."""
    import asyncio

    from templates_app.delivery.send_pool import SendPool

    now, peak, outstanding_at_wake = [0], [0], []

    async def send(job, token):
        now[0] += 1
        peak[0] = max(peak[0], now[0])
        await asyncio.sleep(0.002 * (job % 3))
        now[0] -= 1
        return {"errcode": 0, "job": job, "token": token}

    pool = SendPool(8, send)
    for start in range(0, 64, 8):
        pool.submit_all(list(range(start, start + 8)), token=f"t{start}")
        pool.wait_below(8)
        outstanding_at_wake.append(pool._outstanding)
    pool.close()
    assert peak[0] <= 8
    assert all(n < 8 for n in outstanding_at_wake)
    answers = sorted((job, answer["token"]) for job, answer, _ in pool.results)
    assert answers == [(job, f"t{job - job % 8}") for job in range(64)]
    assert pool._outstanding == 0


@pytest.mark.parametrize("lost_to", ["the stale sweep", "another push"])
def test_a_chunk_whose_claim_was_lost_sends_once_with_the_users_next_credit(
    app, formid_template, task_queue, lost_to
):
    """The chunk reads its credits' claims with its rows and asks nothing more when they are all its own and
    recent; a claim that is no longer the push's (released, or taken by someone else) must not be sent with:
    the user's next credit is claimed, and the user still gets exactly one message."""
    [alice] = seed_users(app, 1, formids=2)
    push = make_push(formid_template, [alice])
    first = push.deliveries.get().credit_id
    if lost_to == "the stale sweep":
        Credit.objects.filter(pk=first).update(state="available", claimed_at=None, claimed_by="")
    else:
        Credit.objects.filter(pk=first).update(claimed_by="push:someone-else")

    assert tasks.deliver_push(str(push.pk)) == "started"
    task_queue.run()

    assert inbox_counts(app.appid) == {alice: 1}
    row = push.deliveries.get()
    assert row.status == "sent"
    states = dict(Credit.objects.filter(app=app).values_list("pk", "state"))
    if (
        lost_to == "the stale sweep"
    ):  # back in the pool: claimed again (the same one, or the next), spent once
        assert sorted(states.values()) == ["available", "consumed"]
    else:  # the other push's: never ours to spend; the user's next credit was
        assert states[first] == "claimed" and row.credit_id != first
        assert sorted(states.values()) == ["claimed", "consumed"]
    assert_counters_match_rows(push)


@pytest.mark.parametrize("waited", [True, False])
def test_a_chunk_renews_claims_older_than_a_third_of_the_lease_and_only_those(
    app, formid_template, task_queue, settings, monkeypatch, waited
):
    """A chunk that waited in the queue renews its claims before sending (the stale sweep must not take them
    mid-send); one sent right after its recipients were prepared has nothing to renew and asks nothing."""
    from datetime import timedelta

    from django.utils import timezone

    from formids import services as credits

    users = seed_users(app, 4, formids=1)
    push = make_push(formid_template, users)
    oldest = push.deliveries.order_by("pk").values_list("credit_id", flat=True)[0]
    if waited:
        old = timezone.now() - timedelta(seconds=settings.CREDIT_CLAIM_LEASE / 2)
        Credit.objects.filter(pk=oldest).update(claimed_at=old)
    renewed: list[tuple[list[int], object]] = []
    real = credits.refresh_claims

    def spy(ids, holder, **kwargs):
        ids = list(ids)
        before = Credit.objects.get(pk=oldest).claimed_at
        result = real(ids, holder, **kwargs)
        renewed.append((ids, Credit.objects.get(pk=oldest).claimed_at > before))
        return result

    monkeypatch.setattr(credits, "refresh_claims", spy)
    assert tasks.deliver_push(str(push.pk)) == "started"
    task_queue.run()

    if waited:
        assert len(renewed) == 1 and oldest in renewed[0][0] and renewed[0][1]  # renewed, before the send
    else:
        assert renewed == []
    assert inbox_counts(app.appid) == {openid: 1 for openid in users}
    assert_counters_match_rows(push)

"""The in-app inbox's rows (templates_app/inbox.py) as the send path writes them: one per sent delivery, none
for failed or uncredited ones, none when the app has the inbox off, and gone when WeChat's sent-event turns
the delivery failed."""

from __future__ import annotations

import pytest

from formids.hooks import subscribe_message_sent
from templates_app import inbox, tasks
from templates_app.delivery import ledger, outcomes
from templates_app.delivery.job import Job
from templates_app.models import InboxMessage

from .helpers import make_push, seed_users

pytestmark = pytest.mark.django_db(transaction=True)


def inbox_of(app) -> dict[str, int]:
    """delivery id per openid of the app's inbox rows."""
    return dict(InboxMessage.objects.filter(app=app).values_list("openid", "delivery_id"))


def test_each_sent_delivery_gets_one_inbox_row_and_the_others_none(app, formid_template, task_queue):
    reached = seed_users(app, 3, formids=1)
    uncredited = seed_users(app, 1)  # no credit: no_credit, never sent
    push = make_push(formid_template, [*reached, *uncredited])

    tasks.deliver_push(str(push.pk))
    task_queue.run()

    sent = dict(push.deliveries.filter(status="sent").values_list("openid", "pk"))
    assert set(sent) == set(reached)
    assert inbox_of(app) == sent
    rows = InboxMessage.objects.filter(app=app)
    assert {row.push_id for row in rows} == {push.pk}
    assert all(row.read_at is None for row in rows)
    sent_at = dict(push.deliveries.filter(status="sent").values_list("pk", "sent_at"))
    assert all(row.sent_at == sent_at[row.delivery_id] for row in rows)


def test_an_app_with_the_inbox_off_keeps_no_rows(app, formid_template, task_queue):
    app.inbox_enabled = False
    app.save(update_fields=["inbox_enabled"])
    users = seed_users(app, 2, formids=1)
    push = make_push(formid_template, users)

    tasks.deliver_push(str(push.pk))
    task_queue.run()

    push.refresh_from_db()
    assert push.sent == 2
    assert inbox_of(app) == {}


def test_a_write_repeated_adds_no_second_row(app, formid_template):
    [alice] = seed_users(app, 1, formids=1)
    push = make_push(formid_template, [alice])
    row = push.deliveries.get()
    job = Job.of(row)
    ledger.write(push, [(job, outcomes.Outcome(outcomes.SENT, outcomes.CONSUME))])
    # The same delivery written again (a retried write): the row is no longer pending, nothing changes.
    ledger.write(push, [(job, outcomes.Outcome(outcomes.SENT, outcomes.CONSUME))])
    # And an inbox insert of a delivery already there is skipped by its unique delivery_id.
    inbox.add_sent(push, [row], row.created_at)
    assert InboxMessage.objects.filter(delivery_id=row.pk).count() == 1


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


def test_a_failure_reported_by_wechat_takes_the_message_out_of_the_inbox(app, subscribe_template, task_queue):
    users = seed_users(app, 2, subscribe=subscribe_template)
    push = make_push(subscribe_template, users)
    tasks.deliver_push(str(push.pk))
    task_queue.run()
    ok, refused = push.deliveries.order_by("pk")
    assert inbox_of(app) == {ok.openid: ok.pk, refused.openid: refused.pk}

    _sent_event(app, ok, 0, "success")
    _sent_event(app, refused, 43101, "failed:user refuse to accept the msg")

    assert inbox_of(app) == {ok.openid: ok.pk}


def test_a_failure_reported_before_the_answer_leaves_no_row(app, subscribe_template):
    [alice] = seed_users(app, 1, subscribe=subscribe_template)
    push = make_push(subscribe_template, [alice])
    row = push.deliveries.get()
    row.msgid = 2_000_000_000_000_054_321
    assert ledger.record_sent_event(app, row.msgid, 43101, "failed") == "early"

    ledger.write(push, [(Job.of(row), outcomes.Outcome(outcomes.SENT, outcomes.CONSUME))])

    row.refresh_from_db()
    assert row.status == "failed"
    assert inbox_of(app) == {}


def test_other_users_rows_are_untouched_by_a_failure(app, subscribe_template, task_queue):
    users = seed_users(app, 2, subscribe=subscribe_template)
    push = make_push(subscribe_template, users)
    tasks.deliver_push(str(push.pk))
    task_queue.run()
    first, second = push.deliveries.order_by("pk")
    assert ledger.record_sent_event(app, first.msgid, 43101, "failed") == "failed"
    assert list(InboxMessage.objects.values_list("delivery_id", flat=True)) == [second.pk]

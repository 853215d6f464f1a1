"""Hold until a credit arrives (../shared/API.md): a push with ``hold`` keeps recipients without a credit
``held``; each credit source releases them (SDK formId upload, SDK subscription report, WeChat's popup event);
the end of the hold makes them ``no_credit``; cancel drops them; several holds of a user go oldest first."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from formids.models import Credit, MiniUser
from pushhub.wechat.sandbox import services as sandbox
from pushhub.wechat.sandbox.models import SandboxApp, SandboxFormId
from templates_app import tasks
from templates_app.delivery import holds
from templates_app.models import Delivery, Push
from tenants import services as tenant_services
from tests.plans import explained_plans, plan_of, table_reads
from tests.sdk_helpers import sdk_client

from .helpers import assert_counters_match_rows, inbox_counts, seed_users

pytestmark = pytest.mark.django_db(transaction=True)


def send(api, template, body):
    return api.post(f"/api/v1/templates/{template.pk}/pushes", body, format="json")


def new_user(app) -> str:
    """A user both WeChat (the sandbox) and PushHub know, with no credit at all."""
    return seed_users(app, 1)[0]


def statuses(push) -> dict[str, str]:
    return dict(Delivery.objects.filter(push=push).values_list("openid", "status"))


def upload_formid(app, openid) -> None:
    """The SDK's upload of a fresh form submit's formId, over the SDK endpoint."""
    value = sandbox.issue_formids(app.appid, openid)[0]
    response = sdk_client(app, openid).post(
        f"/sdk/v1/{app.appid}/formids", {"formids": [value]}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["accepted"] == 1


# --- the request ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("to", "hold"),
    [
        ("@all", 60),
        ({"tags": {"any": ["vip"]}}, 60),
        (["o1"], 0),
        (["o1"], 604801),
        (["o1"], "60"),
        (["o1"], 1.5),
        (["o1"], True),
    ],
)
def test_a_bad_hold_is_a_400_naming_hold(api, app, formid_template, task_queue, to, hold):
    response = send(
        api, formid_template, {"to": to, "data": {"keyword1": "A", "keyword2": "B"}, "hold": hold}
    )

    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "validation_error"
    assert response.json()["error"]["field"] == "hold"
    assert not Push.objects.exists()


def test_recipients_without_a_credit_are_held_and_the_push_keeps_running(
    api, app, formid_template, task_queue
):
    (ready,) = seed_users(app, 1, formids=1)
    waiting, stranger = new_user(app), "oNeverSeen000000000000000001"

    response = send(
        api,
        formid_template,
        {"to": [ready, waiting, stranger], "data": {"keyword1": "A", "keyword2": "B"}, "hold": 600},
    )

    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["no_credit"], body["held"]) == ([], [waiting, stranger])
    task_queue.run()
    push = Push.objects.get(pk=body["push_id"])
    assert inbox_counts(app.appid) == {ready: 1}
    assert push.status == "running"
    assert statuses(push) == {ready: "sent", waiting: "held", stranger: "held"}
    counts = api.get(f"/api/v1/pushes/{push.pk}").json()["counts"]
    assert (counts["sent"], counts["held"], counts["no_credit"], counts["pending"]) == (1, 2, 0, 0)
    assert push.hold_until == pytest.approx(
        push.created_at + timedelta(seconds=600), abs=timedelta(seconds=5)
    )
    assert_counters_match_rows(push)


def test_without_hold_nobody_is_held(api, app, formid_template, task_queue):
    waiting = new_user(app)

    body = send(api, formid_template, {"to": [waiting], "data": {"keyword1": "A", "keyword2": "B"}}).json()

    assert "held" not in body and body["no_credit"] == [waiting]
    assert Push.objects.get(pk=body["push_id"]).status == "done"


# --- each credit source releases a hold --------------------------------------------------------------
def test_an_sdk_formid_upload_sends_the_held_message(api, app, formid_template, task_queue):
    waiting = new_user(app)
    push_id = send(api, formid_template, {"to": [waiting], "data": ["A", "B"], "hold": 600}).json()["push_id"]
    task_queue.run()
    assert inbox_counts(app.appid) == {}

    upload_formid(app, waiting)

    assert task_queue.names() == ["release_holds"]  # queued by the upload itself, not left to the sweep
    task_queue.run()
    push = Push.objects.get(pk=push_id)
    assert inbox_counts(app.appid) == {waiting: 1}
    assert (push.status, push.sent, push.held) == ("done", 1, 0)
    assert_counters_match_rows(push)


def test_an_sdk_subscription_report_sends_the_held_message(api, app, subscribe_template, task_queue):
    waiting = new_user(app)
    tid = subscribe_template.template_id
    push_id = send(api, subscribe_template, {"to": [waiting], "data": ["A123", "键盘"], "hold": 600}).json()[
        "push_id"
    ]

    sandbox.accept_subscriptions(app.appid, waiting, {tid: "accept"})  # the user taps accept in WeChat
    response = sdk_client(app, waiting).post(
        f"/sdk/v1/{app.appid}/subscriptions", {"results": {tid: "accept"}}, format="json"
    )
    assert response.status_code == 200, response.content
    task_queue.run()

    assert inbox_counts(app.appid) == {waiting: 1}
    assert Push.objects.get(pk=push_id).status == "done"


def test_wechats_popup_event_sends_the_held_message(api, app, subscribe_template, task_queue):
    app = tenant_services.update_app(app, credit_source="events")
    waiting = new_user(app)
    tid = subscribe_template.template_id
    push_id = send(api, subscribe_template, {"to": [waiting], "data": ["A123", "键盘"], "hold": 600}).json()[
        "push_id"
    ]

    # WeChat (the sandbox) pushes subscribe_msg_popup_event to PushHub over HTTP once the user accepts.
    sandbox.accept_subscriptions(app.appid, waiting, {tid: "accept"})
    task_queue.run()

    assert inbox_counts(app.appid) == {waiting: 1}
    assert Push.objects.get(pk=push_id).status == "done"


def test_an_alias_push_holds_by_alias_and_a_user_logging_in_later_is_reached(
    api, app, formid_template, task_queue
):
    body = send(
        api, formid_template, {"to": {"aliases": ["member-7"]}, "data": ["A", "B"], "hold": 600}
    ).json()
    assert body["unknown_aliases"] == ["member-7"] and body["held"] == []  # nobody holds the alias yet

    waiting = new_user(app)
    MiniUser.objects.filter(app=app, openid=waiting).update(alias="member-8")
    body = send(
        api, formid_template, {"to": {"aliases": ["member-8"]}, "data": ["A", "B"], "hold": 600}
    ).json()
    assert body["held"] == ["member-8"]

    upload_formid(app, waiting)
    task_queue.run()
    assert inbox_counts(app.appid) == {waiting: 1}


# --- order, end, cancel ------------------------------------------------------------------------------
def test_several_holds_of_one_user_go_oldest_first_one_credit_each(api, app, formid_template, task_queue):
    waiting = new_user(app)
    first = send(api, formid_template, {"to": [waiting], "data": ["first", "1"], "hold": 600}).json()
    second = send(api, formid_template, {"to": [waiting], "data": ["second", "2"], "hold": 600}).json()
    task_queue.run()

    upload_formid(app, waiting)
    task_queue.run()

    assert statuses(Push.objects.get(pk=first["push_id"])) == {waiting: "sent"}
    assert statuses(Push.objects.get(pk=second["push_id"])) == {waiting: "held"}
    assert [m.data["keyword1"]["value"] for m in sandbox.inbox(app.appid, waiting)] == ["first"]

    upload_formid(app, waiting)
    task_queue.run()
    assert statuses(Push.objects.get(pk=second["push_id"])) == {waiting: "sent"}
    assert inbox_counts(app.appid) == {waiting: 2}


def test_a_credit_for_another_template_leaves_a_subscribe_hold_waiting(
    api, app, subscribe_template, task_queue
):
    waiting = new_user(app)
    push_id = send(api, subscribe_template, {"to": [waiting], "data": ["A123", "键盘"], "hold": 600}).json()[
        "push_id"
    ]

    upload_formid(app, waiting)  # a formId is no credit for a subscribe template
    task_queue.run()

    push = Push.objects.get(pk=push_id)
    assert statuses(push) == {waiting: "held"} and push.held == 1
    assert Delivery.objects.get(push=push).credit_arrived_at is None  # tried once, not again and again


def test_when_the_hold_ends_the_held_become_no_credit_and_a_later_credit_sends_nothing(
    api, app, formid_template, task_queue
):
    waiting = new_user(app)
    push_id = send(api, formid_template, {"to": [waiting], "data": ["A", "B"], "hold": 60}).json()["push_id"]
    task_queue.run()

    holds.sweep(now=timezone.now() + timedelta(seconds=61))

    push = Push.objects.get(pk=push_id)
    assert (push.status, push.held, push.no_credit) == ("done", 0, 1)
    assert statuses(push) == {waiting: "no_credit"}
    upload_formid(app, waiting)
    task_queue.run()
    assert inbox_counts(app.appid) == {}
    assert_counters_match_rows(push)


def test_cancel_drops_the_holds(api, app, formid_template, task_queue):
    waiting = new_user(app)
    push_id = send(api, formid_template, {"to": [waiting], "data": ["A", "B"], "hold": 600}).json()["push_id"]
    task_queue.run()

    response = api.post(f"/api/v1/pushes/{push_id}/cancel")

    assert response.status_code == 200, response.content
    assert response.json()["counts"]["held"] == 0
    push = Push.objects.get(pk=push_id)
    assert statuses(push) == {waiting: "failed"} and push.status == "canceled"
    upload_formid(app, waiting)
    task_queue.run()
    assert inbox_counts(app.appid) == {}
    assert_counters_match_rows(push)


def test_a_scheduled_push_holds_from_when_it_runs(api, app, formid_template, task_queue):
    waiting = new_user(app)
    send_at = timezone.now() + timedelta(minutes=5)
    body = send(
        api,
        formid_template,
        {"to": [waiting], "data": ["A", "B"], "hold": 60, "send_at": send_at.isoformat()},
    ).json()
    assert body["held"] is None and body["status"] == "scheduled"
    push = Push.objects.get(pk=body["push_id"])
    Push.objects.filter(pk=push.pk).update(send_at=timezone.now())

    tasks.run_scheduled_pushes()
    task_queue.run()

    push.refresh_from_db()
    assert statuses(push) == {waiting: "held"} and push.status == "running"
    assert push.hold_until > timezone.now() + timedelta(seconds=50)


# --- what a lost task or another way back leaves -----------------------------------------------------
def test_the_sweep_releases_what_a_lost_release_task_left(api, app, formid_template, task_queue):
    waiting = new_user(app)
    push_id = send(api, formid_template, {"to": [waiting], "data": ["A", "B"], "hold": 600}).json()["push_id"]
    task_queue.run()
    upload_formid(app, waiting)
    task_queue.pending.clear()  # the release_holds task is lost with its worker

    result = holds.sweep()
    task_queue.run()

    assert result["released"] == 1
    assert inbox_counts(app.appid) == {waiting: 1}
    assert Push.objects.get(pk=push_id).status == "done"


def test_the_recheck_finds_a_credit_no_upload_announced(api, app, formid_template, task_queue, settings):
    waiting = new_user(app)
    push_id = send(api, formid_template, {"to": [waiting], "data": ["A", "B"], "hold": 600}).json()["push_id"]
    task_queue.run()
    # A credit written straight to both sides, as a canceled push's released claim would come back: no
    # upload announces it.
    value = "released-" + waiting[-12:]
    SandboxFormId.objects.create(
        app=SandboxApp.objects.get(appid=app.appid), openid=waiting, value=value, kind="formid", uses_left=1
    )
    Credit.objects.create(
        app=app,
        user=MiniUser.objects.get(app=app, openid=waiting),
        kind="formid",
        value=value,
        expires_at=timezone.now() + timedelta(days=6),
    )

    holds.sweep()
    task_queue.run()

    assert inbox_counts(app.appid) == {waiting: 1}
    assert Push.objects.get(pk=push_id).status == "done"


def test_one_release_of_an_app_at_a_time_and_the_running_one_takes_what_arrived_meanwhile(
    api, app, formid_template, task_queue
):
    first, second = new_user(app), new_user(app)
    push_id = send(api, formid_template, {"to": [first, second], "data": ["A", "B"], "hold": 600}).json()[
        "push_id"
    ]
    task_queue.run()
    upload_formid(app, first)
    task_queue.pending.clear()
    running = holds._running_key(app.pk)
    cache.add(running, 1)  # another worker is releasing this app

    assert holds.release_app(app.pk) == 0  # leaves the marked row to the running release
    assert statuses(Push.objects.get(pk=push_id))[first] == "held"

    # The running release lets go; it looks once more and goes on with what arrived while it ran.
    upload_formid(app, second)
    task_queue.pending.clear()
    cache.delete(running)
    assert holds.release_app(app.pk) == 2
    task_queue.run()
    assert inbox_counts(app.appid) == {first: 1, second: 1}
    assert Push.objects.get(pk=push_id).status == "done"


def test_a_marked_row_of_an_ended_hold_is_left_to_the_expiry(
    api, app, formid_template, task_queue, django_assert_max_num_queries
):
    waiting = new_user(app)
    push_id = send(api, formid_template, {"to": [waiting], "data": ["A", "B"], "hold": 600}).json()["push_id"]
    task_queue.run()
    Push.objects.filter(pk=push_id).update(hold_until=timezone.now() - timedelta(seconds=1))
    Delivery.objects.filter(push_id=push_id).update(credit_arrived_at=timezone.now())

    # One look (a few more queries where the cache is the database), no round after round on a row it cannot
    # send.
    with django_assert_max_num_queries(12):
        assert holds.release_app(app.pk) == 0
    assert holds.sweep()["expired"] == 1
    assert statuses(Push.objects.get(pk=push_id)) == {waiting: "no_credit"}


def test_the_recheck_marks_only_held_users_who_have_a_credit(api, app, formid_template, task_queue):
    waiting = new_user(app)
    send(api, formid_template, {"to": [waiting], "data": ["A", "B"], "hold": 600})
    task_queue.run()
    cache.delete("holds:recheck")

    assert holds.recheck() == 0  # nobody to try: the release does not claim for 10,000 users in vain
    assert not Delivery.objects.filter(credit_arrived_at__isnull=False).exists()


def test_an_upload_for_a_user_without_holds_queues_nothing(app, formid_template, task_queue):
    user = new_user(app)

    upload_formid(app, user)

    assert task_queue.names() == []


def test_an_upload_of_a_user_with_no_hold_leaves_the_others_holds_alone_in_one_statement(
    api, app, formid_template, task_queue
):
    waiting, other = new_user(app), new_user(app)
    send(api, formid_template, {"to": [waiting], "data": ["A", "B"], "hold": 600})
    task_queue.run()
    client = sdk_client(app, other)
    value = sandbox.issue_formids(app.appid, other)[0]

    with CaptureQueriesContext(connection) as queries:
        response = client.post(f"/sdk/v1/{app.appid}/formids", {"formids": [value]}, format="json")

    assert response.json()["accepted"] == 1
    assert task_queue.names() == []
    assert not Delivery.objects.filter(credit_arrived_at__isnull=False).exists()
    if connection.vendor == "postgresql":  # the held rows were asked about in the upload's own statement
        touching = [q["sql"] for q in queries.captured_queries if "templates_app_delivery" in q["sql"]]
        assert len(touching) == 1 and "formids_credit" in touching[0], touching
    upload_formid(app, waiting)  # and the held user's upload still marks (and releases) the hold
    assert task_queue.names() == ["release_holds"]


def test_a_form_encoded_trigger_takes_hold_as_digits(client, app, formid_template, task_queue):
    waiting = new_user(app)
    url = f"/t/{formid_template.get_trigger_token()}"

    response = client.post(url, {"to": waiting, "keyword1": "A", "keyword2": "B", "hold": "600"})
    refused = client.post(url, {"to": waiting, "keyword1": "A", "keyword2": "B", "hold": "ten minutes"})

    assert response.status_code == 202, response.content
    assert response.json()["held"] == [waiting]
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "hold"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the plan of PostgreSQL's release statements")
def test_a_release_writes_its_rows_by_key_after_a_burst_of_holds_the_statistics_miss(
    api, app, formid_template, task_queue
):
    """The release turns the rows it locked pending by primary key: with ``status = 'held'`` in the same
    UPDATE, statistics taken before the holds let the planner read every held row of every push and hash
    them against the ids (45–60 ms for 500 rows with 10,000 held, bench.holds)."""
    earlier = seed_users(app, 50, formids=1)
    earlier_push = send(api, formid_template, {"to": earlier, "data": ["A", "B"]}).json()["push_id"]
    task_queue.run()
    with connection.cursor() as cursor:  # a table of 20,000 sent deliveries: the statistics know of no hold
        cursor.execute(
            "INSERT INTO templates_app_delivery (push_id, openid, status, errcode, errmsg, attempts, created_at,"
            " updated_at) SELECT %s, 'oSent' || n, 'sent', '', '', 1, now(), now()"
            " FROM generate_series(1, 20000) n",
            [earlier_push],
        )
        cursor.execute("ANALYZE templates_app_delivery")
    waiting = seed_users(app, 500)
    push_id = send(api, formid_template, {"to": waiting, "data": ["A", "B"], "hold": 600}).json()["push_id"]
    task_queue.run()
    now = timezone.now()
    users = MiniUser.objects.filter(app=app, openid__in=waiting)
    Credit.objects.bulk_create(
        Credit(
            app=app,
            user=user,
            kind="formid",
            value=f"burst{user.pk:020d}",
            expires_at=now + timedelta(days=6),
        )
        for user in users
    )
    Delivery.objects.filter(push_id=push_id).update(credit_arrived_at=now)
    with explained_plans() as plans:  # (the session's settings: the connection is closed after)
        released = holds.release_push(push_id, timezone.now())
    assert released == 500
    assert set(statuses(Push.objects.get(pk=push_id)).values()) == {"pending"}
    reads = table_reads(
        plan_of(plans, '"status" = \'pending\', "credit_id" = CASE'), "templates_app_delivery"
    )
    assert reads and all(
        line.startswith("->  Index Scan using templates_app_delivery_pkey") for line in reads
    ), reads

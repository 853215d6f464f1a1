"""POST /sdk/v1/{appid}/opens: the mini-program reports the ``ph=<ref>`` of the message it was opened from
(../shared/API.md "Opens and the in-app inbox"). Counted once, only for the session's own sent message."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from formids.models import MiniUser, TemplateDailyStat
from formids.services import touch_user
from pushhub.api import iso_utc
from templates_app.models import Delivery, InboxMessage, Push, Template
from templates_app.opens_ref import make_ref
from tenants import services as tenant_services
from tests.conftest import random_appid, random_secret
from tests.sdk_helpers import error, sdk_client, url
from webhooks import services as webhook_services
from webhooks.models import WebhookEvent

ALICE = "oOpensAlice000000000000000001"
BOB = "oOpensBob00000000000000000002"
CAROL = "oOpensCarol000000000000000003"
DAVE = "oOpensDave00000000000000000004"


def make_sent_push(app, recipients: dict[str, str], *, template: Template | None = None) -> Push:
    """A push of ``app`` with one delivery per ``{openid: status}``, as the workers leave them (a sent row has
    its sent_at)."""
    template = template or Template.objects.create(
        app=app,
        kind="subscribe",
        template_id=f"tpl-{app.appid}",
        title="订单通知",
        fields=[{"key": "thing1", "name": "商品"}],
        subscription="one_time",
        page="pages/order?id=1",
    )
    push = Push.objects.create(
        tenant=app.tenant,
        app=app,
        template=template,
        status=Push.Status.DONE,
        to=list(recipients),
        data={"thing1": {"value": "键盘"}},
        page=template.page,
        recipients=len(recipients),
        sent=sum(1 for s in recipients.values() if s == "sent"),
    )
    now = timezone.now()
    Delivery.objects.bulk_create(
        [
            Delivery(push=push, openid=openid, status=status, sent_at=now if status == "sent" else None)
            for openid, status in recipients.items()
        ]
    )
    return push


def ref_of(push: Push, openid: str) -> str:
    return make_ref(Delivery.objects.get(push=push, openid=openid).pk)


def post_open(client: APIClient, app, body, **kwargs):
    return client.post(url(app, "opens"), body, format="json", **kwargs)


@pytest.fixture
def app(sandbox_app):
    return sandbox_app


@pytest.fixture
def push(app):
    return make_sent_push(app, {ALICE: "sent", BOB: "sent", CAROL: "failed", DAVE: "pending"})


@pytest.fixture
def alice(app):
    return sdk_client(app, ALICE)


# --- the open ---------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_an_open_marks_the_delivery_and_counts_on_the_push(app, push, alice):
    before = timezone.now()
    response = post_open(alice, app, {"ref": ref_of(push, ALICE)})

    assert response.status_code == 200, response.content
    assert response.json() == {"opened": True}
    row = Delivery.objects.get(push=push, openid=ALICE)
    assert row.opened_at is not None and before <= row.opened_at <= timezone.now()
    assert Delivery.objects.get(push=push, openid=BOB).opened_at is None
    push.refresh_from_db()
    assert push.opened == 1


@pytest.mark.django_db
def test_a_repeated_open_answers_the_same_and_counts_once(app, push, alice):
    ref = ref_of(push, ALICE)
    first = post_open(alice, app, {"ref": ref})
    opened_at = Delivery.objects.get(push=push, openid=ALICE).opened_at
    again = [post_open(alice, app, {"ref": ref}) for _ in range(3)]

    assert [r.status_code for r in [first, *again]] == [200] * 4
    assert all(r.json() == {"opened": True} for r in again)
    assert Delivery.objects.get(push=push, openid=ALICE).opened_at == opened_at  # the first open's time
    push.refresh_from_db()
    assert push.opened == 1
    [day] = TemplateDailyStat.objects.filter(app=app, template_id=push.template.template_id)
    assert day.opened == 1


@pytest.mark.django_db
def test_the_open_shows_in_the_api_and_the_funnel(app, push, alice, api):
    post_open(alice, app, {"ref": ref_of(push, ALICE)})
    sdk_client(app, BOB).post(url(app, "opens"), {"ref": ref_of(push, BOB)}, format="json")

    detail = api.get(f"/api/v1/pushes/{push.pk}").json()
    assert detail["counts"]["opened"] == 2 and detail["counts"]["sent"] == 2
    deliveries = {d["openid"]: d for d in api.get(f"/api/v1/pushes/{push.pk}/deliveries").json()["results"]}
    alice_row = Delivery.objects.get(push=push, openid=ALICE)
    assert deliveries[ALICE]["opened_at"] == iso_utc(alice_row.opened_at)
    assert deliveries[ALICE]["opened_at"].endswith("Z")
    assert deliveries[CAROL]["opened_at"] is None and deliveries[DAVE]["opened_at"] is None
    [day] = TemplateDailyStat.objects.filter(app=app, template_id=push.template.template_id)
    assert (day.day, day.opened) == (alice_row.opened_at.date(), 2)


@pytest.mark.django_db
def test_an_open_marks_the_inbox_message_read(app, push, alice):
    rows = {d.openid: d for d in Delivery.objects.filter(push=push)}
    sent_at = timezone.now()
    for openid in (ALICE, BOB):
        InboxMessage.objects.create(
            app=app, openid=openid, push=push, delivery_id=rows[openid].pk, sent_at=sent_at
        )
    post_open(alice, app, {"ref": make_ref(rows[ALICE].pk)})

    read = dict(InboxMessage.objects.values_list("openid", "read_at"))
    assert read[ALICE] == Delivery.objects.get(pk=rows[ALICE].pk).opened_at
    assert read[BOB] is None


@pytest.mark.django_db
def test_a_message_without_an_inbox_row_is_still_opened(app, push, alice):
    assert not InboxMessage.objects.exists()
    assert post_open(alice, app, {"ref": ref_of(push, ALICE)}).status_code == 200


# --- the webhook ----------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_message_opened_is_recorded_with_the_alias(app, push, alice, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    webhook_services.create_endpoint(app.tenant, url="https://93.184.216.34/hook", events=["message.opened"])
    MiniUser.objects.filter(app=app, openid=ALICE).update(alias="customer-42")
    post_open(alice, app, {"ref": ref_of(push, ALICE)})
    post_open(alice, app, {"ref": ref_of(push, ALICE)})  # a repeat: no second event

    [event] = WebhookEvent.objects.filter(type="message.opened")
    opened_at = Delivery.objects.get(push=push, openid=ALICE).opened_at
    assert event.tenant_id == app.tenant_id
    assert event.data == {
        "push_id": str(push.pk),
        "app": app.appid,
        "openid": ALICE,
        "alias": "customer-42",
        "opened_at": iso_utc(opened_at),
    }


@pytest.mark.django_db
def test_no_event_for_endpoints_that_do_not_want_it(app, push, alice):
    webhook_services.create_endpoint(app.tenant, url="https://93.184.216.34/hook", events=["push.finished"])
    post_open(alice, app, {"ref": ref_of(push, ALICE)})
    assert not WebhookEvent.objects.exists()


# --- refusals ---------------------------------------------------------------------------------------------
def assert_nothing_opened(push: Push) -> None:
    assert not Delivery.objects.filter(push=push, opened_at__isnull=False).exists()
    push.refresh_from_db()
    assert push.opened == 0
    assert not TemplateDailyStat.objects.filter(opened__gt=0).exists()


@pytest.mark.django_db
def test_another_users_delivery_is_not_found(app, push):
    bob = sdk_client(app, BOB)
    response = post_open(bob, app, {"ref": ref_of(push, ALICE)})
    assert response.status_code == 404
    assert error(response)["code"] == "not_found"
    assert_nothing_opened(push)


@pytest.mark.django_db
def test_another_apps_delivery_is_not_found(app, push, tenant):
    other_app = tenant_services.register_app(
        tenant, appid=random_appid(), secret=random_secret(), name="Other shop", sandbox_app=True
    )
    # Alice's openid in the other app, with the other app's session: still not her message there.
    response = post_open(sdk_client(other_app, ALICE), other_app, {"ref": ref_of(push, ALICE)})
    assert response.status_code == 404 and error(response)["code"] == "not_found"
    assert_nothing_opened(push)


@pytest.mark.django_db
def test_another_tenants_app_cannot_open_it(app, push, other_tenant):
    outsider_app = tenant_services.register_app(
        other_tenant, appid=random_appid(), secret=random_secret(), name="Globex shop", sandbox_app=True
    )
    response = post_open(sdk_client(outsider_app, ALICE), outsider_app, {"ref": ref_of(push, ALICE)})
    assert response.status_code == 404
    # and a session of the other app sent to this app's URL is not a session here
    response = post_open(sdk_client(outsider_app, ALICE), app, {"ref": ref_of(push, ALICE)})
    assert response.status_code == 401
    assert_nothing_opened(push)


@pytest.mark.django_db
@pytest.mark.parametrize("openid", [CAROL, DAVE])
def test_a_message_not_sent_is_not_found(app, push, openid):
    response = post_open(sdk_client(app, openid), app, {"ref": ref_of(push, openid)})
    assert response.status_code == 404 and error(response)["code"] == "not_found"
    assert_nothing_opened(push)


@pytest.mark.django_db
def test_a_message_failed_after_an_open_is_not_opened_again(app, push, alice):
    ref = ref_of(push, ALICE)
    Delivery.objects.filter(push=push, openid=ALICE).update(status="failed")
    assert post_open(alice, app, {"ref": ref}).status_code == 404


@pytest.mark.django_db
def test_an_unknown_delivery_is_not_found(app, push, alice):
    last = Delivery.objects.order_by("-pk").first().pk
    response = post_open(alice, app, {"ref": make_ref(last + 1000)})
    assert response.status_code == 404 and error(response)["code"] == "not_found"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "ref",
    [
        "x",
        "0000000000000000",
        "zzzzzzzzzzzzzzzzz",  # 17 characters
        "ABCDEF12345",
        "abc def",
        "ph=abcdef1",
        "🙂" * 8,
        "a" * 10_000,
    ],
)
def test_malformed_refs_are_not_found_without_a_query(app, push, alice, ref):
    alice.get(url(app, "me"))  # warm: the session's user exists
    with CaptureQueriesContext(connection) as queries:
        response = post_open(alice, app, {"ref": ref})
    assert response.status_code == 404 and error(response)["code"] == "not_found"
    # The app and the user (SdkView) are looked up, and on SQLite the rate limits' cache table; the ref is
    # refused before any query on deliveries.
    assert not [q["sql"] for q in queries.captured_queries if Delivery._meta.db_table in q["sql"]]


@pytest.mark.django_db
def test_a_forged_ref_is_not_found(app, push, alice):
    real = ref_of(push, ALICE)
    forged = ("a" if real[0] != "a" else "b") + real[1:]  # another MAC for the same id
    response = post_open(alice, app, {"ref": forged})
    assert response.status_code == 404
    assert_nothing_opened(push)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [{}, {"ref": None}, {"ref": 123}, {"ref": ["abc"]}, {"ref": {"a": 1}}, {"ref": True}, {"ref": ""}],
)
def test_a_missing_or_non_string_ref_is_a_validation_error(app, push, alice, body):
    response = post_open(alice, app, body)
    assert response.status_code == 400, response.content
    assert error(response)["code"] == "validation_error" and error(response)["field"] == "ref"


@pytest.mark.django_db
def test_an_unknown_field_is_refused(app, push, alice):
    response = post_open(alice, app, {"ref": ref_of(push, ALICE), "extra": 1})
    assert response.status_code == 400 and error(response)["field"] == "extra"
    assert_nothing_opened(push)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "raw",
    [b"", b"null", b"[]", b'"ref"', b"{", b"\xff\xfe", b'{"ref": "\\ud800"}', b"1e999", b'{"ref": 1e999}'],
)
def test_odd_bodies_never_500(app, push, alice, raw):
    response = alice.generic("POST", url(app, "opens"), raw, content_type="application/json")
    assert 400 <= response.status_code < 500, (raw, response.status_code, response.content)
    assert "error" in json.loads(response.content)
    assert_nothing_opened(push)


@pytest.mark.django_db
def test_a_form_encoded_body_is_read_too_or_refused_cleanly(app, push, alice):
    response = alice.post(url(app, "opens"), {"ref": ref_of(push, ALICE)})  # multipart
    assert response.status_code in (200, 400, 415)
    assert response.status_code != 500


@pytest.mark.django_db
def test_without_a_session_it_is_401(app, push):
    response = post_open(APIClient(), app, {"ref": ref_of(push, ALICE)})
    assert response.status_code == 401 and error(response)["code"] == "not_authenticated"
    assert_nothing_opened(push)


@pytest.mark.django_db
def test_an_unknown_app_is_404(push, alice):
    response = post_open(alice, random_appid(), {"ref": ref_of(push, ALICE)})
    assert response.status_code == 404 and error(response)["code"] == "not_found"


@pytest.mark.django_db
def test_opens_count_against_the_sdk_rate_limit(app, push, alice, settings):
    settings.SDK_RATE_PER_OPENID = 2
    ref = ref_of(push, ALICE)
    answers = [post_open(alice, app, {"ref": ref}).status_code for _ in range(3)]
    assert answers == [200, 200, 429]


# --- races --------------------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_concurrent_opens_of_one_message_count_once(app):
    push = make_sent_push(app, {ALICE: "sent", BOB: "sent"})
    touch_user(app, ALICE)
    ref = ref_of(push, ALICE)
    user = MiniUser.objects.get(app=app, openid=ALICE)
    from templates_app import opens

    start = threading.Barrier(8)
    results, errors = [], []

    def report():
        try:
            start.wait(timeout=10)
            results.append(opens.record_open(app, user, ref))
        except Exception as exc:  # asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=report) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert sorted(results) == [False] * 7 + [True]  # one winner
    push.refresh_from_db()
    assert push.opened == 1
    assert TemplateDailyStat.objects.get(app=app, template_id=push.template.template_id).opened == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_opens_of_many_messages_of_one_push_all_count(app):
    openids = [f"oOpensRace{n:019d}" for n in range(12)]
    push = make_sent_push(app, dict.fromkeys(openids, "sent"))
    for openid in openids:
        touch_user(app, openid)
    from templates_app import opens

    users = {u.openid: u for u in MiniUser.objects.filter(app=app, openid__in=openids)}
    start = threading.Barrier(len(openids))
    errors = []

    def report(openid):
        try:
            start.wait(timeout=10)
            assert opens.record_open(app, users[openid], ref_of(push, openid)) is True
        except Exception as exc:  # asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=report, args=(openid,)) for openid in openids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    push.refresh_from_db()
    assert push.opened == len(openids) == Delivery.objects.filter(push=push, opened_at__isnull=False).count()


@pytest.mark.django_db
def test_the_open_time_is_utc(app, push, alice):
    from templates_app import opens

    user = MiniUser.objects.get(app=app, openid=ALICE)
    at = datetime(2026, 12, 5, 23, 59, 30, tzinfo=UTC)
    assert opens.record_open(app, user, ref_of(push, ALICE), now=at) is True
    assert Delivery.objects.get(push=push, openid=ALICE).opened_at == at
    assert TemplateDailyStat.objects.get(app=app, template_id=push.template.template_id).day == at.date()

"""/sdk/v1/{appid}/formids, /subscriptions and /me: credits in through the SDK, and what the user sees."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from formids import hooks, quotas
from formids.models import Credit, InboundEvent, MiniUser
from formids.services import FORMID_LIFETIME, add_formids, add_subscribe_credits, touch_user, usable_q
from pushhub import idempotency
from pushhub.api import ApiError, iso_utc
from pushhub.wechat.sandbox import services as sandbox
from tests.sdk_helpers import OPENID, error, sdk_client, url


def formid(n: int) -> str:
    return f"formid{n:026d}"


@pytest.fixture
def app(sandbox_app):
    return sandbox_app


@pytest.fixture
def phone(app):
    return sdk_client(app)


@pytest.fixture
def user(app, phone):
    return MiniUser.objects.get(app=app, openid=OPENID)


@pytest.fixture
def templates(monkeypatch):
    """The app's subscribe templates as the catalogue (templates_app) would report them; restored after."""
    monkeypatch.setattr(hooks, "_provider", hooks._provider)  # put back whatever was there
    known = {"TID_ORDER", "TID_SHIP"}
    one_time = hooks.SubscribeTemplate(hooks.ONE_TIME, active=True)
    hooks.register_subscribe_template_provider(lambda app: dict.fromkeys(known, one_time))
    return known


pytestmark = pytest.mark.django_db


# --- formIds and prepay_ids ---------------------------------------------------------------------------
def test_it_stores_formids_for_seven_days(app, phone, user):
    before = timezone.now()
    response = phone.post(url(app, "formids"), {"formids": [formid(1), formid(2)]}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    credits = Credit.objects.filter(app=app, user=user).order_by("value")
    assert [c.value for c in credits] == [formid(1), formid(2)]
    for credit in credits:
        assert (credit.kind, credit.uses_left, credit.state, credit.source) == (
            "formid",
            1,
            "available",
            "sdk",
        )
        assert before + FORMID_LIFETIME <= credit.expires_at <= timezone.now() + FORMID_LIFETIME


def test_prepay_ids_give_three_sends(app, phone, user):
    response = phone.post(
        url(app, "formids"), {"prepay_ids": ["wx20260101120000abcdef0123456789"]}, format="json"
    )
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    credit = Credit.objects.get(user=user)
    assert (credit.kind, credit.uses_left) == ("prepay", 3)


def test_both_lists_in_one_call_are_summed(app, phone, user):
    response = phone.post(
        url(app, "formids"),
        {"formids": [formid(1), "the formId is a mock one"], "prepay_ids": [formid(2), formid(1)]},
        format="json",
    )
    assert response.json() == {
        "accepted": 2,
        "duplicates": 1,
        "rejected": [{"formid": "the formId is a mock one", "reason": "mock_formid"}],
    }
    assert dict(Credit.objects.filter(user=user).values_list("value", "kind")) == {
        formid(1): "formid",
        formid(2): "prepay",
    }


def test_duplicates_are_counted_and_stored_once(app, phone, user):
    phone.post(url(app, "formids"), {"formids": [formid(1), formid(2)]}, format="json")
    response = phone.post(url(app, "formids"), {"formids": [formid(2), formid(3), formid(3)]}, format="json")
    assert response.json() == {"accepted": 1, "duplicates": 2, "rejected": []}
    assert Credit.objects.filter(app=app).count() == 3
    assert Credit.objects.filter(app=app, value=formid(2)).count() == 1


def test_mock_malformed_and_non_string_values_are_rejected_one_by_one(app, phone, user):
    body = {"formids": ["the formId is a mock one", "has a space", "short", 12345, None, {"a": 1}, formid(1)]}
    response = phone.post(url(app, "formids"), body, format="json")
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["accepted"] == 1
    assert data["duplicates"] == 0
    assert [r["reason"] for r in data["rejected"]] == [
        "mock_formid",
        "malformed",
        "malformed",
        "not_a_string",
        "not_a_string",
        "not_a_string",
    ]
    assert data["rejected"][0]["formid"] == "the formId is a mock one"
    assert all(isinstance(r["formid"], str) for r in data["rejected"])
    assert list(Credit.objects.filter(user=user).values_list("value", flat=True)) == [formid(1)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"formids": [formid(n) for n in range(101)]}, "formids"),
        ({"prepay_ids": [formid(n) for n in range(101)]}, "prepay_ids"),
        ({"formids": []}, "formids"),
        ({"formids": formid(1)}, "formids"),
        ({"formids": {"id": formid(1)}}, "formids"),
        ({"formids": None}, "formids"),
        ({"formids": [formid(1)], "extra": True}, "extra"),
        ({}, None),
        ([formid(1)], None),
        # Text no database stores (stored with the report as received): a 500 on PostgreSQL.
        ({"formids": [formid(1), "abcdef\x00"]}, "formids[1]"),
        ({"prepay_ids": ["abcdef\udc00"]}, "prepay_ids[0]"),
    ],
)
def test_a_bad_upload_is_refused_whole(app, phone, body, field):
    # json.dumps: escapes the unpaired surrogates the client's own renderer cannot encode
    response = phone.generic("POST", url(app, "formids"), json.dumps(body), content_type="application/json")
    assert response.status_code == 400
    assert error(response)["code"] == "validation_error"
    assert error(response).get("field") == field
    assert not Credit.objects.exists()


def test_a_hundred_formids_is_the_most_per_call(app, phone):
    response = phone.post(url(app, "formids"), {"formids": [formid(n) for n in range(100)]}, format="json")
    assert response.json()["accepted"] == 100


def test_an_oversized_body_is_refused_with_413(app, phone):
    body = {"formids": ["f" * 700 for _ in range(100)]}  # ~70 KiB
    response = phone.post(url(app, "formids"), body, format="json")
    assert response.status_code == 413
    assert error(response)["code"] == "payload_too_large"


# --- subscriptions --------------------------------------------------------------------------------------
def test_accepts_are_credited_when_the_app_counts_sdk_reports(app, phone, user, templates):
    results = {"TID_ORDER": "accept", "TID_SHIP": "reject", "TID_GONE": "accept"}
    response = phone.post(url(app, "subscriptions"), {"results": results}, format="json")

    assert response.status_code == 200, response.content
    assert response.json() == {"credited": {"TID_ORDER": 1}, "ignored": ["TID_GONE"]}
    credit = Credit.objects.get(user=user)
    assert (credit.kind, credit.template_id, credit.source, credit.expires_at) == (
        "subscribe",
        "TID_ORDER",
        "sdk",
        None,
    )
    event = InboundEvent.objects.get(app=app)
    assert (event.source, event.event, event.openid) == ("sdk", "subscribe_report", OPENID)
    assert event.payload == results
    assert event.outcome["credited"] == {"TID_ORDER": 1}
    assert event.outcome["ignored"] == ["TID_GONE"]


def test_with_events_as_credit_source_reports_are_recorded_not_credited(app, phone, templates):
    app.credit_source = "events"
    app.save(update_fields=["credit_source"])
    results = {"TID_ORDER": "accept", "TID_GONE": "accept"}
    response = phone.post(url(app, "subscriptions"), {"results": results}, format="json")

    assert response.status_code == 200
    assert response.json() == {"credited": {}, "ignored": ["TID_GONE"]}
    assert not Credit.objects.exists()
    event = InboundEvent.objects.get(app=app)
    assert event.payload == results
    assert event.outcome["credited"] == {}


def test_without_a_catalogue_every_template_id_counts(app, phone, monkeypatch):
    monkeypatch.setattr(hooks, "_provider", None)
    response = phone.post(url(app, "subscriptions"), {"results": {"ANY_ID": "accept"}}, format="json")
    assert response.json() == {"credited": {"ANY_ID": 1}, "ignored": []}


def test_rejections_only_are_recorded(app, phone, templates):
    response = phone.post(
        url(app, "subscriptions"), {"results": {"TID_ORDER": "ban", "TID_SHIP": "filter"}}, format="json"
    )
    assert response.json() == {"credited": {}, "ignored": []}
    assert not Credit.objects.exists()
    assert InboundEvent.objects.count() == 1


@pytest.mark.parametrize(
    ("results", "field"),
    [
        ({"TID_ORDER": "yes"}, "results.TID_ORDER"),
        ({"TID_ORDER": "accept", "TID_SHIP": True}, "results.TID_SHIP"),
        ({"TID_ORDER": None}, "results.TID_ORDER"),
        ({}, "results"),
        ({f"T{n}": "accept" for n in range(51)}, "results"),
        ({"T" * 129: "accept"}, "results"),
        (["TID_ORDER"], "results"),
        ("accept", "results"),
    ],
)
def test_a_bad_report_is_refused(app, phone, templates, results, field):
    response = phone.post(url(app, "subscriptions"), {"results": results}, format="json")
    assert response.status_code == 400
    assert error(response)["code"] == "validation_error"
    assert error(response)["field"] == field
    assert not InboundEvent.objects.exists()


def test_fifty_template_ids_is_the_most_per_report(app, phone, monkeypatch):
    monkeypatch.setattr(hooks, "_provider", None)
    results = {f"T{n}": "accept" for n in range(50)}
    assert phone.post(url(app, "subscriptions"), {"results": results}, format="json").status_code == 200
    assert Credit.objects.count() == 50


def report(client, app, results, key):
    return client.post(
        url(app, "subscriptions"), {"results": results}, format="json", HTTP_IDEMPOTENCY_KEY=key
    )


def test_a_retried_report_with_the_same_key_credits_once(app, phone, user, templates):
    results = {"TID_ORDER": "accept", "TID_GONE": "accept"}
    first = report(phone, app, results, "key-1")
    again = report(phone, app, results, "key-1")

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() == {"credited": {"TID_ORDER": 1}, "ignored": ["TID_GONE"]}
    assert Credit.objects.filter(user=user).count() == 1
    assert InboundEvent.objects.count() == 1

    assert report(phone, app, results, "key-2").json()["credited"] == {"TID_ORDER": 1}
    assert Credit.objects.filter(user=user).count() == 2


def test_idempotency_keys_are_per_user(app, phone, templates):
    other = sdk_client(app, "oSdkUser00000000000000000002")
    report(phone, app, {"TID_ORDER": "accept"}, "same-key")
    assert report(other, app, {"TID_ORDER": "accept"}, "same-key").json()["credited"] == {"TID_ORDER": 1}
    assert Credit.objects.count() == 2


def test_the_same_key_with_another_report_is_a_conflict(app, phone, templates):
    report(phone, app, {"TID_ORDER": "accept"}, "key-1")
    response = report(phone, app, {"TID_SHIP": "accept"}, "key-1")
    assert response.status_code == 409
    assert error(response)["code"] == "idempotency_mismatch"
    assert Credit.objects.count() == 1


def test_an_idempotency_key_over_255_characters_is_refused(app, phone, templates):
    response = report(phone, app, {"TID_ORDER": "accept"}, "k" * 256)
    assert response.status_code == 400
    assert error(response)["field"] == "Idempotency-Key"
    assert report(phone, app, {"TID_ORDER": "accept"}, "k" * 255).status_code == 200


def test_a_retry_while_the_first_report_still_runs_gets_409_and_credits_nothing(
    app, phone, user, templates, monkeypatch
):
    monkeypatch.setattr(idempotency, "IDEMPOTENCY_WAIT", 0)
    key = idempotency.cache_key(f"sdk:{app.pk}:{OPENID}", "key-1")
    cache.add(
        key, {"fingerprint": idempotency.body_fingerprint({"TID_ORDER": "accept"})}, timeout=60
    )  # the first request's claim

    response = report(phone, app, {"TID_ORDER": "accept"}, "key-1")

    assert response.status_code == 409
    assert error(response)["code"] == "conflict"
    assert response["Retry-After"] == "1"
    assert not Credit.objects.exists()


def test_a_failed_attempt_lets_go_of_its_key():
    calls = []

    def fails_then_works():
        calls.append(1)
        if len(calls) == 1:
            raise ApiError(503, "unavailable", "try again")
        return {"credited": {}, "ignored": []}

    with pytest.raises(ApiError):
        idempotency.run_once("test:key", "fp", fails_then_works)
    assert idempotency.run_once("test:key", "fp", fails_then_works) == {"credited": {}, "ignored": []}
    assert idempotency.run_once("test:key", "fp", fails_then_works) == {"credited": {}, "ignored": []}
    assert len(calls) == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_with_one_key_credit_once(app, templates):
    phones = [sdk_client(app) for _ in range(4)]
    barrier = threading.Barrier(len(phones))
    answers = []

    def retry(client):
        try:
            barrier.wait(timeout=10)
            answers.append(report(client, app, {"TID_ORDER": "accept"}, "key-1"))
        finally:
            connection.close()

    threads = [threading.Thread(target=retry, args=(client,)) for client in phones]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert [a.status_code for a in answers] == [200] * len(phones)
    assert all(a.json() == {"credited": {"TID_ORDER": 1}, "ignored": []} for a in answers)
    assert Credit.objects.filter(app=app).count() == 1
    assert InboundEvent.objects.filter(app=app).count() == 1


# --- me ----------------------------------------------------------------------------------------------------
def test_me_shows_usable_credits_and_the_soonest_expiry(app, phone, user):
    now = timezone.now()
    add_formids(app, user, [formid(1)], now=now - timedelta(days=5))  # expires first
    add_formids(app, user, [formid(2)], now=now - timedelta(days=1))
    add_formids(app, user, ["wx20260101120000abcdef0123456789"], kind="prepay", now=now)
    add_formids(app, user, [formid(3)], now=now - timedelta(days=8))  # expired
    add_formids(app, user, [formid(4)], now=now - FORMID_LIFETIME + timedelta(minutes=10))  # in the margin
    add_formids(app, user, [formid(5)])
    Credit.objects.filter(value=formid(5)).update(state="claimed")  # being sent: not usable
    add_subscribe_credits(app, user, ["TID_ORDER", "TID_ORDER", "TID_SHIP"], source="sdk")
    add_formids(app, touch_user(app, "oSomeoneElse000000000000000"), [formid(6)], now=now - timedelta(days=6))

    response = phone.get(url(app, "me"))

    assert response.status_code == 200, response.content
    me = response.json()
    assert me.pop("first_seen").endswith("Z") and me.pop("last_seen").endswith("Z")
    assert me == {
        "openid": OPENID,
        "push_enabled": True,
        "formid_credits": 1 + 1 + 3,
        "subscribe_credits": {"TID_ORDER": 2, "TID_SHIP": 1},
        "long_term": [],
        "next_expiry": iso_utc(Credit.objects.get(value=formid(1)).expires_at),
    }
    assert response.json()["next_expiry"].endswith("Z")


def test_me_for_a_user_without_credits(app, phone):
    me = phone.get(url(app, "me")).json()
    del me["first_seen"], me["last_seen"]
    assert me == {
        "openid": OPENID,
        "push_enabled": True,
        "formid_credits": 0,
        "subscribe_credits": {},
        "long_term": [],
        "next_expiry": None,
    }


def test_the_summary_is_one_aggregate_query(app, user, django_assert_num_queries):
    add_formids(app, user, [formid(n) for n in range(50)])
    add_subscribe_credits(app, user, ["TID_ORDER"] * 20, source="sdk")
    with django_assert_num_queries(1):
        summary = quotas.user_summary(user)
    assert summary["formid_credits"] == 50
    assert summary["subscribe_credits"] == {"TID_ORDER": 20}


# --- end to end: a phone in the sandbox ------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_phone_logs_in_collects_formids_and_they_become_usable_credits(app, sandbox_base):
    wechat_user = sandbox.create_user(app.appid)
    login = APIClient().post(
        url(app, "login"), {"code": sandbox.issue_login_code(app.appid, wechat_user.openid)}, format="json"
    )
    assert login.status_code == 200, login.content
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Session {login.json()['session']}")

    formids = sandbox.issue_formids(app.appid, wechat_user.openid, count=5)
    prepay_ids = sandbox.issue_formids(app.appid, wechat_user.openid, count=2, kind="prepay")
    upload = client.post(url(app, "formids"), {"formids": formids, "prepay_ids": prepay_ids}, format="json")

    assert upload.status_code == 200, upload.content
    assert upload.json() == {"accepted": 7, "duplicates": 0, "rejected": []}
    usable = Credit.objects.filter(usable_q(timezone.now()), app=app, user__openid=wechat_user.openid)
    assert sorted(usable.values_list("value", flat=True)) == sorted(formids + prepay_ids)
    me = client.get(url(app, "me")).json()
    assert me["openid"] == wechat_user.openid
    assert me["formid_credits"] == 5 + 2 * 3
    assert datetime.fromisoformat(me["next_expiry"]) > timezone.now() + timedelta(days=6)

"""/sdk/v1/{appid}/login and SDK sessions: the sandbox over real HTTP, WeChat's refusals, forged, expired
and other apps' sessions, unknown and deleted apps, the OpenAPI description."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
from django.core import signing
from django.utils import timezone
from rest_framework.test import APIClient

from formids.models import MiniUser
from formids.sdk_auth import issue_session
from formids.services import touch_user
from pushhub.wechat.client import WeChatClient
from pushhub.wechat.sandbox import services as sandbox
from tenants import services as tenant_services
from tests.conftest import random_appid, random_secret
from tests.sdk_helpers import OPENID, error, sdk_client, url

DAY = 24 * 3600


def login(app, code: str, **extra):
    return APIClient().post(url(app, "login"), {"code": code}, format="json", **extra)


def signed_days_ago(monkeypatch, app, openid: str, days: float) -> str:
    """A session token signed ``days`` ago (Django's signer takes its timestamp from time.time())."""
    with monkeypatch.context() as patch:
        patch.setattr(
            signing.TimestampSigner,
            "timestamp",
            lambda self: signing.b62_encode(int(time.time() - days * DAY)),
        )
        return issue_session(app, openid)[0]


# --- login through the sandbox ----------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_phone_logs_in_through_the_sandbox_and_its_session_works(sandbox_app, sandbox_base):
    phone = sandbox.create_user(sandbox_app.appid, unionid="uUnion0001")
    code = sandbox.issue_login_code(sandbox_app.appid, phone.openid)

    response = login(sandbox_app, code)

    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"session", "openid", "expires_at"}
    assert body["openid"] == phone.openid
    expires_at = datetime.fromisoformat(body["expires_at"])
    assert body["expires_at"].endswith("Z")
    assert abs(expires_at - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)
    user = MiniUser.objects.get(app=sandbox_app, openid=phone.openid)
    assert user.unionid == "uUnion0001"

    me = APIClient().get(url(sandbox_app, "me"), HTTP_AUTHORIZATION=f"Session {body['session']}")
    assert me.status_code == 200, me.content
    assert me.json()["openid"] == phone.openid


@pytest.mark.django_db(transaction=True)
def test_logging_in_again_keeps_one_user(sandbox_app, sandbox_base):
    phone = sandbox.create_user(sandbox_app.appid)
    for _ in range(2):
        assert (
            login(sandbox_app, sandbox.issue_login_code(sandbox_app.appid, phone.openid)).status_code == 200
        )
    assert MiniUser.objects.filter(app=sandbox_app, openid=phone.openid).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_used_code_is_an_invalid_code(sandbox_app, sandbox_base):
    phone = sandbox.create_user(sandbox_app.appid)
    code = sandbox.issue_login_code(sandbox_app.appid, phone.openid)
    assert login(sandbox_app, code).status_code == 200

    response = login(sandbox_app, code)

    assert response.status_code == 400
    assert error(response)["code"] == "invalid_code"
    assert error(response)["field"] == "code"
    assert error(response)["errcode"] == 40163


@pytest.mark.django_db(transaction=True)
def test_an_unknown_code_is_an_invalid_code_and_creates_no_user(sandbox_app, sandbox_base):
    response = login(sandbox_app, "no-such-code")
    assert response.status_code == 400
    assert error(response)["code"] == "invalid_code"
    assert error(response)["errcode"] == 40029
    assert not MiniUser.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_wechat_refusing_otherwise_answers_502_with_the_errcode(sandbox_app, sandbox_base):
    phone = sandbox.create_user(sandbox_app.appid)
    code = sandbox.issue_login_code(sandbox_app.appid, phone.openid)
    sandbox.set_knobs(sandbox_app.appid, error_rate=1.0)  # WeChat busy: -1

    response = login(sandbox_app, code)

    assert response.status_code == 502
    assert error(response) == {
        "code": "wechat_error",
        "message": "WeChat answered with an error.",
        "errcode": -1,
        "errmsg": "system error",
    }


@pytest.mark.django_db
def test_wechat_unreachable_answers_502(sandbox_app, settings):
    settings.SANDBOX_API_BASE = "http://127.0.0.1:9"  # discard port: connection refused
    response = login(sandbox_app, "some-code")
    assert response.status_code == 502
    assert error(response) == {
        "code": "wechat_unreachable",
        "message": "Could not reach WeChat (connection error: NewConnectionError).",
    }
    assert not MiniUser.objects.exists()


@pytest.mark.django_db
def test_an_answer_without_an_openid_answers_502(sandbox_app, monkeypatch):
    monkeypatch.setattr(WeChatClient, "code2session", lambda self, code: {"session_key": "k"})
    response = login(sandbox_app, "some-code")
    assert response.status_code == 502
    assert error(response) == {
        "code": "wechat_unreachable",
        "message": "WeChat's answer carried no usable openid.",
    }
    assert not MiniUser.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "code"),
        ({"code": ""}, "code"),
        ({"code": 12345}, "code"),
        ({"code": None}, "code"),
        ({"code": "x" * 129}, "code"),
        ({"code": "abc", "openid": "oSomeoneElse"}, "openid"),
    ],
)
def test_login_refuses_a_bad_body_before_calling_wechat(sandbox_app, settings, body, field):
    settings.SANDBOX_API_BASE = "http://127.0.0.1:9"  # a WeChat call would answer 502
    response = APIClient().post(url(sandbox_app, "login"), body, format="json")
    assert response.status_code == 400
    assert error(response)["code"] == "validation_error"
    assert error(response)["field"] == field


@pytest.mark.django_db
def test_login_takes_json_only(sandbox_app):
    client = APIClient()
    form = client.post(url(sandbox_app, "login"), {"code": "abc"})  # multipart
    assert form.status_code == 415
    assert error(form)["code"] == "unsupported_media_type"
    broken = client.post(url(sandbox_app, "login"), "{not json", content_type="application/json")
    assert broken.status_code == 400
    assert error(broken)["code"] == "invalid_json"


# --- which app ----------------------------------------------------------------------------------------
ENDPOINTS = [
    ("post", "login"),
    ("post", "formids"),
    ("post", "subscriptions"),
    ("get", "me"),
    ("post", "settings"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "endpoint"), ENDPOINTS)
@pytest.mark.parametrize("appid", ["wx0000000000000000", "not-an-appid", "WX0123456789ABCDEF", "wx%20"])
def test_an_unknown_or_malformed_appid_is_not_found(method, endpoint, appid):
    response = getattr(APIClient(), method)(url(appid, endpoint), {}, format="json")
    assert response.status_code == 404
    assert error(response)["code"] == "not_found"


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "endpoint"), ENDPOINTS)
def test_a_deleted_app_is_not_found_even_with_a_session(sandbox_app, method, endpoint):
    client = sdk_client(sandbox_app)
    tenant_services.delete_app(sandbox_app)
    response = getattr(client, method)(url(sandbox_app, endpoint), {}, format="json")
    assert response.status_code == 404
    assert error(response)["code"] == "not_found"


# --- sessions -----------------------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Session",
        "Session ",
        "Session not-a-token",
        "Bearer phk_abcdefgh_0000000000000000000000000000000000000000",
        "Token abc",
    ],
)
def test_a_call_without_a_valid_session_is_not_authenticated(sandbox_app, authorization):
    headers = {} if authorization is None else {"HTTP_AUTHORIZATION": authorization}
    response = APIClient().get(url(sandbox_app, "me"), **headers)
    assert response.status_code == 401
    assert error(response)["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Session")


@pytest.mark.django_db
def test_a_forged_session_is_not_authenticated(sandbox_app):
    token = issue_session(sandbox_app, OPENID)[0]
    payload, stamp, signature = token.rsplit(":", 2)
    forged_signature = ("A" if signature[0] != "A" else "B") + signature[1:]
    other_user = issue_session(sandbox_app, "oSomeoneElse000000000000000")[0].split(":")[0]
    signed_elsewhere = signing.dumps({"app": sandbox_app.pk, "openid": OPENID}, salt="another.salt")
    for forged in (
        f"{payload}:{stamp}:{forged_signature}",
        f"{other_user}:{stamp}:{signature}",
        signed_elsewhere,
    ):
        response = APIClient().get(url(sandbox_app, "me"), HTTP_AUTHORIZATION=f"Session {forged}")
        assert response.status_code == 401, forged
        assert error(response)["code"] == "not_authenticated"


@pytest.mark.django_db
def test_a_session_expires_after_30_days(sandbox_app, monkeypatch):
    touch_user(sandbox_app, OPENID)
    fresh_enough = signed_days_ago(monkeypatch, sandbox_app, OPENID, days=29.9)
    expired = signed_days_ago(monkeypatch, sandbox_app, OPENID, days=30.01)
    client = APIClient()
    assert client.get(url(sandbox_app, "me"), HTTP_AUTHORIZATION=f"Session {fresh_enough}").status_code == 200
    response = client.get(url(sandbox_app, "me"), HTTP_AUTHORIZATION=f"Session {expired}")
    assert response.status_code == 401
    assert error(response)["code"] == "not_authenticated"
    assert "expired" in error(response)["message"]


@pytest.mark.django_db
def test_the_lifetime_follows_the_setting(sandbox_app, monkeypatch, settings):
    settings.SDK_SESSION_DAYS = 1
    token = signed_days_ago(monkeypatch, sandbox_app, OPENID, days=2)
    response = APIClient().get(url(sandbox_app, "me"), HTTP_AUTHORIZATION=f"Session {token}")
    assert response.status_code == 401


@pytest.mark.django_db
def test_a_session_of_another_app_is_not_authenticated_there(sandbox_app, other_tenant):
    """Tenant isolation: app A's user cannot read, upload to or change anything of app B."""
    other_app = tenant_services.register_app(
        other_tenant, appid=random_appid(), secret=random_secret(), name="Other", sandbox_app=True
    )
    touch_user(other_app, OPENID)
    client = sdk_client(sandbox_app)
    calls = [
        ("get", "me", {}),
        ("post", "formids", {"formids": ["formid0000000000000001"]}),
        ("post", "subscriptions", {"results": {"TID": "accept"}}),
        ("post", "settings", {"push_enabled": False}),
    ]
    for method, endpoint, body in calls:
        response = getattr(client, method)(url(other_app, endpoint), body, format="json")
        assert response.status_code == 401, endpoint
        assert error(response)["code"] == "not_authenticated"
    other_user = MiniUser.objects.get(app=other_app, openid=OPENID)
    assert other_user.push_enabled is True
    assert not other_user.credits.exists()
    assert not other_app.inbound_events.exists()


@pytest.mark.django_db
def test_a_session_of_a_deleted_and_re_registered_app_is_not_valid(sandbox_app, tenant):
    client = sdk_client(sandbox_app)
    tenant_services.delete_app(sandbox_app)
    again = tenant_services.register_app(
        tenant, appid=sandbox_app.appid, secret=random_secret(), name="Again", sandbox_app=True
    )
    response = client.get(url(again, "me"))
    assert response.status_code == 401


@pytest.mark.django_db
def test_sdk_answers_are_never_cached(sandbox_app):
    response = sdk_client(sandbox_app).get(url(sandbox_app, "me"))
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]


# --- the OpenAPI description --------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_schema_describes_every_sdk_operation_with_the_session_scheme(client):
    schema = client.get("/api/schema/?format=json").json()
    paths = schema["paths"]
    for _, endpoint in ENDPOINTS:
        assert f"/sdk/v1/{{appid}}/{endpoint}" in paths
    assert schema["components"]["securitySchemes"]["Session"]["in"] == "header"
    assert paths["/sdk/v1/{appid}/me"]["get"]["security"] == [{"Session": []}]
    assert paths["/sdk/v1/{appid}/subscriptions"]["post"]["security"] == [{"Session": []}]
    assert "Session" not in str(paths["/sdk/v1/{appid}/login"]["post"].get("security", []))

"""Registering a WeChat (non-sandbox) app verifies its secret; the access-token proxy. Real HTTP to the sandbox."""

from __future__ import annotations

import pytest
from django.utils.dateparse import parse_datetime

from pushhub.wechat.sandbox import services as sandbox
from tenants.models import MiniProgram
from tests.conftest import random_appid, random_secret

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_verifies_a_wechat_app_secret_before_registering(api, sandbox_base):
    appid, secret = random_appid(), random_secret()
    sandbox.register_app(appid, secret)  # "WeChat" knows this app
    response = api.post("/api/v1/apps", {"appid": appid, "secret": secret, "name": "Real"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["sandbox"] is False


def test_a_wrong_secret_is_refused_with_wechats_errcode_and_nothing_is_created(api, sandbox_base):
    appid = random_appid()
    sandbox.register_app(appid, random_secret())
    response = api.post(
        "/api/v1/apps", {"appid": appid, "secret": random_secret(), "name": "Real"}, format="json"
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "wechat_rejected_credentials"
    assert error["errcode"] == 40125
    assert not MiniProgram.objects.filter(appid=appid).exists()


def test_an_unknown_appid_is_refused_by_wechat(api, sandbox_base):
    response = api.post(
        "/api/v1/apps", {"appid": random_appid(), "secret": random_secret(), "name": "Real"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["errcode"] == 40013


def test_wechat_unreachable_answers_502_and_creates_nothing(api, settings, db):
    settings.WECHAT_API_BASE = "http://127.0.0.1:9"  # discard port: connection refused
    appid = random_appid()
    response = api.post(
        "/api/v1/apps", {"appid": appid, "secret": random_secret(), "name": "Real"}, format="json"
    )
    assert response.status_code == 502
    assert response.json()["error"] == {
        "code": "wechat_unreachable",
        "message": "Could not reach WeChat to verify the secret (connection error: NewConnectionError).",
    }
    assert not MiniProgram.objects.filter(appid=appid).exists()


def test_wechat_busy_answers_502_with_the_errcode(api, sandbox_base):
    appid, secret = random_appid(), random_secret()
    sandbox.register_app(appid, secret)
    sandbox.set_knobs(appid, error_rate=1.0)
    response = api.post("/api/v1/apps", {"appid": appid, "secret": secret, "name": "Real"}, format="json")
    assert response.status_code == 502
    assert response.json()["error"] == {
        "code": "wechat_error",
        "message": "WeChat answered with an error.",
        "errcode": -1,
        "errmsg": "system error",
    }


def test_switching_a_sandbox_app_to_wechat_verifies_the_secret(api, sandbox_app, sandbox_base):
    # The sandbox knows the app with its secret (it was registered there), so WeChat "accepts" it...
    assert (
        api.patch(f"/api/v1/apps/{sandbox_app.appid}", {"sandbox": False}, format="json").status_code == 200
    )
    # ...but a new secret WeChat does not know is refused and not stored.
    response = api.patch(f"/api/v1/apps/{sandbox_app.appid}", {"secret": random_secret()}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "wechat_rejected_credentials"
    old = sandbox_app.get_secret()
    sandbox_app.refresh_from_db()
    assert sandbox_app.get_secret() == old


def test_the_proxy_hands_out_the_token_pushhub_holds(api, sandbox_app, sandbox_base):
    first = api.get(f"/api/v1/apps/{sandbox_app.appid}/access-token")
    assert first.status_code == 200, first.content
    body = first.json()
    assert body["access_token"]
    assert body["expires_at"].endswith("Z") and parse_datetime(body["expires_at"]) is not None
    # Same token on the next call: served from the cache, not refreshed.
    assert (
        api.get(f"/api/v1/apps/{sandbox_app.appid}/access-token").json()["access_token"]
        == body["access_token"]
    )


def test_the_proxy_needs_a_write_key(read_api, sandbox_app):
    response = read_api.get(f"/api/v1/apps/{sandbox_app.appid}/access-token")
    assert response.status_code == 403


def test_the_proxy_reports_wechat_refusing(api, sandbox_app, sandbox_base):
    sandbox.register_app(sandbox_app.appid, random_secret())  # the secret we hold is no longer valid
    response = api.get(f"/api/v1/apps/{sandbox_app.appid}/access-token")
    assert response.status_code == 502
    assert response.json()["error"] == {
        "code": "wechat_error",
        "message": "WeChat refused to issue an access token.",
        "errcode": 40125,
        "errmsg": "invalid appsecret",
    }


def test_the_proxy_reports_wechat_unreachable(api, sandbox_app, settings):
    settings.SANDBOX_API_BASE = "http://127.0.0.1:9"  # discard port: connection refused
    response = api.get(f"/api/v1/apps/{sandbox_app.appid}/access-token")
    assert response.status_code == 502
    assert response.json()["error"] == {
        "code": "wechat_unreachable",
        "message": "Could not reach WeChat (connection error: NewConnectionError).",
    }


def test_curl_flow_register_a_sandbox_app_and_fetch_its_token(live_server, settings, tenant, write_key):
    """The README's promise: with the API key, register a sandbox app and fetch its token through the proxy."""
    import requests

    settings.SANDBOX_API_BASE = f"{live_server.url}/sandbox/wechat"
    headers = {"Authorization": f"Bearer {write_key}"}
    appid = random_appid()
    created = requests.post(
        f"{live_server.url}/api/v1/apps",
        json={"appid": appid, "secret": random_secret(), "name": "curl", "sandbox": True},
        headers=headers,
        timeout=10,
    )
    assert created.status_code == 201, created.text
    token = requests.get(f"{live_server.url}/api/v1/apps/{appid}/access-token", headers=headers, timeout=10)
    assert token.status_code == 200, token.text
    assert token.json()["access_token"]


def test_no_secret_or_token_reaches_the_logs(api, sandbox_base, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    appid, secret = random_appid(), random_secret()
    sandbox.register_app(appid, secret)
    assert (
        api.post(
            "/api/v1/apps", {"appid": appid, "secret": secret, "name": "Real"}, format="json"
        ).status_code
        == 201
    )
    token = api.get(f"/api/v1/apps/{appid}/access-token").json()["access_token"]
    bad = api.post("/api/v1/apps", {"appid": random_appid(), "secret": secret, "name": "x"}, format="json")
    assert bad.status_code == 400
    assert secret not in caplog.text and token not in caplog.text

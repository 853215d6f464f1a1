"""The machine paths (/sdk/, /t/, /wechat/: settings.MACHINE_PATH_PREFIXES) skip the browser's middleware:
no session read or written, no language negotiated (their answers are English whatever Accept-Language says),
while the security headers stay and the dashboard keeps its sessions and its two languages."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.sdk_helpers import error, sdk_client, url

pytestmark = pytest.mark.django_db


def signed_in_browser() -> Client:
    browser = Client()
    assert browser.login(username="owner@acme.test", password="correct horse battery")
    return browser


def test_an_sdk_answer_is_english_and_sessionless_whatever_the_browser_sends(tenant, sandbox_app):
    phone = sdk_client(sandbox_app)
    phone.cookies = signed_in_browser().cookies  # a dashboard session cookie riding along: ignored

    ok = phone.post(
        url(sandbox_app, "formids"), {"formids": ["formid-machine-1"]}, format="json",
        HTTP_ACCEPT_LANGUAGE="zh-hans",
    )  # fmt: skip
    assert ok.status_code == 200 and ok.json()["accepted"] == 1
    bad = phone.post(
        url(sandbox_app, "formids"), {"formids": "not a list"}, format="json", HTTP_ACCEPT_LANGUAGE="zh-hans"
    )
    assert bad.status_code == 400
    assert error(bad)["message"].isascii()  # DRF's own message, not its Chinese translation

    for answer in (ok, bad):
        assert "Content-Language" not in answer
        assert "Accept-Language" not in answer.get("Vary", "")
        assert "Cookie" not in answer.get("Vary", "")  # the session was never read
        assert not answer.cookies  # nor written
        assert answer["X-Frame-Options"] == "DENY"
        assert answer["X-Content-Type-Options"] == "nosniff"
        assert int(answer["Content-Length"]) == len(answer.content)
        # Never in a shared cache (sessions, per-user data): what add_never_cache_headers would write.
        assert answer["Cache-Control"] == "max-age=0, no-cache, no-store, must-revalidate, private"
        assert answer["Expires"].endswith(" GMT")


def test_a_trigger_url_answer_skips_them_too(tenant):
    answer = signed_in_browser().get("/t/nope", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert answer.status_code == 404 and error(answer)["code"] == "not_found"
    assert "Content-Language" not in answer and "Accept-Language" not in answer.get("Vary", "")


def test_the_dashboard_and_the_api_keep_their_language_and_session(tenant):
    browser = signed_in_browser()
    page = browser.get("/dashboard/", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert page.status_code == 200
    assert page["Content-Language"] == "zh-hans"  # LocaleMiddleware ran
    assert "Accept-Language" in page["Vary"] and "Cookie" in page["Vary"]  # and the session was read
    assert page.wsgi_request.user.email == "owner@acme.test"  # AuthenticationMiddleware ran

    api = Client().get("/api/v1/apps", HTTP_ACCEPT_LANGUAGE="zh-hans")  # not a machine path: unchanged
    assert api["Content-Language"] == "zh-hans"

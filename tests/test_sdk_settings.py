"""/sdk/v1/{appid}/settings, and the SDK's rate limits (per client IP, per app + openid)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from rest_framework.test import APIClient

from formids.models import MiniUser
from pushhub import ratelimit
from tests.sdk_helpers import OPENID, error, sdk_client, url

# The middle of a rate-limit window: a test's calls never straddle two windows.
FROZEN_NOW = 1_800_000_000 + 10.0

pytestmark = pytest.mark.django_db


@pytest.fixture
def app(sandbox_app):
    return sandbox_app


@pytest.fixture
def phone(app):
    return sdk_client(app)


@pytest.fixture
def frozen_clock(monkeypatch):
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: FROZEN_NOW))


# --- settings ----------------------------------------------------------------------------------------------
def test_a_user_turns_pushes_off_and_on(app, phone):
    off = phone.post(url(app, "settings"), {"push_enabled": False}, format="json")
    assert off.status_code == 200, off.content
    assert off.json() == {"push_enabled": False}
    assert MiniUser.objects.get(app=app, openid=OPENID).push_enabled is False
    assert phone.get(url(app, "me")).json()["push_enabled"] is False

    on = phone.post(url(app, "settings"), {"push_enabled": True}, format="json")
    assert on.json() == {"push_enabled": True}
    assert MiniUser.objects.get(app=app, openid=OPENID).push_enabled is True


def test_the_setting_is_per_user(app, phone):
    other = sdk_client(app, "oSdkUser00000000000000000002")
    phone.post(url(app, "settings"), {"push_enabled": False}, format="json")
    assert other.get(url(app, "me")).json()["push_enabled"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "push_enabled"),
        ({"push_enabled": "false"}, "push_enabled"),
        ({"push_enabled": 0}, "push_enabled"),
        ({"push_enabled": None}, "push_enabled"),
        ({"push_enabled": False, "force": True}, "force"),
    ],
)
def test_a_bad_setting_is_refused(app, phone, body, field):
    response = phone.post(url(app, "settings"), body, format="json")
    assert response.status_code == 400
    assert error(response)["code"] == "validation_error"
    assert error(response)["field"] == field
    assert MiniUser.objects.get(app=app, openid=OPENID).push_enabled is True


def test_settings_take_json_only(app, phone):
    response = phone.post(
        url(app, "settings"), "push_enabled=false", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 415
    assert error(response)["code"] == "unsupported_media_type"


def test_settings_need_a_session(app):
    response = APIClient().post(url(app, "settings"), {"push_enabled": False}, format="json")
    assert response.status_code == 401
    assert error(response)["code"] == "not_authenticated"


def test_settings_answer_only_post(app, phone):
    assert phone.get(url(app, "settings")).status_code == 405


# --- rate limits ---------------------------------------------------------------------------------------------
def test_calls_from_one_address_are_limited(app, phone, settings, frozen_clock):
    settings.SDK_RATE_PER_IP = 3
    login = APIClient()
    assert login.post(url(app, "login"), {}, format="json").status_code == 400  # counted all the same
    assert phone.get(url(app, "me")).status_code == 200
    assert phone.post(url(app, "settings"), {"push_enabled": False}, format="json").status_code == 200

    response = login.post(url(app, "login"), {"code": "abc"}, format="json")

    assert response.status_code == 429
    assert error(response)["code"] == "rate_limited"
    assert response["Retry-After"] == "50"
    assert phone.get(url(app, "me"), REMOTE_ADDR="10.0.0.2").status_code == 200  # another address


def test_calls_to_unknown_apps_count_against_the_address(settings, frozen_clock):
    settings.SDK_RATE_PER_IP = 2
    client = APIClient()
    statuses = [
        client.post("/sdk/v1/wx0000000000000000/login", {}, format="json").status_code for _ in range(3)
    ]
    assert statuses == [404, 404, 429]


def test_calls_of_one_user_are_limited_whatever_the_address(app, phone, settings, frozen_clock):
    settings.SDK_RATE_PER_OPENID = 2
    other = sdk_client(app, "oSdkUser00000000000000000002")
    assert phone.get(url(app, "me"), REMOTE_ADDR="10.0.0.1").status_code == 200
    assert phone.get(url(app, "me"), REMOTE_ADDR="10.0.0.2").status_code == 200

    response = phone.get(url(app, "me"), REMOTE_ADDR="10.0.0.3")

    assert response.status_code == 429
    assert error(response)["code"] == "rate_limited"
    assert int(response["Retry-After"]) == 50
    assert (response["RateLimit-Limit"], response["RateLimit-Remaining"], response["RateLimit-Reset"]) == (
        "2",
        "0",
        "50",
    )
    assert other.get(url(app, "me"), REMOTE_ADDR="10.0.0.3").status_code == 200


def test_sdk_answers_tell_the_limit_left(app, phone, settings, frozen_clock):
    settings.SDK_RATE_PER_OPENID = 10
    settings.SDK_RATE_PER_IP = 1000
    first, second = phone.get(url(app, "me")), phone.get(url(app, "me"))
    assert (first.status_code, second.status_code) == (200, 200)
    assert (first["RateLimit-Limit"], first["RateLimit-Remaining"]) == ("10", "9")
    assert second["RateLimit-Remaining"] == "8" and second["RateLimit-Reset"] == "50"


def test_pages_without_a_rate_limit_have_no_ratelimit_headers(client):
    assert not client.get("/api/schema/").has_header("RateLimit-Limit")


def test_limits_are_counted_in_the_shared_cache_per_window(app, phone, settings, monkeypatch):
    settings.SDK_RATE_PER_OPENID = 1
    now = [FROZEN_NOW]
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: now[0]))
    assert phone.get(url(app, "me")).status_code == 200
    assert phone.get(url(app, "me")).status_code == 429
    now[0] += 60  # the next window
    assert phone.get(url(app, "me")).status_code == 200

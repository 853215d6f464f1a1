"""Knobs: latency, error rate (-1), timeout (work done, answer late), formid_retired, validation."""

import time

import pytest

from pushhub.wechat.sandbox import services

from .helpers import APPID, subscribe_body

pytestmark = pytest.mark.django_db
SEND = "cgi-bin/message/subscribe/send"


@pytest.fixture
def ready(user, subscribe_template):
    """A user with one credit for the subscribe template."""
    services.accept_subscriptions(APPID, user.openid, {subscribe_template.template_id: "accept"})


def test_error_rate_one_answers_minus_one_and_changes_nothing(wechat, token, user, subscribe_template, ready):
    services.set_knobs(APPID, error_rate=1.0)
    answer = wechat.post(SEND, subscribe_body(user, subscribe_template), access_token=token)
    assert answer == {"errcode": -1, "errmsg": "system error"}
    assert services.inbox(APPID) == []
    assert services.user_credits(APPID, user.openid)["subscriptions"] == {subscribe_template.template_id: 1}


def test_token_errors_come_before_the_knobs(wechat, app):
    services.set_knobs(APPID, error_rate=1.0)
    assert wechat.post(SEND, {}, access_token="")["errcode"] == 41001


def test_busy_errors_hit_token_fetching_and_login_too(wechat, app):
    services.set_knobs(APPID, error_rate=1.0)
    answer = wechat.post(
        "cgi-bin/stable_token", {"grant_type": "client_credential", "appid": APPID, "secret": app.secret}
    )
    assert answer == {"errcode": -1, "errmsg": "system error"}
    query = {"appid": APPID, "secret": app.secret, "js_code": "x", "grant_type": "authorization_code"}
    assert wechat.get("sns/jscode2session", **query)["errcode"] == -1


def test_credential_errors_come_before_the_knobs(wechat, app):
    services.set_knobs(APPID, error_rate=1.0)
    answer = wechat.post(
        "cgi-bin/stable_token", {"grant_type": "client_credential", "appid": APPID, "secret": "0" * 32}
    )
    assert answer["errcode"] == 40125


def test_latency_delays_the_answer(wechat, token, app):
    services.set_knobs(APPID, latency_ms=50)
    started = time.monotonic()
    assert wechat.get("wxaapi/newtmpl/gettemplate", access_token=token)["errcode"] == 0
    assert time.monotonic() - started >= 0.05


def test_timeout_does_the_work_then_answers_late(wechat, token, user, subscribe_template, ready):
    services.set_knobs(APPID, timeout_rate=1.0, timeout_seconds=0.05)
    started = time.monotonic()
    answer = wechat.post(SEND, subscribe_body(user, subscribe_template), access_token=token)
    assert time.monotonic() - started >= 0.05
    assert answer["errcode"] == 0
    assert len(services.inbox(APPID, user.openid)) == 1


def test_error_rate_zero_never_fails(wechat, token, app):
    services.set_knobs(APPID, error_rate=0.0, timeout_rate=0.0)
    assert {wechat.get("wxaapi/newtmpl/gettemplate", access_token=token)["errcode"] for _ in range(20)} == {0}


def test_stats_count_injected_errors(wechat, token, user, subscribe_template, ready):
    services.set_knobs(APPID, error_rate=1.0)
    wechat.post(SEND, subscribe_body(user, subscribe_template), access_token=token)
    services.set_knobs(APPID, error_rate=0.0)
    wechat.post(SEND, subscribe_body(user, subscribe_template), access_token=token)
    stats = services.stats(APPID)
    assert stats["sends_by_errcode"] == {"-1": 1, "0": 1}
    assert stats["sends_ok"] == 1 and stats["sends_failed"] == 1
    assert stats["inbox_messages"] == 1


@pytest.mark.parametrize(
    ("knobs", "field"),
    [
        ({"error_rate": 1.5}, "error_rate"),
        ({"timeout_rate": -0.1}, "timeout_rate"),
        ({"latency_ms": 60_001}, "latency_ms"),
        ({"latency_ms": 1.5}, "latency_ms"),
        ({"token_ttl": 0}, "token_ttl"),
        ({"formid_retired": "yes"}, "formid_retired"),
        ({"error_rate": True}, "error_rate"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_knobs_are_refused_and_nothing_changes(wechat, app, knobs, field):
    response = wechat.control("PATCH", f"apps/{APPID}/knobs", {"latency_ms": 5, **knobs})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert response.json()["error"]["field"] == field
    assert services.get_app(APPID).latency_ms == 0


def test_knobs_are_patched_and_returned(wechat, app):
    response = wechat.control("PATCH", f"apps/{APPID}/knobs", {"error_rate": 0.25, "formid_retired": True})
    assert response.status_code == 200
    assert response.json() == {
        "appid": APPID,
        "latency_ms": 0,
        "error_rate": 0.25,
        "timeout_rate": 0.0,
        "timeout_seconds": 15.0,
        "token_ttl": 7200,
        "formid_retired": True,
        "enforce_force_refresh_limits": True,
        "push_sent_events": False,
    }

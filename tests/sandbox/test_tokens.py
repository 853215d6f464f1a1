"""access_token endpoints: cgi-bin/token, cgi-bin/stable_token, and how business calls check tokens."""

from datetime import timedelta

import pytest
from django.utils import timezone

from pushhub.wechat.sandbox import errors, services
from pushhub.wechat.sandbox.identifiers import BEIJING
from pushhub.wechat.sandbox.models import SandboxToken

from .helpers import APPID, SECRET

pytestmark = pytest.mark.django_db


def plain_token(wechat, **overrides):
    params = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET, **overrides}
    return wechat.get("cgi-bin/token", **params)


def stable_token(wechat, **overrides):
    body = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET, **overrides}
    return wechat.post("cgi-bin/stable_token", body)


def token_status(wechat, token: str) -> int:
    """errcode of a harmless token-taking call (gettemplate) with this token."""
    return wechat.get("wxaapi/newtmpl/gettemplate", access_token=token)["errcode"]


def test_cgi_bin_token_issues_a_realistic_token(wechat, app):
    answer = plain_token(wechat)
    assert answer["expires_in"] == 7200
    assert len(answer["access_token"]) > 100
    assert token_status(wechat, answer["access_token"]) == 0


@pytest.mark.parametrize(
    ("overrides", "errcode"),
    [
        ({"appid": ""}, 41002),
        ({"secret": ""}, 41004),
        ({"appid": "wx00000000000000ff"}, 40013),
        ({"secret": "f" * 32}, 40125),
        ({"grant_type": "password"}, 40002),
    ],
)
def test_cgi_bin_token_refuses_bad_credentials(wechat, app, overrides, errcode):
    answer = plain_token(wechat, **overrides)
    assert answer["errcode"] == errcode
    assert answer["errmsg"] == errors.ERRMSG[errcode]


def test_a_new_plain_token_leaves_the_previous_valid_for_five_minutes(wechat, app):
    first = plain_token(wechat)["access_token"]
    second = plain_token(wechat)["access_token"]
    assert first != second
    assert token_status(wechat, first) == 0
    assert token_status(wechat, second) == 0
    grace_end = SandboxToken.objects.get(token=first).invalidated_at
    assert timedelta(minutes=4) < grace_end - timezone.now() <= timedelta(minutes=5)

    SandboxToken.objects.filter(token=first).update(invalidated_at=timezone.now() - timedelta(seconds=1))
    assert token_status(wechat, first) == 40001
    assert token_status(wechat, second) == 0


def test_stable_token_returns_the_same_token_while_valid(wechat, app):
    first = stable_token(wechat)
    second = stable_token(wechat)
    assert second["access_token"] == first["access_token"]
    assert 7100 < second["expires_in"] <= 7200


def test_stable_token_is_renewed_in_its_last_five_minutes_and_the_old_one_still_works(wechat, app):
    old = stable_token(wechat)["access_token"]
    SandboxToken.objects.filter(token=old).update(expires_at=timezone.now() + timedelta(seconds=200))
    new = stable_token(wechat)
    assert new["access_token"] != old
    assert new["expires_in"] == 7200
    assert token_status(wechat, old) == 0
    assert stable_token(wechat)["access_token"] == new["access_token"]


def test_force_refresh_invalidates_the_previous_stable_token_at_once(wechat, app):
    old = stable_token(wechat)["access_token"]
    new = stable_token(wechat, force_refresh=True)["access_token"]
    assert new != old
    assert token_status(wechat, old) == 40001
    assert token_status(wechat, new) == 0


def test_force_refresh_is_limited_to_one_per_30_seconds(wechat, app):
    assert "access_token" in stable_token(wechat, force_refresh=True)
    assert stable_token(wechat, force_refresh=True)["errcode"] == 45011


def test_force_refresh_is_limited_to_20_per_day(wechat, app):
    day_start = timezone.now().astimezone(BEIJING).replace(hour=0, minute=0, second=0, microsecond=0)
    if timezone.now() - day_start < timedelta(minutes=1):
        pytest.skip("too close to midnight in Beijing")
    for _ in range(20):
        stable_token(wechat, force_refresh=True)
        SandboxToken.objects.filter(forced=True).update(issued_at=day_start)
    assert stable_token(wechat, force_refresh=True)["errcode"] == 45009


def test_force_refresh_limits_can_be_switched_off(wechat, app):
    services.set_knobs(APPID, enforce_force_refresh_limits=False)
    tokens = {stable_token(wechat, force_refresh=True)["access_token"] for _ in range(25)}
    assert len(tokens) == 25


def test_stable_and_plain_tokens_never_invalidate_each_other(wechat, app):
    plain = plain_token(wechat)["access_token"]
    stable = stable_token(wechat, force_refresh=True)["access_token"]
    assert token_status(wechat, plain) == 0
    plain_token(wechat)
    SandboxToken.objects.filter(token=plain).update(invalidated_at=timezone.now())
    assert token_status(wechat, stable) == 0


def test_stable_token_requires_post(wechat, app):
    assert wechat.get("cgi-bin/stable_token") == {"errcode": 43002, "errmsg": "require POST method"}


def test_stable_token_refuses_a_bad_secret_and_bad_json(wechat, client, app):
    assert stable_token(wechat, secret="nope")["errcode"] == 40125
    answer = client.post("/sandbox/wechat/cgi-bin/stable_token", "{not json", content_type="application/json")
    assert answer.json()["errcode"] == 47001


def test_token_checks_come_in_wechat_order(wechat, app):
    assert token_status(wechat, "") == 41001
    assert wechat.get("wxaapi/newtmpl/gettemplate")["errmsg"] == "access_token missing"
    assert token_status(wechat, "short") == 40014
    assert token_status(wechat, "has spaces in it, not a token at all") == 40014
    unknown = wechat.get("wxaapi/newtmpl/gettemplate", access_token="87_" + "A" * 120)
    assert unknown == {
        "errcode": 40001,
        "errmsg": "invalid credential, access_token is invalid or not latest",
    }


def test_an_expired_token_answers_42001(wechat, app):
    services.set_knobs(APPID, token_ttl=1)
    token = stable_token(wechat)
    assert token["expires_in"] == 1
    SandboxToken.objects.filter(token=token["access_token"]).update(expires_at=timezone.now())
    answer = wechat.get("wxaapi/newtmpl/gettemplate", access_token=token["access_token"])
    assert answer == {"errcode": 42001, "errmsg": "access_token expired"}


def test_reset_tokens_invalidates_every_token_of_the_app(wechat, app):
    stable = stable_token(wechat)["access_token"]
    plain = plain_token(wechat)["access_token"]
    assert services.reset_tokens(APPID) == 2
    assert token_status(wechat, stable) == 40001
    assert token_status(wechat, plain) == 40001
    assert stable_token(wechat)["access_token"] != stable


def test_tokens_of_another_app_are_theirs_alone(wechat, app):
    services.register_app("wx00000000000000aa", SECRET)
    theirs = stable_token(wechat, appid="wx00000000000000aa")["access_token"]
    assert theirs != stable_token(wechat)["access_token"]
    services.reset_tokens(APPID)
    assert token_status(wechat, theirs) == 0

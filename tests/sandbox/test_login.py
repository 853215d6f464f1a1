"""sns/jscode2session: login codes from the control API become openids once, within 5 minutes."""

from datetime import timedelta

import pytest
from django.utils import timezone

from pushhub.wechat.sandbox import services
from pushhub.wechat.sandbox.models import SandboxLoginCode

from .helpers import APPID, SECRET

pytestmark = pytest.mark.django_db


def login(wechat, code, **overrides):
    params = {"appid": APPID, "secret": SECRET, "js_code": code, "grant_type": "authorization_code"}
    return wechat.get("sns/jscode2session", **{**params, **overrides})


def test_a_code_gives_the_openid_unionid_and_a_session_key(wechat, user):
    answer = login(wechat, services.issue_login_code(APPID, user.openid))
    assert answer["openid"] == user.openid
    assert answer["unionid"] == user.unionid
    assert len(answer["session_key"]) == 24
    assert "errcode" not in answer


def test_no_unionid_when_the_user_has_none(wechat, other_user):
    answer = login(wechat, services.issue_login_code(APPID, other_user.openid))
    assert answer["openid"] == other_user.openid
    assert "unionid" not in answer


def test_an_unknown_code_answers_40029(wechat, user):
    assert login(wechat, "0a1b2c3d4e5f") == {"errcode": 40029, "errmsg": "invalid code"}


def test_a_code_works_once(wechat, user):
    code = services.issue_login_code(APPID, user.openid)
    assert login(wechat, code)["openid"] == user.openid
    assert login(wechat, code) == {"errcode": 40163, "errmsg": "code been used"}


def test_a_code_expires_after_five_minutes(wechat, user):
    code = services.issue_login_code(APPID, user.openid)
    row = SandboxLoginCode.objects.get(code=code)
    assert timedelta(minutes=4) < row.expires_at - timezone.now() <= timedelta(minutes=5)
    SandboxLoginCode.objects.filter(code=code).update(expires_at=timezone.now())
    assert login(wechat, code)["errcode"] == 40029


def test_a_code_of_another_app_is_invalid_here(wechat, user):
    services.register_app("wx00000000000000aa", SECRET)
    theirs = services.issue_login_code(
        "wx00000000000000aa", services.create_user("wx00000000000000aa").openid
    )
    assert login(wechat, theirs)["errcode"] == 40029


@pytest.mark.parametrize(
    ("overrides", "errcode"),
    [
        ({"secret": "bad"}, 40125),
        ({"appid": "wx00000000000000ff"}, 40013),
        ({"appid": ""}, 41002),
        ({"js_code": ""}, 41008),
        ({"grant_type": "client_credential"}, 40002),
    ],
)
def test_bad_credentials_are_refused_and_the_code_is_not_spent(wechat, user, overrides, errcode):
    code = services.issue_login_code(APPID, user.openid)
    assert login(wechat, code, **overrides)["errcode"] == errcode
    assert login(wechat, code)["openid"] == user.openid

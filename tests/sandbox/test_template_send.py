"""cgi-bin/message/wxopen/template/send: legacy template messages spending formIds and prepay_ids."""

import pytest

from pushhub.wechat.sandbox import services
from pushhub.wechat.sandbox.models import SandboxFormId

from .helpers import APPID, formid_body

pytestmark = pytest.mark.django_db
SEND = "cgi-bin/message/wxopen/template/send"
SEVEN_DAYS = 7 * 86_400


@pytest.fixture
def send(wechat, token, formid_template, user):
    """Send with this user's formId; keyword overrides change the body."""

    def send(form_id: str, **overrides):
        return wechat.post(SEND, formid_body(user, formid_template, form_id, **overrides), access_token=token)

    return send


def test_a_formid_sends_once_and_the_message_lands_in_the_inbox(send, user, formid_template):
    formid = services.issue_formids(APPID, user.openid)[0]
    assert send(formid, emphasis_keyword="keyword1.DATA") == {"errcode": 0, "errmsg": "ok"}
    [message] = services.inbox(APPID, user.openid)
    assert message.kind == "formid"
    assert message.template_id == formid_template.template_id
    assert message.title == "购买成功通知"
    assert message.data["keyword1"] == {"value": "TIT造舰厂"}
    assert message.page == "pages/index?foo=bar"
    assert message.form_id == formid
    assert message.emphasis_keyword == "keyword1.DATA"


def test_a_formid_used_twice_answers_41029(send, user):
    formid = services.issue_formids(APPID, user.openid)[0]
    assert send(formid)["errcode"] == 0
    assert send(formid) == {"errcode": 41029, "errmsg": "form id used count reach limit"}
    assert len(services.inbox(APPID, user.openid)) == 1


def test_a_formid_older_than_seven_days_answers_41028(send, user):
    expired = services.issue_formids(APPID, user.openid, age_seconds=SEVEN_DAYS + 1)[0]
    assert send(expired) == {"errcode": 41028, "errmsg": "invalid form id"}
    almost = services.issue_formids(APPID, user.openid, age_seconds=SEVEN_DAYS - 60)[0]
    assert send(almost)["errcode"] == 0


def test_another_users_formid_answers_41028(send, other_user):
    theirs = services.issue_formids(APPID, other_user.openid)[0]
    assert send(theirs)["errcode"] == 41028
    assert SandboxFormId.objects.get(value=theirs).uses_left == 1


@pytest.mark.parametrize("form_id", ["the formId is a mock one", "f" * 32, ""])
def test_an_unknown_or_mock_formid_answers_41028(send, user, form_id):
    assert send(form_id)["errcode"] == 41028


def test_a_prepay_id_sends_three_times(send, user):
    [prepay_id] = services.issue_formids(APPID, user.openid, kind="prepay")
    assert [send(prepay_id)["errcode"] for _ in range(4)] == [0, 0, 0, 41029]


def test_an_unknown_template_answers_40037(send, user):
    formid = services.issue_formids(APPID, user.openid)[0]
    assert send(formid, template_id="nope")["errcode"] == 40037


def test_a_subscribe_template_is_not_a_formid_template(send, user, subscribe_template):
    formid = services.issue_formids(APPID, user.openid)[0]
    assert send(formid, template_id=subscribe_template.template_id)["errcode"] == 40037


def test_an_unknown_user_answers_40003(send, user):
    formid = services.issue_formids(APPID, user.openid)[0]
    assert send(formid, touser="oSomebodyElse000000000000000")["errcode"] == 40003


@pytest.mark.parametrize("page", ["/pages/index", "pages/index ?a=1", "pages/\tindex"])
def test_a_bad_page_answers_41030_without_spending_the_formid(send, user, page):
    formid = services.issue_formids(APPID, user.openid)[0]
    assert send(formid, page=page) == {"errcode": 41030, "errmsg": "invalid page"}
    assert send(formid)["errcode"] == 0


def test_no_page_is_fine(send, user):
    formid = services.issue_formids(APPID, user.openid)[0]
    assert send(formid, page="")["errcode"] == 0


def test_retired_formid_api_answers_45103(send, user):
    services.set_knobs(APPID, formid_retired=True)
    formid = services.issue_formids(APPID, user.openid)[0]
    assert send(formid) == {"errcode": 45103, "errmsg": "This API has been unsupported"}
    assert SandboxFormId.objects.get(value=formid).uses_left == 1


def test_a_body_that_is_not_json_answers_47001(client, token, user):
    url = f"/sandbox/wechat/{SEND}?access_token={token}"
    assert client.post(url, "[1, 2]", content_type="application/json").json()["errcode"] == 47001
    assert client.post(url, b"\xff\xfe", content_type="application/json").json()["errcode"] == 47001


def test_send_requires_post(wechat, token):
    assert wechat.get(SEND, access_token=token)["errcode"] == 43002

"""cgi-bin/message/subscribe/send: one accepted subscription = one send, values checked like WeChat."""

import pytest

from pushhub.wechat.sandbox import services
from pushhub.wechat.sandbox.models import MSGID_BASE, SandboxSubscription

from .helpers import APPID, subscribe_body

pytestmark = pytest.mark.django_db
SEND = "cgi-bin/message/subscribe/send"


@pytest.fixture
def send(wechat, token, subscribe_template, user):
    def send(**overrides):
        return wechat.post(SEND, subscribe_body(user, subscribe_template, **overrides), access_token=token)

    return send


@pytest.fixture
def accept(user, subscribe_template):
    def accept(times: int = 1):
        for _ in range(times):
            services.accept_subscriptions(APPID, user.openid, {subscribe_template.template_id: "accept"})

    return accept


def test_without_a_credit_it_answers_43101(send):
    assert send() == {"errcode": 43101, "errmsg": "user refuse to accept the msg"}


def test_one_accept_gives_exactly_one_send(send, accept, user):
    accept()
    first = send()
    assert first["errcode"] == 0 and first["errmsg"] == "ok"
    assert first["msgid"] > MSGID_BASE
    assert send()["errcode"] == 43101
    assert len(services.inbox(APPID, user.openid)) == 1


def test_credits_add_up_and_msgids_increase(send, accept):
    accept(3)
    msgids = [send()["msgid"] for _ in range(3)]
    assert msgids == sorted(msgids) and len(set(msgids)) == 3
    assert send()["errcode"] == 43101


def test_the_message_lands_in_the_inbox_as_sent(send, accept, user, subscribe_template):
    accept()
    answer = send(page="pages/order?id=1", miniprogram_state="trial", lang="en_US")
    [message] = services.inbox(APPID, user.openid)
    assert message.msgid == answer["msgid"]
    assert message.kind == "subscribe"
    assert message.title == "订单发货通知"
    assert message.data["thing2"] == {"value": "机械键盘"}
    assert (message.page, message.miniprogram_state, message.lang) == ("pages/order?id=1", "trial", "en_US")


def test_defaults_are_formal_and_zh_cn(send, accept, user):
    accept()
    send()
    [message] = services.inbox(APPID, user.openid)
    assert (message.miniprogram_state, message.lang) == ("formal", "zh_CN")


def test_a_thing_over_20_characters_answers_47003_and_keeps_the_credit(send, accept):
    accept()
    answer = send(data={"thing2": {"value": "这是一个超过二十个字符的商品名称用来测试长度限制"}})
    assert answer == {"errcode": 47003, "errmsg": "argument invalid! data.thing2.value invalid"}
    assert send()["errcode"] == 0


def test_a_missing_key_answers_47003(send, accept):
    accept()
    answer = send(data={"amount3": None})  # None drops the key from the body
    assert answer == {"errcode": 47003, "errmsg": "argument invalid! data.amount3.value invalid"}
    assert send(data={"amount3": {"value": ""}})["errcode"] == 47003
    assert send(data={"amount3": "¥1"})["errcode"] == 47003


def test_numbers_are_accepted_as_values(send, accept):
    accept()
    assert send(data={"amount3": {"value": 399}})["errcode"] == 0


def test_data_that_is_not_an_object_answers_47001(send, accept):
    accept()
    assert send(data=["SN1", "键盘", "¥1"])["errcode"] == 47001
    assert send(data="text")["errcode"] == 47001


def test_an_unknown_template_answers_40037(send, accept, formid_template):
    accept()
    assert send(template_id="nope") == {"errcode": 40037, "errmsg": "invalid template_id"}
    assert send(template_id=formid_template.template_id)["errcode"] == 40037


def test_an_unknown_user_answers_40003(send):
    assert send(touser="oNobody00000000000000000000")["errcode"] == 40003


def test_a_bad_page_answers_41030(send, accept):
    accept()
    assert send(page="/pages/index")["errcode"] == 41030
    assert send()["errcode"] == 0


@pytest.mark.parametrize(("field", "value"), [("miniprogram_state", "beta"), ("lang", "fr_FR")])
def test_bad_state_or_lang_answers_47003(send, accept, field, value):
    accept()
    assert send(**{field: value}) == {"errcode": 47003, "errmsg": f"argument invalid! {field} invalid"}


def test_reject_ban_and_unknown_templates_give_no_credit(user, subscribe_template):
    answer = services.accept_subscriptions(
        APPID, user.openid, {subscribe_template.template_id: "reject", "unknownTemplate": "accept"}
    )
    assert answer == {
        "errMsg": "requestSubscribeMessage:ok",
        subscribe_template.template_id: "reject",
        "unknownTemplate": "filter",
    }
    assert not SandboxSubscription.objects.exists()


def test_credits_are_per_user(send, accept, other_user):
    accept()
    assert send(touser=other_user.openid)["errcode"] == 43101
    assert send()["errcode"] == 0

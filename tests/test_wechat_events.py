"""/wechat/{appid}/events: WeChat's event push, signed and encrypted here independently (hashlib + AES)."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import threading
import time
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from django.db import connection

from formids import events
from formids.hooks import subscribe_message_sent
from formids.models import Credit, InboundEvent, MiniUser
from formids.services import add_subscribe_credits, touch_user
from tenants import services as tenant_services

from .conftest import random_appid, random_secret

pytestmark = pytest.mark.django_db

OPENID = "oAbCdEfGhIjKlMnOpQrStUvWxYz0"
T1 = "hD-ixGOhYmUfjOnI8MCzQMPshzGVeux_2vBw12_2j8A"
T2 = "9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI"
BIG_MSGID = 2_794_188_253_209_100_289  # above 2**53, like WeChat's


# --- WeChat's side, written out independently -------------------------------------------------------
def wx_signature(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def wx_encrypt(message: str, appid: str, encoding_aes_key: str) -> str:
    key = base64.b64decode(encoding_aes_key + "=")
    body = message.encode()
    plain = b"0123456789abcdef" + struct.pack(">I", len(body)) + body + appid.encode()
    pad = 32 - len(plain) % 32
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(plain + bytes([pad]) * pad) + encryptor.finalize()).decode()


def now() -> int:
    return int(time.time())


def popup(*items: tuple[str, str], as_list: bool | None = None, **header) -> dict:
    """A subscribe_msg_popup_event in WeChat's JSON form: List is an object for one item, else an array."""
    entries = [
        {"TemplateId": tid, "SubscribeStatusString": status, "PopupScene": "0"} for tid, status in items
    ]
    many = as_list if as_list is not None else len(entries) > 1
    return {
        "ToUserName": "gh_123456789abc",
        "FromUserName": OPENID,
        "CreateTime": now(),
        "MsgType": "event",
        "Event": "subscribe_msg_popup_event",
        "List": entries if many else entries[0],
        **header,
    }


def popup_xml(*items: tuple[str, str], create_time: int | None = None) -> str:
    entries = "".join(
        f"<List><TemplateId><![CDATA[{tid}]]></TemplateId>"
        f"<SubscribeStatusString><![CDATA[{status}]]></SubscribeStatusString>"
        "<PopupScene>0</PopupScene></List>"
        for tid, status in items
    )
    return (
        "<xml><ToUserName><![CDATA[gh_123456789abc]]></ToUserName>"
        f"<FromUserName><![CDATA[{OPENID}]]></FromUserName><CreateTime>{create_time or now()}</CreateTime>"
        "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe_msg_popup_event]]></Event>\n"
        f"<SubscribeMsgPopupEvent>\n{entries}\n</SubscribeMsgPopupEvent></xml>"
    )


class WeChatPush:
    """POSTs to the events URL the way WeChat does, through Django's test client."""

    def __init__(self, client, app):
        self.client = client
        self.app = app

    def url(self, appid: str | None = None, **query) -> str:
        return f"/wechat/{appid or self.app.appid}/events?{urlencode(query)}"

    def plain(
        self, message, *, token=None, timestamp=None, nonce="1234567890", content_type=None, appid=None
    ):
        timestamp = str(now() if timestamp is None else timestamp)
        signature = wx_signature(token or self.app.events_token, timestamp, nonce)
        body = message if isinstance(message, str | bytes) else json.dumps(message, ensure_ascii=False)
        if content_type is None:
            content_type = (
                "text/xml" if isinstance(message, str) and message.startswith("<") else "application/json"
            )
        url = self.url(appid, signature=signature, timestamp=timestamp, nonce=nonce)
        return self.client.post(url, body, content_type=content_type)

    def safe(
        self,
        message,
        *,
        fmt: str = "json",
        token: str | None = None,
        aes_key: str | None = None,
        inner_appid: str | None = None,
        timestamp: int | None = None,
        nonce: str = "987654321",
        plaintext: dict | None = None,
    ):
        inner = message if isinstance(message, str) else json.dumps(message, ensure_ascii=False)
        encrypted = wx_encrypt(inner, inner_appid or self.app.appid, aes_key or self.app.get_events_aes_key())
        token = token or self.app.events_token
        timestamp = str(now() if timestamp is None else timestamp)
        query = {
            "signature": wx_signature(token, timestamp, nonce),
            "timestamp": timestamp,
            "nonce": nonce,
            "encrypt_type": "aes",
            "msg_signature": wx_signature(token, timestamp, nonce, encrypted),
        }
        if fmt == "xml":
            body = (
                "<xml><ToUserName><![CDATA[gh_123456789abc]]></ToUserName>"
                f"<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
            )
            return self.client.post(self.url(**query), body, content_type="text/xml")
        envelope = {"ToUserName": "gh_123456789abc", "Encrypt": encrypted}
        if plaintext is not None:  # compatible mode: the plaintext fields ride along
            envelope = {**plaintext, **envelope}
        return self.client.post(self.url(**query), json.dumps(envelope), content_type="application/json")


def subscribe_credits(app, template_id: str | None = None, state: str = Credit.State.AVAILABLE) -> int:
    credits = Credit.objects.filter(app=app, kind=Credit.Kind.SUBSCRIBE, state=state)
    return credits.filter(template_id=template_id).count() if template_id else credits.count()


def assert_success(response) -> None:
    assert response.status_code == 200, response.content
    assert response.content == b"success"
    assert response["Content-Type"].startswith("text/plain")


def assert_refused(response, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code
    assert InboundEvent.objects.count() == 0


@pytest.fixture
def app(sandbox_app):
    return tenant_services.update_app(sandbox_app, credit_source="events")


@pytest.fixture
def sdk_app(sandbox_app):
    assert sandbox_app.credit_source == "sdk"
    return sandbox_app


@pytest.fixture
def wechat(client, app):
    return WeChatPush(client, app)


@pytest.fixture
def sent_signals():
    received = []

    def receiver(sender, **kwargs):
        received.append(kwargs)

    subscribe_message_sent.connect(receiver)
    yield received
    subscribe_message_sent.disconnect(receiver)


# --- the URL check (GET) ---------------------------------------------------------------------------
def test_the_url_check_echoes_echostr(client, app):
    timestamp, nonce = str(now()), "1514711492"
    query = {
        "signature": wx_signature(app.events_token, timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
        "echostr": "4375120948345356249",
    }
    response = client.get(f"/wechat/{app.appid}/events?{urlencode(query)}")
    assert response.status_code == 200
    assert response.content == b"4375120948345356249"
    assert response["Content-Type"].startswith("text/plain")
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.parametrize("signature", ["0" * 40, "", None])
def test_the_url_check_with_a_bad_signature_is_403(client, app, signature):
    query = {"timestamp": str(now()), "nonce": "1", "echostr": "hello"}
    if signature is not None:
        query["signature"] = signature
    response = client.get(f"/wechat/{app.appid}/events?{urlencode(query)}")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "invalid_signature"
    assert b"hello" not in response.content


def test_an_unknown_appid_is_404(client, db):
    response = client.get(f"/wechat/{random_appid()}/events?signature=x&timestamp=1&nonce=1&echostr=e")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert (
        client.post(f"/wechat/{random_appid()}/events", "{}", content_type="application/json").status_code
        == 404
    )


def test_a_deleted_app_is_404(wechat, app):
    tenant_services.delete_app(app)
    response = wechat.plain(popup((T1, "accept")))
    assert response.status_code == 404
    assert InboundEvent.objects.count() == 0


def test_other_methods_are_405(client, app):
    response = client.put(f"/wechat/{app.appid}/events")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


# --- plaintext and safe mode, JSON and XML ------------------------------------------------------------
def test_a_plaintext_json_popup_credits_each_accept(wechat, app):
    assert_success(wechat.plain(popup((T1, "accept"), (T2, "reject"))))
    assert subscribe_credits(app, T1) == 1
    assert subscribe_credits(app, T2) == 0
    credit = Credit.objects.get(app=app)
    assert (credit.user.openid, credit.source) == (OPENID, Credit.Source.EVENTS)
    event = InboundEvent.objects.get(app=app)
    assert (event.source, event.event, event.openid) == ("wechat", "subscribe_msg_popup_event", OPENID)
    assert event.outcome["credited"] == {T1: 1}
    assert event.payload["items"] == [
        {"template_id": T1, "status": "accept", "popup_scene": 0},
        {"template_id": T2, "status": "reject", "popup_scene": 0},
    ]


def test_a_plaintext_xml_popup_credits_each_accept(wechat, app):
    assert_success(wechat.plain(popup_xml((T1, "accept"), (T2, "accept"))))
    assert (subscribe_credits(app, T1), subscribe_credits(app, T2)) == (1, 1)
    assert InboundEvent.objects.get().outcome["credited"] == {T1: 1, T2: 1}


def test_xml_is_recognised_whatever_the_content_type(wechat, app):
    assert_success(wechat.plain(popup_xml((T1, "accept")), content_type="application/json"))
    assert subscribe_credits(app, T1) == 1


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_a_safe_mode_popup_credits_each_accept(wechat, app, fmt):
    message = (
        popup_xml((T1, "accept"), (T2, "accept")) if fmt == "xml" else popup((T1, "accept"), (T2, "accept"))
    )
    assert_success(wechat.safe(message, fmt=fmt))
    assert (subscribe_credits(app, T1), subscribe_credits(app, T2)) == (1, 1)
    assert "Encrypt" not in json.dumps(InboundEvent.objects.get().payload)


def test_compatible_mode_trusts_only_the_encrypted_copy(wechat, app):
    # compatible mode sends the plaintext fields next to Encrypt; only what was encrypted counts
    assert_success(wechat.safe(popup((T1, "accept")), plaintext=popup((T2, "accept"))))
    assert (subscribe_credits(app, T1), subscribe_credits(app, T2)) == (1, 0)


@pytest.mark.parametrize("as_list", [False, True])
def test_json_list_may_be_an_object_or_an_array(wechat, app, as_list):
    assert_success(wechat.plain(popup((T1, "accept"), as_list=as_list)))
    assert subscribe_credits(app, T1) == 1


def test_json_items_inside_the_event_named_element_are_understood(wechat, app):
    message = popup((T1, "accept"))
    message["SubscribeMsgPopupEvent"] = [message.pop("List")]
    assert_success(wechat.plain(message))
    assert subscribe_credits(app, T1) == 1


def test_numbers_may_arrive_as_strings(wechat, app, sent_signals):
    assert_success(wechat.plain(popup((T1, "accept"), CreateTime=str(now()))))
    sent = sent_event(MsgID=str(BIG_MSGID), ErrorCode="0", CreateTime=str(now()))
    assert_success(wechat.plain(sent))
    assert subscribe_credits(app, T1) == 1
    assert sent_signals[0]["msgid"] == BIG_MSGID and sent_signals[0]["errcode"] == 0
    assert isinstance(InboundEvent.objects.get(event="subscribe_msg_popup_event").payload["create_time"], int)


# --- credit_source --------------------------------------------------------------------------------
def test_with_credit_source_sdk_a_popup_is_stored_but_credits_nothing(client, sdk_app):
    assert_success(WeChatPush(client, sdk_app).plain(popup((T1, "accept"))))
    assert subscribe_credits(sdk_app) == 0
    event = InboundEvent.objects.get(app=sdk_app)
    assert event.outcome == {"credited": {}, "credit_source": "sdk"}
    assert MiniUser.objects.filter(app=sdk_app, openid=OPENID).exists()  # the user is known all the same


def test_a_popup_with_only_rejects_credits_nothing(wechat, app):
    assert_success(wechat.plain(popup((T1, "reject"))))
    assert subscribe_credits(app) == 0
    assert MiniUser.objects.filter(app=app, openid=OPENID).exists()


# --- change and sent events --------------------------------------------------------------------------
def change_event(*items: tuple[str, str]) -> dict:
    entries = [{"TemplateId": tid, "SubscribeStatusString": status} for tid, status in items]
    return {
        "ToUserName": "gh_123456789abc",
        "FromUserName": OPENID,
        "CreateTime": now(),
        "MsgType": "event",
        "Event": "subscribe_msg_change_event",
        "List": entries[0] if len(entries) == 1 else entries,
    }


def sent_event(**item) -> dict:
    header = {key: item.pop(key) for key in ("CreateTime",) if key in item}
    entry = {"TemplateId": T1, "MsgID": BIG_MSGID, "ErrorCode": 0, "ErrorStatus": "success", **item}
    return {
        "ToUserName": "gh_123456789abc",
        "FromUserName": OPENID,
        "CreateTime": now(),
        "MsgType": "event",
        "Event": "subscribe_msg_sent_event",
        "List": entry,
        **header,
    }


def test_a_change_event_reject_drops_that_templates_credits(wechat, app):
    user = touch_user(app, OPENID)
    add_subscribe_credits(app, user, [T1, T1, T2], source="sdk")
    assert_success(wechat.plain(change_event((T1, "reject"))))
    assert subscribe_credits(app, T1) == 0
    assert subscribe_credits(app, T1, state=Credit.State.EXPIRED) == 2
    assert subscribe_credits(app, T2) == 1
    assert InboundEvent.objects.get(event="subscribe_msg_change_event").outcome == {"dropped": {T1: 2}}


def test_a_change_event_drops_credits_whatever_the_credit_source(client, sdk_app):
    add_subscribe_credits(sdk_app, touch_user(sdk_app, OPENID), [T1], source="sdk")
    assert_success(WeChatPush(client, sdk_app).safe(change_event((T1, "reject"))))
    assert subscribe_credits(sdk_app, T1) == 0


def test_a_change_event_in_xml(wechat, app):
    add_subscribe_credits(app, touch_user(app, OPENID), [T1, T2], source="sdk")
    xml = (
        f"<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[{OPENID}]]></FromUserName>"
        f"<CreateTime>{now()}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        "<Event><![CDATA[subscribe_msg_change_event]]></Event><SubscribeMsgChangeEvent>"
        f"<List><TemplateId><![CDATA[{T1}]]></TemplateId><SubscribeStatusString><![CDATA[reject]]>"
        "</SubscribeStatusString></List>"
        f"<List><TemplateId><![CDATA[{T2}]]></TemplateId><SubscribeStatusString><![CDATA[reject]]>"
        "</SubscribeStatusString></List></SubscribeMsgChangeEvent></xml>"
    )
    assert_success(wechat.safe(xml, fmt="xml"))
    assert subscribe_credits(app) == 0


def test_a_change_event_for_an_unknown_user_changes_nothing(wechat, app):
    assert_success(wechat.plain(change_event((T1, "reject"))))
    assert InboundEvent.objects.get().outcome == {"dropped": {T1: 0}}


def test_a_sent_event_fires_the_signal(wechat, app, sent_signals):
    assert_success(
        wechat.plain(sent_event(ErrorCode=43101, ErrorStatus="failed:user refuse to accept the msg"))
    )
    assert sent_signals == [
        {
            "signal": subscribe_message_sent,
            "app": app,
            "openid": OPENID,
            "template_id": T1,
            "msgid": BIG_MSGID,
            "errcode": 43101,
            "errstatus": "failed:user refuse to accept the msg",
        }
    ]
    stored = InboundEvent.objects.get()
    assert stored.event == "subscribe_msg_sent_event"
    assert stored.payload["items"][0]["msgid"] == BIG_MSGID  # 64 bits survive the JSON column
    assert stored.outcome == {"reported": [BIG_MSGID]}


def test_a_sent_event_in_xml_fires_the_signal_per_item(wechat, app, sent_signals):
    xml = (
        f"<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[{OPENID}]]></FromUserName>"
        f"<CreateTime>{now()}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        "<Event><![CDATA[subscribe_msg_sent_event]]></Event><SubscribeMsgSentEvent>"
        f"<List><TemplateId><![CDATA[{T1}]]></TemplateId><MsgID>{BIG_MSGID}</MsgID><ErrorCode>0</ErrorCode>"
        "<ErrorStatus><![CDATA[success]]></ErrorStatus></List></SubscribeMsgSentEvent></xml>"
    )
    assert_success(wechat.safe(xml, fmt="xml"))
    assert [(s["msgid"], s["errcode"], s["errstatus"]) for s in sent_signals] == [(BIG_MSGID, 0, "success")]
    assert isinstance(sent_signals[0]["msgid"], int)


def test_a_failing_receiver_stores_nothing_so_wechat_retries(wechat, app, settings):
    def broken(sender, **kwargs):
        raise RuntimeError("delivery app bug")

    subscribe_message_sent.connect(broken)
    try:
        with pytest.raises(RuntimeError):
            events.receive(app, *signed_query_and_body(app, sent_event()))
    finally:
        subscribe_message_sent.disconnect(broken)
    assert InboundEvent.objects.count() == 0


def signed_query_and_body(app, message: dict) -> tuple[dict, bytes]:
    timestamp, nonce = str(now()), "1"
    query = {
        "signature": wx_signature(app.events_token, timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
    }
    return query, json.dumps(message).encode()


# --- anything else ---------------------------------------------------------------------------------
def test_an_unknown_event_is_stored_and_answered_success(wechat, app):
    message = {
        "ToUserName": "gh_1",
        "FromUserName": OPENID,
        "CreateTime": now(),
        "MsgType": "event",
        "Event": "user_enter_tempsession",
        "SessionFrom": "wxapp",
    }
    assert_success(wechat.plain(message))
    event = InboundEvent.objects.get()
    assert event.event == "user_enter_tempsession"
    assert event.payload["fields"] == {"ToUserName": "gh_1", "SessionFrom": "wxapp"}
    assert event.outcome == {}
    assert subscribe_credits(app) == 0


def test_a_plain_text_message_in_xml_is_stored(wechat, app):
    xml = (
        f"<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[{OPENID}]]></FromUserName>"
        f"<CreateTime>{now()}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        "<Content><![CDATA[你好]]></Content><MsgId>1234567890123456</MsgId></xml>"
    )
    assert_success(wechat.plain(xml))
    event = InboundEvent.objects.get()
    assert (event.event, event.payload["msg_type"]) == ("text", "text")
    assert event.payload["fields"]["Content"] == "你好"


# --- retries and replays ----------------------------------------------------------------------------
def test_a_retried_push_is_stored_once_and_credited_once(wechat, app):
    message = popup((T1, "accept"))
    for nonce in ("1", "2", "3"):  # WeChat's retries: same event, new nonce (and maybe timestamp)
        assert_success(wechat.safe(message, nonce=nonce))
    assert InboundEvent.objects.count() == 1
    assert subscribe_credits(app, T1) == 1


def test_a_replayed_request_is_stored_once(wechat, app):
    message = popup((T1, "accept"))
    first = wechat.plain(message, nonce="42")
    assert_success(first)
    assert_success(wechat.plain(message, nonce="42"))
    assert InboundEvent.objects.count() == 1
    assert subscribe_credits(app, T1) == 1


def test_the_same_event_in_json_and_xml_has_the_same_dedupe_key():
    create_time = now()
    from_json = events.normalise(popup((T1, "accept"), CreateTime=create_time))
    from_xml = events.normalise(
        events.parse_document(popup_xml((T1, "accept"), create_time=create_time).encode())
    )
    assert from_json.items == from_xml.items
    assert from_json.dedupe_key == from_xml.dedupe_key


def test_two_different_events_in_the_same_second_are_both_kept(wechat, app):
    create_time = now()
    assert_success(wechat.plain(popup((T1, "accept"), CreateTime=create_time)))
    assert_success(wechat.plain(popup((T2, "accept"), CreateTime=create_time)))
    assert InboundEvent.objects.count() == 2
    assert subscribe_credits(app) == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_credit_once(app):
    event = events.normalise(popup((T1, "accept")))
    barrier = threading.Barrier(4)
    results, errors = [], []

    def push():
        try:
            barrier.wait(timeout=10)
            results.append(events.process(app, event).duplicate)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=push) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert sorted(results) == [False, True, True, True]
    assert subscribe_credits(app, T1) == 1
    assert InboundEvent.objects.count() == 1


# --- refusals: nothing is stored --------------------------------------------------------------------
def test_a_forged_signature_is_403(wechat, app):
    assert_refused(wechat.plain(popup((T1, "accept")), token="not-the-token"), 403, "invalid_signature")
    assert subscribe_credits(app) == 0


def test_a_missing_signature_is_403(client, app):
    response = client.post(
        f"/wechat/{app.appid}/events?timestamp={now()}&nonce=1",
        json.dumps(popup((T1, "accept"))),
        "application/json",
    )
    assert_refused(response, 403, "invalid_signature")


def test_a_forged_msg_signature_is_403(wechat, app):
    assert_refused(wechat.safe(popup((T1, "accept")), token="not-the-token"), 403, "invalid_signature")


def test_a_safe_push_without_msg_signature_is_403(client, app):
    timestamp = str(now())
    encrypted = wx_encrypt(json.dumps(popup((T1, "accept"))), app.appid, app.get_events_aes_key())
    query = urlencode(
        {
            "signature": wx_signature(app.events_token, timestamp, "1"),
            "timestamp": timestamp,
            "nonce": "1",
            "encrypt_type": "aes",
        }
    )
    body = json.dumps({"ToUserName": "gh_1", "Encrypt": encrypted})
    assert_refused(
        client.post(f"/wechat/{app.appid}/events?{query}", body, "application/json"), 403, "invalid_signature"
    )


# +602, not +601: the server's clock moves on (by up to a second) between signing and checking, which
# brings a future timestamp closer; a past one only gets older.
@pytest.mark.parametrize("offset", [-601, 602, -3600 * 24])
def test_a_stale_timestamp_is_403(wechat, app, offset):
    assert_refused(wechat.plain(popup((T1, "accept")), timestamp=now() + offset), 403, "stale_timestamp")
    assert_refused(wechat.safe(popup((T1, "accept")), timestamp=now() + offset), 403, "stale_timestamp")


def test_a_timestamp_within_ten_minutes_is_accepted(wechat, app):
    assert_success(wechat.plain(popup((T1, "accept")), timestamp=now() - 590))


def test_another_tenants_token_cannot_push_to_this_app(client, app, other_tenant):
    outsider = tenant_services.register_app(
        other_tenant, appid=random_appid(), secret=random_secret(), name="Globex", sandbox_app=True
    )
    push = WeChatPush(client, app)
    assert_refused(push.plain(popup((T1, "accept")), token=outsider.events_token), 403, "invalid_signature")
    response = push.safe(
        popup((T1, "accept")), token=outsider.events_token, aes_key=outsider.get_events_aes_key()
    )
    assert_refused(response, 403, "invalid_signature")


def test_another_apps_ciphertext_is_400(wechat, app):
    assert_refused(wechat.safe(popup((T1, "accept")), inner_appid=random_appid()), 400, "appid_mismatch")


def test_a_ciphertext_made_with_another_key_is_400(wechat, app):
    other_key = "A" * 42 + "B"
    assert_refused(wechat.safe(popup((T1, "accept")), aes_key=other_key), 400, "undecryptable")


def test_an_encrypted_body_needs_encrypt_type(wechat, app):
    body = {"ToUserName": "gh_1", "Encrypt": wx_encrypt("{}", app.appid, app.get_events_aes_key())}
    assert_refused(wechat.plain(body), 400, "validation_error")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("", "invalid_json"),
        ("not json", "invalid_json"),
        ('{"ToUserName": ', "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ('{"MsgType": NaN}', "invalid_json"),
        ("<xml><unclosed></xml>", "invalid_xml"),
        ('{"MsgType": "event", "Event": "x", "CreateTime": 1}', "validation_error"),  # no FromUserName
        (
            '{"MsgType": "event", "Event": "x", "FromUserName": "o1", "CreateTime": "soon"}',
            "validation_error",
        ),
        (
            '{"MsgType": "event", "Event": "subscribe_msg_popup_event", "FromUserName": "o1", '
            '"CreateTime": 1}',
            "validation_error",
        ),
        (
            '{"MsgType": "text", "FromUserName": "o1", "CreateTime": 1, "Content": "a\\u0000b"}',
            "validation_error",
        ),
        (
            '{"MsgType": "text", "FromUserName": "o1", "CreateTime": 1, "Content": "\\ud800"}',
            "validation_error",
        ),
        ('{"a": ' + "[" * 30_000 + "]" * 30_000 + "}", "invalid_json"),  # deeper than the parser goes
        ('{"a": ' + "[" * 50 + "]" * 50 + "}", "validation_error"),  # parses, but no message is that deep
    ],
)
def test_a_malformed_body_is_400(wechat, app, body, code):
    assert_refused(wechat.plain(body, content_type="application/json"), 400, code)


def test_a_sent_event_with_a_bad_msgid_is_400(wechat, app, sent_signals):
    assert_refused(wechat.plain(sent_event(MsgID="12ab")), 400, "validation_error")
    assert sent_signals == []


def test_deeply_nested_xml_is_400(wechat, app):
    xml = "<xml>" + "<a>" * 5000 + "x" + "</a>" * 5000 + "</xml>"
    assert_refused(wechat.plain(xml), 400, "invalid_xml")


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<xml><ToUserName>gh_1</ToUserName><FromUserName>OPENID</FromUserName><CreateTime>NOW</CreateTime>
<MsgType>text</MsgType><Content>&lol9;</Content></xml>"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<xml><ToUserName>gh_1</ToUserName><FromUserName>OPENID</FromUserName><CreateTime>NOW</CreateTime>
<MsgType>text</MsgType><Content>&xxe;</Content></xml>"""


@pytest.mark.parametrize("bomb", [BILLION_LAUGHS, EXTERNAL_ENTITY])
def test_xml_bombs_are_400_and_nothing_is_stored(wechat, app, bomb):
    xml = bomb.replace("OPENID", OPENID).replace("NOW", str(now()))
    assert_refused(wechat.plain(xml), 400, "invalid_xml")
    assert_refused(wechat.safe(xml, fmt="xml"), 400, "invalid_xml")  # inside the ciphertext too


def test_a_body_over_64_kib_is_413(wechat, app):
    message = popup((T1, "accept"), Padding="x" * 70_000)
    assert_refused(wechat.plain(message), 413, "payload_too_large")


def test_a_push_takes_a_bounded_number_of_queries(wechat, app, django_assert_max_num_queries):
    wechat.plain(popup((T1, "accept")))  # the user exists from now on
    # app, dedupe check, event, user, the catalogue (one-time or long-term?), credits, stat, the funnel's rows
    # of both templates (one statement), the user's recent opens of them, the tenant's webhook interest,
    # outcome (+savepoint)
    with django_assert_max_num_queries(13):
        assert_success(wechat.plain(popup((T1, "accept"), (T2, "accept"))))

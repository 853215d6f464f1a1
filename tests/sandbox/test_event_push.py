"""The sandbox pushes WeChat's subscribe events to PushHub's /wechat/{appid}/events, over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from django.urls import include, path

from formids.hooks import subscribe_message_sent
from formids.models import Credit, InboundEvent
from pushhub.wechat.sandbox import event_push
from pushhub.wechat.sandbox import services as sandbox_services
from pushhub.wechat.sandbox.models import SandboxApp
from tenants import services as tenant_services

from ..conftest import random_appid, random_secret
from .helpers import SUBSCRIBE_CONTENT, subscribe_body
from .http import call

pytestmark = pytest.mark.django_db(transaction=True)

# The sandbox and PushHub's events endpoint, mounted where pushhub/urls.py mounts them.
urlpatterns = [
    path("sandbox/wechat/", include("pushhub.wechat.sandbox.urls")),
    path("wechat/", include("formids.event_urls")),
]


@pytest.fixture(autouse=True)
def both_sides(settings):
    settings.ROOT_URLCONF = __name__


@pytest.fixture
def app(tenant, sandbox_base):
    """A PushHub sandbox app that takes its credits from WeChat's events (and so "WeChat" knows it too)."""
    registered = tenant_services.register_app(
        tenant, appid=random_appid(), secret=random_secret(), name="Shop", sandbox_app=True
    )
    # Registration connects the sandbox's event pushes to PushHub; these tests configure them themselves.
    sandbox_services.configure_events(registered.appid, url="", token="", aes_key="")
    return tenant_services.update_app(registered, credit_source="events")


@pytest.fixture
def control(sandbox_base, app):
    def control(method: str, path: str, body=None):
        return call(method, f"{sandbox_base}/_control/apps/{app.appid}/{path}", body)

    return control


@pytest.fixture
def openid(control):
    status, user = control("POST", "users", {})
    assert status == 201
    return user["openid"]


@pytest.fixture
def templates(control):
    ids = []
    for title in ("订单发货通知", "退款通知"):
        status, template = control(
            "POST", "templates", {"kind": "subscribe", "title": title, "content": SUBSCRIBE_CONTENT}
        )
        assert status == 201
        ids.append(template["template_id"])
    return ids


def configure(control, live_server, app, mode="safe", fmt="json", token=None, url=None):
    body = {
        "url": url or f"{live_server.url}/wechat/{app.appid}/events",
        "token": token or app.events_token,
        "aes_key": app.get_events_aes_key(),
        "mode": mode,
        "format": fmt,
    }
    status, config = control("PUT", "events", body)
    assert status == 200, config
    return config


def available(app, template_id=None) -> int:
    credits = Credit.objects.filter(app=app, kind=Credit.Kind.SUBSCRIBE, state=Credit.State.AVAILABLE)
    return credits.filter(template_id=template_id).count() if template_id else credits.count()


def event_push_stats(control) -> dict:
    return control("GET", "stats")[1]["event_pushes"]


@pytest.mark.parametrize(
    ("mode", "fmt"), [("safe", "json"), ("safe", "xml"), ("plaintext", "json"), ("plaintext", "xml")]
)
def test_accepting_in_the_sandbox_credits_pushhub(control, live_server, app, openid, templates, mode, fmt):
    configure(control, live_server, app, mode, fmt)
    t1, t2 = templates
    status, answer = control(
        "POST", f"users/{openid}/subscriptions", {"results": {t1: "accept", t2: "reject"}}
    )
    assert status == 200 and answer[t1] == "accept"
    # the push is synchronous: PushHub has the credit by the time the sandbox answers
    assert (available(app, t1), available(app, t2)) == (1, 0)
    assert Credit.objects.get(app=app).source == Credit.Source.EVENTS
    event = InboundEvent.objects.get(app=app)
    assert (event.event, event.openid) == ("subscribe_msg_popup_event", openid)
    assert [item["status"] for item in event.payload["items"]] == ["accept", "reject"]
    assert event_push_stats(control) == {"ok": 1, "failed": 0, "failed_by_status": {}}


def test_one_popup_event_carries_every_answer_of_the_call(control, live_server, app, openid, templates):
    configure(control, live_server, app)
    control(
        "POST",
        f"users/{openid}/subscriptions",
        {"results": {templates[0]: "accept", templates[1]: "accept", "nope": "accept"}},
    )
    event = InboundEvent.objects.get(app=app)
    assert [item["template_id"] for item in event.payload["items"]] == templates  # "nope" was filtered
    assert available(app) == 2


def test_two_identical_answers_in_one_second_are_two_events_not_a_retry(
    control, live_server, app, openid, templates
):
    configure(control, live_server, app)
    for _ in range(3):
        control("POST", f"users/{openid}/subscriptions", {"results": {templates[0]: "accept"}})
    times = sorted(InboundEvent.objects.filter(app=app).values_list("payload__create_time", flat=True))
    assert len(set(times)) == 3  # the sandbox gives each event of a user its own second, as a person would
    assert available(app, templates[0]) == 3


def test_turning_a_template_off_drops_its_credits(control, live_server, app, openid, templates):
    configure(control, live_server, app, fmt="xml")
    t1, t2 = templates
    for _ in range(2):
        control("POST", f"users/{openid}/subscriptions", {"results": {t1: "accept", t2: "accept"}})
    assert (available(app, t1), available(app, t2)) == (2, 2)

    status, answer = control("POST", f"users/{openid}/subscriptions/{t1}/off")
    assert (status, answer) == (200, {"openid": openid, "template_id": t1, "dropped": 2})
    assert (available(app, t1), available(app, t2)) == (0, 2)
    assert control("GET", f"users/{openid}")[1]["credits"]["subscriptions"] == {t2: 2}
    assert InboundEvent.objects.filter(app=app, event="subscribe_msg_change_event").count() == 1


def test_a_successful_send_pushes_a_sent_event_with_its_msgid(
    control, live_server, sandbox_base, app, openid, templates
):
    received = []

    def receiver(sender, **kwargs):
        received.append(kwargs)

    configure(control, live_server, app)
    assert control("PATCH", "knobs", {"push_sent_events": True})[0] == 200
    control("POST", f"users/{openid}/subscriptions", {"results": {templates[0]: "accept"}})
    _, token = call(
        "POST",
        f"{sandbox_base}/cgi-bin/stable_token",
        {"grant_type": "client_credential", "appid": app.appid, "secret": app.get_secret()},
    )
    user, template = type("U", (), {"openid": openid}), type("T", (), {"template_id": templates[0]})
    subscribe_message_sent.connect(receiver)
    try:
        url = f"{sandbox_base}/cgi-bin/message/subscribe/send?access_token={token['access_token']}"
        status, sent = call("POST", url, subscribe_body(user, template))
    finally:
        subscribe_message_sent.disconnect(receiver)
    assert status == 200 and sent["errcode"] == 0
    assert [(r["openid"], r["template_id"], r["msgid"], r["errcode"], r["errstatus"]) for r in received] == [
        (openid, templates[0], sent["msgid"], 0, "success")
    ]
    assert event_push_stats(control)["ok"] == 2  # the popup, then the sent event


def test_without_the_knob_a_send_pushes_nothing(control, live_server, sandbox_base, app, openid, templates):
    configure(control, live_server, app)
    control("POST", f"users/{openid}/subscriptions", {"results": {templates[0]: "accept"}})
    _, token = call(
        "POST",
        f"{sandbox_base}/cgi-bin/stable_token",
        {"grant_type": "client_credential", "appid": app.appid, "secret": app.get_secret()},
    )
    user, template = type("U", (), {"openid": openid}), type("T", (), {"template_id": templates[0]})
    url = f"{sandbox_base}/cgi-bin/message/subscribe/send?access_token={token['access_token']}"
    assert call("POST", url, subscribe_body(user, template))[1]["errcode"] == 0
    assert not InboundEvent.objects.filter(event="subscribe_msg_sent_event").exists()


def test_a_refused_push_is_counted_and_never_raised(control, live_server, app, openid, templates):
    configure(control, live_server, app, token="NotPushHubsToken")
    status, answer = control("POST", f"users/{openid}/subscriptions", {"results": {templates[0]: "accept"}})
    assert status == 200 and answer[templates[0]] == "accept"  # the user's tap counts on WeChat's side
    assert control("GET", f"users/{openid}")[1]["credits"]["subscriptions"] == {templates[0]: 1}
    assert InboundEvent.objects.count() == 0 and available(app) == 0
    assert event_push_stats(control) == {"ok": 0, "failed": 1, "failed_by_status": {"403": 1}}


def test_an_unreachable_url_is_counted_and_never_raised(control, live_server, app, openid, templates):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    configure(control, live_server, app, url=f"http://127.0.0.1:{port}/wechat/{app.appid}/events")
    status, _ = control("POST", f"users/{openid}/subscriptions", {"results": {templates[0]: "accept"}})
    assert status == 200
    assert event_push_stats(control) == {"ok": 0, "failed": 1, "failed_by_status": {"-1": 1}}


def test_without_a_configuration_nothing_is_pushed(control, app, openid, templates):
    control("POST", f"users/{openid}/subscriptions", {"results": {templates[0]: "accept"}})
    assert InboundEvent.objects.count() == 0
    assert event_push_stats(control) == {"ok": 0, "failed": 0, "failed_by_status": {}}


# --- the control endpoint ------------------------------------------------------------------------------
def test_the_configuration_is_read_back_without_its_secrets(control, live_server, app):
    config = configure(control, live_server, app, mode="plaintext", fmt="xml")
    assert config == {
        "appid": app.appid,
        "url": f"{live_server.url}/wechat/{app.appid}/events",
        "mode": "plaintext",
        "format": "xml",
        "push_sent_events": False,
    }
    assert control("GET", "events")[1] == config
    assert control("DELETE", "events")[0] == 204
    assert control("GET", "events")[1]["url"] is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"token": "ab"}, "token"),
        ({"token": "has space"}, "token"),
        ({"aes_key": "short"}, "aes_key"),
        ({"aes_key": ""}, "aes_key"),
        ({"mode": "compatible"}, "mode"),
        ({"format": "yaml"}, "format"),
    ],
)
def test_a_bad_configuration_is_refused(control, app, changes, field):
    body = {
        "url": "http://127.0.0.1:9/e",
        "token": "Token123",
        "aes_key": "a" * 43,
        "mode": "safe",
        "format": "json",
    }
    status, answer = control("PUT", "events", {**body, **changes})
    assert status == 400
    assert (answer["error"]["code"], answer["error"]["field"]) == ("validation_error", field)
    assert SandboxApp.objects.get(appid=app.appid).events_url == ""


def test_plaintext_mode_needs_no_aes_key(control, app):
    body = {"url": "http://127.0.0.1:9/e", "token": "Token123", "aes_key": "", "mode": "plaintext"}
    assert control("PUT", "events", body)[0] == 200


def test_turning_off_needs_a_known_user_and_subscribe_template(control, openid, templates):
    assert control("POST", f"users/{openid}/subscriptions/unknown-template/off")[0] == 404
    assert control("POST", f"users/nobody/subscriptions/{templates[0]}/off")[0] == 404
    assert control("GET", f"users/{openid}/subscriptions/{templates[0]}/off")[0] == 405


# --- the request on the wire, checked independently ---------------------------------------------------
class Recorder(BaseHTTPRequestHandler):
    """Answers 500 to the first push and 200 to the next, keeping what it received."""

    received: list[tuple[dict, bytes, str]] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((parse_qs(urlsplit(self.path).query), body, self.headers["Content-Type"]))
        status = 500 if len(self.received) == 1 else 200
        self.send_response(status)
        self.send_header("Content-Length", "7")
        self.end_headers()
        self.wfile.write(b"success")

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder():
    Recorder.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/events"
    server.shutdown()
    server.server_close()


def wx_decrypt(encrypted: str, encoding_aes_key: str) -> tuple[str, str]:
    key = base64.b64decode(encoding_aes_key + "=")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    plain = decryptor.update(base64.b64decode(encrypted)) + decryptor.finalize()
    plain = plain[: -plain[-1]]
    (length,) = struct.unpack(">I", plain[16:20])
    return plain[20 : 20 + length].decode(), plain[20 + length :].decode()


def test_a_safe_push_is_signed_encrypted_and_retried_once(recorder):
    key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
    app = SandboxApp(
        appid="wx00000000000000aa",
        events_url=recorder,
        events_token="Tok3n",
        events_aes_key=key,
        events_mode="safe",
    )
    event = event_push.popup_event(app, "oUser", {"T1": "accept"})
    assert event_push.deliver(app, event) == 200
    assert len(Recorder.received) == 2  # 500, then the retry
    query, body, content_type = Recorder.received[1]
    q = {name: values[0] for name, values in query.items()}
    envelope = json.loads(body)
    assert content_type.startswith("application/json")
    assert q["encrypt_type"] == "aes"
    assert (
        q["signature"]
        == hashlib.sha1("".join(sorted(["Tok3n", q["timestamp"], q["nonce"]])).encode()).hexdigest()
    )
    expected = hashlib.sha1(
        "".join(sorted(["Tok3n", q["timestamp"], q["nonce"], envelope["Encrypt"]])).encode()
    )
    assert q["msg_signature"] == expected.hexdigest()
    message, appid = wx_decrypt(envelope["Encrypt"], key)
    assert appid == app.appid
    assert json.loads(message) == {
        "ToUserName": event_push.original_id(app.appid),
        "FromUserName": "oUser",
        "CreateTime": event.create_time,
        "MsgType": "event",
        "Event": "subscribe_msg_popup_event",
        "List": {"TemplateId": "T1", "SubscribeStatusString": "accept", "PopupScene": "0"},
    }


def test_a_plaintext_xml_push_wraps_repeated_list_elements(recorder):
    app = SandboxApp(
        appid="wx00000000000000aa",
        events_url=recorder,
        events_token="Tok3n",
        events_mode="plaintext",
        events_format="xml",
    )
    event_push.deliver(app, event_push.popup_event(app, "oUser", {"T1": "accept", "T2": "reject"}))
    query, body, content_type = Recorder.received[0]
    assert "encrypt_type" not in query and content_type.startswith("text/xml")
    text = body.decode()
    assert text.startswith("<xml><ToUserName><![CDATA[gh_")
    assert text.count("<List>") == 2
    assert "<SubscribeMsgPopupEvent><List><TemplateId><![CDATA[T1]]></TemplateId>" in text

"""WeChat's side of the event push (消息推送): build an event the way WeChat words it, sign it (and in safe mode encrypt it)
with the app's Token and EncodingAESKey, and POST it to the app's URL.

The sandbox is WeChat here, not PushHub: it talks HTTP with ``requests`` directly rather than through
PushHub's client. An event push is synchronous, waits at most ``EVENT_PUSH_TIMEOUT`` seconds, is tried once more if it
fails, and never raises: :func:`deliver` answers the outcome for the caller to count.

Shapes (as WeChat pushes them): JSON carries the items in a top-level ``List``, an object for one item and
an array for several; XML wraps repeated ``<List>`` elements in ``<SubscribeMsgPopupEvent>`` (or
``…ChangeEvent``, ``…SentEvent``). Strings go in CDATA, numbers bare; ``PopupScene`` is a string in JSON,
as in WeChat's own samples.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from pushhub.wechat import msgcrypto
from pushhub.wechat.event_push import CHANGE, ITEM_WRAPPERS, POPUP, SENT

from .models import SandboxApp

log = logging.getLogger(__name__)

EVENT_PUSH_TIMEOUT = 3.0  # seconds; WeChat itself gives up after 5
EVENT_PUSH_ATTEMPTS = 2  # one retry
FAILED = -1  # outcome of an event push that got no HTTP answer (refused, timed out)


@dataclass(frozen=True)
class Event:
    """One event as WeChat would push it: the header and the items of its ``List``."""

    app_original_id: str
    openid: str
    event: str
    items: list[dict[str, Any]] = field(default_factory=list)
    create_time: int = field(default_factory=lambda: int(time.time()))

    def header(self) -> dict[str, Any]:
        return {
            "ToUserName": self.app_original_id,
            "FromUserName": self.openid,
            "CreateTime": self.create_time,
            "MsgType": "event",
            "Event": self.event,
        }

    def to_json(self) -> str:
        items: Any = self.items[0] if len(self.items) == 1 else self.items
        return json.dumps({**self.header(), "List": items}, ensure_ascii=False)

    def to_xml(self) -> str:
        entries = "".join(f"<List>{_xml_fields(item)}</List>" for item in self.items)
        wrapper = ITEM_WRAPPERS[self.event]
        return f"<xml>{_xml_fields(self.header())}<{wrapper}>{entries}</{wrapper}></xml>"


def _cdata(text: str) -> str:
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _xml_fields(values: dict[str, Any]) -> str:
    return "".join(
        f"<{name}>{value if isinstance(value, int) else _cdata(str(value))}</{name}>"
        for name, value in values.items()
    )


def original_id(appid: str) -> str:
    """The mini-program's original id (``gh_`` + 12 hex), WeChat's ToUserName; derived from the appid, as
    the sandbox keeps none."""
    return "gh_" + hashlib.sha256(appid.encode()).hexdigest()[:12]


def popup_event(app: SandboxApp, openid: str, answers: dict[str, str], scene: int = 0) -> Event:
    """The user answered ``wx.requestSubscribeMessage``: one item per template shown (accept or reject)."""
    items = [
        {"TemplateId": tid, "SubscribeStatusString": answer, "PopupScene": str(scene)}
        for tid, answer in answers.items()
    ]
    return Event(original_id(app.appid), openid, POPUP, items)


def change_event(app: SandboxApp, openid: str, template_id: str, status: str = "reject") -> Event:
    """The user changed a template's switch in the mini-program's settings (WeChat only pushes ``reject``)."""
    items = [{"TemplateId": template_id, "SubscribeStatusString": status}]
    return Event(original_id(app.appid), openid, CHANGE, items)


def sent_event(
    app: SandboxApp, openid: str, template_id: str, msgid: int, errcode: int = 0, errstatus: str = "success"
) -> Event:
    """The final outcome of a subscribe send, by the msgid subscribe/send answered."""
    items = [{"TemplateId": template_id, "MsgID": msgid, "ErrorCode": errcode, "ErrorStatus": errstatus}]
    return Event(original_id(app.appid), openid, SENT, items)


def signed_request(app: SandboxApp, event: Event) -> tuple[dict[str, str], bytes, str]:
    """(query, body, content type) exactly as WeChat sends them with the app's 消息推送配置."""
    timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**10))
    query = {
        "signature": msgcrypto.signature(app.events_token, timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
    }
    xml = app.events_format == SandboxApp.XML
    message = event.to_xml() if xml else event.to_json()
    if app.events_mode == SandboxApp.SAFE:
        encrypted = msgcrypto.encrypt(message, app.appid, app.events_aes_key)
        query["encrypt_type"] = "aes"
        query["msg_signature"] = msgcrypto.signature(app.events_token, timestamp, nonce, encrypted)
        if xml:
            message = f"<xml>{_xml_fields({'ToUserName': event.app_original_id, 'Encrypt': encrypted})}</xml>"
        else:
            message = json.dumps({"ToUserName": event.app_original_id, "Encrypt": encrypted})
    content_type = "text/xml; charset=utf-8" if xml else "application/json; charset=utf-8"
    return query, message.encode(), content_type


def deliver(app: SandboxApp, event: Event) -> int:
    """POST the event to the app's URL; the HTTP status of the last attempt, or FAILED without an answer.

    Anything but 200 is tried once more (the same signed request, as WeChat's retries are). Never raises.
    """
    query, body, content_type = signed_request(app, event)
    status = FAILED
    for attempt in range(1, EVENT_PUSH_ATTEMPTS + 1):
        try:
            response = requests.post(
                app.events_url,
                params=query,
                data=body,
                headers={"Content-Type": content_type},
                timeout=EVENT_PUSH_TIMEOUT,
            )
            status = response.status_code
        except requests.RequestException as error:
            status = FAILED
            reason = type(error).__name__
        else:
            reason = f"HTTP {status}"
            if status == 200:
                return status
        log.warning(
            "sandbox event push failed (attempt %d/%d): appid=%s event=%s url=%s: %s",
            attempt,
            EVENT_PUSH_ATTEMPTS,
            app.appid,
            event.event,
            app.events_url,
            reason,
        )
    return status

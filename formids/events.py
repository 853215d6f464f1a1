"""WeChat's event push (消息推送) into PushHub: verify, open, normalise, process.

An event push is trusted only after its signature matches the app's Token (plaintext mode: ``signature`` over
``[token, timestamp, nonce]``; safe mode: ``msg_signature`` over the same plus ``Encrypt``), its timestamp is
within 10 minutes of ours, and, in safe mode, it decrypted with the app's EncodingAESKey and names our AppID.
Rejected event pushes store nothing.

JSON and XML, plaintext and encrypted, all become one Python shape (:class:`WeChatEvent`): WeChat's
``List`` (an object for one item and an array for several in JSON, repeated ``<List>`` elements inside
``<SubscribeMsgPopupEvent>`` and its siblings in XML) becomes ``items``, numbers that arrive as strings become
ints. One transaction per event stores it as an InboundEvent, deduplicated on FromUserName + CreateTime +
content (WeChat retries an event push after 5 s), and applies it:

- ``subscribe_msg_popup_event``: each ``accept`` is one send credit (a long-term template: a standing
  subscription) when the app's credit_source is "events" (with "sdk" the SDK's report credits it and the
  event is only stored); a ``reject`` of a long-term template ends its subscription whatever the source;
- ``subscribe_msg_change_event``: a ``reject`` (the user turned the template off) drops its credits or
  ends its long-term subscription;
- ``subscribe_msg_sent_event``: :data:`formids.hooks.subscribe_message_sent` per item;
- anything else is stored as received.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as parse_xml
from django.db import IntegrityError, transaction

from formids.hooks import long_term_ids, subscribe_message_sent, subscribe_templates
from formids.models import Credit, InboundEvent, MiniUser
from formids.services import (
    add_subscribe_credits,
    drop_subscribe_credits,
    end_long_term,
    start_long_term,
    touch_user,
)
from formids.webhook_events import subscriptions_changed
from pushhub.api import ApiError
from pushhub.wechat import msgcrypto
from pushhub.wechat.event_push import CHANGE, ITEM_WRAPPERS, POPUP, SENT
from tenants.models import MiniProgram

log = logging.getLogger(__name__)

# An event push whose timestamp is further than this from our clock is refused (a replay, or a broken clock).
REPLAY_WINDOW_SECONDS = 600
# WeChat's messages are 4 levels deep at most (xml > SubscribeMsgPopupEvent > List > TemplateId).
MAX_DEPTH = 12
OPENID_MAX = 64  # MiniUser.openid
TEMPLATE_ID_MAX = 128  # Credit.template_id
EVENT_NAME_MAX = 64  # InboundEvent.event

HEADER_FIELDS = ("MsgType", "Event", "FromUserName", "CreateTime")


def _rejected(status: int, code: str, message: str, field: str | None = None) -> ApiError:
    return ApiError(status, code, message, field)


def _bad_signature() -> ApiError:
    return _rejected(403, "invalid_signature", "The signature does not match this app's Token.")


# --- verification ----------------------------------------------------------------------------------
def verify_echo(app: MiniProgram, query: Mapping[str, str]) -> str:
    """WeChat's URL check (``GET ?signature&timestamp&nonce&echostr``): the echostr to answer, if signed."""
    if not msgcrypto.verify(
        query.get("signature"), app.events_token, query.get("timestamp") or "", query.get("nonce") or ""
    ):
        raise _bad_signature()
    echostr = query.get("echostr")
    if not echostr:
        raise _rejected(400, "validation_error", "echostr is required.", "echostr")
    return echostr


def _check_fresh(timestamp: str, now: float) -> None:
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise _rejected(
            403, "stale_timestamp", "timestamp is missing or not a number.", "timestamp"
        ) from None
    if abs(now - sent_at) > REPLAY_WINDOW_SECONDS:
        raise _rejected(
            403,
            "stale_timestamp",
            f"timestamp is more than {REPLAY_WINDOW_SECONDS // 60} minutes from the server's clock.",
            "timestamp",
        )


def open_message(
    app: MiniProgram, query: Mapping[str, str], body: bytes, content_type: str = "", now: float | None = None
) -> dict[str, Any]:
    """The pushed message as a dict, once the event push proved it comes from WeChat for this app.

    Safe (and compatible) mode is chosen by ``encrypt_type=aes`` in the query, as WeChat sends it; the
    plaintext fields a compatible-mode body also carries are ignored in favour of the encrypted ones.
    """
    now = time.time() if now is None else now
    timestamp, nonce = query.get("timestamp") or "", query.get("nonce") or ""
    if (query.get("encrypt_type") or "").lower() != "aes":
        if not msgcrypto.verify(query.get("signature"), app.events_token, timestamp, nonce):
            raise _bad_signature()
        _check_fresh(timestamp, now)
        message = parse_document(body, content_type)
        if "Encrypt" in message and "MsgType" not in message:
            raise _rejected(
                400, "validation_error", "An encrypted body needs encrypt_type=aes.", "encrypt_type"
            )
        return message

    given = query.get("msg_signature")
    if not given:
        raise _bad_signature()
    envelope = parse_document(body, content_type)
    encrypted = envelope.get("Encrypt")
    if not isinstance(encrypted, str) or not encrypted.strip():
        raise _rejected(400, "validation_error", "Encrypt is required in safe mode.", "Encrypt")
    encrypted = encrypted.strip()
    if not msgcrypto.verify(given, app.events_token, timestamp, nonce, encrypted):
        raise _bad_signature()
    _check_fresh(timestamp, now)
    try:
        plain = msgcrypto.decrypt(encrypted, app.get_events_aes_key(), app.appid)
    except msgcrypto.AppIdMismatch:
        raise _rejected(400, "appid_mismatch", "The message was encrypted for another AppID.") from None
    except msgcrypto.DecryptError:
        raise _rejected(
            400, "undecryptable", "Encrypt could not be decrypted with this app's EncodingAESKey."
        ) from None
    return parse_document(plain.encode())


# --- parsing ---------------------------------------------------------------------------------------
def parse_document(body: bytes, content_type: str = "") -> dict[str, Any]:
    """A JSON object or an XML document (``<xml>…</xml>``) as a dict; told apart by their first character,
    the Content-Type only names the error when it is neither. XML is parsed by defusedxml with DTDs
    forbidden: entity expansion (billion laughs) and external entities never run."""
    text = body.removeprefix(b"\xef\xbb\xbf").strip()
    if text.startswith(b"<"):
        document = _parse_xml(text)
    elif text.startswith(b"{"):
        document = _parse_json(text)
    elif "xml" in content_type:
        raise _rejected(400, "invalid_xml", "Request body is not an XML document.")
    else:
        raise _rejected(400, "invalid_json", "Request body is not a JSON object (nor an XML document).")
    _check_values(document, 0)
    return document


def _parse_json(text: bytes) -> dict[str, Any]:
    def no_constants(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    try:
        document = json.loads(text, parse_constant=no_constants)
    except (ValueError, RecursionError) as error:
        raise _rejected(400, "invalid_json", f"Request body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise _rejected(400, "invalid_json", "Request body must be a JSON object.")
    return document


def _parse_xml(text: bytes) -> dict[str, Any]:
    try:
        root = parse_xml(text, forbid_dtd=True)
    except DefusedXmlException:
        raise _rejected(400, "invalid_xml", "DTDs and entities are not allowed in the XML body.") from None
    except ParseError as error:
        raise _rejected(400, "invalid_xml", f"Request body is not valid XML: {error}") from None
    document = _xml_value(root, 0)
    return document if isinstance(document, dict) else {}


def _xml_value(element: Element, depth: int) -> str | dict[str, Any]:
    """A leaf's text, or {tag: value} for its children, a repeated tag giving a list (like ``<List>``)."""
    children = list(element)
    if not children:
        return element.text or ""
    if depth >= MAX_DEPTH:
        raise _rejected(400, "invalid_xml", "The XML body is nested too deeply.")
    result: dict[str, Any] = {}
    for child in children:
        value = _xml_value(child, depth + 1)
        if child.tag not in result:
            result[child.tag] = value
        elif isinstance(result[child.tag], list):
            result[child.tag].append(value)
        else:
            result[child.tag] = [result[child.tag], value]
    return result


def _check_values(value: Any, depth: int) -> None:
    """Refuse what parses but cannot be stored as JSON everywhere (NUL characters, lone surrogates) or is
    absurdly deep, so that bad input answers 400 rather than failing in the database."""
    if depth > MAX_DEPTH:
        raise _rejected(400, "validation_error", "The message is nested too deeply.")
    if isinstance(value, str):
        if "\x00" in value or (not value.isascii() and _has_surrogates(value)):
            raise _rejected(400, "validation_error", "The message contains characters that are not allowed.")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_values(key, depth + 1)
            _check_values(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_values(item, depth + 1)


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# --- normalisation ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class WeChatEvent:
    """One pushed message, whatever its format: WeChat's header, the subscribe events' items normalised
    (``template_id``, ``status``, ``popup_scene`` / ``msgid``, ``errcode``, ``errstatus``), every other
    top-level field as received in ``fields``."""

    msg_type: str
    event: str  # "" for plain messages (text, image …)
    openid: str
    create_time: int
    items: list[dict[str, Any]] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)

    def as_payload(self) -> dict[str, Any]:
        return {
            "msg_type": self.msg_type,
            "event": self.event,
            "openid": self.openid,
            "create_time": self.create_time,
            "items": self.items,
            "fields": self.fields,
        }

    def canonical_json(self) -> str:
        return json.dumps(self.as_payload(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @property
    def dedupe_key(self) -> str:
        """Same for WeChat's retries of one event push, different for anything else it pushes."""
        text = f"{self.openid}\n{self.create_time}\n{self.canonical_json()}"
        return hashlib.sha256(text.encode()).hexdigest()


def _invalid(field: str, message: str) -> ApiError:
    return _rejected(400, "validation_error", message, field)


def _text(source: Mapping[str, Any], name: str, *, required: bool = True, max_length: int = 0) -> str:
    value = source.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise _invalid(name, f"{name} must be a non-empty string.")
    value = value.strip()
    if max_length and len(value) > max_length:
        raise _invalid(name, f"{name} is longer than {max_length} characters.")
    return value


def _number(source: Mapping[str, Any], name: str, *, required: bool = True) -> int | None:
    """An integer that may arrive as a JSON number or as text ("0", "1620973045")."""
    value = source.get(name)
    if value is None or value == "":
        if required:
            raise _invalid(name, f"{name} is required.")
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise _invalid(name, f"{name} must be an integer.")


def _raw_items(message: Mapping[str, Any], event: str) -> list[Any]:
    """The event's items: top-level ``List`` (JSON), or inside ``SubscribeMsg…Event`` (XML, and some JSON
    event pushes), itself holding ``List`` or the items; one object or an array of them."""
    raw = message.get("List")
    wrapper = ITEM_WRAPPERS[event]
    if raw is None and wrapper in message:
        raw = message[wrapper]
        if isinstance(raw, dict) and "List" in raw:
            raw = raw["List"]
    if raw is None or raw == "":
        raise _invalid("List", f"{event} has no List of items.")
    items = raw if isinstance(raw, list) else [raw]
    if not items or not all(isinstance(item, dict) for item in items):
        raise _invalid("List", "Each item of List must be an object.")
    return items


def _normal_item(event: str, item: Mapping[str, Any]) -> dict[str, Any]:
    template_id = _text(item, "TemplateId", max_length=TEMPLATE_ID_MAX)
    if event == SENT:
        return {
            "template_id": template_id,
            "msgid": _number(item, "MsgID"),
            "errcode": _number(item, "ErrorCode"),
            "errstatus": _text(item, "ErrorStatus", required=False),
        }
    normal = {"template_id": template_id, "status": _text(item, "SubscribeStatusString")}
    if event == POPUP:
        normal["popup_scene"] = _number(item, "PopupScene", required=False)
    return normal


def normalise(message: Mapping[str, Any]) -> WeChatEvent:
    """The one shape every pushed message takes here, whatever its format; 400 when a field WeChat
    always sends is missing or of the wrong kind."""
    msg_type = _text(message, "MsgType", max_length=EVENT_NAME_MAX)
    event = _text(message, "Event", max_length=EVENT_NAME_MAX) if msg_type == "event" else ""
    openid = _text(message, "FromUserName", max_length=OPENID_MAX)
    create_time = _number(message, "CreateTime")
    skip = set(HEADER_FIELDS)
    items: list[dict[str, Any]] = []
    if event in ITEM_WRAPPERS:
        items = [_normal_item(event, item) for item in _raw_items(message, event)]
        skip |= {"List", ITEM_WRAPPERS[event]}
    fields = {name: value for name, value in message.items() if name not in skip}
    return WeChatEvent(msg_type, event, openid, create_time, items, fields)


# --- processing ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Processed:
    event: InboundEvent
    duplicate: bool  # a retry of an event push already stored: nothing changed


def _on_popup(app: MiniProgram, event: WeChatEvent) -> dict[str, Any]:
    user = touch_user(app, event.openid)
    long_term = long_term_ids(subscribe_templates(app))
    accepted = [item["template_id"] for item in event.items if item["status"] == "accept"]
    credited: dict[str, int] = {}
    if app.credit_source == MiniProgram.CreditSource.EVENTS:
        one_time = [tid for tid in accepted if tid not in long_term]
        if one_time:
            credited = add_subscribe_credits(app, user, one_time, source=Credit.Source.EVENTS)
        standing = [tid for tid in accepted if tid in long_term]
        if standing:
            credited.update(start_long_term(app, user, standing, source=Credit.Source.EVENTS))
        # The events are the app's word on subscriptions (with "sdk" the SDK's report is, and tells).
        subscriptions_changed(app, user.openid, user.alias, _answers(event))
    outcome: dict[str, Any] = {"credited": credited, "credit_source": app.credit_source}
    # A reject of a long-term template in the popup turns it off in WeChat: whatever the credit_source.
    ending = [item["template_id"] for item in event.items if item["status"] == "reject"]
    ending = [tid for tid in ending if tid in long_term]
    if ending:
        outcome["ended"] = end_long_term(app, user, ending)
    return outcome


def _answers(event: WeChatEvent) -> dict[str, str]:
    return {item["template_id"]: item["status"] for item in event.items if item.get("status")}


def _on_change(app: MiniProgram, event: WeChatEvent) -> dict[str, Any]:
    rejected = dict.fromkeys(item["template_id"] for item in event.items if item["status"] == "reject")
    user = MiniUser.objects.filter(app=app, openid=event.openid).first()
    dropped = {tid: drop_subscribe_credits(app, user, tid) if user else 0 for tid in rejected}
    subscriptions_changed(app, event.openid, user.alias if user else None, _answers(event))
    return {"dropped": dropped}


def _on_sent(app: MiniProgram, event: WeChatEvent) -> dict[str, Any]:
    for item in event.items:
        subscribe_message_sent.send(
            sender=MiniProgram,
            app=app,
            openid=event.openid,
            template_id=item["template_id"],
            msgid=item["msgid"],
            errcode=item["errcode"],
            errstatus=item["errstatus"],
        )
    return {"reported": [item["msgid"] for item in event.items]}


HANDLERS: dict[str, Callable[[MiniProgram, WeChatEvent], dict[str, Any]]] = {
    POPUP: _on_popup,
    CHANGE: _on_change,
    SENT: _on_sent,
}


def process(app: MiniProgram, event: WeChatEvent) -> Processed:
    """Store the event and apply it, in one transaction; a retry of a stored event push changes nothing.

    The InboundEvent is inserted first: its unique (app, dedupe_key) makes a concurrent retry wait for
    this transaction and then fail, so credits are never applied twice.
    """
    key = event.dedupe_key
    stored = InboundEvent.objects.filter(app=app, dedupe_key=key).first()
    if stored is not None:
        return Processed(stored, duplicate=True)
    try:
        with transaction.atomic():
            record = InboundEvent.objects.create(
                app=app,
                source=InboundEvent.Source.WECHAT,
                event=(event.event or event.msg_type)[:EVENT_NAME_MAX],
                openid=event.openid,
                payload=event.as_payload(),
                dedupe_key=key,
            )
            handler = HANDLERS.get(event.event)
            if handler is not None:
                record.outcome = handler(app, event)
                record.save(update_fields=["outcome"])
    except IntegrityError:
        stored = InboundEvent.objects.filter(app=app, dedupe_key=key).first()
        if stored is None:  # not the dedupe constraint: a real error
            raise
        return Processed(stored, duplicate=True)
    return Processed(record, duplicate=False)


def receive(
    app: MiniProgram, query: Mapping[str, str], body: bytes, content_type: str = "", now: float | None = None
) -> Processed:
    """One POST from WeChat, end to end: verify and open it, normalise it, store and apply it."""
    try:
        event = normalise(open_message(app, query, body, content_type, now))
    except ApiError as error:
        log.info(
            "wechat event push refused: app=%s status=%s code=%s", app.appid, error.status_code, error.code
        )
        raise
    processed = process(app, event)
    log.info(
        "wechat event push: app=%s event=%s duplicate=%s",
        app.appid,
        event.event or event.msg_type,
        processed.duplicate,
    )
    return processed

"""A send request: the body of ``POST /t/{token}`` and ``POST /api/v1/templates/{id}/pushes``, validated
against the template (../shared/API.md "Sending"). Every fault is an ApiError 400 naming the field.
``to`` (openids, aliases, a segment, ``@all``) is ``pushes.addressing``'s.

``page`` and ``emphasis_keyword`` follow the same rules as a template's defaults: the catalogue's validators
(``templates_app.catalogue``) check both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from pushhub.api import ApiError
from pushhub.wechat import rules
from templates_app.catalogue import clean_emphasis_keyword, clean_page
from templates_app.models import Template
from templates_app.pushes.addressing import Addressing, parse_to

FORMID_VALUE_MAX = 200  # a keyword of a legacy template message
COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")
MINIPROGRAM_STATES = ("developer", "trial", "formal")
LANGS = ("zh_CN", "en_US", "zh_HK", "zh_TW")
SEND_AT_MAX_AHEAD = timedelta(days=90)
SEND_AT_SKEW = timedelta(seconds=5)  # "now" from a client with a slightly fast clock is not "the past"
REQUEST_FIELDS = (
    "to",
    "data",
    "page",
    "emphasis_keyword",
    "miniprogram_state",
    "lang",
    "send_at",
    "force",
    "hold",
)
HOLD_MAX_SECONDS = 7 * 24 * 3600  # API.md: 1..604800 (a week, a formId's whole life)


@dataclass
class SendRequest:
    to: Addressing
    data: dict
    page: str
    emphasis_keyword: str
    miniprogram_state: str
    lang: str
    send_at: datetime | None
    force: bool
    hold: int | None = None  # seconds recipients without a credit wait for one


def _bad(code: str, message: str, field: str | None = None):
    raise ApiError(400, code, message, field=field)


def parse_send_request(template: Template, body, now: datetime | None = None) -> SendRequest:
    """Validate a send body against the template (../shared/API.md "Sending"); ApiError 400 on any fault."""
    now = now or timezone.now()
    if not isinstance(body, dict):
        _bad("validation_error", "The body must be a JSON object.")
    unknown = [k for k in body if k not in REQUEST_FIELDS]
    if unknown:
        _bad("validation_error", f"Unknown field {unknown[0]!r}.", unknown[0])
    to = parse_to(body.get("to"))
    subscribe = template.kind == Template.Kind.SUBSCRIBE
    return SendRequest(
        to=to,
        data=parse_data(template, body.get("data")),
        page=_parse_page(body.get("page"), template),
        emphasis_keyword=_parse_emphasis(template, body.get("emphasis_keyword")),
        miniprogram_state=_parse_choice(body, "miniprogram_state", MINIPROGRAM_STATES, subscribe),
        lang=_parse_choice(body, "lang", LANGS, subscribe),
        send_at=_parse_send_at(body.get("send_at"), now),
        force=_parse_bool(body.get("force", False), "force"),
        hold=_parse_hold(body.get("hold"), to),
    )


def parse_data(template: Template, data) -> dict:
    """``data`` as an object of exactly the template's keys, or an array mapped onto them in order (what
    vPush users send). Returns ``{key: {"value": str, "color"?: str}}`` in the template's order."""
    keys = template.keys
    if data is None:
        data = {}
    if isinstance(data, list):
        if len(data) > len(keys):
            _bad(
                "unknown_field",
                f"The template has {len(keys)} fields; data has {len(data)} values.",
                f"data[{len(keys)}]",
            )
        data = dict(zip(keys, data, strict=False))
    if not isinstance(data, dict):
        _bad("validation_error", '"data" must be an object (or an array in field order).', "data")
    for key in data:
        if key not in keys:
            _bad(
                "unknown_field",
                f"The template has no field {key!r} (it has {', '.join(keys)}).",
                f"data.{key}",
            )
    for key in keys:
        if key not in data:
            _bad("missing_field", f"Give a value for {key!r}.", f"data.{key}")
    return {key: _parse_value(template, key, data[key]) for key in keys}


def _parse_value(template: Template, key: str, raw) -> dict:
    color = None
    if isinstance(raw, dict):
        extra = set(raw) - {"value", "color"}
        if "value" not in raw or extra:
            _bad("invalid_value", 'A field is a value or {"value": …, "color"?: "#rrggbb"}.', f"data.{key}")
        color, raw = raw.get("color"), raw["value"]
        if color is not None and (not isinstance(color, str) or not COLOR_RE.match(color)):
            _bad("invalid_value", "color must look like #173177.", f"data.{key}.color")
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        _bad("invalid_value", "A value must be a string or a number.", f"data.{key}")
    value = raw if isinstance(raw, str) else str(raw)
    if template.kind == Template.Kind.SUBSCRIBE:
        reason = rules.check_value(key, value)
        if reason:
            _bad("invalid_value", f"{key}: {reason}", f"data.{key}")
    elif len(value) > FORMID_VALUE_MAX:
        _bad("invalid_value", f"{key}: at most {FORMID_VALUE_MAX} characters.", f"data.{key}")
    return {"value": value, "color": color} if color else {"value": value}


def _parse_page(page, template: Template) -> str:
    """Absent: the template's default page. Given: the rule of a template's page (one leading / dropped)."""
    return template.page if page is None else clean_page(page)


def _parse_emphasis(template: Template, value) -> str:
    """Absent: the template's default. Given: the rule of a template's emphasis keyword ("" for none)."""
    if value is None:
        return template.emphasis_keyword
    return clean_emphasis_keyword(template.kind, template.fields, value, code="invalid_value")


def _parse_choice(body: dict, name: str, choices: tuple[str, ...], allowed: bool) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not allowed:
        _bad("validation_error", f"{name} is for subscribe templates only.", name)
    if value not in choices:
        _bad("validation_error", f"{name} must be one of {', '.join(choices)}.", name)
    return value


def _parse_send_at(value, now: datetime) -> datetime | None:
    if value is None:
        return None
    try:
        when = parse_datetime(value) if isinstance(value, str) else None
    except ValueError:  # well formed but not a time, e.g. 2026-02-30T01:00:00Z or an offset of +25:00
        when = None
    if when is None:
        _bad("validation_error", "send_at must be an ISO-8601 time, e.g. 2026-12-01T01:00:00Z.", "send_at")
    if when.tzinfo is None:
        _bad("validation_error", "send_at needs a timezone (end it with Z for UTC).", "send_at")
    if when < now - SEND_AT_SKEW:
        _bad("validation_error", "send_at is in the past.", "send_at")
    if when > now + SEND_AT_MAX_AHEAD:
        _bad("validation_error", "send_at is more than 90 days ahead.", "send_at")
    return when if when > now else None


def _parse_hold(value, to: Addressing) -> int | None:
    """``hold``: whole seconds, 1..604800, for listed recipients only. A broadcast reaches the users who
    have a credit when it runs; who else it would wait for is not a list anyone gave."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        _bad("validation_error", "hold must be a whole number of seconds.", "hold")
    if not 1 <= value <= HOLD_MAX_SECONDS:
        _bad("validation_error", f"hold must be 1..{HOLD_MAX_SECONDS} seconds (7 days).", "hold")
    if to.is_broadcast:
        _bad(
            "validation_error",
            "hold is for listed recipients (openids or aliases), not @all or a segment.",
            "hold",
        )
    return value


def _parse_bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        _bad("validation_error", f"{name} must be true or false.", name)
    return value


def ensure_sendable(template: Template) -> None:
    """410 for a template that is disabled or deleted (or whose app is gone)."""
    if template.status != Template.Status.ACTIVE or template.app.deleted_at is not None:
        raise ApiError(410, "template_gone", f"This template is {template.status}: it sends nothing.")

"""The WeChat side of the sandbox: what it answers on WeChat's own endpoints, as plain functions for the
WeChat-compatible views.

Credentials and access tokens (``issue_token``, ``issue_stable_token`` and its force-refresh limits),
``code2session``, the knobs applied to a call (``apply_knobs``: latency, ``-1``, timeouts), the token checks
and counting of token-taking calls (``authenticate``, ``handle_call``), and the business endpoints:
``send_template_message``, ``send_subscribe_message``, ``get_subscribe_templates``, ``list_formid_templates``
and the template deletes. Refusals raise :class:`~.errors.ErrcodeReply`, which the views answer like WeChat:
HTTP 200 ``{"errcode", "errmsg"}``.

Separate from ``services.py``, the control side (what a test, the dashboard's phone or ``_control/`` does to
the fake WeChat), because the two have different callers, refusal shapes and reasons to change. This module
imports ``services`` (``record_call``, event pushes, token validity), never the other way round.

Decrements of formIds and subscribe credits are single conditional UPDATEs (``uses_left > 0``), so concurrent
sends can never spend one twice, on PostgreSQL (row lock + re-check) and SQLite (one writer) alike.
"""

from __future__ import annotations

import hmac
import random
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from pushhub.wechat import rules

from . import event_push
from .errors import ErrcodeReply, argument_invalid
from .identifiers import BEIJING, new_access_token, new_session_key
from .models import (
    SandboxApp,
    SandboxFormId,
    SandboxLoginCode,
    SandboxMessage,
    SandboxSubscription,
    SandboxTemplate,
    SandboxToken,
    SandboxUser,
)
from .services import event_push_after_commit, not_invalidated, record_call

# A replaced plain token keeps working this long; a stable token is renewed in its last this-long.
TOKEN_GRACE = timedelta(minutes=5)
FORCE_REFRESH_MIN_INTERVAL = timedelta(seconds=30)
FORCE_REFRESH_PER_DAY = 20
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_\-]{16,512}")
MINIPROGRAM_STATES = {"developer", "trial", "formal"}
LANGS = {"zh_CN", "en_US", "zh_HK", "zh_TW"}


# --- credentials, access tokens, knobs -----------------------------------------------------------


def _credential_app(appid: str | None, secret: str | None) -> SandboxApp:
    """Check an appid/secret pair like WeChat: 41002/41004 missing, 40013 unknown appid, 40125 bad secret."""
    if not appid:
        raise ErrcodeReply(41002)
    if not secret:
        raise ErrcodeReply(41004)
    app = SandboxApp.objects.filter(appid=appid).first()
    if app is None:
        raise ErrcodeReply(40013)
    if not hmac.compare_digest(app.secret.encode(), secret.encode()):
        raise ErrcodeReply(40125)
    _apply_latency_and_errors(app)
    return app


def _create_token(app: SandboxApp, family: str, now: datetime, forced: bool = False) -> SandboxToken:
    return SandboxToken.objects.create(
        app=app,
        token=new_access_token(),
        family=family,
        forced=forced,
        issued_at=now,
        expires_at=now + timedelta(seconds=app.token_ttl),
    )


def _token_answer(token: SandboxToken, now: datetime) -> dict[str, Any]:
    remaining = int((token.expires_at - now).total_seconds())
    return {"access_token": token.token, "expires_in": max(remaining, 0)}


def issue_token(appid: str | None, secret: str | None, grant_type: str | None) -> dict[str, Any]:
    """``cgi-bin/token``: always a new token; the previous plain ones keep working 5 more minutes."""
    if grant_type != "client_credential":
        raise ErrcodeReply(40002)
    app = _credential_app(appid, secret)
    now = timezone.now()
    with transaction.atomic():
        SandboxToken.objects.filter(app=app, family=SandboxToken.PLAIN, invalidated_at__isnull=True).update(
            invalidated_at=now + TOKEN_GRACE
        )
        token = _create_token(app, SandboxToken.PLAIN, now)
    return _token_answer(token, now)


def _check_force_refresh_limits(app: SandboxApp, now: datetime) -> None:
    """stable_token force_refresh: at most 20 per (Beijing) day, at least 30 s apart."""
    if not app.enforce_force_refresh_limits:
        return
    forced = SandboxToken.objects.filter(app=app, family=SandboxToken.STABLE, forced=True)
    last = forced.order_by("-issued_at").values_list("issued_at", flat=True).first()
    if last and now - last < FORCE_REFRESH_MIN_INTERVAL:
        raise ErrcodeReply(45011)
    day_start = now.astimezone(BEIJING).replace(hour=0, minute=0, second=0, microsecond=0)
    if forced.filter(issued_at__gte=day_start).count() >= FORCE_REFRESH_PER_DAY:
        raise ErrcodeReply(45009)


def issue_stable_token(
    appid: str | None, secret: str | None, grant_type: str | None, force_refresh: bool = False
) -> dict[str, Any]:
    """``cgi-bin/stable_token``: the same token while it has > 5 minutes left, else a new one beside it.

    ``force_refresh`` replaces it at once (the old one answers 40001), within the rate limits. Plain tokens
    are never touched. The app row is locked so concurrent callers agree on one token.
    """
    if grant_type != "client_credential":
        raise ErrcodeReply(40002)
    app = _credential_app(appid, secret)
    with transaction.atomic():
        SandboxApp.objects.select_for_update().filter(pk=app.pk).exists()
        now = timezone.now()
        stable = SandboxToken.objects.filter(app=app, family=SandboxToken.STABLE)
        if force_refresh:
            _check_force_refresh_limits(app, now)
            stable.filter(not_invalidated(now)).update(invalidated_at=now)
            return _token_answer(_create_token(app, SandboxToken.STABLE, now, forced=True), now)
        current = (
            stable.filter(not_invalidated(now), expires_at__gt=now).order_by("-issued_at", "-id").first()
        )
        if current is not None and current.expires_at - now > TOKEN_GRACE:
            return _token_answer(current, now)
        return _token_answer(_create_token(app, SandboxToken.STABLE, now), now)


def code2session(
    appid: str | None, secret: str | None, js_code: str | None, grant_type: str | None
) -> dict[str, Any]:
    """``sns/jscode2session``: a login code becomes the user's openid (+ unionid) once, within 5 minutes."""
    if grant_type not in (None, "", "authorization_code"):
        raise ErrcodeReply(40002)
    app = _credential_app(appid, secret)
    if not js_code:
        raise ErrcodeReply(41008)
    now = timezone.now()
    login = SandboxLoginCode.objects.filter(app=app, code=js_code).first()
    if login is None:
        raise ErrcodeReply(40029)
    if login.used_at is not None:
        raise ErrcodeReply(40163)
    if login.expires_at <= now:
        raise ErrcodeReply(40029)
    if not SandboxLoginCode.objects.filter(pk=login.pk, used_at__isnull=True).update(used_at=now):
        raise ErrcodeReply(40163)
    answer = {"openid": login.openid, "session_key": new_session_key()}
    unionid = (
        SandboxUser.objects.filter(app=app, openid=login.openid).values_list("unionid", flat=True).first()
    )
    if unionid:
        answer["unionid"] = unionid
    return answer


def authenticate(access_token: str | None) -> SandboxApp:
    """The app an access_token belongs to, checked in WeChat's order: 41001, 40014, 40001, 42001."""
    if not access_token:
        raise ErrcodeReply(41001)
    if not TOKEN_SHAPE.fullmatch(access_token):
        raise ErrcodeReply(40014)
    token = SandboxToken.objects.select_related("app").filter(token=access_token).first()
    now = timezone.now()
    if token is None or (token.invalidated_at is not None and token.invalidated_at <= now):
        raise ErrcodeReply(40001)
    if token.expires_at <= now:
        raise ErrcodeReply(42001)
    return token.app


def _apply_latency_and_errors(app: SandboxApp, sleep: Callable[[float], None] = time.sleep) -> None:
    """Latency and ``-1`` hit every call of a known app, token fetches and jscode2session included
    (WeChat answers -1 there too). The timeout knob is only for token-taking calls (apply_knobs)."""
    if app.latency_ms:
        sleep(app.latency_ms / 1000)
    if app.error_rate and random.random() < app.error_rate:
        raise ErrcodeReply(-1)


def apply_knobs(app: SandboxApp, sleep: Callable[[float], None] = time.sleep) -> float:
    """Misbehave as configured before the real work: latency, then maybe ``-1``.

    Returns how long to hold the answer back after doing the work (the timeout knob: the request took
    effect but the caller gives up waiting, WeChat's ambiguous case).
    """
    _apply_latency_and_errors(app, sleep)
    if app.timeout_rate and random.random() < app.timeout_rate:
        return app.timeout_seconds
    return 0.0


def handle_call(
    access_token: str | None, endpoint: str, operation: Callable[[SandboxApp], dict[str, Any]]
) -> tuple[dict[str, Any], float]:
    """Run one token-taking call: authenticate, apply the knobs, run it, count the outcome.

    Returns the answer body and the seconds to wait before sending it.
    """
    app = None
    try:
        app = authenticate(access_token)
        delay = apply_knobs(app)
        body = operation(app)
    except ErrcodeReply as reply:
        if app is not None:
            record_call(app, endpoint, reply.errcode)
        return reply.body(), 0.0
    record_call(app, endpoint, body.get("errcode", 0))
    return body, delay


# --- business endpoints --------------------------------------------------------------------------


def _check_page(page: Any) -> None:
    """41030: a page is an in-app path like ``pages/x?y=1``: no leading ``/``, no whitespace."""
    if not isinstance(page, str) or page.startswith("/") or any(ch.isspace() for ch in page):
        raise ErrcodeReply(41030)


def _known_user(app: SandboxApp, openid: Any) -> str:
    if not isinstance(openid, str) or not SandboxUser.objects.filter(app=app, openid=openid).exists():
        raise ErrcodeReply(40003)
    return openid


def _template(app: SandboxApp, kind: str, template_id: Any) -> SandboxTemplate:
    template = None
    if isinstance(template_id, str) and template_id:
        template = SandboxTemplate.objects.filter(app=app, kind=kind, template_id=template_id).first()
    if template is None:
        raise ErrcodeReply(40037)
    return template


def _usable_formid(app: SandboxApp, openid: str, form_id: Any, now: datetime) -> SandboxFormId:
    """41028 unless this user's own, unexpired formId; 41029 if it has no sends left."""
    formid = None
    if isinstance(form_id, str) and form_id:
        formid = SandboxFormId.objects.filter(app=app, value=form_id).first()
    if formid is None or formid.openid != openid or formid.expires_at <= now:
        raise ErrcodeReply(41028)
    if formid.uses_left <= 0:
        raise ErrcodeReply(41029)
    return formid


def send_template_message(app: SandboxApp, payload: dict[str, Any]) -> dict[str, Any]:
    """``cgi-bin/message/wxopen/template/send``: spend one use of the user's formId, deliver to the inbox."""
    if app.formid_retired:
        raise ErrcodeReply(45103)
    template = _template(app, SandboxTemplate.FORMID, payload.get("template_id"))
    openid = _known_user(app, payload.get("touser"))
    now = timezone.now()
    formid = _usable_formid(app, openid, payload.get("form_id"), now)
    page = payload.get("page") or ""
    _check_page(page)
    data = payload.get("data") or {}
    if not isinstance(data, dict):
        raise ErrcodeReply(47001)
    with transaction.atomic():
        spent = SandboxFormId.objects.filter(pk=formid.pk, uses_left__gt=0).update(
            uses_left=F("uses_left") - 1
        )
        if not spent:
            raise ErrcodeReply(41029)
        SandboxMessage.objects.create(
            app=app,
            openid=openid,
            kind=SandboxTemplate.FORMID,
            template_id=template.template_id,
            title=template.title,
            data=data,
            page=page,
            form_id=formid.value,
            emphasis_keyword=str(payload.get("emphasis_keyword") or ""),
            created_at=now,
        )
    return {"errcode": 0, "errmsg": "ok"}


def _check_subscribe_data(template: SandboxTemplate, data: Any) -> dict[str, Any]:
    """47003 for the first template key that is missing or breaks WeChat's value rules."""
    if not isinstance(data, dict):
        raise ErrcodeReply(47001)
    for field in rules.parse_template_fields(template.content):
        key = field["key"]
        entry = data.get(key)
        value = entry.get("value") if isinstance(entry, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or rules.check_value(key, value) is not None:
            raise argument_invalid(f"data.{key}.value")
    return data


def _has_credit(app: SandboxApp, openid: str, template_id: str) -> SandboxSubscription:
    subscription = SandboxSubscription.objects.filter(
        app=app, openid=openid, template_id=template_id, credits__gt=0
    ).first()
    if subscription is None:
        raise ErrcodeReply(43101)
    return subscription


def send_subscribe_message(app: SandboxApp, payload: dict[str, Any]) -> dict[str, Any]:
    """``cgi-bin/message/subscribe/send``: spend one accepted subscription (a long-term template's stays
    on: any number of sends while the user has it on, 43101 once they turned it off), deliver, answer a
    msgid."""
    template = _template(app, SandboxTemplate.SUBSCRIBE, payload.get("template_id"))
    openid = _known_user(app, payload.get("touser"))
    data = _check_subscribe_data(template, payload.get("data") or {})
    subscription = _has_credit(app, openid, template.template_id)
    page = payload.get("page") or ""
    _check_page(page)
    state = payload.get("miniprogram_state") or "formal"
    if state not in MINIPROGRAM_STATES:
        raise argument_invalid("miniprogram_state")
    lang = payload.get("lang") or "zh_CN"
    if lang not in LANGS:
        raise argument_invalid("lang")
    with transaction.atomic():
        still_on = SandboxSubscription.objects.filter(pk=subscription.pk, credits__gt=0)
        if template.type == SandboxTemplate.LONG_TERM:
            spent = still_on.exists()
        else:
            spent = still_on.update(credits=F("credits") - 1)
        if not spent:
            raise ErrcodeReply(43101)
        message = SandboxMessage.objects.create(
            app=app,
            openid=openid,
            kind=SandboxTemplate.SUBSCRIBE,
            template_id=template.template_id,
            title=template.title,
            data=data,
            page=page,
            miniprogram_state=state,
            lang=lang,
        )
    if app.push_sent_events:
        event_push_after_commit(app, event_push.sent_event(app, openid, template.template_id, message.msgid))
    return {"errcode": 0, "errmsg": "ok", "msgid": message.msgid}


def get_subscribe_templates(app: SandboxApp) -> dict[str, Any]:
    """``wxaapi/newtmpl/gettemplate``: the app's subscribe templates."""
    templates = SandboxTemplate.objects.filter(app=app, kind=SandboxTemplate.SUBSCRIBE).order_by("id")
    data = [
        {
            "priTmplId": t.template_id,
            "title": t.title,
            "content": t.content,
            "example": t.example,
            "type": t.type,
        }
        for t in templates
    ]
    return {"errcode": 0, "errmsg": "ok", "data": data}


def _int_argument(payload: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = payload.get(name, default)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise argument_invalid(name)
    return value


def list_formid_templates(app: SandboxApp, payload: dict[str, Any]) -> dict[str, Any]:
    """``cgi-bin/wxopen/template/list`` ``{offset, count ≤ 20}``: the app's formId templates."""
    offset = _int_argument(payload, "offset", 0, 0, 10_000)
    count = _int_argument(payload, "count", 20, 1, 20)
    templates = SandboxTemplate.objects.filter(app=app, kind=SandboxTemplate.FORMID).order_by("id")
    rows = [
        {"template_id": t.template_id, "title": t.title, "content": t.content, "example": t.example}
        for t in templates[offset : offset + count]
    ]
    return {"errcode": 0, "errmsg": "ok", "list": rows}


def _delete_by_wechat(app: SandboxApp, kind: str, template_id: Any) -> dict[str, Any]:
    deleted = 0
    if isinstance(template_id, str) and template_id:
        deleted, _ = SandboxTemplate.objects.filter(app=app, kind=kind, template_id=template_id).delete()
    if not deleted:
        raise ErrcodeReply(40037)
    return {"errcode": 0, "errmsg": "ok"}


def delete_subscribe_template(app: SandboxApp, payload: dict[str, Any]) -> dict[str, Any]:
    """``wxaapi/newtmpl/deltemplate`` ``{priTmplId}``."""
    return _delete_by_wechat(app, SandboxTemplate.SUBSCRIBE, payload.get("priTmplId"))


def delete_formid_template(app: SandboxApp, payload: dict[str, Any]) -> dict[str, Any]:
    """``cgi-bin/wxopen/template/del`` ``{template_id}``."""
    return _delete_by_wechat(app, SandboxTemplate.FORMID, payload.get("template_id"))

"""Every state rule of the WeChat sandbox, as plain functions.

Two audiences call these:
- the WeChat-compatible views (``views.py``), through the functions that raise :class:`ErrcodeReply`
  (``issue_token``, ``issue_stable_token``, ``code2session``, ``handle_call`` + ``send_*`` …);
- the control endpoints and PushHub itself in-process (demo loader, dashboard "simulated phone"), through the
  functions that raise :class:`SandboxError` (``register_app``, ``create_user``, ``issue_formids`` …).

Like WeChat, the sandbox pushes events to the app's 消息推送 URL once ``configure_events`` set one:
``subscribe_msg_popup_event`` when the user answers a subscription popup (``accept_subscriptions``),
``subscribe_msg_change_event`` when they turn a template off (``turn_off_subscription``) and, with the
``push_sent_events`` knob, ``subscribe_msg_sent_event`` after a subscribe send. Event pushes run after the
sandbox's own transaction commits, synchronously (see ``event_push.py``); a failed event push is logged and
counted in ``stats``, never raised.

Decrements of formIds and subscribe credits are single conditional UPDATEs (``uses_left > 0``), so concurrent
sends can never spend one twice, on PostgreSQL (row lock + re-check) and SQLite (one writer) alike.
"""

from __future__ import annotations

import dataclasses
import hmac
import random
import re
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, models, transaction
from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from pushhub.wechat import msgcrypto, rules

from . import event_push
from .errors import ErrcodeReply, SandboxError, argument_invalid
from .identifiers import (
    BEIJING,
    _new_access_token,
    _new_formid_value,
    _new_openid,
    _new_session_key,
    _new_template_id,
)
from .models import (
    FORMID_LIFETIME,
    LOGIN_CODE_LIFETIME,
    SandboxApp,
    SandboxCallCount,
    SandboxFormId,
    SandboxLoginCode,
    SandboxMessage,
    SandboxSubscription,
    SandboxTemplate,
    SandboxToken,
    SandboxUser,
)

# A replaced plain token keeps working this long; a stable token is renewed in its last this-long.
TOKEN_GRACE = timedelta(minutes=5)
FORCE_REFRESH_MIN_INTERVAL = timedelta(seconds=30)
FORCE_REFRESH_PER_DAY = 20
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_\-]{16,512}")
ID_SHAPE = re.compile(r"[A-Za-z0-9_\-]{1,64}")
TEMPLATE_ID_SHAPE = re.compile(r"[A-Za-z0-9_\-]{1,128}")
MINIPROGRAM_STATES = {"developer", "trial", "formal"}
LANGS = {"zh_CN", "en_US", "zh_HK", "zh_TW"}
SEND_ENDPOINTS = ("template_send", "subscribe_send")
# Event pushes are counted like calls under this name: errcode 0 delivered, else the HTTP status or -1.
EVENT_PUSH_ENDPOINT = "event_push"
EVENTS_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9]{3,32}")  # WeChat's Token: 3-32 letters or digits
_events_url_validator = URLValidator(schemes=["http", "https"])


def _invalid(field: str, message: str) -> SandboxError:
    return SandboxError(400, "validation_error", message, field)


# --- apps and knobs ------------------------------------------------------------------------------


def get_app(appid: str) -> SandboxApp:
    """The sandbox app, or a 404 SandboxError."""
    app = SandboxApp.objects.filter(appid=appid).first()
    if app is None:
        raise SandboxError(404, "not_found", f"No sandbox app {appid!r}.")
    return app


def upsert_app(appid: str, secret: str) -> tuple[SandboxApp, bool]:
    """Create the app or replace its secret; (app, created). Knobs of an existing app are kept."""
    if not isinstance(appid, str) or not ID_SHAPE.fullmatch(appid):
        raise _invalid("appid", "appid must be 1-64 letters, digits, '_' or '-'.")
    if not isinstance(secret, str) or not 1 <= len(secret) <= 128:
        raise _invalid("secret", "secret must be a string of 1-128 characters.")
    try:
        with transaction.atomic():
            app, created = SandboxApp.objects.get_or_create(appid=appid, defaults={"secret": secret})
    except IntegrityError:  # created concurrently by someone else
        app, created = SandboxApp.objects.get(appid=appid), False
    if not created and app.secret != secret:
        app.secret = secret
        app.save(update_fields=["secret"])
    return app, created


def register_app(appid: str, secret: str) -> SandboxApp:
    """Make ``appid``/``secret`` a valid WeChat credential pair in the sandbox (idempotent)."""
    return upsert_app(appid, secret)[0]


def delete_app(appid: str) -> None:
    """Forget the app and everything it holds (tokens, users, formIds, templates, inbox)."""
    get_app(appid).delete()


def knobs(app: SandboxApp) -> dict[str, Any]:
    return {name: getattr(app, name) for name in SandboxApp.KNOBS}


def _check_number_knob(name: str, value: Any, low: float, high: float, integer: bool) -> float | int:
    valid_type = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, valid_type) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise _invalid(name, f"{name} must be {kind} from {low:g} to {high:g}.")
    return value if integer else float(value)


_NUMBER_KNOBS = {
    # name: (low, high, integer)
    "latency_ms": (0, 60_000, True),
    "error_rate": (0.0, 1.0, False),
    "timeout_rate": (0.0, 1.0, False),
    "timeout_seconds": (0.0, 600.0, False),
    "token_ttl": (1, 7 * 86_400, True),
}


def set_knobs(appid: str, **changes: Any) -> SandboxApp:
    """Change some knobs; unknown names and out-of-range values are refused before anything is saved."""
    app = get_app(appid)
    for name, value in changes.items():
        if name in _NUMBER_KNOBS:
            value = _check_number_knob(name, value, *_NUMBER_KNOBS[name])
        elif name in ("formid_retired", "enforce_force_refresh_limits", "push_sent_events"):
            if not isinstance(value, bool):
                raise _invalid(name, f"{name} must be true or false.")
        else:
            raise _invalid(name, f"Unknown knob {name!r}; knobs are {', '.join(SandboxApp.KNOBS)}.")
        setattr(app, name, value)
    if changes:
        app.save(update_fields=list(changes))
    return app


def reset_tokens(appid: str) -> int:
    """Invalidate every token of the app at once (a 40001 storm on demand); returns how many were live."""
    app = get_app(appid)
    now = timezone.now()
    return SandboxToken.objects.filter(app=app).filter(_not_invalidated(now)).update(invalidated_at=now)


# --- users, logins, formIds, subscriptions -------------------------------------------------------


def upsert_user(
    appid: str, openid: str | None = None, unionid: str | None = None
) -> tuple[SandboxUser, bool]:
    """A WeChat user of the app, (user, created); an existing openid is kept (its unionid set if given)."""
    app = get_app(appid)
    if openid is not None and (not isinstance(openid, str) or not ID_SHAPE.fullmatch(openid)):
        raise _invalid("openid", "openid must be 1-64 letters, digits, '_' or '-'.")
    if unionid is not None and (not isinstance(unionid, str) or not ID_SHAPE.fullmatch(unionid)):
        raise _invalid("unionid", "unionid must be 1-64 letters, digits, '_' or '-'.")
    openid = openid or _new_openid(app.appid)
    try:
        with transaction.atomic():
            user, created = SandboxUser.objects.get_or_create(
                app=app, openid=openid, defaults={"unionid": unionid or ""}
            )
    except IntegrityError:  # created concurrently
        user, created = SandboxUser.objects.get(app=app, openid=openid), False
    if unionid and user.unionid != unionid:
        user.unionid = unionid
        user.save(update_fields=["unionid"])
    return user, created


def create_user(appid: str, openid: str | None = None, unionid: str | None = None) -> SandboxUser:
    """A user of the app (a realistic openid is generated when none is given); idempotent per openid."""
    return upsert_user(appid, openid, unionid)[0]


def get_user(appid: str, openid: str) -> SandboxUser:
    """The user, or a 404 SandboxError."""
    user = SandboxUser.objects.select_related("app").filter(app__appid=appid, openid=openid).first()
    if user is None:
        get_app(appid)
        raise SandboxError(404, "not_found", f"No user {openid!r} in sandbox app {appid!r}.")
    return user


def list_users(appid: str) -> list[SandboxUser]:
    return list(SandboxUser.objects.filter(app=get_app(appid)).order_by("id"))


def issue_login_code(appid: str, openid: str) -> str:
    """What ``wx.login()`` gives this user: a code jscode2session accepts once, within 5 minutes."""
    user = get_user(appid, openid)
    code = secrets.token_urlsafe(24)
    SandboxLoginCode.objects.create(
        app=user.app, code=code, openid=user.openid, expires_at=timezone.now() + LOGIN_CODE_LIFETIME
    )
    return code


def issue_formids(
    appid: str, openid: str, count: int = 1, kind: str = SandboxFormId.FORMID, age_seconds: int = 0
) -> list[str]:
    """formIds (1 send each) or prepay_ids (3 sends) for this user, as form submits or payments would give.

    ``age_seconds`` backdates them, so tests can make formIds that are about to expire or already have.
    """
    user = get_user(appid, openid)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100:
        raise _invalid("count", "count must be an integer from 1 to 100.")
    if kind not in SandboxFormId.USES:
        raise _invalid("kind", "kind must be 'formid' or 'prepay'.")
    if isinstance(age_seconds, bool) or not isinstance(age_seconds, int | float) or age_seconds < 0:
        raise _invalid("age_seconds", "age_seconds must be a number ≥ 0.")
    issued_at = timezone.now() - timedelta(seconds=age_seconds)
    rows = [
        SandboxFormId(
            app=user.app,
            openid=user.openid,
            value=_new_formid_value(kind, issued_at),
            kind=kind,
            uses_left=SandboxFormId.USES[kind],
            issued_at=issued_at,
        )
        for _ in range(count)
    ]
    SandboxFormId.objects.bulk_create(rows)
    return [row.value for row in rows]


def _increment(model: type[models.Model], field: str, **lookup: Any) -> None:
    """+1 on a counter row, creating it on first use; safe against a concurrent first increment."""
    match = model.objects.filter(**lookup)
    if match.update(**{field: F(field) + 1}):
        return
    try:
        with transaction.atomic():
            model.objects.create(**lookup, **{field: 1})
    except IntegrityError:
        match.update(**{field: F(field) + 1})


def _add_credit(app: SandboxApp, openid: str, template_id: str) -> None:
    """+1 send of a template for a user."""
    _increment(SandboxSubscription, "credits", app=app, openid=openid, template_id=template_id)


def accept_subscriptions(appid: str, openid: str, results: dict[str, str]) -> dict[str, str]:
    """What the user answered in ``wx.requestSubscribeMessage``; each ``accept`` adds one send.

    Returns the call's result object: ``errMsg`` plus, per id, the answer, or ``filter`` for ids that are not
    subscribe templates of this app (WeChat filters them silently).
    """
    user = get_user(appid, openid)
    if not isinstance(results, dict) or not results:
        raise _invalid("results", "results must map template ids to 'accept', 'reject' or 'ban'.")
    for template_id, answer in results.items():
        if answer not in ("accept", "reject", "ban"):
            raise _invalid(f"results.{template_id}", "Each answer must be 'accept', 'reject' or 'ban'.")
    known = set(
        SandboxTemplate.objects.filter(
            app=user.app, kind=SandboxTemplate.SUBSCRIBE, template_id__in=list(results)
        ).values_list("template_id", flat=True)
    )
    answered: dict[str, str] = {"errMsg": "requestSubscribeMessage:ok"}
    shown: dict[str, str] = {}  # what the popup showed and the user tapped: WeChat pushes these
    for template_id, answer in results.items():
        if template_id not in known:
            answered[template_id] = "filter"
            continue
        if answer == "accept":
            _add_credit(user.app, user.openid, template_id)
        if answer in ("accept", "reject"):
            shown[template_id] = answer
        answered[template_id] = answer
    if shown:
        _event_push_after_commit(user.app, event_push.popup_event(user.app, user.openid, shown))
    return answered


def turn_off_subscription(appid: str, openid: str, template_id: str) -> int:
    """The user turned a subscribe template off in the mini-program's settings: its sends are gone, and
    WeChat pushes ``subscribe_msg_change_event`` with ``reject``. Returns how many sends were dropped."""
    user = get_user(appid, openid)
    template = get_template(appid, template_id)
    if template.kind != SandboxTemplate.SUBSCRIBE:
        raise SandboxError(
            404, "not_found", f"No subscribe template {template_id!r} in sandbox app {appid!r}."
        )
    subscriptions = SandboxSubscription.objects.filter(
        app=user.app, openid=user.openid, template_id=template_id
    )
    with transaction.atomic():
        dropped = sum(subscriptions.select_for_update().values_list("credits", flat=True))
        subscriptions.update(credits=0)
    _event_push_after_commit(user.app, event_push.change_event(user.app, user.openid, template_id, "reject"))
    return dropped


# --- event push (消息推送) ------------------------------------------------------------------------


def configure_events(
    appid: str, url: str, token: str, aes_key: str, mode: str = "safe", fmt: str = "json"
) -> SandboxApp:
    """The app's 消息推送配置: events go to ``url``, signed with ``token`` and, in ``safe`` mode, encrypted
    with the EncodingAESKey ``aes_key`` (43 characters), as ``json`` or ``xml``. An empty ``url`` stops the
    event pushes. Unlike WeChat, any port is allowed (test servers)."""
    app = get_app(appid)
    if not isinstance(url, str) or len(url) > 500:
        raise _invalid("url", "url must be an http(s) URL of at most 500 characters, or empty.")
    if url:
        try:
            _events_url_validator(url)
        except ValidationError:
            raise _invalid("url", "url must be an http(s) URL of at most 500 characters, or empty.") from None
        if not isinstance(token, str) or not EVENTS_TOKEN_SHAPE.fullmatch(token):
            raise _invalid("token", "token must be 3-32 letters or digits.")
    if mode not in (SandboxApp.PLAINTEXT, SandboxApp.SAFE):
        raise _invalid("mode", "mode must be 'plaintext' or 'safe'.")
    if fmt not in (SandboxApp.JSON, SandboxApp.XML):
        raise _invalid("format", "format must be 'json' or 'xml'.")
    aes_key = aes_key or ""
    needs_key = url and mode == SandboxApp.SAFE
    if not isinstance(aes_key, str) or ((aes_key or needs_key) and not msgcrypto.AES_KEY_RE.match(aes_key)):
        raise _invalid("aes_key", "aes_key (EncodingAESKey) must be 43 letters or digits.")
    app.events_url = url
    app.events_token = token if url else ""
    app.events_aes_key = aes_key if url else ""
    app.events_mode = mode
    app.events_format = fmt
    app.save(update_fields=["events_url", "events_token", "events_aes_key", "events_mode", "events_format"])
    return app


def events_config(app: SandboxApp) -> dict[str, Any]:
    """The app's 消息推送配置 without its secrets (the Token and the EncodingAESKey)."""
    return {
        "appid": app.appid,
        "url": app.events_url or None,
        "mode": app.events_mode,
        "format": app.events_format,
        "push_sent_events": app.push_sent_events,
    }


def _event_time(app: SandboxApp, openid: str) -> int:
    """CreateTime for the next event about this user: now, or one second after their previous event.

    Receivers (PushHub among them) tell WeChat's retries from new events by FromUserName + CreateTime +
    content; a person cannot answer two subscription popups within a second, but a script driving the
    sandbox can, and those events must not look like retries of each other.
    """
    now = int(time.time())
    with transaction.atomic():
        user = SandboxUser.objects.select_for_update().filter(app=app, openid=openid).first()
        if user is None:
            return now
        stamp = max(now, user.last_event_time + 1)
        SandboxUser.objects.filter(pk=user.pk).update(last_event_time=stamp)
    return stamp


def _event_push_after_commit(app: SandboxApp, event: event_push.Event) -> None:
    """Deliver the event once the sandbox's own writes are committed (at once outside a transaction), if the
    app has an events URL."""
    if app.events_url:
        event = dataclasses.replace(event, create_time=_event_time(app, event.openid))
        transaction.on_commit(lambda: _deliver_event(app, event), robust=True)


def _deliver_event(app: SandboxApp, event: event_push.Event) -> None:
    status = event_push.deliver(app, event)
    record_call(app, EVENT_PUSH_ENDPOINT, 0 if status == 200 else status)


def user_credits(appid: str, openid: str) -> dict[str, Any]:
    """What this user can still be sent: usable formIds/prepay_ids and subscribe credits per template."""
    user = get_user(appid, openid)
    fresh_after = timezone.now() - FORMID_LIFETIME
    formids = SandboxFormId.objects.filter(
        app=user.app, openid=user.openid, uses_left__gt=0, issued_at__gt=fresh_after
    )
    by_kind = dict(formids.values_list("kind").annotate(total=Sum("uses_left")))
    subscriptions = SandboxSubscription.objects.filter(app=user.app, openid=user.openid, credits__gt=0)
    return {
        "formid_sends": by_kind.get(SandboxFormId.FORMID, 0),
        "prepay_sends": by_kind.get(SandboxFormId.PREPAY, 0),
        "subscriptions": dict(subscriptions.values_list("template_id", "credits")),
    }


# --- templates -----------------------------------------------------------------------------------


def upsert_template(
    appid: str,
    *,
    kind: str,
    title: str,
    content: str,
    template_id: str | None = None,
    example: str = "",
    type: int = 2,
) -> tuple[SandboxTemplate, bool]:
    """Create (or, for a known template_id, replace) a template; (template, created)."""
    app = get_app(appid)
    if kind not in (SandboxTemplate.FORMID, SandboxTemplate.SUBSCRIBE):
        raise _invalid("kind", "kind must be 'formid' or 'subscribe'.")
    if not isinstance(title, str) or not 1 <= len(title) <= 100:
        raise _invalid("title", "title must be a string of 1-100 characters.")
    if not isinstance(content, str) or not rules.parse_template_fields(content):
        raise _invalid("content", "content must contain fields like '金额:{{amount1.DATA}}'.")
    if template_id is not None and (
        not isinstance(template_id, str) or not TEMPLATE_ID_SHAPE.fullmatch(template_id)
    ):
        raise _invalid("template_id", "template_id must be 1-128 letters, digits, '_' or '-'.")
    if not isinstance(example, str):
        raise _invalid("example", "example must be a string.")
    if type not in (2, 3) or isinstance(type, bool):
        raise _invalid("type", "type must be 2 (one-time) or 3 (long-term).")
    fields = {"kind": kind, "title": title, "content": content, "example": example, "type": type}
    template, created = SandboxTemplate.objects.update_or_create(
        app=app, template_id=template_id or _new_template_id(), defaults=fields
    )
    return template, created


def add_template(
    appid: str,
    *,
    kind: str,
    title: str,
    content: str,
    template_id: str | None = None,
    example: str = "",
    type: int = 2,
) -> SandboxTemplate:
    """Put a template in the app's WeChat account (generating a realistic id if none is given)."""
    return upsert_template(
        appid, kind=kind, title=title, content=content, template_id=template_id, example=example, type=type
    )[0]


def list_templates(appid: str, kind: str | None = None) -> list[SandboxTemplate]:
    templates = SandboxTemplate.objects.filter(app=get_app(appid)).order_by("id")
    return list(templates.filter(kind=kind) if kind else templates)


def get_template(appid: str, template_id: str) -> SandboxTemplate:
    """The template, or a 404 SandboxError."""
    template = SandboxTemplate.objects.filter(app=get_app(appid), template_id=template_id).first()
    if template is None:
        raise SandboxError(404, "not_found", f"No template {template_id!r} in sandbox app {appid!r}.")
    return template


def delete_template(appid: str, template_id: str) -> None:
    """Remove a template; sends to it answer 40037 from then on."""
    deleted, _ = SandboxTemplate.objects.filter(app=get_app(appid), template_id=template_id).delete()
    if not deleted:
        raise SandboxError(404, "not_found", f"No template {template_id!r} in sandbox app {appid!r}.")


# --- inbox and stats -----------------------------------------------------------------------------


def inbox(
    appid: str, openid: str | None = None, after_id: int | None = None, limit: int = 100
) -> list[SandboxMessage]:
    """Accepted messages, oldest first: the ``limit`` after ``after_id``, or without it the latest ``limit``."""
    messages = SandboxMessage.objects.filter(app=get_app(appid))
    if openid:
        messages = messages.filter(openid=openid)
    if after_id is not None:
        return list(messages.filter(id__gt=after_id).order_by("id")[:limit])
    return list(reversed(messages.order_by("-id")[:limit]))


def stats(appid: str) -> dict[str, Any]:
    """Counters for dashboards and benchmarks: tokens issued, send outcomes by errcode, inbox size."""
    app = get_app(appid)
    tokens = dict(app.tokens.values_list("family").annotate(n=Count("id")))
    calls: dict[str, dict[str, int]] = {}
    for endpoint, errcode, count in app.call_counts.values_list("endpoint", "errcode", "count"):
        calls.setdefault(endpoint, {})[str(errcode)] = count
    event_pushes = calls.pop(EVENT_PUSH_ENDPOINT, {})
    sends: dict[str, int] = {}
    for endpoint in SEND_ENDPOINTS:
        for errcode, count in calls.get(endpoint, {}).items():
            sends[errcode] = sends.get(errcode, 0) + count
    return {
        "appid": app.appid,
        "tokens_issued": sum(tokens.values()),
        "tokens_issued_by_family": {family: tokens.get(family, 0) for family in ("stable", "plain")},
        "sends_ok": sends.get("0", 0),
        "sends_failed": sum(count for errcode, count in sends.items() if errcode != "0"),
        "sends_by_errcode": sends,
        "calls": calls,
        "inbox_messages": app.messages.count(),
        "event_pushes": {
            "ok": event_pushes.get("0", 0),
            "failed": sum(count for outcome, count in event_pushes.items() if outcome != "0"),
            "failed_by_status": {outcome: count for outcome, count in event_pushes.items() if outcome != "0"},
        },
    }


def record_call(app: SandboxApp, endpoint: str, errcode: int) -> None:
    """Count one answer of a token-taking endpoint, or the outcome of one event push (EVENT_PUSH_ENDPOINT)."""
    _increment(SandboxCallCount, "count", app=app, endpoint=endpoint, errcode=errcode)


# --- credentials and access tokens (WeChat side) ---------------------------------------------------


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


def _not_invalidated(now: datetime) -> Q:
    return Q(invalidated_at__isnull=True) | Q(invalidated_at__gt=now)


def _create_token(app: SandboxApp, family: str, now: datetime, forced: bool = False) -> SandboxToken:
    return SandboxToken.objects.create(
        app=app,
        token=_new_access_token(),
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
            stable.filter(_not_invalidated(now)).update(invalidated_at=now)
            return _token_answer(_create_token(app, SandboxToken.STABLE, now, forced=True), now)
        current = (
            stable.filter(_not_invalidated(now), expires_at__gt=now).order_by("-issued_at", "-id").first()
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
    answer = {"openid": login.openid, "session_key": _new_session_key()}
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


# --- business endpoints (WeChat side) ------------------------------------------------------------


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
    """``cgi-bin/message/subscribe/send``: spend one accepted subscription, deliver, answer a msgid."""
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
        spent = SandboxSubscription.objects.filter(pk=subscription.pk, credits__gt=0).update(
            credits=F("credits") - 1
        )
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
        _event_push_after_commit(app, event_push.sent_event(app, openid, template.template_id, message.msgid))
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


def message_payload(message: SandboxMessage) -> dict[str, Any]:
    """An inbox message as the control API and the dashboard show it."""
    return {
        "id": message.pk,
        "openid": message.openid,
        "kind": message.kind,
        "template_id": message.template_id,
        "title": message.title,
        "data": message.data,
        "page": message.page,
        "msgid": message.msgid,
        "form_id": message.form_id or None,
        "miniprogram_state": message.miniprogram_state or None,
        "lang": message.lang or None,
        "emphasis_keyword": message.emphasis_keyword or None,
        "created_at": iso_z(message.created_at),
    }


def iso_z(moment: datetime) -> str:
    """UTC ISO-8601 with ``Z``, the contract's time format."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")

"""The control side of the WeChat sandbox, as plain functions: what a test, the dashboard's sandbox phone
(in-process, like the demo loader) and the ``_control/`` API do to the fake WeChat.

Apps and their knobs, users, login codes, formIds, the user's answers to subscription popups, the 消息推送
configuration, templates, the inbox and the stats (``record_call`` counts every answer). Refusals raise
:class:`~.errors.SandboxError`. What the sandbox answers on WeChat's own endpoints is in
``wechat_endpoints.py``, which imports this module, never the other way round.

Like WeChat, the sandbox pushes events to the app's 消息推送 URL once ``configure_events`` set one:
``subscribe_msg_popup_event`` when the user answers a subscription popup (``accept_subscriptions``),
``subscribe_msg_change_event`` when they turn a template off (``turn_off_subscription``) and, with the
``push_sent_events`` knob, ``subscribe_msg_sent_event`` after a subscribe send. Event pushes run after the
sandbox's own transaction commits, synchronously (see ``event_push.py``); a failed event push is logged and
counted in ``stats``, never raised.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, models, transaction
from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from pushhub.wechat import msgcrypto, rules

from . import event_push
from .errors import SandboxError
from .identifiers import new_formid_value, new_openid, new_template_id
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

ID_SHAPE = re.compile(r"[A-Za-z0-9_\-]{1,64}")
TEMPLATE_ID_SHAPE = re.compile(r"[A-Za-z0-9_\-]{1,128}")
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


def not_invalidated(now: datetime) -> Q:
    return Q(invalidated_at__isnull=True) | Q(invalidated_at__gt=now)


def reset_tokens(appid: str) -> int:
    """Invalidate every token of the app at once (a 40001 storm on demand); returns how many were live."""
    app = get_app(appid)
    now = timezone.now()
    return SandboxToken.objects.filter(app=app).filter(not_invalidated(now)).update(invalidated_at=now)


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
    openid = openid or new_openid(app.appid)
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
            value=new_formid_value(kind, issued_at),
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


def _set_long_term(app: SandboxApp, openid: str, template_id: str, *, on: bool) -> None:
    """A long-term template turned on (one standing row, credits 1) or off (credits 0)."""
    if on:
        SandboxSubscription.objects.update_or_create(
            app=app, openid=openid, template_id=template_id, defaults={"credits": 1}
        )
    else:
        SandboxSubscription.objects.filter(app=app, openid=openid, template_id=template_id).update(credits=0)


def accept_subscriptions(appid: str, openid: str, results: dict[str, str]) -> dict[str, str]:
    """What the user answered in ``wx.requestSubscribeMessage``; each ``accept`` adds one send of a one-time
    template (type 2); for a long-term template (type 3) ``accept`` turns it on and ``reject`` / ``ban`` off.

    Returns the call's result object: ``errMsg`` plus, per id, the answer, or ``filter`` for ids that are not
    subscribe templates of this app (WeChat filters them silently).
    """
    user = get_user(appid, openid)
    if not isinstance(results, dict) or not results:
        raise _invalid("results", "results must map template ids to 'accept', 'reject' or 'ban'.")
    for template_id, answer in results.items():
        if answer not in ("accept", "reject", "ban"):
            raise _invalid(f"results.{template_id}", "Each answer must be 'accept', 'reject' or 'ban'.")
    types = dict(
        SandboxTemplate.objects.filter(
            app=user.app, kind=SandboxTemplate.SUBSCRIBE, template_id__in=list(results)
        ).values_list("template_id", "type")
    )
    answered: dict[str, str] = {"errMsg": "requestSubscribeMessage:ok"}
    shown: dict[str, str] = {}  # what the popup showed and the user tapped: WeChat pushes these
    for template_id, answer in results.items():
        if template_id not in types:
            answered[template_id] = "filter"
            continue
        if types[template_id] == SandboxTemplate.LONG_TERM:
            # A long-term template is on (accept) or off (reject, ban); sends do not use it up.
            _set_long_term(user.app, user.openid, template_id, on=answer == "accept")
        elif answer == "accept":
            _add_credit(user.app, user.openid, template_id)
        if answer in ("accept", "reject"):
            shown[template_id] = answer
        answered[template_id] = answer
    if shown:
        event_push_after_commit(user.app, event_push.popup_event(user.app, user.openid, shown))
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
    event_push_after_commit(user.app, event_push.change_event(user.app, user.openid, template_id, "reject"))
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


def event_push_after_commit(app: SandboxApp, event: event_push.Event) -> None:
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
        app=app, template_id=template_id or new_template_id(), defaults=fields
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

"""HTTP faces of the sandbox: WeChat-compatible endpoints and the ``_control/`` API.

Views only parse requests and format answers; every rule lives in ``wechat_endpoints.py`` (the WeChat side)
or ``services.py`` (the control side). WeChat endpoints always answer HTTP 200 with ``{"errcode", "errmsg"}``
like WeChat; control endpoints answer PushHub's error shape ``{"error": {"code", "message", "field"?}}`` with
a 4xx status.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from pushhub.wechat.rules import parse_template_fields

from . import services, wechat_endpoints
from .errors import ErrcodeReply, SandboxError
from .models import SandboxApp, SandboxTemplate, SandboxUser

Payload = dict[str, Any]


def _json(body: Any, status: int = 200) -> JsonResponse:
    return JsonResponse(body, status=status, safe=False, json_dumps_params={"ensure_ascii": False})


# --- WeChat-compatible endpoints -----------------------------------------------------------------


def _wechat_json(request: HttpRequest) -> Payload:
    """The JSON object in the body; WeChat answers 47001 to anything else (an empty body counts as ``{}``)."""
    if not request.body:
        return {}
    try:
        payload = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise ErrcodeReply(47001) from None
    if not isinstance(payload, dict):
        raise ErrcodeReply(47001)
    return payload


def _wrong_method(request: HttpRequest, method: str) -> JsonResponse | None:
    if request.method == method:
        return None
    return _json(ErrcodeReply(43002 if method == "POST" else 43001).body())


def _answer(operation: Callable[[], Payload]) -> JsonResponse:
    try:
        return _json(operation())
    except ErrcodeReply as reply:
        return _json(reply.body())


@csrf_exempt
def token(request: HttpRequest) -> JsonResponse:
    """``GET cgi-bin/token``."""
    query = request.GET
    return _wrong_method(request, "GET") or _answer(
        lambda: wechat_endpoints.issue_token(query.get("appid"), query.get("secret"), query.get("grant_type"))
    )


@csrf_exempt
def stable_token(request: HttpRequest) -> JsonResponse:
    """``POST cgi-bin/stable_token`` (JSON body)."""

    def issue() -> Payload:
        payload = _wechat_json(request)
        force = payload.get("force_refresh") in (True, "true", 1)
        return wechat_endpoints.issue_stable_token(
            payload.get("appid"), payload.get("secret"), payload.get("grant_type"), force
        )

    return _wrong_method(request, "POST") or _answer(issue)


@csrf_exempt
def jscode2session(request: HttpRequest) -> JsonResponse:
    """``GET sns/jscode2session``."""
    query = request.GET
    return _wrong_method(request, "GET") or _answer(
        lambda: wechat_endpoints.code2session(
            query.get("appid"), query.get("secret"), query.get("js_code"), query.get("grant_type")
        )
    )


def _token_call(
    request: HttpRequest, endpoint: str, method: str, operation: Callable[[SandboxApp, Payload], Payload]
) -> JsonResponse:
    """A call taking ``?access_token=``: token checks, knobs, the operation (wechat_endpoints.handle_call)."""
    wrong = _wrong_method(request, method)
    if wrong:
        return wrong

    def run(app: SandboxApp) -> Payload:
        return operation(app, _wechat_json(request) if method == "POST" else {})

    body, delay = wechat_endpoints.handle_call(request.GET.get("access_token"), endpoint, run)
    if delay:
        time.sleep(delay)  # the timeout knob: the work is done, the answer comes too late
    return _json(body)


@csrf_exempt
def template_send(request: HttpRequest) -> JsonResponse:
    """``POST cgi-bin/message/wxopen/template/send`` (legacy formId template message)."""
    return _token_call(request, "template_send", "POST", wechat_endpoints.send_template_message)


@csrf_exempt
def subscribe_send(request: HttpRequest) -> JsonResponse:
    """``POST cgi-bin/message/subscribe/send``."""
    return _token_call(request, "subscribe_send", "POST", wechat_endpoints.send_subscribe_message)


@csrf_exempt
def get_subscribe_templates(request: HttpRequest) -> JsonResponse:
    """``GET wxaapi/newtmpl/gettemplate``."""
    return _token_call(
        request, "gettemplate", "GET", lambda app, _: wechat_endpoints.get_subscribe_templates(app)
    )


@csrf_exempt
def delete_subscribe_template(request: HttpRequest) -> JsonResponse:
    """``POST wxaapi/newtmpl/deltemplate``."""
    return _token_call(request, "deltemplate", "POST", wechat_endpoints.delete_subscribe_template)


@csrf_exempt
def list_formid_templates(request: HttpRequest) -> JsonResponse:
    """``POST cgi-bin/wxopen/template/list``."""
    return _token_call(request, "template_list", "POST", wechat_endpoints.list_formid_templates)


@csrf_exempt
def delete_formid_template(request: HttpRequest) -> JsonResponse:
    """``POST cgi-bin/wxopen/template/del``."""
    return _token_call(request, "template_del", "POST", wechat_endpoints.delete_formid_template)


# --- control API ---------------------------------------------------------------------------------


def control(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """csrf-exempt, ``X-Sandbox-Token`` when ``SANDBOX_CONTROL_TOKEN`` is set, SandboxError → JSON error.
    In production without a token the control API is closed: whoever knows a sandbox app's AppID could
    otherwise read its inboxes, change its secret and mint login codes for its users (the dashboard's
    sandbox phone calls the sandbox's services directly and keeps working)."""

    @csrf_exempt
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        expected = getattr(settings, "SANDBOX_CONTROL_TOKEN", "") or ""
        given = request.headers.get("X-Sandbox-Token", "")
        try:
            if not expected and getattr(settings, "PRODUCTION", False):
                raise SandboxError(
                    403,
                    "sandbox_control_closed",
                    "Set SANDBOX_CONTROL_TOKEN to use the sandbox's control API.",
                )
            if expected and not hmac.compare_digest(given.encode(), expected.encode()):
                raise SandboxError(401, "not_authenticated", "Missing or wrong X-Sandbox-Token header.")
            return view(request, *args, **kwargs)
        except SandboxError as error:
            return _json(error.body(), status=error.status)

    return wrapper


def _allow(request: HttpRequest, *methods: str) -> None:
    if request.method not in methods:
        raise SandboxError(405, "method_not_allowed", f"Use {' or '.join(methods)}.")


def _control_json(request: HttpRequest) -> Payload:
    if not request.body:
        return {}
    try:
        payload = json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as error:
        raise SandboxError(400, "invalid_json", f"Request body is not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise SandboxError(400, "invalid_json", "Request body must be a JSON object.")
    return payload


def _query_int(request: HttpRequest, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.GET.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise SandboxError(400, "validation_error", f"{name} must be an integer from {low} to {high}.", name)
    return value


def _app_payload(app: SandboxApp) -> Payload:
    return {"appid": app.appid, **services.knobs(app), "created_at": services.iso_z(app.created_at)}


def _user_payload(user: SandboxUser) -> Payload:
    return {"openid": user.openid, "unionid": user.unionid or None}


def _template_payload(template: SandboxTemplate) -> Payload:
    return {
        "template_id": template.template_id,
        "kind": template.kind,
        "title": template.title,
        "content": template.content,
        "example": template.example,
        "type": template.type,
        "fields": parse_template_fields(template.content),
        "created_at": services.iso_z(template.created_at),
    }


@control
def apps(request: HttpRequest) -> HttpResponse:
    """``GET _control/apps``: every sandbox app with its knobs."""
    _allow(request, "GET")
    return _json({"apps": [_app_payload(app) for app in SandboxApp.objects.order_by("id")]})


@control
def app_detail(request: HttpRequest, appid: str) -> HttpResponse:
    """``PUT`` (upsert with ``{"secret"}``), ``GET``, ``DELETE`` ``_control/apps/{appid}``."""
    _allow(request, "GET", "PUT", "DELETE")
    if request.method == "PUT":
        app, created = services.upsert_app(appid, _control_json(request).get("secret"))
        return _json(_app_payload(app), status=201 if created else 200)
    if request.method == "DELETE":
        services.delete_app(appid)
        return HttpResponse(status=204)
    return _json(_app_payload(services.get_app(appid)))


@control
def app_knobs(request: HttpRequest, appid: str) -> HttpResponse:
    """``PATCH _control/apps/{appid}/knobs`` with any knob fields (``GET`` reads them)."""
    _allow(request, "GET", "PATCH")
    if request.method == "PATCH":
        app = services.set_knobs(appid, **_control_json(request))
    else:
        app = services.get_app(appid)
    return _json({"appid": app.appid, **services.knobs(app)})


@control
def reset_tokens(request: HttpRequest, appid: str) -> HttpResponse:
    """``POST _control/apps/{appid}/reset-tokens``."""
    _allow(request, "POST")
    return _json({"invalidated": services.reset_tokens(appid)})


@control
def users(request: HttpRequest, appid: str) -> HttpResponse:
    """``POST _control/apps/{appid}/users`` ``{"openid"?, "unionid"?}`` (idempotent); ``GET`` lists them."""
    _allow(request, "GET", "POST")
    if request.method == "GET":
        return _json({"users": [_user_payload(user) for user in services.list_users(appid)]})
    payload = _control_json(request)
    user, created = services.upsert_user(appid, payload.get("openid"), payload.get("unionid"))
    return _json(_user_payload(user), status=201 if created else 200)


@control
def user_detail(request: HttpRequest, appid: str, openid: str) -> HttpResponse:
    """``GET _control/apps/{appid}/users/{openid}``: the user and what can still be sent to them."""
    _allow(request, "GET")
    user = services.get_user(appid, openid)
    return _json({**_user_payload(user), "credits": services.user_credits(appid, openid)})


@control
def login_code(request: HttpRequest, appid: str, openid: str) -> HttpResponse:
    """``POST _control/apps/{appid}/users/{openid}/login-code`` → what ``wx.login`` would give."""
    _allow(request, "POST")
    return _json({"code": services.issue_login_code(appid, openid)}, status=201)


@control
def formids(request: HttpRequest, appid: str, openid: str) -> HttpResponse:
    """``POST _control/apps/{appid}/users/{openid}/formids`` ``{count?, kind?, age_seconds?}``."""
    _allow(request, "POST")
    payload = _control_json(request)
    values = services.issue_formids(
        appid,
        openid,
        count=payload.get("count", 1),
        kind=payload.get("kind", "formid"),
        age_seconds=payload.get("age_seconds", 0),
    )
    return _json({"formids": values}, status=201)


@control
def subscriptions(request: HttpRequest, appid: str, openid: str) -> HttpResponse:
    """``POST _control/apps/{appid}/users/{openid}/subscriptions`` ``{"results": {id: accept|reject|ban}}``."""
    _allow(request, "POST")
    results = _control_json(request).get("results")
    return _json(services.accept_subscriptions(appid, openid, results))


@control
def subscription_off(request: HttpRequest, appid: str, openid: str, template_id: str) -> HttpResponse:
    """``POST _control/apps/{appid}/users/{openid}/subscriptions/{template_id}/off``: the user turns the
    template off in the mini-program's settings (its sends are dropped; a change event is pushed)."""
    _allow(request, "POST")
    dropped = services.turn_off_subscription(appid, openid, template_id)
    return _json({"openid": openid, "template_id": template_id, "dropped": dropped})


@control
def app_events(request: HttpRequest, appid: str) -> HttpResponse:
    """``PUT _control/apps/{appid}/events`` ``{url, token, aes_key, mode?, format?}``: the app's 消息推送配置
    (``GET`` reads it without the secrets, ``DELETE`` stops the event pushes)."""
    _allow(request, "GET", "PUT", "DELETE")
    if request.method == "PUT":
        payload = _control_json(request)
        app = services.configure_events(
            appid,
            url=payload.get("url"),
            token=payload.get("token"),
            aes_key=payload.get("aes_key"),
            mode=payload.get("mode", "safe"),
            fmt=payload.get("format", "json"),
        )
    elif request.method == "DELETE":
        services.configure_events(appid, url="", token="", aes_key="")
        return HttpResponse(status=204)
    else:
        app = services.get_app(appid)
    return _json(services.events_config(app))


@control
def templates(request: HttpRequest, appid: str) -> HttpResponse:
    """``POST _control/apps/{appid}/templates`` (create or replace); ``GET ?kind=`` lists them."""
    _allow(request, "GET", "POST")
    if request.method == "GET":
        listed = services.list_templates(appid, request.GET.get("kind") or None)
        return _json({"templates": [_template_payload(template) for template in listed]})
    payload = _control_json(request)
    template, created = services.upsert_template(
        appid,
        kind=payload.get("kind"),
        title=payload.get("title"),
        content=payload.get("content"),
        template_id=payload.get("template_id"),
        example=payload.get("example", ""),
        type=payload.get("type", 2),
    )
    return _json(_template_payload(template), status=201 if created else 200)


@control
def template_detail(request: HttpRequest, appid: str, template_id: str) -> HttpResponse:
    """``GET`` / ``DELETE _control/apps/{appid}/templates/{template_id}``."""
    _allow(request, "GET", "DELETE")
    if request.method == "DELETE":
        services.delete_template(appid, template_id)
        return HttpResponse(status=204)
    return _json(_template_payload(services.get_template(appid, template_id)))


@control
def inbox(request: HttpRequest, appid: str) -> HttpResponse:
    """``GET _control/apps/{appid}/inbox?openid=&after_id=&limit=`` → messages, newest last."""
    _allow(request, "GET")
    messages = services.inbox(
        appid,
        openid=request.GET.get("openid") or None,
        after_id=_query_int(request, "after_id", None, 0, 2**63 - 1),
        limit=_query_int(request, "limit", 100, 1, 1000),
    )
    return _json({"messages": [services.message_payload(message) for message in messages]})


@control
def stats(request: HttpRequest, appid: str) -> HttpResponse:
    """``GET _control/apps/{appid}/stats``."""
    _allow(request, "GET")
    return _json(services.stats(appid))


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """404 for the standalone server: JSON, never an HTML page."""
    return _json({"error": {"code": "not_found", "message": f"No sandbox endpoint at {request.path}."}}, 404)


def server_error(request: HttpRequest) -> JsonResponse:
    """500 for the standalone server, as WeChat-shaped JSON (Django has logged the traceback)."""
    return _json({"errcode": -1, "errmsg": "system error"}, 500)

"""Trigger URLs: ``POST /t/{token}`` sends the template; ``GET /t/{token}/pushes/{id}`` reads a push.

Like a ping URL: CSRF-exempt, never cached, body capped (64 KiB, middleware), a small JSON answer,
the state change in one service call. JSON or form-encoded bodies.
"""

from __future__ import annotations

import json
import uuid

from django.http import JsonResponse, QueryDict
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from pushhub import logs
from pushhub.api import ApiError, absolute_url, api_error_response, check_json, error_response, too_deep
from pushhub.idempotency import IDEMPOTENCY_HEADER
from templates_app import catalogue
from templates_app.models import Push, Template
from templates_app.pushes import endpoint, payloads
from templates_app.pushes.addressing import form_to


def _template_or_404(token: str) -> Template:
    template = catalogue.template_for_trigger_token(token)
    if template is None:
        raise ApiError(404, "not_found", "No such trigger URL (it may have been rotated).")
    logs.bind(tenant=template.app.tenant_id, app=template.app.appid)
    if not template.trigger_enabled:
        raise ApiError(410, "trigger_disabled", "This trigger URL is disabled.")
    return template


def _form_body(template: Template, form: QueryDict) -> dict:
    """A form-encoded send: to (repeated or comma-separated openids, ``@all`` or ``@tag:vip``), data (JSON) or
    one field per template key."""
    body: dict = {}
    for name in form:
        if name == "to":
            body["to"] = form_to(form.getlist("to"))
        elif name == "data":
            try:
                body["data"] = json.loads(form["data"])
            except RecursionError:
                raise too_deep() from None
            except ValueError:
                raise ApiError(
                    400, "invalid_json", "The data field is not valid JSON.", field="data"
                ) from None
        elif name == "force":
            body["force"] = form["force"].lower() in {"1", "true", "yes", "on"}
        elif name == "hold":
            # A form has only text: whole seconds as digits become the number the JSON body would give.
            body["hold"] = (
                int(form["hold"]) if form["hold"].isascii() and form["hold"].isdigit() else form["hold"]
            )
        elif name in template.keys:
            body.setdefault("data", {})[name] = form[name]
        else:
            body[name] = form[name]
    return body


def _parse_body(request, template: Template):
    content_type = request.content_type or ""
    if content_type in {"application/x-www-form-urlencoded", "multipart/form-data"}:
        body = _form_body(template, request.POST)
    else:
        try:
            body = json.loads(request.body or b"null")
        except RecursionError:
            raise too_deep() from None
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "invalid_json", "The body is not valid JSON.") from None
    check_json(body)
    return body


@csrf_exempt
@never_cache
def trigger(request, token: str):
    try:
        template = _template_or_404(token)
        if request.method != "POST":
            raise ApiError(405, "method_not_allowed", "Send with POST.", headers={"Allow": "POST"})
        status, body = endpoint.send(
            template,
            _parse_body(request, template),
            dry_run=endpoint.is_dry_run(request.GET),
            idempotency_key=request.headers.get(IDEMPOTENCY_HEADER, ""),
            created_by="trigger",
            status_url=lambda push: absolute_url(
                request, reverse("trigger-push-status", args=[token, push.pk])
            ),
        )
    except ApiError as error:
        return api_error_response(error)
    return JsonResponse(body, status=status, json_dumps_params={"ensure_ascii": False})


@csrf_exempt
@never_cache
def trigger_push_status(request, token: str, push_id: uuid.UUID):
    if request.method != "GET":
        return error_response(405, "method_not_allowed", "Read with GET.")
    template = catalogue.template_for_trigger_token(token)
    push = (
        Push.objects.filter(pk=push_id, template=template).select_related("app").first() if template else None
    )
    if push is None:
        return error_response(404, "not_found", "Not found.")
    return JsonResponse(payloads.push_payload(push))

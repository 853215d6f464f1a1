"""Dashboard pages for webhook endpoints: the list with the create form, and one endpoint's page (its
settings, secret rotation, enable / disable, test event, deletion, and the attempts log with resends).

Every endpoint comes through ``get_webhook_for`` (another tenant's endpoint is a 404; a viewer's POST a 403)
and every change through ``webhooks.services``, as in the API: its ``ApiError`` becomes a form error. A new
secret (after create or rotate) rides in the session to the endpoint's page, which shows it once and forgets it.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from formids.dashboard_views import error_message
from pushhub.api import ApiError, iso_utc
from tenants.auth import actor_for
from tenants.dashboard_scope import require_write, tenant_required
from webhooks import outbox, services
from webhooks.guard import URL_MAX_LENGTH
from webhooks.models import EventDispatch, WebhookAttempt, WebhookEndpoint

NEW_SECRET_SESSION_KEY = "pushhub_new_webhook_secret"
ATTEMPTS_PAGE_SIZE = 50
RESPONSE_EXCERPT = 200  # characters of the answer shown in the log (the whole stored KiB in the tooltip)

ALL_EVENTS = "*"
EVENT_LABELS = {
    ALL_EVENTS: _lazy("All events, including types added later"),
    outbox.PUSH_FINISHED: _lazy("A push finished"),
    outbox.DELIVERIES_FAILED: _lazy("Deliveries failed"),
    outbox.USER_UNREACHABLE: _lazy("A user has no send credit left for a template"),
    outbox.SUBSCRIPTION_CHANGED: _lazy("A user's subscription changed"),
    outbox.MESSAGE_OPENED: _lazy("A message was opened"),
    outbox.WEBHOOK_TEST: _lazy("Test events"),
}


def get_webhook_for(request: HttpRequest, endpoint_id: uuid.UUID, *, write: bool = False) -> WebhookEndpoint:
    """The current tenant's endpoint with this id; 404 for anyone else's (a malformed id matches no URL)."""
    endpoint = services.endpoints_for(request.tenant).select_related("tenant").filter(pk=endpoint_id).first()
    if endpoint is None:
        raise Http404
    if write:
        require_write(request)
    return endpoint


def _when(moment: datetime | None) -> str:
    """UTC ISO-8601 as the API gives it, to the second."""
    return iso_utc(moment.replace(microsecond=0)) if moment else ""


def _event_choices(selected: list[str]) -> list[dict]:
    return [
        {"value": value, "label": EVENT_LABELS.get(value, value), "checked": value in selected}
        for value in (ALL_EVENTS, *outbox.EVENT_TYPES)
    ]


def _status(endpoint: WebhookEndpoint) -> tuple[str, str]:
    """(css class, words) for the endpoint's state: enabled, disabled by a person, or disabled as failing."""
    if endpoint.enabled:
        return "active", _("enabled")
    if endpoint.disabled_reason == "failing":
        return "failed", _("disabled: failing")
    return "disabled", _("disabled")


def _endpoint_row(endpoint: WebhookEndpoint) -> dict:
    css, label = _status(endpoint)
    return {
        "endpoint": endpoint,
        "status_class": css,
        "status": label,
        "failing_since": _when(endpoint.failing_since),
        "created_at": _when(endpoint.created_at),
    }


def _posted(request: HttpRequest) -> dict:
    """The endpoint form as services take it: url, events (the checkboxes; "all" wins), description."""
    events = request.POST.getlist("events")
    return {
        "url": request.POST.get("url", "").strip(),
        "events": [ALL_EVENTS] if ALL_EVENTS in events else events,
        "description": request.POST.get("description", "").strip(),
    }


def _remember_secret(request: HttpRequest, endpoint: WebhookEndpoint, secret: str) -> None:
    request.session[NEW_SECRET_SESSION_KEY] = {"endpoint": str(endpoint.pk), "secret": secret}


def _take_secret(request: HttpRequest, endpoint: WebhookEndpoint) -> str:
    """The secret just made for this endpoint, once: it leaves the session as the page is rendered."""
    new = request.session.get(NEW_SECRET_SESSION_KEY)
    if not new or new.get("endpoint") != str(endpoint.pk):
        return ""
    del request.session[NEW_SECRET_SESSION_KEY]
    return new["secret"]


# --- the list and the create form --------------------------------------------------------------------
@require_http_methods(["GET", "POST"])
@tenant_required
def webhook_list(request: HttpRequest) -> HttpResponse:
    values: dict = {"url": "", "events": [], "description": ""}
    errors: dict[str, str] = {}
    if request.method == "POST":
        require_write(request)
        values = _posted(request)
        try:
            endpoint, secret = services.create_endpoint(request.tenant, actor=actor_for(request), **values)
        except ApiError as exc:
            errors[exc.field or "form"] = error_message(exc)
        else:
            _remember_secret(request, endpoint, secret)
            messages.success(request, _("Webhook endpoint created."))
            return redirect("webhook-detail", endpoint_id=endpoint.pk)
    context = {
        "rows": [_endpoint_row(e) for e in services.endpoints_for(request.tenant)],
        "values": values,
        "event_choices": _event_choices(values["events"]),
        "errors": errors,
        "can_write": request.membership.can_write,
        "max_endpoints": services.MAX_ENDPOINTS,
        "url_max_length": URL_MAX_LENGTH,
        "description_max": services.DESCRIPTION_MAX,
    }
    return render(request, "webhooks/list.html", context, status=400 if errors else 200)


# --- one endpoint ------------------------------------------------------------------------------------
def _attempt_row(attempt: WebhookAttempt) -> dict:
    body = attempt.response_body
    return {
        "attempt": attempt,
        "created_at": _when(attempt.created_at),
        "next_attempt_at": _when(attempt.next_attempt_at),
        "excerpt": body if len(body) <= RESPONSE_EXCERPT else body[:RESPONSE_EXCERPT] + "…",
        "ok": attempt.status_code is not None and 200 <= attempt.status_code < 300,
    }


def _detail_page(
    request: HttpRequest,
    endpoint: WebhookEndpoint,
    *,
    errors: dict[str, str] | None = None,
    values: dict | None = None,
    status: int = 200,
) -> HttpResponse:
    values = values or {"url": endpoint.url, "events": endpoint.events, "description": endpoint.description}
    attempts = services.attempts_for(endpoint).order_by("-created_at", "-pk")
    page = Paginator(attempts, ATTEMPTS_PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        **_endpoint_row(endpoint),
        "secret": _take_secret(request, endpoint),
        "values": values,
        "event_choices": _event_choices(values["events"]),
        "errors": errors or {},
        "can_write": request.membership.can_write,
        "pending": EventDispatch.objects.filter(
            endpoint=endpoint, status=EventDispatch.Status.PENDING
        ).count(),
        "page": page,
        "rows": [_attempt_row(a) for a in page.object_list],
        "querystring": "",
        "url_max_length": URL_MAX_LENGTH,
        "description_max": services.DESCRIPTION_MAX,
    }
    return render(request, "webhooks/detail.html", context, status=status)


def _failed(request: HttpRequest, endpoint: WebhookEndpoint, exc: ApiError, values: dict | None = None):
    """The endpoint's page again with the service's refusal on its field (never a 500)."""
    return _detail_page(
        request, endpoint, errors={exc.field or "form": error_message(exc)}, values=values, status=400
    )


@never_cache  # it may show a new secret
@require_GET
@tenant_required
def webhook_detail(request: HttpRequest, endpoint_id: uuid.UUID) -> HttpResponse:
    return _detail_page(request, get_webhook_for(request, endpoint_id))


@require_POST
@tenant_required
def webhook_update(request: HttpRequest, endpoint_id: uuid.UUID) -> HttpResponse:
    """Enable / disable (``enabled``), or change url, events and description (the edit form)."""
    endpoint = get_webhook_for(request, endpoint_id, write=True)
    if "enabled" in request.POST:
        changes: dict = {"enabled": request.POST["enabled"] == "true"}
        values = None
    else:
        changes = values = _posted(request)
    try:
        services.update_endpoint(endpoint, actor=actor_for(request), **changes)
    except ApiError as exc:
        return _failed(request, endpoint, exc, values)
    if "enabled" not in changes:
        messages.success(request, _("Saved."))
    elif changes["enabled"]:
        messages.success(request, _("Enabled: events that waited are being sent."))
    else:
        messages.success(request, _("Disabled: events wait until it is enabled again."))
    return redirect("webhook-detail", endpoint_id=endpoint.pk)


@require_POST
@tenant_required
def webhook_rotate_secret(request: HttpRequest, endpoint_id: uuid.UUID) -> HttpResponse:
    endpoint = get_webhook_for(request, endpoint_id, write=True)
    secret = services.rotate_secret(endpoint, actor=actor_for(request))
    _remember_secret(request, endpoint, secret)
    messages.success(request, _("New signing secret: every later attempt is signed with it only."))
    return redirect("webhook-detail", endpoint_id=endpoint.pk)


@require_POST
@tenant_required
def webhook_test(request: HttpRequest, endpoint_id: uuid.UUID) -> HttpResponse:
    endpoint = get_webhook_for(request, endpoint_id, write=True)
    try:
        event = services.send_test(endpoint, actor=actor_for(request))
    except ApiError as exc:
        return _failed(request, endpoint, exc)
    messages.success(request, _("Test event %(id)s queued.") % {"id": event.pk})
    return redirect("webhook-detail", endpoint_id=endpoint.pk)


@require_POST
@tenant_required
def webhook_resend(request: HttpRequest, endpoint_id: uuid.UUID, event_id: str) -> HttpResponse:
    endpoint = get_webhook_for(request, endpoint_id, write=True)
    try:
        services.resend(endpoint, event_id, actor=actor_for(request))
    except ApiError as exc:
        return _failed(request, endpoint, exc)
    if endpoint.enabled:
        messages.success(request, _("Event %(id)s queued to be sent again.") % {"id": event_id})
    else:
        messages.success(
            request, _("Event %(id)s will be sent again once the endpoint is enabled.") % {"id": event_id}
        )
    return redirect("webhook-detail", endpoint_id=endpoint.pk)


@require_POST
@tenant_required
def webhook_delete(request: HttpRequest, endpoint_id: uuid.UUID) -> HttpResponse:
    endpoint = get_webhook_for(request, endpoint_id, write=True)
    services.delete_endpoint(endpoint, actor=actor_for(request))
    messages.success(request, _("Webhook endpoint deleted."))
    return redirect("webhook-list")

"""Dashboard pages for pushes: the list, one push with its live progress and deliveries, and cancel.

Pushes are fetched through ``get_push_for`` (another tenant's push is a 404; a malformed id matches no URL);
cancelling needs a writer (owner/admin) and goes through ``pushes.start.cancel_push``.
"""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from pushhub.wechat.errors import ERRCODE_TEXT
from templates_app.models import Delivery, Push
from templates_app.pushes.payloads import push_payload
from templates_app.pushes.start import cancel_push
from tenants.dashboard_scope import require_write, tenant_required
from tenants.models import MiniProgram

PAGE_SIZE = 50
FINISHED = (Push.Status.DONE, Push.Status.CANCELED)


def get_push_for(request: HttpRequest, push_id: uuid.UUID, *, write: bool = False) -> Push:
    """The current tenant's push with this id; 404 for anyone else's (a malformed id matches no URL)."""
    push = (
        Push.objects.for_tenant(request.tenant).select_related("app", "template").filter(pk=push_id).first()
    )
    if push is None:
        raise Http404
    if write:
        require_write(request)
    return push


def explain_errcode(errcode: str) -> str:
    """A delivery's errcode in words: WeChat's codes from ERRCODE_TEXT, and our own reasons."""
    if not errcode:
        return ""
    if errcode == "timeout_ambiguous":
        return _("WeChat may or may not have delivered it: not retried, to avoid a duplicate")
    if errcode == "canceled":
        return _("The push was canceled before this message was sent")
    try:
        text = ERRCODE_TEXT.get(int(errcode))
    except ValueError:
        text = None
    return _(text) if text else _("Unknown error")


def _querystring(request: HttpRequest) -> str:
    query = request.GET.copy()
    query.pop("page", None)
    return query.urlencode()


@require_GET
@tenant_required
def push_list(request: HttpRequest) -> HttpResponse:
    apps = list(MiniProgram.objects.for_tenant(request.tenant).order_by("name"))
    pushes = Push.objects.for_tenant(request.tenant).select_related("app", "template").order_by("-created_at")
    appid = request.GET.get("app", "")
    status = request.GET.get("status", "")
    if appid:
        pushes = pushes.filter(app__appid=appid)
    if status in Push.Status.values:
        pushes = pushes.filter(status=status)
    else:
        status = ""
    page = Paginator(pushes, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "templates_app/push_list.html",
        {
            "page": page,
            "apps": apps,
            "appid": appid,
            "status": status,
            "statuses": Push.Status.choices,
            "querystring": _querystring(request),
        },
    )


def audience_text(push: Push) -> str:
    """Who the push addresses, in words: "@all", "3 recipients", "2 aliases", "tagged all: vip · none: churned"."""
    if push.audience == Push.Audience.ALL:
        return "@all"
    if push.audience == Push.Audience.OPENIDS:
        return ngettext("%(n)d recipient", "%(n)d recipients", len(push.to)) % {"n": len(push.to)}
    if push.audience == Push.Audience.ALIASES:
        n = len(push.to["aliases"])
        return ngettext("%(n)d alias", "%(n)d aliases", n) % {"n": n}
    lists = " · ".join(f"{key}: {', '.join(tags)}" for key, tags in push.to["tags"].items())
    return _("tagged %(lists)s") % {"lists": lists}


def open_rate(opened: int, sent: int) -> str:
    """Opened / sent as a percentage with one decimal ("—" before anything is sent); static/js/push-progress.js
    formats it the same way."""
    return f"{100 * opened / sent:.1f}%" if sent else "—"


def _segments(push: Push) -> list[dict]:
    """Progress bar segments as percentages of the recipients (or of what is counted so far)."""
    counts = {
        "sent": push.sent,
        "failed": push.failed,
        "no_credit": push.no_credit or 0,
        "pending": push.pending,
        "held": push.held,
    }
    total = max(push.recipients or 0, sum(counts.values()), 1)
    return [{"name": name, "count": n, "percent": round(100 * n / total, 2)} for name, n in counts.items()]


@require_GET
@tenant_required
def push_page(request: HttpRequest, push_id: uuid.UUID) -> HttpResponse:
    push = get_push_for(request, push_id)
    deliveries = Delivery.objects.filter(push=push).order_by("id")
    status = request.GET.get("status", "")
    if status in Delivery.Status.values:
        deliveries = deliveries.filter(status=status)
    else:
        status = ""
    page = Paginator(deliveries, PAGE_SIZE).get_page(request.GET.get("page"))
    rows = [{"delivery": d, "explanation": explain_errcode(d.errcode)} for d in page.object_list]
    return render(
        request,
        "templates_app/push_detail.html",
        {
            "push": push,
            "segments": _segments(push),
            "open_rate": open_rate(push.opened, push.sent),
            "audience": audience_text(push),
            "finished": push.status in FINISHED,
            "can_cancel": request.membership.can_write and push.status not in FINISHED,
            "page": page,
            "rows": rows,
            "status": status,
            "statuses": Delivery.Status.choices,
            "querystring": _querystring(request),
        },
    )


@require_GET
@never_cache
@tenant_required
def push_progress(request: HttpRequest, push_id: uuid.UUID) -> JsonResponse:
    return JsonResponse(push_payload(get_push_for(request, push_id)))


@require_POST
@tenant_required
def push_cancel(request: HttpRequest, push_id: uuid.UUID) -> HttpResponse:
    push = get_push_for(request, push_id, write=True)
    push = cancel_push(push, actor=f"user:{request.user.get_username()}")
    if push.status == Push.Status.CANCELED:
        messages.success(request, _("The push is canceled; unsent messages gave their credits back."))
    return redirect("push-page", push_id=push.pk)

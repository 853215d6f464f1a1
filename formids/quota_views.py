"""Dashboard pages for one app's credit pool: the quota figures, 30-day charts and the users table.

Every lookup goes through ``get_app_for`` (another tenant's app is a 404). The figures come from
formids.quotas, so the page, the API and the SDK agree on what "usable" means.
"""

from __future__ import annotations

from datetime import timedelta

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from formids.models import DailyStat
from formids.quotas import app_quota, app_users, credit_summaries
from tenants.dashboard_scope import get_app_for, tenant_required

CHART_DAYS = 30
USERS_PAGE_SIZE = 50


@require_GET
@tenant_required
def quota(request: HttpRequest, appid: str) -> HttpResponse:
    app = get_app_for(request, appid)
    figures = app_quota(app)
    subscribe = sorted(figures["credits"]["subscribe"].items())
    return render(
        request,
        "formids/quota.html",
        {"app": app, "quota": figures, "subscribe": subscribe, "chart_days": CHART_DAYS},
    )


def chart_series(app, days: int = CHART_DAYS, today=None) -> dict:
    """The last ``days`` UTC days (today included) of DailyStat, one query, days without a row as 0."""
    today = today or timezone.now().date()
    first = today - timedelta(days=days - 1)
    rows = {
        row["day"]: row
        for row in DailyStat.objects.filter(app=app, day__gte=first, day__lte=today).values(
            "day", "formids_collected", "subscribe_collected", "sent", "failed"
        )
    }
    labels, formids, subscribe, sent, failed = [], [], [], [], []
    for offset in range(days):
        day = first + timedelta(days=offset)
        row = rows.get(day, {})
        labels.append(day.isoformat())
        formids.append(row.get("formids_collected", 0))
        subscribe.append(row.get("subscribe_collected", 0))
        sent.append(row.get("sent", 0))
        failed.append(row.get("failed", 0))
    return {
        "days": labels,
        "collected": {"formid": formids, "subscribe": subscribe},
        "messages": {"sent": sent, "failed": failed},
    }


@require_GET
@never_cache
@tenant_required
def quota_chart(request: HttpRequest, appid: str) -> JsonResponse:
    app = get_app_for(request, appid)
    return JsonResponse(chart_series(app))


def _reachable_filter(value: str) -> bool | None:
    return {"yes": True, "no": False}.get(value)


@require_GET
@tenant_required
def users(request: HttpRequest, appid: str) -> HttpResponse:
    app = get_app_for(request, appid)
    search = request.GET.get("q", "").strip()[:64]
    reachable = request.GET.get("reachable", "")
    queryset = app_users(app, reachable=_reachable_filter(reachable), search=search).order_by("openid")
    page = Paginator(queryset, USERS_PAGE_SIZE).get_page(request.GET.get("page"))
    page_users = list(page.object_list)
    summaries = credit_summaries(page_users)  # one grouped query for the whole page
    rows = [
        {
            "user": user,
            "formid_credits": summaries[user.pk]["formid_credits"],
            "subscribe_credits": sorted(summaries[user.pk]["subscribe_credits"].items()),
            "next_expiry": summaries[user.pk]["next_expiry"],
        }
        for user in page_users
    ]
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "formids/users.html",
        {
            "app": app,
            "page": page,
            "rows": rows,
            "search": search,
            "reachable": reachable if reachable in ("yes", "no") else "",
            "querystring": query.urlencode(),
        },
    )

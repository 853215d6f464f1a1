"""Dashboard pages for one app's credit pool and audience: the quota figures, 30-day charts, the users table
(filtered by openid prefix, reachability, tag and alias), one user's page and the tag list with counts.

Every lookup goes through ``get_app_for`` (another tenant's app is a 404). The figures come from
formids.quotas and formids.audience, so the pages, the API and the SDK agree on what "usable" means and on
what a valid tag or alias is.
"""

from __future__ import annotations

from datetime import timedelta

from django.core.paginator import Paginator
from django.db.models import Sum
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from formids import audience, funnel
from formids.models import DailyStat
from formids.quotas import app_quota, app_users, credit_summaries, has_last_credit
from pushhub.api import ApiError
from tenants.dashboard_scope import get_app_for, tenant_required

CHART_DAYS = 30
USERS_PAGE_SIZE = 50


@require_GET
@tenant_required
def quota(request: HttpRequest, appid: str) -> HttpResponse:
    app = get_app_for(request, appid)
    figures = app_quota(app)
    subscribe = sorted(figures["credits"]["subscribe"].items())
    long_term = sorted(figures["credits"]["long_term"].items())
    return render(
        request,
        "formids/quota.html",
        {
            "app": app,
            "quota": figures,
            "subscribe": subscribe,
            "long_term": long_term,
            "chart_days": CHART_DAYS,
            "funnel": funnel.chart_data(app.pk, funnel.DEFAULT_RANGE_DAYS),
            "funnel_ranges": funnel.CHART_RANGES,
        },
    )


def chart_series(app, days: int = CHART_DAYS, today=None) -> dict:
    """The last ``days`` UTC days (today included) of DailyStat, one query, days without a row as 0."""
    today = today or timezone.now().date()
    first = today - timedelta(days=days - 1)
    counters = ("formids_collected", "subscribe_collected", "sent", "failed")
    rows = {  # a day is the sum of its rows (DailyStat.shard)
        row["day"]: row
        for row in DailyStat.objects.filter(app=app, day__gte=first, day__lte=today)
        .order_by()
        .values("day")
        .annotate(**{name: Sum(name) for name in counters})
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


@require_GET
@never_cache
@tenant_required
def quota_funnel(request: HttpRequest, appid: str) -> JsonResponse:
    """The app's funnel over the last 7, 30 or 90 days (``?days=``), from the stats endpoint's rows."""
    app = get_app_for(request, appid)
    return JsonResponse(funnel.chart_data(app.pk, funnel.chart_range(request.GET.get("days"))))


def _reachable_filter(value: str) -> dict:
    """The "Reachable" select: with a usable credit, without one, or down to the last one."""
    return {
        "yes": {"reachable": True},
        "no": {"reachable": False},
        "last": {"last_credit": True},
    }.get(value, {})


def _audience_filter(request: HttpRequest, name: str, check, errors: dict) -> str:
    """A tag or alias filter as typed; a malformed one is shown as an error and filters out everybody."""
    value = request.GET.get(name, "")
    if value:
        try:
            check(value, name)
        except ApiError as exc:
            errors[name] = exc.message
    return value


@require_GET
@tenant_required
def users(request: HttpRequest, appid: str) -> HttpResponse:
    app = get_app_for(request, appid)
    search = request.GET.get("q", "").strip()[:64]
    reachable = request.GET.get("reachable", "")
    errors: dict[str, str] = {}
    tag = _audience_filter(request, "tag", audience.check_tag, errors)
    alias = _audience_filter(request, "alias", audience.check_alias, errors)
    queryset = app_users(app, **_reachable_filter(reachable), search=search, tag=tag, alias=alias).order_by(
        "openid"
    )
    if errors:
        queryset = queryset.none()
    page = Paginator(queryset, USERS_PAGE_SIZE).get_page(request.GET.get("page"))
    page_users = list(page.object_list)
    summaries = credit_summaries(page_users)  # one grouped query for the whole page
    tags = audience.tags_by_user(page_users)  # and one for their tags
    rows = [
        {
            "user": user,
            "tags": tags[user.pk],
            "formid_credits": summaries[user.pk]["formid_credits"],
            "subscribe_credits": sorted(summaries[user.pk]["subscribe_credits"].items()),
            "long_term": summaries[user.pk]["long_term"],
            "next_expiry": summaries[user.pk]["next_expiry"],
            "last_credit": has_last_credit(summaries[user.pk]),
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
            "reachable": reachable if reachable in ("yes", "no", "last") else "",
            "tag": tag,
            "alias": alias,
            "errors": errors,
            "querystring": query.urlencode(),
        },
        status=400 if errors else 200,
    )


@require_GET
@tenant_required
def user_detail(request: HttpRequest, appid: str, openid: str) -> HttpResponse:
    """One user: alias, tags, push setting and credits (as the API's user object)."""
    app = get_app_for(request, appid)
    user = app_users(app).filter(openid=openid).first()
    if user is None:
        raise Http404
    summary = credit_summaries([user])[user.pk]
    return render(
        request,
        "formids/user_detail.html",
        {
            "app": app,
            "user": user,
            "tags": audience.tags_by_user([user])[user.pk],
            "formid_credits": summary["formid_credits"],
            "subscribe_credits": sorted(summary["subscribe_credits"].items()),
            "long_term": summary["long_term"],
            "next_expiry": summary["next_expiry"],
        },
    )


@require_GET
@tenant_required
def tags(request: HttpRequest, appid: str) -> HttpResponse:
    """The app's tags with their users and reachable users (one grouped query)."""
    app = get_app_for(request, appid)
    return render(request, "formids/tags.html", {"app": app, "tags": audience.tag_counts(app)})

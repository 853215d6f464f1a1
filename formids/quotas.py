"""Read side of the credit pools: per-app quota and per-user credit summaries.

Aggregates over the partial indexes in formids.models (one grouped query per figure, never a Python loop
over credits), so the cost follows the number of usable credits of one app, not the whole table.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Case, CharField, Count, Exists, F, Min, OuterRef, Q, QuerySet, Sum, Value, When
from django.utils import timezone

from formids.models import Credit, DailyStat, MiniUser
from formids.services import FORMID_KINDS, SUBSCRIBE_KINDS, usable_q
from pushhub.api import iso_utc
from tenants.models import MiniProgram


def app_quota(app: MiniProgram, now: datetime | None = None) -> dict:
    """Users, reachable users (a standing long-term subscription makes a user reachable), usable sends by
    kind and template, standing subscribers per long-term template, what expires within 24 h, today's
    sends."""
    now = now or timezone.now()
    usable = Credit.objects.filter(usable_q(now), app=app)
    formid = usable.filter(kind__in=FORMID_KINDS).aggregate(
        uses=Sum("uses_left"), expiring=Sum("uses_left", filter=Q(expires_at__lte=now + timedelta(hours=24)))
    )
    by_template = (
        usable.filter(kind__in=SUBSCRIBE_KINDS)
        .values_list("kind", "template_id")
        .annotate(n=Count("id"))
        .order_by("kind", "template_id")
    )
    subscribe: dict[str, int] = {}
    long_term: dict[str, int] = {}  # standing subscribers per long-term template (one row per user)
    for kind, template_id, n in by_template:
        (long_term if kind == Credit.Kind.LONG_TERM else subscribe)[template_id] = n
    today = DailyStat.objects.filter(app=app, day=now.date()).aggregate(
        sent=Sum("sent"), failed=Sum("failed")
    )
    return {
        "users": MiniUser.objects.filter(app=app).count(),
        "users_reachable": usable.values("user_id").distinct().count(),
        "credits": {"formid": formid["uses"] or 0, "subscribe": subscribe, "long_term": long_term},
        "expiring_24h": formid["expiring"] or 0,
        "sent_today": today["sent"] or 0,
        "failed_today": today["failed"] or 0,
    }


def has_usable_credit(now: datetime, user: str = "pk") -> Exists:
    """Whether the user (the outer query's ``user`` column) holds a usable credit: what "reachable" means for
    the quota, the users list and the tag counts."""
    return Exists(Credit.objects.filter(usable_q(now), user=OuterRef(user)))


def down_to_last_credit(now: datetime, user: str = "pk") -> Exists:
    """Whether the user (the outer query's ``user`` column) has exactly one send left for some way of being
    reached: one formId/prepay_id use in all (they serve every formId template), or one credit of a one-time
    subscribe template. The moment to ask them for more (``user.unreachable`` fires when it is used)."""
    per_pool = (
        Credit.objects.filter(usable_q(now), user=OuterRef(user))
        .exclude(kind=Credit.Kind.LONG_TERM)  # a standing subscription: sends do not use it up
        .annotate(
            pool=Case(
                When(kind__in=FORMID_KINDS, then=Value("")),
                default=F("template_id"),
                output_field=CharField(),
            )
        )
        .values("pool")
        .annotate(left=Sum("uses_left"))
        .filter(left=1)
    )
    return Exists(per_pool)


def has_last_credit(summary: dict) -> bool:
    """:func:`down_to_last_credit` for a summary of :func:`credit_summaries`."""
    return summary["formid_credits"] == 1 or 1 in summary["subscribe_credits"].values()


def app_users(
    app: MiniProgram,
    *,
    reachable: bool | None = None,
    last_credit: bool | None = None,
    search: str = "",
    tag: str = "",
    alias: str = "",
    now=None,
) -> QuerySet:
    """The app's users, optionally only those with (or without) a usable credit, down to their last credit
    (or not), by openid prefix, carrying
    a tag (the (app, tag, user) index) or holding an alias (exact, the (app, alias) index)."""
    now = now or timezone.now()
    users = MiniUser.objects.filter(app=app)
    if search:
        users = users.filter(openid__startswith=search)
    if tag:
        users = users.filter(tag_rows__app=app, tag_rows__tag=tag)  # one row per (user, tag): no repeats
    if alias:
        users = users.filter(alias=alias)
    if reachable is not None:
        has_credit = has_usable_credit(now)
        users = users.filter(has_credit if reachable else ~has_credit)
    if last_credit is not None:
        last = down_to_last_credit(now)
        users = users.filter(last if last_credit else ~last)
    return users


def credit_summaries(users: list[MiniUser], now: datetime | None = None) -> dict[int, dict]:
    """{user id: {formid_credits, subscribe_credits, long_term, next_expiry}} for a page of users, in one
    query. ``long_term``: the long-term template ids the user stands subscribed to, sorted."""
    now = now or timezone.now()
    summaries = {
        u.pk: {"formid_credits": 0, "subscribe_credits": {}, "long_term": [], "next_expiry": None}
        for u in users
    }
    rows = (
        Credit.objects.filter(usable_q(now), user_id__in=list(summaries))
        .values("user_id", "kind", "template_id")
        .annotate(uses=Sum("uses_left"), n=Count("id"), next_expiry=Min("expires_at"))
        .order_by()
    )
    for row in rows:
        summary = summaries[row["user_id"]]
        if row["kind"] == Credit.Kind.SUBSCRIBE:
            summary["subscribe_credits"][row["template_id"]] = row["n"]
        elif row["kind"] == Credit.Kind.LONG_TERM:
            summary["long_term"].append(row["template_id"])
        else:
            summary["formid_credits"] += row["uses"]
            if row["next_expiry"] and (
                summary["next_expiry"] is None or row["next_expiry"] < summary["next_expiry"]
            ):
                summary["next_expiry"] = row["next_expiry"]
    for summary in summaries.values():
        summary["long_term"].sort()
    return summaries


def user_payload(user: MiniUser, summary: dict) -> dict:
    return {
        "openid": user.openid,
        "push_enabled": user.push_enabled,
        "formid_credits": summary["formid_credits"],
        "subscribe_credits": summary["subscribe_credits"],
        "long_term": summary["long_term"],
        "next_expiry": iso_utc(summary["next_expiry"]),
        "first_seen": iso_utc(user.first_seen),
        "last_seen": iso_utc(user.last_seen),
    }


def user_summary(user: MiniUser, now: datetime | None = None) -> dict:
    """What the SDK's ``GET me`` shows: the same as the tenant's user view (one grouped query)."""
    return user_payload(user, credit_summaries([user], now=now)[user.pk])

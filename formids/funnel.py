"""The funnel's aggregate rows (formids.models.TemplateDailyStat): credits collected → sent → failed → opened
→ re-subscribed, per app, template and UTC day. Every counter is bumped by the event that it counts, with the
same update-else-insert as the per-app DailyStat (``add_to_counters``), so the stats endpoint and the charts read aggregates and never scan deliveries or credits."""

from __future__ import annotations

from datetime import date

from django.db import IntegrityError, transaction
from django.db.models import F, Model

from formids.models import TemplateDailyStat

COUNTERS = ("credits_collected", "sent", "failed", "opened", "resubscribed")


def bump_template_stat(app_id: int, template_id: str, day: date, **increments: int) -> None:
    """Add to one (app, template, day) row's counters; ``template_id`` "" for formIds and prepay ids."""
    increments = {name: n for name, n in increments.items() if n}
    unknown = set(increments) - set(COUNTERS)
    if unknown:
        raise ValueError(f"unknown funnel counters: {sorted(unknown)}")
    add_to_counters(TemplateDailyStat, {"app_id": app_id, "template_id": template_id, "day": day}, increments)


def add_to_counters(model: type[Model], key: dict, increments: dict[str, int]) -> None:
    """Add ``increments`` to the counters of the row of ``model`` named by ``key`` (its unique fields),
    creating it when the day's first event comes; a concurrent creation falls back to the update."""
    increments = {name: n for name, n in increments.items() if n}
    if not increments:
        return
    updates = {name: F(name) + n for name, n in increments.items()}
    rows = model.objects.filter(**key)
    if rows.update(**updates):
        return
    try:
        with transaction.atomic():
            model.objects.create(**key, **increments)
    except IntegrityError:  # created concurrently
        rows.update(**updates)


def record_open(app_id: int, openid: str, template_id: str, opened_at) -> None:
    """A message of ``template_id`` was opened by ``openid`` (first open of that delivery only): the day's
    ``opened`` counter. Called by templates_app.opens in the transaction that set ``opened_at``."""
    bump_template_stat(app_id, template_id, opened_at.date(), opened=1)

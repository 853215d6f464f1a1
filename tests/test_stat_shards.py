"""The day's statistics rows are spread over STAT_SHARDS rows per (app, day) and (app, template, day): an SDK
upload counts in the row of its uploader's id modulo STAT_SHARDS, so concurrent uploads of one app do not
queue on one row's lock; every other count goes to shard 0, and every reader shows a day's sum."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from formids import funnel
from formids.models import STAT_SHARDS, DailyStat, MiniUser, TemplateDailyStat
from formids.quota_views import chart_series
from formids.quotas import app_quota
from tests.sdk_helpers import sdk_client, url

pytestmark = pytest.mark.django_db

on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the upload's one statement (elsewhere: shard 0, as before)"
)


def upload(app, openid: str, values: list[str]) -> dict:
    phone = sdk_client(app, openid=openid)
    response = phone.post(url(app, "formids"), {"formids": values}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


@on_postgresql
def test_uploads_count_in_their_uploaders_shards_and_every_reader_shows_the_sum(sandbox_app):
    openids = [f"oShardUser{n:018d}" for n in range(3)]
    accepted = 0
    for n, openid in enumerate(openids):
        values = [f"shard{n}formid{k:020d}" for k in range(n + 2)]  # 2, 3 and 4 formIds
        accepted += upload(sandbox_app, openid, values)["accepted"]
    assert accepted == 9
    users = MiniUser.objects.filter(app=sandbox_app, openid__in=openids)
    shards = {user.id % STAT_SHARDS for user in users}
    assert len(shards) == 3  # consecutive ids: three rows, not one

    today = timezone.now().date()
    rows = DailyStat.objects.filter(app=sandbox_app, day=today)
    assert set(rows.values_list("shard", flat=True)) == shards
    assert rows.aggregate(n=Sum("formids_collected"))["n"] == 9
    funnel_rows = TemplateDailyStat.objects.filter(app=sandbox_app, template_id="", day=today)
    assert set(funnel_rows.values_list("shard", flat=True)) == shards

    # What a tenant sees: the chart's day, the stats endpoint's day.
    series = chart_series(sandbox_app, today=today)
    assert series["collected"]["formid"][-1] == 9
    [day] = funnel.daily_funnel(sandbox_app.pk, today, today)
    assert day["credits_collected"] == 9


def test_other_counts_go_to_shard_0_and_add_up_with_the_uploads(sandbox_app):
    today = timezone.now().date()
    DailyStat.objects.create(app=sandbox_app, day=today, shard=5, formids_collected=4)
    funnel.add_to_counters(DailyStat, {"app": sandbox_app, "day": today}, {"sent": 3, "failed": 1})
    funnel.add_to_counters(DailyStat, {"app": sandbox_app, "day": today}, {"sent": 2})
    row = DailyStat.objects.get(app=sandbox_app, day=today, shard=0)
    assert (row.sent, row.failed, row.formids_collected) == (5, 1, 0)

    summary = app_quota(sandbox_app, now=timezone.now())
    assert (summary["sent_today"], summary["failed_today"]) == (5, 1)
    series = chart_series(sandbox_app, today=today)
    formid, messages = series["collected"]["formid"], series["messages"]
    assert (formid[-1], messages["sent"][-1], messages["failed"][-1]) == (4, 5, 1)
    assert formid[-2] == 0  # a day without rows


def test_a_send_that_turned_failed_moves_one_count_in_shard_0_only(sandbox_app):
    day = timezone.now().date() - timedelta(days=1)
    DailyStat.objects.create(app=sandbox_app, day=day, shard=0, sent=2)
    DailyStat.objects.create(app=sandbox_app, day=day, shard=3, sent=1, formids_collected=6)  # not ours
    funnel.sent_turned_failed(sandbox_app.pk, "TID", day)
    by_shard = {
        row.shard: (row.sent, row.failed) for row in DailyStat.objects.filter(app=sandbox_app, day=day)
    }
    assert by_shard == {0: (1, 1), 3: (1, 0)}

"""The funnel on the dashboard: the quota page's card and funnel.json (7/30/90 days), a template's funnel and
open rate — the same numbers as the stats endpoint; outsiders get 404."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from formids import funnel
from templates_app import catalogue

pytestmark = pytest.mark.django_db

ORDER = "TPL-ORDER"


@pytest.fixture
def template(sandbox_app):
    template = catalogue.create_template(
        sandbox_app,
        kind="subscribe",
        template_id=ORDER,
        title="Order shipped",
        fields=[{"key": "thing1", "name": "item"}],
        actor="test",
    )
    today = timezone.now().date()
    app = sandbox_app.pk
    funnel.bump_template_stat(
        app, ORDER, today, credits_collected=12, sent=10, failed=2, opened=4, resubscribed=1
    )
    funnel.bump_template_stat(app, ORDER, today - timedelta(days=1), sent=5, opened=1)
    funnel.bump_template_stat(app, ORDER, today - timedelta(days=40), sent=1000)  # only in the 90 days
    funnel.bump_template_stat(app, "", today, credits_collected=7)
    return template


def test_the_quota_page_shows_the_app_s_funnel_over_30_days(owner_client, template):
    response = owner_client.get(reverse("app-quota", args=[template.app.appid]))
    page = response.content.decode()
    assert '<dd id="f-credits_collected">19</dd>' in page
    assert '<dd id="f-sent">15</dd>' in page
    assert '<dd id="f-failed">2</dd>' in page
    assert '<dd id="f-opened">5</dd>' in page
    assert '<dd id="f-resubscribed">1</dd>' in page
    assert '<option value="30" selected>' in page
    assert "js/funnel-charts.js" in page
    assert reverse("app-quota-funnel", args=[template.app.appid]) in page


def test_the_quota_funnel_json_follows_the_range(owner_client, viewer_client, template):
    url = reverse("app-quota-funnel", args=[template.app.appid])
    week = owner_client.get(url, {"days": "7"}).json()
    assert len(week["days"]) == 7 and week["totals"]["sent"] == 15
    assert week["days"][-1]["date"] == timezone.now().date().isoformat()
    quarter = viewer_client.get(url, {"days": "90"}).json()
    assert len(quarter["days"]) == 90 and quarter["totals"]["sent"] == 1015
    assert len(owner_client.get(url, {"days": "1000"}).json()["days"]) == 30  # not a choice: the default


def test_a_template_page_shows_its_funnel_and_open_rate(owner_client, template):
    response = owner_client.get(reverse("template-detail", args=[template.pk]))
    page = response.content.decode()
    assert '<dd id="f-credits_collected">12</dd>' in page  # its own credits, not the app's formIds
    assert '<dd id="f-sent">15</dd>' in page
    assert 'id="chart-open-rate"' in page

    data = owner_client.get(reverse("template-funnel", args=[template.pk]), {"days": "7"}).json()
    assert data["open_rate"][-2:] == [0.2, 0.4]  # yesterday 1/5, today 4/10
    assert data["open_rate"][0] is None  # no sends that day


def test_the_same_numbers_as_the_stats_endpoint(owner_client, read_api, template):
    today = timezone.now().date()
    api = read_api.get(
        f"/api/v1/apps/{template.app.appid}/stats",
        {"from": (today - timedelta(days=6)).isoformat(), "template": ORDER},
    ).json()
    page = owner_client.get(reverse("template-funnel", args=[template.pk]), {"days": "7"}).json()
    assert api["days"] == page["days"]


def test_the_pages_in_chinese(owner_client, template):
    owner_client.cookies["django_language"] = "zh-hans"
    page = owner_client.get(reverse("template-detail", args=[template.pk])).content.decode()
    assert "再次订阅" in page and "打开率" in page


def test_outsiders_get_404(outsider_client, template):
    assert outsider_client.get(reverse("app-quota-funnel", args=[template.app.appid])).status_code == 404
    assert outsider_client.get(reverse("template-funnel", args=[template.pk])).status_code == 404


def test_operators_read_the_funnel_rows_in_the_admin(client, django_user_model, template):
    client.force_login(django_user_model.objects.create_superuser("ops@x.test", "ops@x.test", "x"))
    page = client.get("/admin/formids/templatedailystat/", {"q": ORDER}).content.decode()
    assert ORDER in page and ">1000<" in page  # the row of 40 days ago
    assert client.get("/admin/formids/templatedailystat/add/").status_code == 403

"""Quota page, its chart JSON and the users table — with an outsider and a viewer for each."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from formids import services as credits
from formids.models import Credit, DailyStat


@pytest.fixture
def stocked_app(sandbox_app):
    """alice: 3 formIds (one expiring within 24 h) and 2 subscribe credits; bob: nothing; 2 sent, 1 failed."""
    alice = credits.touch_user(sandbox_app, "o-alice")
    credits.touch_user(sandbox_app, "o-bob")
    credits.add_formids(sandbox_app, alice, ["formid-0001", "formid-0002"])
    credits.add_formids(sandbox_app, alice, ["formid-0003"], now=timezone.now() - timedelta(days=6, hours=12))
    credits.add_subscribe_credits(sandbox_app, alice, ["TPL-A", "TPL-A"], source=Credit.Source.SDK)
    credits.record_send_outcomes(sandbox_app, sent=2, failed=1)
    return sandbox_app


@pytest.mark.django_db
def test_quota_page_shows_the_figures(owner_client, stocked_app):
    response = owner_client.get(reverse("app-quota", args=[stocked_app.appid]))
    assert response.status_code == 200
    quota = response.context["quota"]
    assert quota["users"] == 2
    assert quota["users_reachable"] == 1
    assert quota["credits"] == {"formid": 3, "subscribe": {"TPL-A": 2}, "long_term": {}}
    assert quota["expiring_24h"] == 1
    assert (quota["sent_today"], quota["failed_today"]) == (2, 1)
    page = response.content.decode()
    assert '<dd id="q-formid">3</dd>' in page
    assert "TPL-A" in page
    assert "vendor/chartjs/chart.umd.js" in page


@pytest.mark.django_db
def test_chart_json_has_30_days_with_zeros(owner_client, stocked_app, django_assert_max_num_queries):
    DailyStat.objects.create(app=stocked_app, day=timezone.now().date() - timedelta(days=3), sent=7)
    DailyStat.objects.create(app=stocked_app, day=timezone.now().date() - timedelta(days=40), sent=99)
    url = reverse("app-quota-chart", args=[stocked_app.appid])
    owner_client.get(url)  # warm the session
    with django_assert_max_num_queries(6):
        data = owner_client.get(url).json()
    assert len(data["days"]) == 30
    assert data["days"][-1] == timezone.now().date().isoformat()
    assert data["collected"]["formid"][-1] == 2  # the third formId was collected 6.5 days ago
    assert sum(data["collected"]["formid"]) == 3
    assert data["collected"]["subscribe"][-1] == 2
    assert data["messages"]["sent"][-1] == 2
    assert data["messages"]["failed"][-1] == 1
    assert data["messages"]["sent"][-4] == 7
    assert sum(data["messages"]["sent"]) == 9  # the 40-day-old row is not in the window
    assert data["collected"]["formid"][0] == 0


@pytest.mark.django_db
def test_outsider_gets_404(outsider_client, stocked_app):
    for name in ("app-quota", "app-quota-chart", "app-users"):
        assert outsider_client.get(reverse(name, args=[stocked_app.appid])).status_code == 404


@pytest.mark.django_db
def test_viewer_sees_the_quota(viewer_client, stocked_app):
    assert viewer_client.get(reverse("app-quota", args=[stocked_app.appid])).status_code == 200


@pytest.mark.django_db
def test_anonymous_is_sent_to_login(client, stocked_app):
    response = client.get(reverse("app-quota", args=[stocked_app.appid]))
    assert response.status_code == 302 and "/login" in response["Location"]


@pytest.mark.django_db
def test_users_table_shows_credits(owner_client, stocked_app):
    page = owner_client.get(reverse("app-users", args=[stocked_app.appid]))
    rows = {row["user"].openid: row for row in page.context["rows"]}
    assert rows["o-alice"]["formid_credits"] == 3
    assert rows["o-alice"]["subscribe_credits"] == [("TPL-A", 2)]
    assert rows["o-alice"]["next_expiry"] is not None
    assert rows["o-bob"]["formid_credits"] == 0
    assert "o-alice" in page.content.decode()


@pytest.mark.django_db
def test_users_table_searches_and_filters(owner_client, stocked_app):
    url = reverse("app-users", args=[stocked_app.appid])
    openids = lambda response: [row["user"].openid for row in response.context["rows"]]  # noqa: E731
    assert openids(owner_client.get(url, {"q": "o-b"})) == ["o-bob"]
    assert openids(owner_client.get(url, {"reachable": "yes"})) == ["o-alice"]
    assert openids(owner_client.get(url, {"reachable": "no"})) == ["o-bob"]
    assert openids(owner_client.get(url, {"q": "nobody"})) == []


@pytest.mark.django_db
def test_users_table_marks_and_filters_who_is_down_to_their_last_credit(owner_client, stocked_app):
    carol = credits.touch_user(stocked_app, "o-carol")
    credits.add_formids(stocked_app, carol, ["formid-0004", "formid-0005"])
    credits.add_subscribe_credits(stocked_app, carol, ["TPL-B"], source=Credit.Source.SDK)
    url = reverse("app-users", args=[stocked_app.appid])
    everyone = owner_client.get(url)
    assert {row["user"].openid: row["last_credit"] for row in everyone.context["rows"]} == {
        "o-alice": False,
        "o-bob": False,
        "o-carol": True,
    }
    last = owner_client.get(url, {"reachable": "last"})
    assert [row["user"].openid for row in last.context["rows"]] == ["o-carol"]
    page = last.content.decode()
    assert '<option value="last" selected>Down to their last credit</option>' in page
    assert '<code>TPL-B</code>: 1 <span class="badge last-credit">last one</span>' in page
    owner_client.cookies["django_language"] = "zh-hans"
    page = owner_client.get(url, {"reachable": "last"}).content.decode()
    assert "只剩最后一次额度" in page and "最后一次</span>" in page


@pytest.mark.django_db
def test_users_table_pages_by_50_with_one_summary_query(
    owner_client, sandbox_app, django_assert_max_num_queries
):
    for i in range(120):
        user = credits.touch_user(sandbox_app, f"o-{i:03d}")
        credits.add_formids(sandbox_app, user, [f"formid-{i:04d}"])
    url = reverse("app-users", args=[sandbox_app.appid])
    owner_client.get(url)
    # session, user, membership, app, count, users, one grouped credit query, their tags, two for the navigation
    with django_assert_max_num_queries(10):
        first = owner_client.get(url)
    assert len(first.context["rows"]) == 50
    assert first.context["rows"][0]["user"].openid == "o-000"
    third = owner_client.get(url, {"page": 3, "reachable": "yes"})
    assert [r["user"].openid for r in third.context["rows"]][0] == "o-100"
    assert len(third.context["rows"]) == 20
    assert "reachable=yes&amp;page=2" in third.content.decode()


@pytest.mark.django_db
def test_quota_page_in_chinese(owner_client, stocked_app):
    owner_client.cookies["django_language"] = "zh-hans"
    page = owner_client.get(reverse("app-quota", args=[stocked_app.appid])).content.decode()
    assert "可触达用户" in page
    assert "24 小时内过期" in page

"""GET /api/v1/apps/{appid}/tags → {results: [{tag, users, users_reachable}]}."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from formids import audience
from formids import services as credits

pytestmark = pytest.mark.django_db


@pytest.fixture
def app(sandbox_app):
    """vip: alice (a formId), bob (a subscribe credit, pushes off), carol (a formId inside the expiry margin)
    and dave (a claimed credit only); gold: alice; new: erin (nothing)."""
    now = timezone.now()
    users = {
        name: credits.touch_user(sandbox_app, f"o{name:0<27}")
        for name in ("alice", "bob", "carol", "dave", "erin")
    }
    credits.add_formids(sandbox_app, users["alice"], ["formidAAAAAAAAAAAAAAAAAAAAAAAAA1"], now=now)
    credits.add_subscribe_credits(sandbox_app, users["bob"], ["TPL_A"], source="sdk")
    credits.set_push_enabled(users["bob"], False)
    credits.add_formids(
        sandbox_app,
        users["carol"],
        ["formidCCCCCCCCCCCCCCCCCCCCCCCCC1"],
        now=now - timedelta(days=6, hours=23, minutes=30),
    )
    credits.add_subscribe_credits(sandbox_app, users["dave"], ["TPL_A"], source="sdk")
    credits.claim_credits(
        sandbox_app,
        template_kind="subscribe",
        template_id="TPL_A",
        openids=[users["dave"].openid],
        claimed_by="x",
    )
    for name in ("alice", "bob", "carol", "dave"):
        audience.set_user_audience(users[name], tags=["vip", "gold"] if name == "alice" else ["vip"])
    audience.set_user_audience(users["erin"], tags=["new"])
    return sandbox_app


def test_it_lists_the_tags_with_their_users_and_reachable_users(read_api, app):
    response = read_api.get(f"/api/v1/apps/{app.appid}/tags")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "results": [
            {"tag": "gold", "users": 1, "users_reachable": 1},
            {"tag": "new", "users": 1, "users_reachable": 0},
            # bob has turned pushes off, carol's formId is in its last hour, dave's credit is claimed
            {"tag": "vip", "users": 4, "users_reachable": 1},
        ]
    }


def test_reachable_means_what_the_quota_means(read_api, app):
    """Tag everybody: users_reachable is the quota's users_reachable less the users with pushes off."""
    for user in app.users.all():
        audience.tag_members(app, "all", openids=[user.openid])
    quota = read_api.get(f"/api/v1/apps/{app.appid}/quota").json()
    [everyone] = [
        t for t in read_api.get(f"/api/v1/apps/{app.appid}/tags").json()["results"] if t["tag"] == "all"
    ]
    assert everyone == {
        "tag": "all",
        "users": quota["users"],
        "users_reachable": quota["users_reachable"] - 1,
    }


def test_an_app_without_tags_has_an_empty_list(read_api, sandbox_app):
    assert read_api.get(f"/api/v1/apps/{sandbox_app.appid}/tags").json() == {"results": []}


def test_another_tenants_app_is_404(outsider_api, app):
    response = outsider_api.get(f"/api/v1/apps/{app.appid}/tags")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_the_counts_are_one_query(read_api, app, django_assert_max_num_queries):
    read_api.get(f"/api/v1/apps/{app.appid}/tags")  # the key's last_used_at
    with django_assert_max_num_queries(3):  # key, app, the grouped count
        assert len(read_api.get(f"/api/v1/apps/{app.appid}/tags").json()["results"]) == 3

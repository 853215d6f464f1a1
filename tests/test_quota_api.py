"""/api/v1/apps/{appid}/quota, /users, /users/{openid}."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from formids import services

pytestmark = pytest.mark.django_db


@pytest.fixture
def pool(sandbox_app):
    """alice: 2 formIds (one expiring within 24 h) + a prepay_id (3 sends) + 2 subscribe credits;
    bob: one subscribe credit; carol: nothing usable (her formId is inside the expiry margin)."""
    now = timezone.now()
    alice = services.touch_user(sandbox_app, "oAlice000000000000000000000")
    bob = services.touch_user(sandbox_app, "oBob00000000000000000000000")
    carol = services.touch_user(sandbox_app, "oCarol0000000000000000000000")
    services.add_formids(
        sandbox_app, alice, ["formidAAAAAAAAAAAAAAAAAAAAAAAAA1"], now=now - timedelta(days=6, hours=12)
    )
    services.add_formids(sandbox_app, alice, ["formidAAAAAAAAAAAAAAAAAAAAAAAAA2"], now=now)
    services.add_formids(sandbox_app, alice, ["wx20261124000000aaaaaaaaaaaaaaaaaaaa"], kind="prepay", now=now)
    services.add_subscribe_credits(sandbox_app, alice, ["TPL_A", "TPL_B"], source="sdk")
    services.add_subscribe_credits(sandbox_app, bob, ["TPL_A"], source="events")
    services.add_formids(
        sandbox_app,
        carol,
        ["formidCCCCCCCCCCCCCCCCCCCCCCCCC1"],
        now=now - timedelta(days=6, hours=23, minutes=30),
    )
    services.record_send_outcomes(sandbox_app, sent=5, failed=2)
    return sandbox_app, alice, bob, carol


def test_the_quota_counts_usable_sends(api, pool):
    app, *_ = pool
    response = api.get(f"/api/v1/apps/{app.appid}/quota")
    assert response.status_code == 200
    assert response.json() == {
        "users": 3,
        "users_reachable": 2,
        "credits": {"formid": 5, "subscribe": {"TPL_A": 2, "TPL_B": 1}, "long_term": {}},
        "expiring_24h": 1,
        "sent_today": 5,
        "failed_today": 2,
    }


def test_claimed_and_used_credits_leave_the_quota(api, pool):
    app, alice, *_ = pool
    claimed = services.claim_credits(
        app, template_kind="subscribe", template_id="TPL_B", openids=[alice.openid], claimed_by="x"
    )
    assert api.get(f"/api/v1/apps/{app.appid}/quota").json()["credits"]["subscribe"] == {"TPL_A": 2}
    services.release([claimed[alice.openid].id], "x")
    assert api.get(f"/api/v1/apps/{app.appid}/quota").json()["credits"]["subscribe"] == {
        "TPL_A": 2,
        "TPL_B": 1,
    }


def test_the_users_list_shows_each_users_credits(api, pool):
    app, alice, bob, carol = pool
    results = api.get(f"/api/v1/apps/{app.appid}/users").json()["results"]
    by_openid = {u["openid"]: u for u in results}
    assert set(by_openid) == {alice.openid, bob.openid, carol.openid}
    assert by_openid[alice.openid]["formid_credits"] == 5
    assert by_openid[alice.openid]["subscribe_credits"] == {"TPL_A": 1, "TPL_B": 1}
    assert by_openid[alice.openid]["next_expiry"].endswith("Z")
    assert by_openid[bob.openid] == {**by_openid[bob.openid], "formid_credits": 0, "next_expiry": None}
    assert by_openid[carol.openid]["formid_credits"] == 0


@pytest.mark.parametrize(("reachable", "expected"), [("true", {"alice", "bob"}), ("false", {"carol"})])
def test_the_users_list_filters_by_reachability(api, pool, reachable, expected):
    app, *_ = pool
    results = api.get(f"/api/v1/apps/{app.appid}/users?reachable={reachable}").json()["results"]
    assert {u["openid"].rstrip("0")[1:].lower() for u in results} == expected


def test_the_users_list_searches_by_openid_prefix_and_pages(api, pool):
    app, alice, *_ = pool
    assert [u["openid"] for u in api.get(f"/api/v1/apps/{app.appid}/users?search=oAl").json()["results"]] == [
        alice.openid
    ]
    first = api.get(f"/api/v1/apps/{app.appid}/users?limit=2").json()
    second = api.get(first["next"]).json()
    assert len(first["results"]) == 2 and len(second["results"]) == 1 and second["next"] is None


def test_a_bad_reachable_value_is_a_400(api, pool):
    app, *_ = pool
    response = api.get(f"/api/v1/apps/{app.appid}/users?reachable=maybe")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "reachable"


def test_one_user(read_api, pool):
    app, alice, *_ = pool
    response = read_api.get(f"/api/v1/apps/{app.appid}/users/{alice.openid}")
    assert response.status_code == 200
    assert response.json()["subscribe_credits"] == {"TPL_A": 1, "TPL_B": 1}
    assert read_api.get(f"/api/v1/apps/{app.appid}/users/oNobody").status_code == 404


@pytest.mark.parametrize("suffix", ["quota", "users", "users/oAlice000000000000000000000"])
def test_another_tenant_cannot_see_the_pool(outsider_api, pool, suffix):
    app, *_ = pool
    response = outsider_api.get(f"/api/v1/apps/{app.appid}/{suffix}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_the_quota_query_count_does_not_grow_with_users(api, pool, django_assert_max_num_queries):
    app, *_ = pool
    for n in range(30):
        user = services.touch_user(app, f"oMore{n:022d}")
        services.add_formids(app, user, [f"formidMORE{n:022d}"])
    with django_assert_max_num_queries(10):
        assert api.get(f"/api/v1/apps/{app.appid}/users?limit=50").status_code == 200
    with django_assert_max_num_queries(10):
        assert api.get(f"/api/v1/apps/{app.appid}/quota").json()["users"] == 33


def test_the_periodic_tasks_run_the_sweeps(pool):
    from formids import tasks

    app, alice, *_ = pool
    assert tasks.expire_credits.apply().get() == 1  # carol's formId is inside the margin
    claimed = services.claim_credits(
        app,
        template_kind="formid",
        template_id="",
        openids=[alice.openid],
        claimed_by="dead-worker",
        now=timezone.now() - timedelta(hours=1),
    )
    assert claimed
    assert tasks.release_stale_claims.apply().get() == 1


def test_the_users_list_shows_and_filters_who_is_down_to_their_last_credit(api, sandbox_app):
    """One send left for some way of reaching the user (formIds and prepay_ids pooled, a subscribe template
    on its own): the moment to ask for more. A used credit moves a user into the list."""
    now = timezone.now()
    dave, erin, frank, gail = (services.touch_user(sandbox_app, f"o{name}".ljust(28, "0")) for name in "DEFG")
    services.start_long_term(sandbox_app, gail, ["TPL_LONG"], source="sdk")  # never the last: sends keep it
    services.add_formids(
        sandbox_app, dave, ["formidDDDDDDDDDDDDDDDDDDDDDDDDD1", "formidDDDDDDDDDDDDDDDDDDDDDDDDD2"]
    )
    services.add_formids(sandbox_app, erin, ["wx20261205000000eeeeeeeeeeeeeeeeeeee"], kind="prepay", now=now)
    services.add_formids(sandbox_app, frank, ["formidFFFFFFFFFFFFFFFFFFFFFFFFF1"], now=now)
    services.add_subscribe_credits(sandbox_app, frank, ["TPL_A", "TPL_A"], source="sdk")
    url = f"/api/v1/apps/{sandbox_app.appid}/users"

    def last(query: str = "") -> dict[str, bool]:
        return {u["openid"][:2]: u["last_credit"] for u in api.get(url + query).json()["results"]}

    assert last() == {"oD": False, "oE": False, "oF": True, "oG": False}
    assert set(last("?last_credit=true")) == {"oF"}
    assert set(last("?last_credit=false")) == {"oD", "oE", "oG"}

    claimed = services.claim_credits(
        sandbox_app, template_kind="formid", template_id="", openids=[dave.openid], claimed_by="x"
    )
    services.consume([claimed[dave.openid].id], "x")
    assert last("?last_credit=true") == {"oD": True, "oF": True}
    assert api.get(f"{url}/{dave.openid}").json()["last_credit"] is True
    response = api.get(url + "?last_credit=soon")
    assert response.status_code == 400 and response.json()["error"]["field"] == "last_credit"

"""POST and DELETE /api/v1/apps/{appid}/tags/{tag}/members {openids?, aliases?}: bulk tagging, 1 to 10,000
members per call, in a fixed number of statements (../shared/API.md "Audience — aliases and tags")."""

from __future__ import annotations

import json
import time

import pytest
from django.db import connection

from formids import audience
from formids import services as credits
from formids.models import MiniUser, UserTag

pytestmark = pytest.mark.django_db

ALICE, BOB, CAROL = (
    "oAlice000000000000000000000",
    "oBob00000000000000000000000",
    "oCarol0000000000000000000000",
)


@pytest.fixture
def app(sandbox_app):
    """alice (alias user-1), bob (alias user-2), carol (no alias)."""
    for openid, alias in ((ALICE, "user-1"), (BOB, "user-2"), (CAROL, None)):
        audience.set_user_audience(credits.touch_user(sandbox_app, openid), alias=alias)
    return sandbox_app


def members_url(app, tag: str = "vip") -> str:
    return f"/api/v1/apps/{app.appid}/tags/{tag}/members"


def add(client, app, body, tag: str = "vip"):
    return client.post(members_url(app, tag), body, format="json")


def remove(client, app, body, tag: str = "vip"):
    return client.delete(members_url(app, tag), body, format="json")


def tagged(app, tag: str = "vip") -> set[str]:
    return set(UserTag.objects.filter(app=app, tag=tag).values_list("user__openid", flat=True))


def assert_invalid(response, field: str) -> None:
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "validation_error"
    assert response.json()["error"]["field"] == field


# --- adding ------------------------------------------------------------------------------------------
def test_it_tags_users_by_openid_and_alias_and_names_the_unknown(api, app):
    response = add(api, app, {"openids": [ALICE, "oNobody"], "aliases": ["user-2", "ghost"]})
    assert response.status_code == 200, response.content
    assert response.json() == {"added": 2, "unknown": ["oNobody", "ghost"]}
    assert tagged(app) == {ALICE, BOB}


def test_users_already_tagged_count_in_neither(api, app):
    add(api, app, {"openids": [ALICE]})
    response = add(api, app, {"openids": [ALICE, BOB], "aliases": ["user-1"]})
    assert response.json() == {"added": 1, "unknown": []}
    assert tagged(app) == {ALICE, BOB}


def test_a_user_named_twice_is_tagged_once(api, app):
    response = add(api, app, {"openids": [CAROL, CAROL, ALICE], "aliases": ["user-1", "user-1", "x", "x"]})
    assert response.json() == {"added": 2, "unknown": ["x"]}


def test_tags_are_per_app_and_an_outsiders_openids_are_unknown(api, app, tenant):
    from tenants import services
    from tests.conftest import random_appid, random_secret

    other = services.register_app(
        tenant, appid=random_appid(), secret=random_secret(), name="B", sandbox_app=True
    )
    credits.touch_user(other, "oOnlyInB")
    response = add(api, app, {"openids": ["oOnlyInB", ALICE]})
    assert response.json() == {"added": 1, "unknown": ["oOnlyInB"]}
    assert tagged(other) == set()


def test_the_tag_joins_the_users_own_tags(api, app):
    alice = MiniUser.objects.get(app=app, openid=ALICE)
    audience.set_user_audience(alice, tags=["gold"])
    add(api, app, {"openids": [ALICE]}, tag="city:shanghai")
    assert api.get(f"/api/v1/apps/{app.appid}/users/{ALICE}").json()["tags"] == ["city:shanghai", "gold"]


def test_a_user_with_fifty_tags_is_a_400_and_nobody_is_tagged(api, app):
    carol = MiniUser.objects.get(app=app, openid=CAROL)
    audience.set_user_audience(carol, tags=[f"t{n:02d}" for n in range(50)])
    response = add(api, app, {"openids": [ALICE, CAROL]}, tag="one-more")
    assert_invalid(response, "openids[1]")
    assert tagged(app, "one-more") == set()
    assert_invalid(add(api, app, {"aliases": ["user-1"], "openids": [CAROL]}, tag="one-more"), "openids[0]")
    # One of her own 50 again is fine: it adds nothing.
    assert add(api, app, {"openids": [ALICE, CAROL]}, tag="t07").json() == {"added": 1, "unknown": []}


# --- removing ----------------------------------------------------------------------------------------
def test_it_untags_users_by_openid_and_alias(api, app):
    add(api, app, {"openids": [ALICE, BOB, CAROL]})
    add(api, app, {"openids": [ALICE]}, tag="gold")
    response = remove(api, app, {"openids": [ALICE, "oNobody"], "aliases": ["user-2", "user-2", "ghost"]})
    assert response.status_code == 200, response.content
    assert response.json() == {"removed": 2, "unknown": ["oNobody", "ghost"]}
    assert tagged(app) == {CAROL}
    assert tagged(app, "gold") == {ALICE}  # other tags stay


def test_users_without_the_tag_are_not_counted_as_removed(api, app):
    add(api, app, {"openids": [ALICE]})
    assert remove(api, app, {"openids": [ALICE, BOB]}).json() == {"removed": 1, "unknown": []}
    assert remove(api, app, {"aliases": ["user-1"]}).json() == {"removed": 0, "unknown": []}


# --- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "openids"),
        ({"openids": []}, "openids"),
        ({"openids": [], "aliases": []}, "openids"),
        ({"aliases": []}, "aliases"),
        ({"openids": ALICE}, "openids"),
        ({"aliases": "user-1"}, "aliases"),
        ({"openids": [ALICE, 7]}, "openids[1]"),
        ({"openids": [""]}, "openids[0]"),
        ({"openids": ["o" * 65]}, "openids[0]"),
        ({"aliases": ["user-1", ""]}, "aliases[1]"),
        ({"aliases": ["a" * 129]}, "aliases[0]"),
        ({"aliases": ["new\nline"]}, "aliases[0]"),
        ({"aliases": [None]}, "aliases[0]"),
        ({"openids": [ALICE], "tags": ["vip"]}, "tags"),
    ],
)
@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_bad_input_is_a_400_naming_the_field(api, app, body, field, method):
    add(api, app, {"openids": [BOB]})
    send = add if method == "POST" else remove
    assert_invalid(send(api, app, body), field)
    assert tagged(app) == {BOB}


@pytest.mark.parametrize("tag", ["has space", "t" * 65, "中文", "a,b"])
@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_a_malformed_tag_is_a_400(api, app, tag, method):
    send = add if method == "POST" else remove
    assert_invalid(send(api, app, {"openids": [ALICE]}, tag=tag), "tag")
    assert UserTag.objects.count() == 0


def test_tags_of_every_allowed_character_work(api, app):
    for tag in ("city:shanghai", "abandoned-cart", "v1.2_beta", "A" * 64):
        assert add(api, app, {"openids": [ALICE]}, tag=tag).json()["added"] == 1


def test_more_than_ten_thousand_members_is_a_400(api, app):
    openids = [f"o{n:027d}" for n in range(6000)]
    aliases = [f"u{n}" for n in range(4001)]
    assert_invalid(add(api, app, {"openids": openids, "aliases": aliases}), "openids")
    assert_invalid(add(api, app, {"aliases": [f"u{n}" for n in range(10_001)]}), "aliases")
    assert UserTag.objects.count() == 0


def test_a_body_over_two_mib_is_a_413_and_one_over_64_kib_is_fine(api, app):
    fine = {"aliases": ["a" * 120 + f"{n:08d}" for n in range(10_000)]}  # 1.3 MB of the longest aliases
    assert len(json.dumps(fine)) > 1024 * 1024
    response = add(api, app, fine)
    assert response.status_code == 200, response.content[:300]
    assert response.json()["added"] == 0 and len(response.json()["unknown"]) == 10_000
    too_big = {"aliases": ["a" * 128] * 9000, "openids": ["o" * 64] * 1000, "pad": "x" * (2 * 1024 * 1024)}
    response = add(api, app, too_big)
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"


def test_other_api_routes_keep_the_64_kib_limit(api, app):
    big = {"alias": "a", "tags": ["t" * 64] * 1100}
    response = api.patch(f"/api/v1/apps/{app.appid}/users/{ALICE}", big, format="json")
    assert response.status_code == 413 and "64 KiB" in response.json()["error"]["message"]


# --- who may ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_a_read_key_cannot_tag_or_untag(read_api, api, app, method):
    add(api, app, {"openids": [BOB]})
    send = add if method == "POST" else remove
    response = send(read_api, app, {"openids": [ALICE, BOB]})
    assert response.status_code == 403 and response.json()["error"]["code"] == "permission_denied"
    assert tagged(app) == {BOB}


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_another_tenants_app_is_404(outsider_api, api, app, method):
    add(api, app, {"openids": [BOB]})
    send = add if method == "POST" else remove
    response = send(outsider_api, app, {"openids": [ALICE, BOB]})
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert tagged(app) == {BOB}


# --- 10,000 at once --------------------------------------------------------------------------------------
@pytest.fixture
def crowd(app):
    """10,000 users, the first half with aliases."""
    MiniUser.objects.bulk_create(
        MiniUser(app=app, openid=f"oCrowd{n:022d}", alias=f"crowd-{n}" if n < 5000 else None)
        for n in range(10_000)
    )
    return app


def crowd_body() -> dict:
    return {
        "openids": [f"oCrowd{n:022d}" for n in range(5000, 10_000)],
        "aliases": [f"crowd-{n}" for n in range(5000)],
    }


def test_tagging_ten_thousand_users_is_a_few_statements(crowd, django_assert_max_num_queries):
    body = crowd_body()
    # the users (one UNION), the 50-tag check, one INSERT … SELECT; the savepoint around them
    with django_assert_max_num_queries(5) as captured:
        result = audience.tag_members(crowd, "everyone", **body)
    assert result == {"added": 10_000, "unknown": []}
    assert sum("INSERT" in q["sql"] for q in captured.captured_queries) == 1
    with django_assert_max_num_queries(5):
        assert audience.untag_members(crowd, "everyone", **body) == {"removed": 10_000, "unknown": []}
    assert not UserTag.objects.filter(tag="everyone").exists()


def test_tagging_ten_thousand_users_through_the_api_takes_under_a_second(api, crowd):
    body = crowd_body()
    api.get(f"/api/v1/apps/{crowd.appid}/tags")  # warm up: key, connection, URL resolver
    started = time.perf_counter()
    response = add(api, crowd, body, tag="everyone")
    elapsed = time.perf_counter() - started
    assert response.status_code == 200 and response.json() == {"added": 10_000, "unknown": []}
    assert elapsed < 1.0, f"tagging 10,000 users took {elapsed:.3f} s ({connection.vendor})"
    print(f"\ntagged 10,000 users in {elapsed * 1000:.0f} ms ({connection.vendor})")
    started = time.perf_counter()
    assert remove(api, crowd, body, tag="everyone").json()["removed"] == 10_000
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"untagging 10,000 users took {elapsed:.3f} s ({connection.vendor})"
    print(f"untagged 10,000 users in {elapsed * 1000:.0f} ms ({connection.vendor})")

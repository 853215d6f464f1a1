"""The audience in the dashboard: the users table with alias and tags (and filters by both), one user's page,
the tag list with counts, the identity secret on the app page; the admin's alias search. Each with the owner,
a viewer and an outsider."""

from __future__ import annotations

import pytest
from django.urls import reverse

from formids import audience
from formids import services as credits
from formids.models import MiniUser
from tenants.models import AuditEvent, MiniProgram

pytestmark = pytest.mark.django_db


@pytest.fixture
def app(sandbox_app):
    """alice: alias user-1, tags vip + city:shanghai, a formId; bob: tag vip, pushes off; carol: nothing."""
    alice = credits.touch_user(sandbox_app, "o-alice")
    bob = credits.touch_user(sandbox_app, "o-bob")
    credits.touch_user(sandbox_app, "o-carol")
    credits.add_formids(sandbox_app, alice, ["formid-0001"])
    credits.set_push_enabled(bob, False)
    audience.set_user_audience(alice, alias="user-1", tags=["vip", "city:shanghai"])
    audience.set_user_audience(bob, tags=["vip"])
    return sandbox_app


def openids(response) -> list[str]:
    return [row["user"].openid for row in response.context["rows"]]


# --- the users table -------------------------------------------------------------------------------------
def test_the_users_table_shows_alias_and_tags(owner_client, app):
    response = owner_client.get(reverse("app-users", args=[app.appid]))
    rows = {row["user"].openid: row for row in response.context["rows"]}
    assert (rows["o-alice"]["user"].alias, rows["o-alice"]["tags"]) == ("user-1", ["city:shanghai", "vip"])
    assert rows["o-carol"]["tags"] == []
    html = response.content.decode()
    assert "<code>user-1</code>" in html and 'href="?tag=city%3Ashanghai"' in html
    assert reverse("app-user", args=[app.appid, "o-alice"]) in html


def test_the_users_table_filters_by_tag_and_alias(owner_client, app):
    url = reverse("app-users", args=[app.appid])
    assert openids(owner_client.get(url, {"tag": "vip"})) == ["o-alice", "o-bob"]
    assert openids(owner_client.get(url, {"tag": "city:shanghai"})) == ["o-alice"]
    assert openids(owner_client.get(url, {"alias": "user-1"})) == ["o-alice"]
    assert openids(owner_client.get(url, {"alias": "user-"})) == []
    assert openids(owner_client.get(url, {"tag": "vip", "reachable": "yes"})) == ["o-alice"]
    assert openids(owner_client.get(url, {"tag": "", "alias": ""})) == ["o-alice", "o-bob", "o-carol"]
    paged = owner_client.get(url, {"tag": "vip"}).context["querystring"]
    assert paged == "tag=vip"


def test_a_malformed_filter_is_shown_as_an_error(owner_client, app):
    response = owner_client.get(reverse("app-users", args=[app.appid]), {"tag": "not a tag"})
    assert response.status_code == 400
    assert response.context["rows"] == []
    assert 'id="tag-error"' in response.content.decode()


def test_the_users_table_costs_one_more_query_for_tags(owner_client, app, django_assert_max_num_queries):
    for n in range(60):
        audience.set_user_audience(credits.touch_user(app, f"o-{n:03d}"), tags=["bulk", f"t{n % 3}"])
    url = reverse("app-users", args=[app.appid])
    owner_client.get(url)
    # session, user, membership, app, count, users, credits, tags, two for the navigation
    with django_assert_max_num_queries(10):
        response = owner_client.get(url, {"tag": "bulk"})
    assert len(response.context["rows"]) == 50 and all(
        "bulk" in row["tags"] for row in response.context["rows"]
    )


# --- one user ----------------------------------------------------------------------------------------------
def test_a_users_page_lists_their_tags(owner_client, app):
    response = owner_client.get(reverse("app-user", args=[app.appid, "o-alice"]))
    assert response.status_code == 200
    assert response.context["tags"] == ["city:shanghai", "vip"]
    assert response.context["formid_credits"] == 1
    html = response.content.decode()
    assert "<code>user-1</code>" in html
    assert f"{reverse('app-users', args=[app.appid])}?tag=vip" in html


def test_a_user_without_alias_or_tags_says_so(owner_client, app):
    html = owner_client.get(reverse("app-user", args=[app.appid, "o-carol"])).content.decode()
    assert "not bound" in html and "No tags." in html


def test_an_unknown_user_is_404(owner_client, app):
    assert owner_client.get(reverse("app-user", args=[app.appid, "o-nobody"])).status_code == 404


# --- tags ------------------------------------------------------------------------------------------------
def test_the_tag_list_shows_counts(owner_client, app):
    response = owner_client.get(reverse("app-tags", args=[app.appid]))
    assert response.status_code == 200
    assert response.context["tags"] == [
        {"tag": "city:shanghai", "users": 1, "users_reachable": 1},
        {"tag": "vip", "users": 2, "users_reachable": 1},  # bob turned pushes off
    ]
    assert f"{reverse('app-users', args=[app.appid])}?tag=city%3Ashanghai" in response.content.decode()


def test_the_pages_speak_chinese(owner_client, app):
    owner_client.cookies["django_language"] = "zh-hans"
    tags = owner_client.get(reverse("app-tags", args=[app.appid])).content.decode()
    assert "的标签" in tags and "可触达用户" in tags
    users = owner_client.get(reverse("app-users", args=[app.appid]), {"tag": "x y"}).content.decode()
    assert "别名" in users and "标签由 1 到 64 个字符组成" in users
    user = owner_client.get(reverse("app-user", args=[app.appid, "o-carol"])).content.decode()
    assert "未绑定" in user and "没有标签。" in user
    detail = owner_client.get(reverse("app-detail", args=[app.appid])).content.decode()
    assert "身份验证密钥" in detail


# --- the identity secret ------------------------------------------------------------------------------------
def test_the_owner_sees_and_rotates_the_identity_secret(owner_client, app):
    old = app.get_identity_secret()
    html = owner_client.get(reverse("app-detail", args=[app.appid])).content.decode()
    assert f'<code id="identity-secret">{old}</code>' in html
    response = owner_client.post(reverse("app-rotate-identity-secret", args=[app.appid]))
    assert response.status_code == 302 and response["Location"].endswith("#identity")
    new = MiniProgram.objects.get(pk=app.pk).get_identity_secret()
    assert new != old and new in owner_client.get(reverse("app-detail", args=[app.appid])).content.decode()
    event = AuditEvent.objects.get(action="app.identity_secret_rotate")
    assert event.actor == "user:owner@acme.test"


def test_a_viewer_sees_the_pages_but_not_the_secret(viewer_client, app):
    for name, args in (("app-users", []), ("app-tags", []), ("app-user", ["o-alice"])):
        assert viewer_client.get(reverse(name, args=[app.appid, *args])).status_code == 200
    html = viewer_client.get(reverse("app-detail", args=[app.appid])).content.decode()
    assert app.get_identity_secret() not in html and "Only members who can make changes" in html
    old = app.get_identity_secret()
    assert viewer_client.post(reverse("app-rotate-identity-secret", args=[app.appid])).status_code == 403
    assert MiniProgram.objects.get(pk=app.pk).get_identity_secret() == old


def test_an_outsider_gets_404_everywhere(outsider_client, app):
    old = app.get_identity_secret()
    for name, args in (("app-users", []), ("app-tags", []), ("app-user", ["o-alice"])):
        assert outsider_client.get(reverse(name, args=[app.appid, *args])).status_code == 404
    assert outsider_client.post(reverse("app-rotate-identity-secret", args=[app.appid])).status_code == 404
    assert MiniProgram.objects.get(pk=app.pk).get_identity_secret() == old


# --- the admin -------------------------------------------------------------------------------------------
@pytest.fixture
def staff(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("ops@x.test", "ops@x.test", "x"))
    return client


def test_the_admin_finds_a_user_by_alias_and_shows_their_tags(staff, app):
    response = staff.get("/admin/formids/miniuser/", {"q": "user-1"})
    assert response.status_code == 200
    assert [u.openid for u in response.context["cl"].result_list] == ["o-alice"]
    assert "city:shanghai, vip" in response.content.decode()
    alice = MiniUser.objects.get(openid="o-alice")
    page = staff.get(f"/admin/formids/miniuser/{alice.pk}/change/").content.decode()
    assert "city:shanghai" in page and "user-1" in page


def test_the_admin_lists_tags_by_tag(staff, app):
    response = staff.get("/admin/formids/usertag/", {"q": "vip"})
    assert response.status_code == 200
    assert sorted(t.user.openid for t in response.context["cl"].result_list) == ["o-alice", "o-bob"]
    assert (
        app.get_identity_secret()
        not in staff.get(f"/admin/tenants/miniprogram/{app.pk}/change/").content.decode()
    )

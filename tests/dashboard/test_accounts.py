"""Account pages: sign-up, password reset, tenant switch, members and API keys — with an outsider for each."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.urls import reverse

from tenants import services
from tenants.dashboard_scope import SESSION_KEY
from tenants.models import ApiKey, AuditEvent, Membership
from tests.conftest import api_client
from tests.dashboard.conftest import PASSWORD

LINK_RE = re.compile(r"https?://[^/\s]+(/accounts/reset/\S+)")


def membership(tenant, email):
    return Membership.objects.get(tenant=tenant, user__email=email)


# --- sign-up -----------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_signup_creates_tenant_and_owner_and_logs_in(client):
    response = client.post(
        reverse("signup"), {"email": "new@shop.test", "password": "a long pass phrase", "tenant_name": "Shop"}
    )
    assert response.status_code == 302
    m = Membership.objects.get(user__email="new@shop.test")
    assert (m.tenant.name, m.role) == ("Shop", Membership.Role.OWNER)
    assert int(client.session["_auth_user_id"]) == m.user_id
    assert client.session[SESSION_KEY] == m.tenant_id
    assert client.get(reverse("members")).status_code == 200


@pytest.mark.django_db
def test_signup_refuses_a_taken_email(client, tenant):
    response = client.post(
        reverse("signup"), {"email": "OWNER@acme.test", "password": "a long pass phrase", "tenant_name": "X"}
    )
    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    assert Membership.objects.filter(user__email="owner@acme.test").count() == 1


@pytest.mark.django_db
def test_signup_refuses_a_weak_password(client):
    response = client.post(reverse("signup"), {"email": "a@b.test", "password": "123", "tenant_name": "X"})
    assert response.status_code == 200
    assert not get_user_model().objects.filter(email="a@b.test").exists()


@pytest.mark.django_db
def test_a_user_without_tenant_only_names_one(client, django_user_model):
    django_user_model.objects.create_user("lone@x.test", "lone@x.test", PASSWORD)
    client.login(username="lone@x.test", password=PASSWORD)
    assert client.get(reverse("members")).url == reverse("signup")
    page = client.get(reverse("signup")).content.decode()
    assert 'name="tenant_name"' in page and 'name="password"' not in page
    assert client.post(reverse("signup"), {"tenant_name": "Lone Co"}).status_code == 302
    assert membership(Membership.objects.get(user__email="lone@x.test").tenant, "lone@x.test").role == "owner"


# --- password reset ----------------------------------------------------------------------------------
@pytest.mark.django_db
def test_password_reset_mails_a_link_that_sets_a_new_password(client, tenant):
    response = client.post(reverse("password_reset"), {"email": "owner@acme.test"})
    assert response.status_code == 302
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["owner@acme.test"]
    link = LINK_RE.search(mail.outbox[0].body).group(1)
    form_url = client.get(link).url  # Django swaps the token for a session marker
    new = "another long pass phrase"
    assert client.post(form_url, {"new_password1": new, "new_password2": new}).status_code == 302
    assert client.login(username="owner@acme.test", password=new)


@pytest.mark.django_db
def test_password_reset_pages_are_ours_in_chinese(client, settings, tenant):
    page = client.get(reverse("password_reset"), HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "重置密码" in page and 'class="topbar"' in page


@pytest.mark.django_db
def test_password_reset_page_extends_our_layout(client):
    assert 'class="topbar"' in client.get(reverse("password_reset")).content.decode()


# --- tenant switch -----------------------------------------------------------------------------------
@pytest.mark.django_db
def test_switch_tenant_changes_the_current_tenant(owner_client, tenant, other_tenant):
    owner = get_user_model().objects.get(email="owner@acme.test")
    Membership.objects.create(tenant=other_tenant, user=owner, role="viewer")
    response = owner_client.post(
        reverse("switch-tenant"), {"tenant": other_tenant.pk, "next": reverse("api-keys")}
    )
    assert response.url == reverse("api-keys")
    assert owner_client.session[SESSION_KEY] == other_tenant.pk
    assert (
        owner_client.post(reverse("api-keys"), {"name": "x", "scope": "read"}).status_code == 403
    )  # viewer there


@pytest.mark.django_db
def test_switch_tenant_ignores_an_unsafe_next(owner_client, tenant):
    response = owner_client.post(
        reverse("switch-tenant"), {"tenant": tenant.pk, "next": "https://evil.test/"}
    )
    assert "evil" not in response.url


@pytest.mark.django_db
def test_switch_tenant_refuses_a_tenant_you_are_not_in(owner_client, tenant, other_tenant):
    assert owner_client.post(reverse("switch-tenant"), {"tenant": other_tenant.pk}).status_code == 404
    assert owner_client.post(reverse("switch-tenant"), {"tenant": "nope"}).status_code == 404
    assert owner_client.session.get(SESSION_KEY) != other_tenant.pk


# --- members -----------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_members_lists_members_with_roles(owner_client, viewer):
    page = owner_client.get(reverse("members")).content.decode()
    assert "owner@acme.test" in page and "viewer@acme.test" in page


@pytest.mark.django_db
def test_inviting_an_existing_user_adds_them_at_once(owner_client, tenant, other_tenant):
    response = owner_client.post(reverse("member-invite"), {"email": "owner@globex.test", "role": "admin"})
    assert response.status_code == 302
    assert membership(tenant, "owner@globex.test").role == "admin"
    assert AuditEvent.objects.for_tenant(tenant).filter(action="member.invite").exists()
    again = owner_client.post(reverse("member-invite"), {"email": "owner@globex.test", "role": "admin"})
    assert again.status_code == 400


@pytest.mark.django_db
def test_inviting_a_new_email_mails_a_password_set_link(
    owner_client, client, tenant, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        owner_client.post(reverse("member-invite"), {"email": "New@Acme.test", "role": "viewer"})
    user = get_user_model().objects.get(email="new@acme.test")
    assert not user.has_usable_password()
    assert membership(tenant, "new@acme.test").role == "viewer"
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["new@acme.test"]
    owner_client.logout()
    form_url = client.get(LINK_RE.search(mail.outbox[0].body).group(1)).url
    client.post(form_url, {"new_password1": "a long pass phrase", "new_password2": "a long pass phrase"})
    assert client.login(username="new@acme.test", password="a long pass phrase")


@pytest.mark.django_db
def test_an_owner_changes_a_role_and_removes_a_member(owner_client, tenant, viewer):
    m = membership(tenant, "viewer@acme.test")
    owner_client.post(reverse("member-role", args=[m.pk]), {"role": "admin"})
    assert membership(tenant, "viewer@acme.test").role == "admin"
    owner_client.post(reverse("member-remove", args=[m.pk]))
    assert not Membership.objects.filter(pk=m.pk).exists()


@pytest.mark.django_db
def test_the_last_owner_cannot_be_removed_or_demoted(owner_client, tenant):
    m = membership(tenant, "owner@acme.test")
    owner_client.post(reverse("member-remove", args=[m.pk]))
    owner_client.post(reverse("member-role", args=[m.pk]), {"role": "viewer"})
    assert membership(tenant, "owner@acme.test").role == "owner"


@pytest.mark.django_db
def test_a_viewer_sees_members_but_every_post_is_403(viewer_client, tenant):
    page = viewer_client.get(reverse("members"))
    assert page.status_code == 200 and "owner@acme.test" in page.content.decode()
    owner = membership(tenant, "owner@acme.test")
    key = services.create_api_key(tenant, "read")[0]
    for url, data in [
        (reverse("member-invite"), {"email": "x@y.test", "role": "owner"}),
        (reverse("member-role", args=[owner.pk]), {"role": "viewer"}),
        (reverse("member-remove", args=[owner.pk]), {}),
        (reverse("api-keys"), {"name": "x", "scope": "write"}),
        (reverse("api-key-revoke", args=[key.prefix]), {}),
    ]:
        assert viewer_client.post(url, data).status_code == 403, url
    assert membership(tenant, "owner@acme.test").role == "owner"
    assert ApiKey.objects.for_tenant(tenant).get().revoked_at is None


@pytest.mark.django_db
def test_an_outsider_cannot_see_or_change_members_or_keys(outsider_client, tenant, viewer, write_key):
    page = outsider_client.get(reverse("members")).content.decode()
    assert "viewer@acme.test" not in page
    assert write_key[4:12] not in outsider_client.get(reverse("api-keys")).content.decode()
    m = membership(tenant, "viewer@acme.test")
    assert outsider_client.post(reverse("member-role", args=[m.pk]), {"role": "owner"}).status_code == 404
    assert outsider_client.post(reverse("member-remove", args=[m.pk])).status_code == 404
    assert outsider_client.post(reverse("api-key-revoke", args=[write_key[4:12]])).status_code == 404
    assert membership(tenant, "viewer@acme.test").role == "viewer"
    assert ApiKey.objects.get(prefix=write_key[4:12]).revoked_at is None


# --- API keys ----------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_created_key_is_shown_once_and_works_until_revoked(owner_client, tenant):
    response = owner_client.post(reverse("api-keys"), {"name": "ci", "scope": "read"}, follow=True)
    raw = re.search(r"phk_[A-Za-z0-9]{8}_[A-Za-z0-9]{40}", response.content.decode()).group(0)
    assert "navigator.clipboard" in response.content.decode()
    assert raw not in owner_client.get(reverse("api-key-created"), follow=True).content.decode()
    listing = owner_client.get(reverse("api-keys")).content.decode()
    assert f"phk_{raw[4:12]}" in listing and raw not in listing
    assert api_client(raw).get("/api/v1/apps").status_code == 200
    owner_client.post(reverse("api-key-revoke", args=[raw[4:12]]))
    assert api_client(raw).get("/api/v1/apps").status_code == 401
    assert AuditEvent.objects.for_tenant(tenant).filter(action="api_key.revoke").exists()


# --- Chinese -----------------------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url_name", "chinese"), [("members", "邀请成员"), ("api-keys", "创建密钥"), ("signup", "注册")]
)
def test_pages_render_in_chinese(client, tenant, url_name, chinese):
    client.cookies["django_language"] = "zh-hans"
    if url_name != "signup":
        client.login(username="owner@acme.test", password=PASSWORD)
    assert chinese in client.get(reverse(url_name)).content.decode()

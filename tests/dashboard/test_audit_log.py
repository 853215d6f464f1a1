"""The audit log page: owners see who did what in their team (and nothing of another team's); everyone else
gets 403. Each action family is done the way a user does it, then read back from the page."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from formids import services as credits
from formids.models import Credit
from templates_app import catalogue
from templates_app.models import Template
from templates_app.pushes.request import parse_send_request
from templates_app.pushes.start import start_push
from tenants import services
from tenants.models import ApiKey, AuditEvent, Membership, MiniProgram
from tests.conftest import api_client, random_appid, random_secret
from tests.dashboard.conftest import PASSWORD, signed_in

OWNER = "user:owner@acme.test"
UTC_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def rows(client, **params) -> list[dict]:
    response = client.get(reverse("audit-log"), params)
    assert response.status_code == 200
    return response.context["rows"]


def actions(client, **params) -> list[str]:
    return [row["action"] for row in rows(client, **params)]


def details(row: dict) -> dict[str, str]:
    return dict(row["details"])


# --- who may look ------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_the_owner_sees_the_team_being_created_with_a_utc_timestamp(owner_client):
    [row] = rows(owner_client)
    assert (row["action"], row["actor"], row["object"]) == ("tenant.create", OWNER, "acme")
    assert UTC_ISO.match(row["when"])
    event = AuditEvent.objects.get(action="tenant.create", tenant__slug="acme")
    assert row["when"] == event.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    html = owner_client.get(reverse("audit-log")).content.decode()
    assert f'<time datetime="{row["when"]}">' in html and "Created the team" in html


@pytest.mark.django_db
def test_a_viewer_gets_403_and_no_link(viewer_client):
    assert viewer_client.get(reverse("audit-log")).status_code == 403
    assert reverse("audit-log") not in viewer_client.get(reverse("members")).content.decode()


@pytest.mark.django_db
def test_an_admin_gets_403_and_no_link(tenant, django_user_model):
    user = django_user_model.objects.create_user("admin@acme.test", "admin@acme.test", PASSWORD)
    Membership.objects.create(tenant=tenant, user=user, role=Membership.Role.ADMIN)
    admin = signed_in("admin@acme.test")
    assert admin.get(reverse("audit-log")).status_code == 403
    assert reverse("audit-log") not in admin.get(reverse("members")).content.decode()


@pytest.mark.django_db
def test_the_owner_has_the_link_in_the_navigation(owner_client):
    assert f'href="{reverse("audit-log")}"' in owner_client.get(reverse("members")).content.decode()


@pytest.mark.django_db
def test_anonymous_is_sent_to_log_in(client):
    response = client.get(reverse("audit-log"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


@pytest.mark.django_db
def test_another_teams_owner_sees_none_of_acmes_events(owner_client, outsider_client, tenant, sandbox_app):
    owner_client.post(reverse("api-keys"), {"name": "ci", "scope": "read"})
    owner_client.post(reverse("member-invite"), {"email": "new@acme.test", "role": "viewer"})
    assert len(rows(owner_client)) >= 4  # tenant, app, key, member
    for params in ({}, {"action": "app"}, {"type": "api_key"}, {"action": "member.invite"}):
        seen = rows(outsider_client, **params)
        assert all(row["actor"] == "user:owner@globex.test" for row in seen)
        assert [row["object"] for row in seen] in ([], ["globex"])
    page = outsider_client.get(reverse("audit-log")).content.decode()
    assert sandbox_app.appid not in page and "acme" not in page


@pytest.mark.django_db
def test_an_owner_of_two_teams_sees_only_the_current_ones(owner_client, tenant, other_tenant):
    acme_owner = Membership.objects.get(tenant=tenant).user
    there = Membership.objects.create(tenant=other_tenant, user=acme_owner, role=Membership.Role.OWNER)
    owner_client.post(reverse("switch-tenant"), {"tenant": other_tenant.pk})
    assert [row["object"] for row in rows(owner_client)] == ["globex"]
    Membership.objects.filter(pk=there.pk).update(role=Membership.Role.VIEWER)
    assert owner_client.get(reverse("audit-log")).status_code == 403  # a viewer there


# --- what is recorded, family by family ---------------------------------------------------------------
@pytest.mark.django_db
def test_members_invited_changed_and_removed(owner_client, tenant):
    owner_client.post(reverse("member-invite"), {"email": "new@acme.test", "role": "viewer"})
    membership = Membership.objects.get(tenant=tenant, user__email="new@acme.test")
    owner_client.post(reverse("member-role", args=[membership.pk]), {"role": "admin"})
    owner_client.post(reverse("member-role", args=[membership.pk]), {"role": "admin"})  # no change: no event
    owner_client.post(reverse("member-remove", args=[membership.pk]))
    owner = Membership.objects.get(tenant=tenant, user__email="owner@acme.test")
    owner_client.post(reverse("member-remove", args=[owner.pk]))  # the last owner: refused, nothing recorded

    log = rows(owner_client, action="member")
    assert [(r["action"], r["actor"], r["object"]) for r in log] == [
        ("member.remove", OWNER, "new@acme.test"),
        ("member.role_change", OWNER, "new@acme.test"),
        ("member.invite", OWNER, "new@acme.test"),
    ]
    assert details(log[0]) == {"role": "admin"}
    assert details(log[1]) == {"old": "viewer", "new": "admin"}
    assert details(log[2]) == {"role": "viewer", "new_account": "true"}


@pytest.mark.django_db
def test_api_keys_created_and_revoked_without_the_key(owner_client, tenant):
    response = owner_client.post(reverse("api-keys"), {"name": "ci server", "scope": "write"})
    raw = owner_client.get(response["Location"]).context["raw_key"]
    key = ApiKey.objects.get(tenant=tenant)
    owner_client.post(reverse("api-key-revoke", args=[key.prefix]))

    log = rows(owner_client, type="api_key")
    assert [(r["action"], r["actor"], r["object"]) for r in log] == [
        ("api_key.revoke", OWNER, f"phk_{key.prefix}…"),
        ("api_key.create", OWNER, f"phk_{key.prefix}…"),
    ]
    assert details(log[1]) == {"name": "ci server", "scope": "write"}
    page = owner_client.get(reverse("audit-log")).content.decode()
    assert raw not in page and raw.rsplit("_", 1)[1] not in page and key.digest not in page


@pytest.mark.django_db
def test_apps_registered_changed_rotated_and_deleted_without_secrets(owner_client, tenant):
    appid, first_secret, second_secret = random_appid(), random_secret(), random_secret()
    owner_client.post(
        reverse("app-new"), {"appid": appid, "secret": first_secret, "name": "Shop", "sandbox": "on"}
    )
    owner_client.post(reverse("app-update", args=[appid]), {"name": "Shop 2", "credit_source": "events"})
    owner_client.post(reverse("app-update", args=[appid]), {"secret": second_secret})
    owner_client.post(reverse("app-rotate-events", args=[appid]))
    app = MiniProgram.objects.get(appid=appid)
    token, aes_key = app.events_token, app.get_events_aes_key()
    owner_client.post(reverse("app-delete", args=[appid]))

    log = rows(owner_client, action="app")
    assert [(r["action"], r["actor"], r["object"]) for r in log] == [
        ("app.delete", OWNER, appid),
        ("app.events_credentials_rotate", OWNER, appid),
        ("app.secret_change", OWNER, appid),
        ("app.update", OWNER, appid),
        ("app.create", OWNER, appid),
    ]
    assert details(log[3]) == {"fields": "name, credit_source", "name": "Shop 2", "credit_source": "events"}
    assert details(log[2]) == {}
    assert details(log[4]) == {"name": "Shop", "sandbox": "true"}
    page = owner_client.get(reverse("audit-log")).content.decode()
    assert "Replaced a mini-program&#x27;s AppSecret" in page
    for secret in (first_secret, second_secret, token, aes_key, first_secret[-4:], second_secret[-4:]):
        assert secret not in page
    assert not any(s in str(e.data) for e in AuditEvent.objects.all() for s in (first_secret, second_secret))


@pytest.mark.django_db
def test_a_change_through_the_api_names_the_key(api, write_key, sandbox_app, owner_client):
    assert (
        api.patch(f"/api/v1/apps/{sandbox_app.appid}", {"name": "Renamed"}, format="json").status_code == 200
    )
    [row] = rows(owner_client, action="app.update")
    assert row["actor"] == f"key:phk_{write_key.split('_')[1]}"
    assert details(row) == {"fields": "name", "name": "Renamed"}


@pytest.mark.django_db
def test_templates_added_disabled_rotated_and_deleted(owner_client, sandbox_app, write_key):
    response = owner_client.post(
        reverse("templates", args=[sandbox_app.appid]),
        {"kind": "subscribe", "template_id": "TPL-SHIP", "title": "Shipped", "fields": "thing1:item"},
    )
    template = Template.objects.get(app=sandbox_app, template_id="TPL-SHIP")
    assert response["Location"] == reverse("template-detail", args=[template.pk])
    first_token = template.get_trigger_token()
    owner_client.post(reverse("template-rotate", args=[template.pk]))
    owner_client.post(reverse("template-status", args=[template.pk]), {"status": "disabled"})
    key = api_client(write_key)
    response = key.patch(f"/api/v1/templates/{template.pk}", {"trigger_enabled": False}, format="json")
    assert response.status_code == 200
    template.refresh_from_db()
    second_token = template.get_trigger_token()
    owner_client.post(reverse("template-delete", args=[template.pk]))

    log = rows(owner_client, type="template")
    pk, key_actor = str(template.pk), f"key:phk_{write_key.split('_')[1]}"
    assert [(r["action"], r["actor"], r["object"]) for r in log] == [
        ("template.delete", OWNER, pk),
        ("template.update", key_actor, pk),
        ("template.update", OWNER, pk),
        ("template.rotate_trigger_url", OWNER, pk),
        ("template.create", OWNER, pk),
    ]
    where = {"appid": sandbox_app.appid, "template_id": "TPL-SHIP", "title": "Shipped"}
    assert details(log[1]) == {**where, "fields": "trigger_enabled", "trigger_enabled": "false"}
    assert details(log[2]) == {**where, "fields": "status", "status": "disabled"}
    assert details(log[0]) == details(log[3]) == where
    page = owner_client.get(reverse("audit-log")).content.decode()
    assert first_token not in page and second_token not in page


@pytest.mark.django_db
def test_a_canceled_push(owner_client, sandbox_app):
    template = catalogue.create_template(
        sandbox_app,
        kind="subscribe",
        template_id="TPL-X",
        title="X",
        fields=[{"key": "thing1"}],
        actor="test",
    )
    user = credits.touch_user(sandbox_app, "o-1")
    credits.add_subscribe_credits(sandbox_app, user, ["TPL-X"], source=Credit.Source.SDK)
    request = parse_send_request(template, {"to": ["o-1"], "data": {"thing1": {"value": "socks"}}})
    push = start_push(template, request, created_by="test", status_url=lambda p: f"/x/{p.pk}").push
    assert owner_client.post(reverse("push-cancel", args=[push.pk])).status_code == 302
    [row] = rows(owner_client, action="push")
    assert (row["action"], row["actor"], row["object"]) == ("push.cancel", OWNER, str(push.pk))
    assert details(row) == {"canceled": "1"}


# --- filters and pages --------------------------------------------------------------------------------
@pytest.fixture
def mixed_log(tenant):
    for n in range(3):
        services.audit(tenant, "system", "app.delete", "app", f"wx{n}")
    services.audit(tenant, "system", "template.sync", "app", "wx0", created=1, updated=0, deleted=0)
    services.audit(tenant, "system", "template.delete", "template", "7")
    return tenant


@pytest.mark.django_db
def test_filters_by_family_action_and_object_type(owner_client, mixed_log):
    assert actions(owner_client, action="app") == ["app.delete"] * 3
    assert actions(owner_client, action="template") == ["template.delete", "template.sync"]
    assert actions(owner_client, action="template.sync") == ["template.sync"]
    assert actions(owner_client, type="app") == ["template.sync"] + ["app.delete"] * 3
    assert actions(owner_client, action="template", type="app") == ["template.sync"]
    assert actions(owner_client, action="member") == []
    response = owner_client.get(reverse("audit-log"), {"action": "member"})
    assert "No events match these filters." in response.content.decode()
    assert (
        'value="template.sync" selected'
        in owner_client.get(reverse("audit-log"), {"action": "template.sync"}).content.decode()
    )


@pytest.mark.django_db
def test_a_nul_in_a_filter_is_a_400(owner_client, mixed_log):
    # PostgreSQL refuses NUL in any text: the URL is refused before any query (pushhub.middleware).
    for params in ({"action": "app\x00"}, {"type": "user\x00"}):
        assert owner_client.get(reverse("audit-log"), params).status_code == 400


@pytest.mark.django_db
@pytest.mark.parametrize(
    "params",
    [
        {"action": "nope"},
        {"action": "app."},
        {"action": "app%"},
        {"action": "a" * 5000},
        {"type": "<script>"},
        {"page": "x"},
        {"page": "-1"},
        {"page": "99999999999999999999"},
    ],
)
def test_bad_filters_are_ignored(owner_client, mixed_log, params):
    response = owner_client.get(reverse("audit-log"), params)
    assert response.status_code == 200
    if "page" not in params:
        assert len(response.context["rows"]) == 6  # unfiltered: five events and the team's creation
        assert (response.context["action"], response.context["object_type"]) == ("", "")
    assert "<script>" not in response.content.decode()


@pytest.mark.django_db
def test_fifty_a_page_newest_first_keeping_the_filters(owner_client, tenant):
    for n in range(120):
        services.audit(tenant, "system", "app.delete", "app", f"wx{n:03}")
    first = owner_client.get(reverse("audit-log"), {"action": "app"})
    assert [r["object"] for r in first.context["rows"]] == [f"wx{n:03}" for n in range(119, 69, -1)]
    assert "?action=app&amp;page=2" in first.content.decode()
    third = rows(owner_client, action="app", page="3")
    assert [r["object"] for r in third] == [f"wx{n:03}" for n in range(19, -1, -1)]
    assert rows(owner_client, action="app", page="4") == third  # past the end: the last page
    assert len(rows(owner_client, page="3")) == 21  # unfiltered, the team's creation is the oldest
    assert rows(owner_client, page="3")[-1]["action"] == "tenant.create"


@pytest.mark.django_db
def test_the_page_in_chinese(owner_client):
    owner_client.post(reverse("member-invite"), {"email": "new@acme.test", "role": "viewer"})
    owner_client.cookies["django_language"] = "zh-hans"
    page = owner_client.get(reverse("audit-log")).content.decode()
    for text in ("审计日志", "邀请了成员", "创建了团队", "时间 (UTC)", "成员：全部操作"):
        assert text in page
    assert "Invited a member" not in page

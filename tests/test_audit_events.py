"""The audit events behind the owners' audit log: member verbs, changes made by operators in the Django
admin, and the list of actions the log page knows (labels, translations, filters)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import translation

from tenants import services
from tenants.dashboard_views import ACTION_LABELS
from tenants.models import AuditEvent, Membership

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"


def events(tenant, prefix: str = "") -> list[tuple[str, str, str, dict]]:
    found = AuditEvent.objects.for_tenant(tenant).filter(action__startswith=prefix).order_by("pk")
    return [(e.action, e.actor, e.object_id, e.data) for e in found]


# --- member verbs ------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_inviting_a_member_twice_records_one_invite(tenant):
    services.invite_member(tenant, "new@acme.test", "viewer", actor="user:owner@acme.test")
    with pytest.raises(ValidationError):
        services.invite_member(tenant, "NEW@acme.test", "admin", actor="user:owner@acme.test")
    assert events(tenant, "member.") == [
        ("member.invite", "user:owner@acme.test", "new@acme.test", {"role": "viewer", "new_account": True})
    ]


@pytest.mark.django_db
def test_refused_member_changes_record_nothing(tenant):
    owner = Membership.objects.get(tenant=tenant)
    with pytest.raises(ValidationError):
        services.change_member_role(owner, "viewer", actor="user:owner@acme.test")
    with pytest.raises(ValidationError):
        services.remove_member(owner, actor="user:owner@acme.test")
    services.change_member_role(owner, "owner", actor="user:owner@acme.test")  # unchanged
    assert events(tenant, "member.") == []
    assert Membership.objects.get(tenant=tenant).role == "owner"


# --- operators in the Django admin -------------------------------------------------------------------
@pytest.fixture
def root(client, django_user_model):
    django_user_model.objects.create_superuser("root", "root@pushhub.test", PASSWORD)
    client.login(username="root", password=PASSWORD)
    return client


def _inline(prefix: str, rows: list[dict]) -> dict:
    data = {
        f"{prefix}-TOTAL_FORMS": str(len(rows)),
        f"{prefix}-INITIAL_FORMS": str(sum(1 for r in rows if r.get("id"))),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }
    for n, row in enumerate(rows):
        data.update({f"{prefix}-{n}-{name}": value for name, value in row.items()})
    return data


@pytest.mark.django_db
def test_member_changes_made_in_the_admin_are_in_the_teams_log(root, tenant, viewer, django_user_model):
    owner = Membership.objects.get(tenant=tenant, role="owner")
    member = Membership.objects.get(tenant=tenant, user=viewer)
    newcomer = django_user_model.objects.create_user("ops@acme.test", "ops@acme.test", PASSWORD)
    body = {"name": tenant.name, "slug": tenant.slug}
    body |= _inline(
        "memberships",
        [
            {"id": owner.pk, "tenant": tenant.pk, "user": owner.user_id, "role": "owner"},
            {"id": member.pk, "tenant": tenant.pk, "user": viewer.pk, "role": "admin"},
            {"tenant": tenant.pk, "user": newcomer.pk, "role": "viewer"},
        ],
    )
    response = root.post(reverse("admin:tenants_tenant_change", args=[tenant.pk]), body)
    assert response.status_code == 302, response.context["inline_admin_formsets"][0].formset.errors
    body = {"name": tenant.name, "slug": tenant.slug}
    added = Membership.objects.get(tenant=tenant, user=newcomer)
    body |= _inline(
        "memberships",
        [
            {"id": owner.pk, "tenant": tenant.pk, "user": owner.user_id, "role": "owner"},
            {"id": member.pk, "tenant": tenant.pk, "user": viewer.pk, "role": "admin"},
            {"id": added.pk, "tenant": tenant.pk, "user": newcomer.pk, "role": "viewer", "DELETE": "on"},
        ],
    )
    assert root.post(reverse("admin:tenants_tenant_change", args=[tenant.pk]), body).status_code == 302
    assert events(tenant, "member.") == [
        (
            "member.role_change",
            "user:root",
            "viewer@acme.test",
            {"old": "viewer", "new": "admin", "via": "admin"},
        ),
        (
            "member.invite",
            "user:root",
            "ops@acme.test",
            {"role": "viewer", "new_account": False, "via": "admin"},
        ),
        ("member.remove", "user:root", "ops@acme.test", {"role": "viewer", "via": "admin"}),
    ]


@pytest.mark.django_db
def test_app_changes_made_in_the_admin_go_through_the_service(root, sandbox_app):
    body = {
        "name": "Ops rename",
        "credit_source": sandbox_app.credit_source,
        "sandbox": "on",
        "inbox_enabled": "on",
    }
    response = root.post(reverse("admin:tenants_miniprogram_change", args=[sandbox_app.pk]), body)
    assert response.status_code == 302
    sandbox_app.refresh_from_db()
    assert sandbox_app.name == "Ops rename"
    assert events(sandbox_app.tenant, "app.update") == [
        ("app.update", "user:root", sandbox_app.appid, {"fields": ["name"], "name": "Ops rename"})
    ]
    # The in-app inbox turned off there (an unticked box is not sent) is audited the same way.
    del body["inbox_enabled"]
    response = root.post(reverse("admin:tenants_miniprogram_change", args=[sandbox_app.pk]), body)
    assert response.status_code == 302
    sandbox_app.refresh_from_db()
    assert sandbox_app.inbox_enabled is False
    assert events(sandbox_app.tenant, "app.update")[-1][3] == {
        "fields": ["inbox_enabled"],
        "inbox_enabled": False,
    }


# --- the list of actions -----------------------------------------------------------------------------
def _recorded_actions() -> set[str]:
    """Every action a call to audit(...) in the code records (the third argument, a string literal)."""
    found = set()
    call = re.compile(r"\baudit\(\s*[^,()]+(?:\([^()]*\))?[^,()]*,\s*[^,()]+,\s*\"([a-z_]+\.[a-z_]+)\"")
    for package in ("tenants", "formids", "templates_app", "pushhub"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            actions = call.findall(text)
            calls = len(re.findall(r"(?<!def )\baudit\(", text))
            assert len(actions) == calls, f"{path}: an audit() call whose action is not a string literal"
            found |= set(actions)
    return found


def test_every_recorded_action_has_a_label_a_translation_and_a_filter():
    recorded = _recorded_actions()
    assert {"app.secret_change", "member.invite", "template.rotate_trigger_url", "push.cancel"} <= recorded
    known = {action for actions in services.AUDIT_ACTIONS.values() for action in actions}
    assert recorded <= known
    assert known <= set(services.audit_action_prefixes())
    for action in known:
        assert action in ACTION_LABELS
        with translation.override("en"):
            english = str(ACTION_LABELS[action])
        with translation.override("zh-hans"):
            assert str(ACTION_LABELS[action]) != english, action

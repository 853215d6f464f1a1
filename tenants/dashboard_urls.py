"""Account pages: sign-up, tenant switch, members, API keys and the audit log (password reset is
django.contrib.auth's)."""

from django.urls import path

from tenants import dashboard_views as views

urlpatterns = [
    path("accounts/signup/", views.signup, name="signup"),
    path("dashboard/tenant/switch", views.switch_tenant, name="switch-tenant"),
    path("dashboard/members/", views.members, name="members"),
    path("dashboard/members/invite", views.member_invite, name="member-invite"),
    path("dashboard/members/<int:membership_id>/role", views.member_role, name="member-role"),
    path("dashboard/members/<int:membership_id>/remove", views.member_remove, name="member-remove"),
    path("dashboard/keys/", views.api_keys, name="api-keys"),
    path("dashboard/keys/created", views.api_key_created, name="api-key-created"),
    path("dashboard/keys/<str:prefix>/revoke", views.api_key_revoke, name="api-key-revoke"),
    path("dashboard/audit/", views.audit_log, name="audit-log"),
]

"""Operations console for tenants and apps. Secrets and key digests are never displayed or editable."""

from django.contrib import admin, messages
from rest_framework.exceptions import APIException  # not pushhub.api: DRF's settings import this app

from tenants import services
from tenants.models import ApiKey, AuditEvent, Membership, MiniProgram, Tenant


def _members(tenant: Tenant) -> dict[int, tuple[str, str]]:
    # In pk order: the audit log then lists the changes in the order the members appear (without it,
    # PostgreSQL returns an updated row after the others and the log's order depended on that).
    rows = (
        Membership.objects.filter(tenant=tenant)
        .order_by("pk")
        .values_list("pk", "user__email", "user__username", "role")
    )
    return {pk: (email or username, role) for pk, email, username, role in rows}


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "slug"]
    inlines = [MembershipInline]

    def save_formset(self, request, form, formset, change):
        """The member list is written by the admin itself; what changed is recorded in the team's audit log."""
        if formset.model is not Membership:
            return super().save_formset(request, form, formset, change)
        tenant = form.instance
        before = _members(tenant)
        super().save_formset(request, form, formset, change)
        services.audit_admin_member_changes(
            tenant, before, _members(tenant), actor=f"user:{request.user.get_username()}"
        )


UPDATABLE_IN_ADMIN = ("name", "sandbox", "credit_source", "inbox_enabled")


@admin.register(MiniProgram)
class MiniProgramAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "appid",
        "tenant",
        "sandbox",
        "credit_source",
        "secret_hint",
        "created_at",
        "deleted_at",
    ]
    list_filter = ["sandbox", "credit_source", ("deleted_at", admin.EmptyFieldListFilter)]
    search_fields = ["appid", "name", "tenant__slug"]
    list_select_related = ["tenant"]
    # Ciphertexts are excluded, not just read-only: they are of no use to an operator.
    fields = [
        "tenant",
        "appid",
        "name",
        "sandbox",
        "credit_source",
        "inbox_enabled",
        "secret_hint",
        "events_token",
        "created_at",
        "updated_at",
        "deleted_at",
    ]
    readonly_fields = [
        "tenant",
        "appid",
        "secret_hint",
        "events_token",
        "created_at",
        "updated_at",
        "deleted_at",
    ]

    def has_add_permission(self, request):
        return False  # registration verifies the secret with WeChat: use the API or the dashboard

    def save_model(self, request, obj, form, change):
        """Through services.update_app, as the API and dashboard do: checked, audited, tokens forgotten."""
        changes = {name: getattr(obj, name) for name in form.changed_data if name in UPDATABLE_IN_ADMIN}
        if not changes:
            return
        app = MiniProgram.objects.select_related("tenant").get(pk=obj.pk)
        try:
            services.update_app(app, actor=f"user:{request.user.get_username()}", **changes)
        except APIException as exc:  # services' ApiError, e.g. WeChat refused the secret of a real app
            self.message_user(request, f"Not saved: {exc.detail}", level=messages.ERROR)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["__str__", "name", "tenant", "scope", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["scope", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["prefix", "name", "tenant__slug"]
    fields = ["tenant", "name", "prefix", "scope", "created_by", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = fields
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False  # the key is shown once at creation: use the dashboard or `manage.py create_api_key`

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        for key in queryset.filter(revoked_at__isnull=True):
            services.revoke_api_key(key, actor=f"user:{request.user.get_username()}")


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "tenant", "actor", "action", "object_type", "object_id"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor", "object_id", "tenant__slug"]
    readonly_fields = ["tenant", "actor", "action", "object_type", "object_id", "data", "created_at"]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

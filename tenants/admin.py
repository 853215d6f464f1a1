"""Operations console for tenants and apps. Secrets and key digests are never displayed or editable."""

from django.contrib import admin

from tenants import services
from tenants.models import ApiKey, AuditEvent, Membership, MiniProgram, Tenant


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "slug"]
    inlines = [MembershipInline]


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

"""Read-only admin views of the sandbox's state (changes go through the control API or services)."""

from django.contrib import admin

from .models import (
    SandboxApp,
    SandboxFormId,
    SandboxMessage,
    SandboxSubscription,
    SandboxTemplate,
    SandboxUser,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(SandboxApp)
class SandboxAppAdmin(ReadOnlyAdmin):
    list_display = [
        "appid",
        "latency_ms",
        "error_rate",
        "timeout_rate",
        "token_ttl",
        "formid_retired",
        "created_at",
    ]
    search_fields = ["appid"]
    exclude = ["secret", "events_token", "events_aes_key"]


@admin.register(SandboxUser)
class SandboxUserAdmin(ReadOnlyAdmin):
    list_display = ["openid", "unionid", "app", "created_at"]
    list_select_related = ["app"]
    search_fields = ["openid", "unionid", "app__appid"]


@admin.register(SandboxFormId)
class SandboxFormIdAdmin(ReadOnlyAdmin):
    list_display = ["value", "kind", "openid", "uses_left", "issued_at", "app"]
    list_select_related = ["app"]
    list_filter = ["kind"]
    search_fields = ["value", "openid"]


@admin.register(SandboxSubscription)
class SandboxSubscriptionAdmin(ReadOnlyAdmin):
    list_display = ["openid", "template_id", "credits", "app"]
    list_select_related = ["app"]
    search_fields = ["openid", "template_id"]


@admin.register(SandboxTemplate)
class SandboxTemplateAdmin(ReadOnlyAdmin):
    list_display = ["title", "kind", "template_id", "type", "app"]
    list_select_related = ["app"]
    list_filter = ["kind"]
    search_fields = ["title", "template_id"]


@admin.register(SandboxMessage)
class SandboxMessageAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "title", "openid", "template_id", "created_at", "app"]
    list_select_related = ["app"]
    list_filter = ["kind"]
    search_fields = ["openid", "template_id", "form_id"]

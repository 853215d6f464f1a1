"""Operations console for credit pools: quota columns, filters, search by openid/AppID, upkeep actions."""

from django.contrib import admin, messages
from django.db.models import Count, Q

from formids import services
from formids.models import Credit, DailyStat, InboundEvent, MiniUser


@admin.register(MiniUser)
class MiniUserAdmin(admin.ModelAdmin):
    list_display = [
        "openid",
        "app",
        "push_enabled",
        "available",
        "claimed",
        "used",
        "first_seen",
        "last_seen",
    ]
    list_filter = ["push_enabled", "app"]
    search_fields = ["openid", "unionid", "app__appid"]
    list_select_related = ["app"]
    readonly_fields = ["app", "openid", "unionid", "first_seen", "last_seen"]
    show_full_result_count = False

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_available=Count("credits", filter=Q(credits__state=Credit.State.AVAILABLE)),
                n_claimed=Count("credits", filter=Q(credits__state=Credit.State.CLAIMED)),
                n_used=Count("credits", filter=Q(credits__state=Credit.State.CONSUMED)),
            )
        )

    @admin.display(ordering="n_available", description="available")
    def available(self, obj):
        return obj.n_available

    @admin.display(ordering="n_claimed", description="claimed")
    def claimed(self, obj):
        return obj.n_claimed

    @admin.display(ordering="n_used", description="used")
    def used(self, obj):
        return obj.n_used


@admin.register(Credit)
class CreditAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "kind",
        "state",
        "user",
        "app",
        "template_id",
        "uses_left",
        "expires_at",
        "claimed_at",
        "created_at",
    ]
    list_filter = ["kind", "state", "source", "app"]
    search_fields = ["user__openid", "app__appid", "template_id"]
    list_select_related = ["user", "app"]
    readonly_fields = [f.name for f in Credit._meta.fields]
    show_full_result_count = False
    actions = ["release_stale_claims", "expire_due_credits"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.action(description="Release stale claims (all apps, older than the lease)")
    def release_stale_claims(self, request, queryset):
        self.message_user(request, f"{services.release_stale()} stale claims released.", messages.SUCCESS)

    @admin.action(description="Expire credits past their expiry margin (all apps)")
    def expire_due_credits(self, request, queryset):
        self.message_user(request, f"{services.expire_due()} credits expired.", messages.SUCCESS)


@admin.register(InboundEvent)
class InboundEventAdmin(admin.ModelAdmin):
    list_display = ["received_at", "app", "source", "event", "openid"]
    list_filter = ["source", "event", "app"]
    search_fields = ["openid", "app__appid"]
    list_select_related = ["app"]
    readonly_fields = ["app", "source", "event", "openid", "payload", "dedupe_key", "outcome", "received_at"]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(DailyStat)
class DailyStatAdmin(admin.ModelAdmin):
    list_display = ["day", "app", "formids_collected", "subscribe_collected", "sent", "failed"]
    list_filter = ["app"]
    date_hierarchy = "day"
    readonly_fields = ["app", "day", "formids_collected", "subscribe_collected", "sent", "failed"]

    def has_add_permission(self, request):
        return False

"""Operations console for credit pools and audiences: quota columns, filters, search by openid, alias or
AppID, a user's tags, upkeep actions."""

from django.contrib import admin, messages
from django.db.models import Count, Prefetch, Q
from django.urls import reverse
from django.utils.html import format_html

from formids import services
from formids.models import Credit, DailyStat, InboundEvent, MiniUser, TemplateDailyStat, UserTag


class UserTagInline(admin.TabularInline):
    """A user's tags, read-only: they change through the API (validated, 50 at most), not here."""

    model = UserTag
    fields = ["tag", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["tag"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(MiniUser)
class MiniUserAdmin(admin.ModelAdmin):
    list_display = [
        "openid",
        "alias",
        "tag_list",
        "app",
        "push_enabled",
        "available",
        "claimed",
        "used",
        "first_seen",
        "last_seen",
    ]
    list_filter = ["push_enabled", "app"]
    # "=alias": exact, on the (app, alias) index; an alias is the tenant's own id, looked up whole.
    search_fields = ["openid", "unionid", "=alias", "app__appid"]
    list_select_related = ["app"]
    # The alias moves between users only through formids.audience (unique per app, latest binding wins).
    readonly_fields = ["app", "openid", "unionid", "alias", "first_seen", "last_seen"]
    inlines = [UserTagInline]
    show_full_result_count = False

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .prefetch_related(Prefetch("tag_rows", queryset=UserTag.objects.order_by("tag")))
            .annotate(
                n_available=Count("credits", filter=Q(credits__state=Credit.State.AVAILABLE)),
                n_claimed=Count("credits", filter=Q(credits__state=Credit.State.CLAIMED)),
                n_used=Count("credits", filter=Q(credits__state=Credit.State.CONSUMED)),
            )
        )

    @admin.display(description="tags")
    def tag_list(self, obj):
        return ", ".join(row.tag for row in obj.tag_rows.all()) or "—"

    @admin.display(ordering="n_available", description="available")
    def available(self, obj):
        return obj.n_available

    @admin.display(ordering="n_claimed", description="claimed")
    def claimed(self, obj):
        return obj.n_claimed

    @admin.display(ordering="n_used", description="used")
    def used(self, obj):
        return obj.n_used


@admin.register(UserTag)
class UserTagAdmin(admin.ModelAdmin):
    """Who carries which tag, per app: search by tag (exact), openid or alias. Read-only."""

    list_display = ["tag", "user_link", "alias", "app", "created_at"]
    list_filter = ["app"]
    search_fields = ["=tag", "user__openid", "=user__alias"]
    list_select_related = ["user", "app"]
    readonly_fields = ["app", "user", "tag", "created_at"]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="user", ordering="user__openid")
    def user_link(self, obj):
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:formids_miniuser_change", args=[obj.user_id]),
            obj.user.openid,
        )

    @admin.display(description="alias", ordering="user__alias")
    def alias(self, obj):
        return obj.user.alias or "—"


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
    list_display = ["day", "app", "shard", "formids_collected", "subscribe_collected", "sent", "failed"]
    list_filter = ["app"]
    date_hierarchy = "day"
    readonly_fields = ["app", "day", "shard", "formids_collected", "subscribe_collected", "sent", "failed"]

    def has_add_permission(self, request):
        return False


@admin.register(TemplateDailyStat)
class TemplateDailyStatAdmin(admin.ModelAdmin):
    """The funnel rows (formids.funnel): read-only, as the events wrote them; template "" is formIds/prepay."""

    list_display = [
        "day",
        "app",
        "template_id",
        "shard",
        "credits_collected",
        "sent",
        "failed",
        "opened",
        "resubscribed",
    ]
    list_filter = ["app"]
    search_fields = ["template_id"]
    date_hierarchy = "day"
    show_full_result_count = False
    readonly_fields = [
        "app",
        "template_id",
        "day",
        "shard",
        "credits_collected",
        "sent",
        "failed",
        "opened",
        "resubscribed",
    ]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

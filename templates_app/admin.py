"""Operations console for the template catalogue. The trigger token is never shown: only a prefix of its
hash, enough to match a row against a log line or a support request."""

from datetime import timedelta

from django.contrib import admin
from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from formids.models import Credit
from pushhub.admin import ReadOnlyAdmin
from templates_app import catalogue
from templates_app.models import Delivery, Push, Template
from tenants.admin import MiniProgramAdmin
from tenants.models import MiniProgram

# What the admin edits on a template: its switches (through catalogue.update_template).
TEMPLATE_SWITCHES = ("status", "trigger_enabled", "track_opens")


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin):
    list_display = [
        "title",
        "template_id",
        "app_link",
        "kind",
        "status",
        "source",
        "trigger_enabled",
        "track_opens",
        "push_count",
        "token_hash_prefix",
        "created_at",
    ]
    list_filter = ["kind", "status", "source", "trigger_enabled", "track_opens", "app"]
    search_fields = ["title", "template_id", "app__appid"]
    list_select_related = ["app"]
    show_full_result_count = False
    # The ciphertext is excluded, not just read-only: it is of no use to an operator.
    fields = [
        "app",
        "kind",
        "template_id",
        "title",
        "fields",
        "page",
        "emphasis_keyword",
        "status",
        "source",
        "trigger_enabled",
        "track_opens",
        "token_hash_prefix",
        "created_at",
        "updated_at",
    ]
    # Only the switches are edited here, through the catalogue verbs (validated, audited); the content of a
    # template is changed with the API or by a sync.
    readonly_fields = [f for f in fields if f not in TEMPLATE_SWITCHES]
    actions = ["rotate_trigger_urls", "disable_trigger_urls"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(n_pushes=Count("pushes"))

    def has_add_permission(self, request):
        return False  # a template gets its trigger token from catalogue.create_template: use the API

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.status == Template.Status.DELETED:
            return self.fields  # a deleted template stays deleted: the app may have a new one with its id
        return self.readonly_fields

    def save_model(self, request, obj, form, change):
        actor = f"user:{request.user.get_username()}"
        template = Template.objects.select_related("app__tenant").get(pk=obj.pk)
        if template.status == Template.Status.DELETED:
            return
        if obj.status == Template.Status.DELETED:
            catalogue.delete_template(template, actor=actor)
            return
        changes = {name: getattr(obj, name) for name in form.changed_data if name in TEMPLATE_SWITCHES}
        if changes:
            catalogue.update_template(template, actor=actor, **changes)

    @admin.display(description="app", ordering="app__appid")
    def app_link(self, obj):
        url = reverse("admin:tenants_miniprogram_change", args=[obj.app_id])
        return format_html('<a href="{}">{}</a>', url, obj.app.appid)

    @admin.display(description="pushes", ordering="n_pushes")
    def push_count(self, obj):
        return obj.n_pushes

    @admin.display(description="trigger token (sha256 prefix)")
    def token_hash_prefix(self, obj):
        return f"{obj.trigger_token_hash[:12]}…" if obj.trigger_token_hash else "—"

    @admin.action(description="Rotate the trigger URLs of the selected templates")
    def rotate_trigger_urls(self, request, queryset):
        actor = f"user:{request.user.get_username()}"
        rotated = 0
        for template in queryset.select_related("app__tenant").exclude(status=Template.Status.DELETED):
            catalogue.rotate_trigger_url(template, actor=actor)
            rotated += 1
        self.message_user(request, f"Rotated {rotated} trigger URL(s); the old URLs answer 404 now.")

    @admin.action(description="Disable the trigger URLs of the selected templates")
    def disable_trigger_urls(self, request, queryset):
        actor = f"user:{request.user.get_username()}"
        for template in queryset.select_related("app__tenant").exclude(status=Template.Status.DELETED):
            catalogue.update_template(template, actor=actor, trigger_enabled=False)
        self.message_user(request, "Trigger URLs disabled.")


# --- mini-programs with their credit pool -----------------------------------------------------------
admin.site.unregister(MiniProgram)


@admin.register(MiniProgram)
class MiniProgramQuotaAdmin(MiniProgramAdmin):
    """tenants' MiniProgramAdmin (no secret ever shown) plus the quota columns, from one annotated query."""

    list_display = [
        "name",
        "appid",
        "tenant",
        "sandbox",
        "credit_source",
        "secret_hint",  # "****" + the last 4 characters: enough to tell secrets apart, never the secret
        "available_credits",
        "expiring_credits",
        "used_credits",
        "pushes_link",
        "created_at",
        "deleted_at",
    ]

    def get_queryset(self, request):
        soon = timezone.now() + timedelta(hours=24)
        available = Q(credits__state=Credit.State.AVAILABLE)
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_available=Count("credits", filter=available),
                n_expiring=Count("credits", filter=available & Q(credits__expires_at__lte=soon)),
                n_used=Count("credits", filter=Q(credits__state=Credit.State.CONSUMED)),
            )
        )

    @admin.display(description="available credits", ordering="n_available")
    def available_credits(self, obj):
        return obj.n_available

    @admin.display(description="expiring in 24 h", ordering="n_expiring")
    def expiring_credits(self, obj):
        return obj.n_expiring

    @admin.display(description="used credits", ordering="n_used")
    def used_credits(self, obj):
        return obj.n_used

    @admin.display(description="pushes")
    def pushes_link(self, obj):
        url = reverse("admin:templates_app_push_changelist") + f"?app__id__exact={obj.pk}"
        return format_html('<a href="{}">pushes</a>', url)


# --- pushes and their delivery log (history: read-only) ------------------------------------------------
@admin.register(Push)
class PushAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "app_link",
        "template",
        "status",
        "audience",
        "recipients",
        "sent",
        "failed",
        "no_credit",
        "opted_out",
        "pending",
        "opened",
        "created_by",
        "created_at",
        "deliveries_link",
    ]
    list_filter = ["status", "audience", "app"]
    search_fields = ["id", "app__appid"]
    list_select_related = ["app", "template"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Push._meta.fields] + ["deliveries_link"]

    @admin.display(description="app", ordering="app__appid")
    def app_link(self, obj):
        url = reverse("admin:tenants_miniprogram_change", args=[obj.app_id])
        return format_html('<a href="{}">{}</a>', url, obj.app.appid)

    @admin.display(description="deliveries")
    def deliveries_link(self, obj):
        url = reverse("admin:templates_app_delivery_changelist") + f"?push__id__exact={obj.pk}"
        return format_html('<a href="{}">deliveries</a>', url)


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "openid",
        "push_link",
        "status",
        "errcode",
        "errmsg",
        "attempts",
        "msgid",
        "sent_at",
        "opened_at",
        "created_at",
    ]
    list_filter = ["status", "errcode"]
    search_fields = ["openid"]
    list_select_related = ["push"]
    # The credit is shown by id only: its value (a formId) is of no use to an operator.
    fields = [
        "push",
        "openid",
        "status",
        "credit_id",
        "errcode",
        "errmsg",
        "attempts",
        "msgid",
        "sent_at",
        "opened_at",
        "created_at",
        "updated_at",
    ]
    readonly_fields = fields

    @admin.display(description="push", ordering="push__created_at")
    def push_link(self, obj):
        url = reverse("admin:templates_app_push_change", args=[obj.push_id])
        return format_html('<a href="{}">{}</a>', url, str(obj.push_id)[:8])

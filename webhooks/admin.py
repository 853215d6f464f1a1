"""Operations console for webhooks: endpoints (enable / disable through the services), and the outbox with its
log, read-only except "resend now". The signing secret's ciphertext is never shown or edited."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count, Q
from django.urls import reverse
from django.utils.html import format_html

from pushhub.admin import ReadOnlyAdmin
from pushhub.api import ApiError
from webhooks import services
from webhooks.models import EventDispatch, WebhookAttempt, WebhookEndpoint, WebhookEvent


def _actor(request) -> str:
    return f"user:{request.user.get_username()}"


def _link(viewname: str, pk, text: str) -> str:
    return format_html('<a href="{}">{}</a>', reverse(viewname, args=[pk]), text)


def _filtered(changelist: str, lookup: str, pk, text: str) -> str:
    return format_html('<a href="{}?{}={}">{}</a>', reverse(changelist), lookup, pk, text)


class EventLinks:
    """Links from a dispatch or an attempt to its event and its endpoint."""

    @admin.display(description="event", ordering="event_id")
    def event_link(self, obj):
        return _link("admin:webhooks_webhookevent_change", obj.event_id, f"{obj.event.type} {obj.event_id}")

    @admin.display(description="endpoint", ordering="endpoint__url")
    def endpoint_link(self, obj):
        return _link("admin:webhooks_webhookendpoint_change", obj.endpoint_id, obj.endpoint.url)


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = [
        "url",
        "tenant",
        "enabled",
        "disabled_reason",
        "failing_since",
        "pending_count",
        "dispatches_link",
        "attempts_link",
        "created_at",
    ]
    list_filter = ["enabled", "disabled_reason", ("failing_since", admin.EmptyFieldListFilter)]
    search_fields = ["url", "description", "tenant__slug", "tenant__name"]
    list_select_related = ["tenant"]
    # The secret's ciphertext is excluded, not just read-only: it is of no use to an operator.
    fields = [
        "id",
        "tenant",
        "url",
        "events",
        "description",
        "enabled",
        "disabled_reason",
        "failing_since",
        "created_at",
        "updated_at",
    ]
    readonly_fields = fields
    actions = ["enable_endpoints", "disable_endpoints"]

    def get_queryset(self, request):
        pending = Q(dispatches__status=EventDispatch.Status.PENDING)
        return super().get_queryset(request).annotate(n_pending=Count("dispatches", filter=pending))

    def has_add_permission(self, request):
        return False  # the secret is shown once, to the tenant: the dashboard or the API create endpoints

    def has_change_permission(self, request, obj=None):
        return False  # changes go through the actions (services.update_endpoint: checked, audited)

    def has_delete_permission(self, request, obj=None):
        return False  # disable it; the tenant deletes it (audited, with its outbox and log)

    @admin.display(description="pending events", ordering="n_pending")
    def pending_count(self, obj):
        return obj.n_pending

    @admin.display(description="dispatches")
    def dispatches_link(self, obj):
        return _filtered(
            "admin:webhooks_eventdispatch_changelist", "endpoint__id__exact", obj.pk, "dispatches"
        )

    @admin.display(description="attempts")
    def attempts_link(self, obj):
        return _filtered(
            "admin:webhooks_webhookattempt_changelist", "endpoint__id__exact", obj.pk, "attempts"
        )

    def _set_enabled(self, request, queryset, enabled: bool) -> int:
        changed = 0
        for endpoint in queryset.select_related("tenant").filter(enabled=not enabled):
            services.update_endpoint(endpoint, actor=_actor(request), enabled=enabled)
            changed += 1
        return changed

    @admin.action(description="Enable the selected endpoints (their waiting events are sent)")
    def enable_endpoints(self, request, queryset):
        self.message_user(request, f"Enabled {self._set_enabled(request, queryset, True)} endpoint(s).")

    @admin.action(description="Disable the selected endpoints (their events wait)")
    def disable_endpoints(self, request, queryset):
        self.message_user(request, f"Disabled {self._set_enabled(request, queryset, False)} endpoint(s).")


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "type", "tenant", "created_at", "dispatches_link"]
    list_filter = ["type"]
    search_fields = ["=id", "tenant__slug"]
    list_select_related = ["tenant"]
    ordering = ["-created_at"]  # ids are random
    fields = ["id", "tenant", "type", "data", "created_at", "dispatches_link"]
    readonly_fields = fields

    @admin.display(description="dispatches")
    def dispatches_link(self, obj):
        return _filtered("admin:webhooks_eventdispatch_changelist", "event__id__exact", obj.pk, "dispatches")


@admin.register(EventDispatch)
class EventDispatchAdmin(EventLinks, ReadOnlyAdmin):
    list_display = [
        "id",
        "event_link",
        "endpoint_link",
        "status",
        "attempts",
        "retries",
        "next_attempt_at",
        "leased_until",
        "finished_at",
        "created_at",
    ]
    list_filter = ["status"]
    search_fields = ["=event__id", "endpoint__url"]
    list_select_related = ["event", "endpoint"]
    fields = [
        "event_link",
        "endpoint_link",
        "status",
        "attempts",
        "retries",
        "next_attempt_at",
        "leased_until",
        "created_at",
        "finished_at",
        "attempts_link",
    ]
    readonly_fields = fields
    actions = ["resend_now"]

    @admin.display(description="attempts log")
    def attempts_link(self, obj):
        return _filtered(
            "admin:webhooks_webhookattempt_changelist", "dispatch__id__exact", obj.pk, "attempts"
        )

    @admin.action(description="Resend now (same webhook-id, fresh retry schedule)")
    def resend_now(self, request, queryset):
        resent = 0
        for dispatch in queryset.select_related("endpoint__tenant"):
            try:
                services.resend(dispatch.endpoint, dispatch.event_id, actor=_actor(request))
            except ApiError as exc:
                self.message_user(request, f"{dispatch.event_id}: {exc.message}", level=messages.ERROR)
            else:
                resent += 1
        self.message_user(
            request,
            f"{resent} event(s) queued again; those of disabled endpoints wait until they are enabled.",
        )


class OutcomeFilter(admin.SimpleListFilter):
    """2xx or not: a filter that needs no scan of the distinct status codes of a big table."""

    title = "outcome"
    parameter_name = "outcome"

    def lookups(self, request, model_admin):
        return [("ok", "succeeded (2xx)"), ("failed", "failed")]

    def queryset(self, request, queryset):
        ok = Q(status_code__gte=200, status_code__lt=300)
        if self.value() == "ok":
            return queryset.filter(ok)
        if self.value() == "failed":
            return queryset.exclude(ok)
        return queryset


@admin.register(WebhookAttempt)
class WebhookAttemptAdmin(EventLinks, ReadOnlyAdmin):
    list_display = [
        "created_at",
        "event_link",
        "endpoint_link",
        "attempt",
        "status_code",
        "error",
        "duration_ms",
        "next_attempt_at",
    ]
    list_filter = [OutcomeFilter]
    search_fields = ["=event__id", "endpoint__url"]
    list_select_related = ["event", "endpoint"]
    fields = [
        "event_link",
        "endpoint_link",
        "dispatch_link",
        "attempt",
        "status_code",
        "error",
        "response_body",
        "duration_ms",
        "next_attempt_at",
        "created_at",
    ]
    readonly_fields = fields

    @admin.display(description="dispatch")
    def dispatch_link(self, obj):
        return _link("admin:webhooks_eventdispatch_change", obj.dispatch_id, str(obj.dispatch_id))

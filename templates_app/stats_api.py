"""GET /api/v1/apps/{appid}/stats: the funnel per UTC day (../shared/API.md "Statistics").

Parsing and formatting only: the range rules are formids.funnel.stats_range, the numbers templates_app.stats.
"""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from formids import funnel
from templates_app import stats
from tenants.models import MiniProgram
from tenants.viewsets import TenantScopedViewSet

ERROR = {"$ref": "#/components/schemas/Error"}


class StatsDaySerializer(serializers.Serializer):
    date = serializers.DateField(help_text="a UTC day, YYYY-MM-DD")
    credits_collected = serializers.IntegerField(
        help_text="credits stored that day: subscribe accepts (one-time, and new long-term subscriptions) "
        "under their template, formIds and prepay ids under no template (a formId template shows the app's)"
    )
    sent = serializers.IntegerField(help_text="messages WeChat accepted that day")
    failed = serializers.IntegerField(
        help_text="messages that failed that day (a later subscribe_msg_sent_event failure moves one from "
        "sent to failed on the day it was sent)"
    )
    opened = serializers.IntegerField(help_text="messages opened that day (first open of each)")
    resubscribed = serializers.IntegerField(
        help_text="opens of that day after which the user gave a new subscribe credit of the template within "
        "24 h (counted on the day of the open, once per open; formIds never count)"
    )


class StatsSerializer(serializers.Serializer):
    days = StatsDaySerializer(many=True, help_text="every day of the range, oldest first, zeros included")


class AppStatsViewSet(TenantScopedViewSet):
    """/api/v1/apps/{appid}/stats: read from the per-day aggregate rows, never from deliveries."""

    tenant_queryset = MiniProgram.objects.live()
    lookup_field = "appid"
    serializer_class = StatsSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "from",
                OpenApiTypes.DATE,
                description="first UTC day (included); default: 29 days before `to`",
            ),
            OpenApiParameter("to", OpenApiTypes.DATE, description="last UTC day (included); default: today"),
            OpenApiParameter(
                "template",
                OpenApiTypes.STR,
                description="one template of the app: its `id` or WeChat's `template_id`; default: the whole app",
            ),
        ],
        responses={
            200: StatsSerializer,
            400: OpenApiResponse(
                ERROR,
                description="validation_error: a malformed date (`field` `from` / `to`), `from` after `to`, or "
                f"more than {funnel.MAX_RANGE_DAYS} days",
            ),
            404: OpenApiResponse(ERROR, description="not_found: no such app, or no such template of the app"),
        },
        operation_id="apps_stats_retrieve",
        description="The funnel per UTC day: credits collected → sent → failed → opened → re-subscribed.",
    )
    def stats(self, request, appid=None):
        app = self.get_object()
        start, end = funnel.stats_range(request.query_params.get("from"), request.query_params.get("to"))
        template_ref = request.query_params.get("template", "")
        if template_ref:
            template = stats.find_template(app, template_ref[:128])
            if template is None:
                raise Http404
            days = stats.template_days(template, start, end)
        else:
            days = stats.app_days(app, start, end)
        return Response({"days": days})

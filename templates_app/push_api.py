"""/api/v1 pushes: send through the API, list and read pushes, their deliveries, cancel."""

from __future__ import annotations

import uuid

from django.http import Http404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from formids.audience import ALIAS_MAX_LENGTH, TAG_PATTERN
from pushhub.api import ApiError, CursorPagination, absolute_url
from pushhub.idempotency import IDEMPOTENCY_HEADER
from templates_app.models import Delivery, Push, Template
from templates_app.pushes import endpoint, payloads
from templates_app.pushes.addressing import MAX_RECIPIENTS, MAX_SEGMENT_TAGS
from templates_app.pushes.request import LANGS, MINIPROGRAM_STATES
from templates_app.pushes.start import cancel_push
from tenants.auth import actor_for
from tenants.viewsets import TenantScopedViewSet

COUNTS = inline_serializer(
    "PushCounts",
    {
        name: serializers.IntegerField(allow_null=True)
        for name in ("recipients", "sent", "failed", "no_credit", "opted_out", "pending", "held", "opened")
    },
)


TAG_LIST = {
    "type": "array",
    "items": {"type": "string", "pattern": TAG_PATTERN},
    "maxItems": MAX_SEGMENT_TAGS,
}


@extend_schema_field(
    {
        # anyOf, not oneOf: "@all" is a string too. The schema never refuses what the API accepts; the API
        # refuses more (an openid over 64 characters, a segment with neither "all" nor "any" tags).
        "anyOf": [
            {"type": "string", "description": 'one openid, or "@all": every user with a usable credit'},
            {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": MAX_RECIPIENTS},
            {
                "type": "object",
                "description": "the tenant's own user ids, resolved to their users when the push starts",
                "properties": {
                    "aliases": {
                        "type": "array",
                        "items": {"type": "string", "minLength": 1, "maxLength": ALIAS_MAX_LENGTH},
                        "minItems": 1,
                        "maxItems": MAX_RECIPIENTS,
                    }
                },
                "required": ["aliases"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "description": "a segment: users with every tag of all, one of any and none of none (give all "
                "or any), enumerated when the push runs",
                "properties": {
                    "tags": {
                        "type": "object",
                        "properties": {"all": TAG_LIST, "any": TAG_LIST, "none": TAG_LIST},
                        "additionalProperties": False,
                    }
                },
                "required": ["tags"],
                "additionalProperties": False,
            },
        ]
    }
)
class ToField(serializers.JSONField):
    """``to``: openids, ``{"aliases": [...]}``, ``{"tags": {...}}`` or ``"@all"`` (pushes.addressing)."""


class SendSerializer(serializers.Serializer):
    """Documentation of the send body (validation is pushes.request.parse_send_request)."""

    to = ToField(
        help_text='an openid, a list of 1..1000 openids, {"aliases": [1..1000 aliases]}, '
        '{"tags": {"all"?, "any"?, "none"?}} (each ≤ 20 tags) or "@all"'
    )
    data = serializers.JSONField(help_text="{key: value | {value, color}} or an array in field order")
    page = serializers.CharField(required=False)
    emphasis_keyword = serializers.CharField(required=False, help_text="formId templates: e.g. keyword1.DATA")
    miniprogram_state = serializers.ChoiceField(MINIPROGRAM_STATES, required=False)
    lang = serializers.ChoiceField(LANGS, required=False)
    send_at = serializers.DateTimeField(required=False)
    force = serializers.BooleanField(required=False)
    hold = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=604800,
        help_text="listed recipients only: those without a credit wait up to this many seconds for one "
        "(status held) and are sent to within 5 s of gaining one",
    )


class AcceptedSerializer(serializers.Serializer):
    push_id = serializers.CharField()
    status = serializers.ChoiceField(["queued", "scheduled"])
    recipients = serializers.IntegerField(allow_null=True)
    no_credit = serializers.ListField(child=serializers.CharField(), allow_null=True)
    opted_out = serializers.ListField(child=serializers.CharField(), allow_null=True)
    unknown_aliases = serializers.ListField(
        child=serializers.CharField(),
        allow_null=True,
        required=False,
        help_text="alias requests only: the aliases no user holds (not attempted); null until a scheduled "
        "push runs",
    )
    held = serializers.ListField(
        child=serializers.CharField(),
        allow_null=True,
        required=False,
        help_text="requests with hold only: the recipients waiting for a credit; null until a scheduled push "
        "runs",
    )
    send_at = serializers.CharField(allow_null=True)
    status_url = serializers.CharField()


class DryRunSerializer(serializers.Serializer):
    recipients = serializers.IntegerField()
    reachable = serializers.IntegerField()
    no_credit = serializers.IntegerField()
    opted_out = serializers.IntegerField()
    unknown_aliases = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="alias requests only"
    )


class PushSerializer(serializers.Serializer):
    id = serializers.CharField()
    template = serializers.CharField()
    app = serializers.CharField()
    status = serializers.ChoiceField(Push.Status.values)
    to = serializers.JSONField(help_text="as the send request gave it")
    counts = COUNTS
    send_at = serializers.CharField(allow_null=True)
    created_at = serializers.CharField()
    started_at = serializers.CharField(allow_null=True)
    finished_at = serializers.CharField(allow_null=True)


class DeliverySerializer(serializers.Serializer):
    openid = serializers.CharField(help_text="the user the message went to")
    alias = serializers.CharField(allow_null=True, help_text="that user's alias now (null: none bound)")
    tags = serializers.ListField(child=serializers.CharField(), help_text="that user's tags now")
    status = serializers.ChoiceField(Delivery.Status.values)
    errcode = serializers.JSONField(
        allow_null=True, help_text="WeChat's errcode, or timeout_ambiguous / canceled"
    )
    errmsg = serializers.CharField(allow_null=True)
    attempts = serializers.IntegerField()
    msgid = serializers.CharField(allow_null=True)
    sent_at = serializers.CharField(allow_null=True)
    opened_at = serializers.CharField(
        allow_null=True, help_text="when the user first opened the mini-program from this message"
    )


class TemplatePushViewSet(TenantScopedViewSet):
    tenant_queryset = Template.objects.select_related("app")
    serializer_class = AcceptedSerializer

    @extend_schema(
        request=SendSerializer,
        responses={202: AcceptedSerializer, 200: DryRunSerializer},
        parameters=[
            OpenApiParameter(
                "dry_run", OpenApiTypes.BOOL, description="count the reach; claim and send nothing"
            ),
            OpenApiParameter(IDEMPOTENCY_HEADER, OpenApiTypes.STR, OpenApiParameter.HEADER),
        ],
        operation_id="templates_pushes_create",
    )
    def create(self, request, id=None):
        template = self.get_queryset().filter(pk=id).first()
        if template is None:
            raise Http404
        status, body = endpoint.send(
            template,
            request.data,
            dry_run=endpoint.is_dry_run(request.query_params),
            idempotency_key=request.headers.get(IDEMPOTENCY_HEADER, ""),
            created_by=actor_for(request),
            status_url=lambda push: absolute_url(request, reverse("api-push-detail", args=[push.pk])),
        )
        return Response(body, status=status)


class DeliveryPagination(CursorPagination):
    ordering = "id"


class PushViewSet(TenantScopedViewSet):
    tenant_queryset = Push.objects.select_related("app")
    serializer_class = PushSerializer

    def _push(self, pk: uuid.UUID) -> Push:
        push = self.get_queryset().filter(pk=pk).first()
        if push is None:
            raise Http404
        return push

    @extend_schema(
        parameters=[
            OpenApiParameter("app", OpenApiTypes.STR, description="AppID"),
            OpenApiParameter("template", OpenApiTypes.UUID),
            OpenApiParameter("status", OpenApiTypes.STR, enum=Push.Status.values),
        ],
        responses={200: PushSerializer(many=True)},
    )
    def list(self, request):
        queryset = self.get_queryset()
        params = request.query_params
        if params.get("app"):
            queryset = queryset.filter(app__appid=params["app"])
        if params.get("template"):
            try:
                queryset = queryset.filter(template_id=uuid.UUID(params["template"]))
            except ValueError:
                raise ApiError(
                    400, "validation_error", "template must be a template id.", field="template"
                ) from None
        if params.get("status"):
            if params["status"] not in Push.Status.values:
                raise ApiError(
                    400,
                    "validation_error",
                    f"status must be one of {', '.join(Push.Status.values)}.",
                    field="status",
                )
            queryset = queryset.filter(status=params["status"])
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response([payloads.push_payload(p) for p in page])

    @extend_schema(responses={200: PushSerializer})
    def retrieve(self, request, pk=None):
        return Response(payloads.push_payload(self._push(pk)))

    @extend_schema(
        parameters=[OpenApiParameter("status", OpenApiTypes.STR, enum=Delivery.Status.values)],
        responses={200: DeliverySerializer(many=True)},
        operation_id="pushes_deliveries_list",
    )
    def deliveries(self, request, pk=None):
        push = self._push(pk)
        deliveries = Delivery.objects.filter(push=push)
        status = request.query_params.get("status")
        if status:
            if status not in Delivery.Status.values:
                raise ApiError(
                    400,
                    "validation_error",
                    f"status must be one of {', '.join(Delivery.Status.values)}.",
                    field="status",
                )
            deliveries = deliveries.filter(status=status)
        paginator = DeliveryPagination()
        page = paginator.paginate_queryset(deliveries, request, view=self)
        return paginator.get_paginated_response(payloads.delivery_payloads(push, list(page)))

    @extend_schema(request=None, responses={200: PushSerializer}, operation_id="pushes_cancel_create")
    def cancel(self, request, pk=None):
        push = cancel_push(self._push(pk), actor=actor_for(request))
        return Response(payloads.push_payload(push))

"""/api/v1/webhooks: the tenant's endpoints, their secrets, test events, the attempts log, resends."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from pushhub.api import (
    CursorPagination,
    RejectUnknownFieldsMixin,
    StrictBooleanField,
    StrictCharField,
    iso_utc,
)
from tenants.auth import actor_for
from tenants.viewsets import TenantScopedViewSet
from webhooks import services
from webhooks.guard import URL_MAX_LENGTH
from webhooks.models import WebhookAttempt, WebhookEndpoint
from webhooks.outbox import EVENT_TYPES

EVENTS_SCHEMA = {
    "type": "array",
    "items": {"type": "string", "enum": ["*", *EVENT_TYPES]},
    "minItems": 1,
    "description": 'event types, or ["*"] for all',
}


@extend_schema_field(EVENTS_SCHEMA)
class EventsField(serializers.JSONField):
    """Checked by ``services.clean_events`` (one message naming the known types, code validation_error)."""


def endpoint_payload(endpoint: WebhookEndpoint, secret: str | None = None) -> dict:
    body = {
        "id": str(endpoint.pk),
        "url": endpoint.url,
        "events": endpoint.events,
        "enabled": endpoint.enabled,
        "description": endpoint.description,
        "disabled_reason": endpoint.disabled_reason or None,
        "failing_since": iso_utc(endpoint.failing_since),
        "created_at": iso_utc(endpoint.created_at),
    }
    if secret is not None:
        body["secret"] = secret
    return body


def attempt_payload(attempt: WebhookAttempt) -> dict:
    return {
        "event_id": attempt.event_id,
        "type": attempt.event.type,
        "attempt": attempt.attempt,
        "status_code": attempt.status_code,
        "error": attempt.error or None,
        "response_body": attempt.response_body,
        "duration_ms": attempt.duration_ms,
        "next_attempt_at": iso_utc(attempt.next_attempt_at),
        "created_at": iso_utc(attempt.created_at),
    }


class EndpointSerializer(serializers.Serializer):
    id = serializers.CharField()
    url = serializers.CharField()
    events = serializers.ListField(child=serializers.CharField())
    enabled = serializers.BooleanField()
    description = serializers.CharField()
    disabled_reason = serializers.CharField(
        allow_null=True, help_text='"failing": disabled after 5 days of failures'
    )
    failing_since = serializers.CharField(allow_null=True, help_text="its events have failed since (UTC)")
    created_at = serializers.CharField()


class CreatedEndpointSerializer(EndpointSerializer):
    secret = serializers.CharField(help_text="whsec_…: shown only now (and by rotate-secret)")


class EndpointCreateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    url = StrictCharField(max_length=URL_MAX_LENGTH, help_text="https (http only in development)")
    events = EventsField()
    description = StrictCharField(max_length=services.DESCRIPTION_MAX, required=False, allow_blank=True)


class EndpointUpdateSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    url = StrictCharField(max_length=URL_MAX_LENGTH, required=False)
    events = EventsField(required=False)
    enabled = StrictBooleanField(required=False)
    description = StrictCharField(max_length=services.DESCRIPTION_MAX, required=False, allow_blank=True)


class AttemptSerializer(serializers.Serializer):
    event_id = serializers.CharField(help_text="the webhook-id header")
    type = serializers.CharField()
    attempt = serializers.IntegerField()
    status_code = serializers.IntegerField(allow_null=True, help_text="null: no HTTP answer (see error)")
    error = serializers.CharField(allow_null=True)
    response_body = serializers.CharField(help_text="at most 1 KiB of the answer")
    duration_ms = serializers.IntegerField()
    next_attempt_at = serializers.CharField(allow_null=True, help_text="null: succeeded, or the last attempt")
    created_at = serializers.CharField()


SECRET = inline_serializer("WebhookSecret", {"secret": serializers.CharField()})
QUEUED = inline_serializer("WebhookEventQueued", {"event_id": serializers.CharField()})


class WebhookViewSet(TenantScopedViewSet):
    tenant_queryset = WebhookEndpoint.objects.all()
    serializer_class = EndpointSerializer
    pagination_class = CursorPagination
    lookup_value_regex = "[0-9a-fA-F-]{36}"

    def _parsed(self, serializer_class, request):
        serializer = serializer_class(data=request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    @extend_schema(responses={200: EndpointSerializer(many=True)})
    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response([endpoint_payload(e) for e in page])

    @extend_schema(request=EndpointCreateSerializer, responses={201: CreatedEndpointSerializer})
    def create(self, request):
        data = self._parsed(EndpointCreateSerializer, request)
        endpoint, secret = services.create_endpoint(
            self.tenant,
            url=data["url"],
            events=data["events"],
            description=data.get("description", ""),
            actor=actor_for(request),
        )
        return Response(endpoint_payload(endpoint, secret), status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: EndpointSerializer})
    def retrieve(self, request, pk=None):
        return Response(endpoint_payload(self.get_object()))

    @extend_schema(request=EndpointUpdateSerializer, responses={200: EndpointSerializer})
    def partial_update(self, request, pk=None):
        endpoint = self.get_object()
        data = self._parsed(EndpointUpdateSerializer, request)
        endpoint = services.update_endpoint(endpoint, actor=actor_for(request), **data)
        return Response(endpoint_payload(endpoint))

    @extend_schema(responses={204: None})
    def destroy(self, request, pk=None):
        services.delete_endpoint(self.get_object(), actor=actor_for(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={200: SECRET})
    def rotate_secret(self, request, pk=None):
        return Response({"secret": services.rotate_secret(self.get_object(), actor=actor_for(request))})

    @extend_schema(request=None, responses={202: QUEUED})
    def test(self, request, pk=None):
        event = services.send_test(self.get_object(), actor=actor_for(request))
        return Response({"event_id": event.pk}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses={200: AttemptSerializer(many=True)})
    def attempts(self, request, pk=None):
        page = self.paginate_queryset(services.attempts_for(self.get_object()))
        return self.get_paginated_response([attempt_payload(a) for a in page])

    @extend_schema(request=None, responses={202: QUEUED})
    def resend(self, request, pk=None, event_id=None):
        dispatch = services.resend(self.get_object(), event_id, actor=actor_for(request))
        return Response({"event_id": dispatch.event_id}, status=status.HTTP_202_ACCEPTED)

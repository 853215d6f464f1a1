"""/api/v1/apps: register, list, read, change and delete mini-programs; the access-token proxy."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from pushhub.api import iso_utc
from tenants import services
from tenants.auth import actor_for
from tenants.models import MiniProgram
from tenants.serializers import (
    AccessTokenSerializer,
    AppCreateSerializer,
    AppSerializer,
    AppUpdateSerializer,
    IdentitySecretSerializer,
)
from tenants.viewsets import TenantScopedViewSet


class AppViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    tenant_queryset = MiniProgram.objects.live()
    serializer_class = AppSerializer
    lookup_field = "appid"
    lookup_value_regex = "[^/]+"
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    @extend_schema(request=AppCreateSerializer, responses={201: AppSerializer})
    def create(self, request):
        data = AppCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        app = services.register_app(
            self.tenant,
            appid=data.validated_data["appid"],
            secret=data.validated_data["secret"],
            name=data.validated_data["name"],
            sandbox_app=data.validated_data["sandbox"],
            actor=actor_for(request),
        )
        return Response(self.get_serializer(app).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=AppUpdateSerializer, responses={200: AppSerializer})
    def partial_update(self, request, appid=None):
        app = self.get_object()
        data = AppUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        app = services.update_app(app, actor=actor_for(request), **data.validated_data)
        return Response(self.get_serializer(app).data)

    @extend_schema(responses={204: None})
    def destroy(self, request, appid=None):
        services.delete_app(self.get_object(), actor=actor_for(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={200: AppSerializer})
    @action(detail=True, methods=["post"], url_path="events-credentials/rotate")
    def rotate_events_credentials(self, request, appid=None):
        app = services.rotate_events_credentials(self.get_object(), actor=actor_for(request))
        return Response(self.get_serializer(app).data)

    @extend_schema(
        request=None,
        responses={200: IdentitySecretSerializer},
        description="A new identity secret: user hashes made with the old one are refused from now on.",
    )
    @action(detail=True, methods=["post"], url_path="identity-secret/rotate")
    def rotate_identity_secret(self, request, appid=None):
        secret = services.rotate_identity_secret(self.get_object(), actor=actor_for(request))
        return Response({"identity_secret": secret})


class AccessTokenViewSet(TenantScopedViewSet):
    """GET /api/v1/apps/{appid}/access-token: the token PushHub holds, so tenants never refresh (and
    never invalidate) it themselves. Needs a write key: the token can send messages."""

    tenant_queryset = MiniProgram.objects.live()
    lookup_field = "appid"
    requires_write_key = True
    serializer_class = AccessTokenSerializer

    @extend_schema(responses={200: AccessTokenSerializer}, operation_id="apps_access_token_retrieve")
    def retrieve(self, request, appid=None):
        token = services.app_access_token(self.get_object())
        return Response(
            {"access_token": token.access_token, "expires_at": iso_utc(token.expires_at_datetime)}
        )

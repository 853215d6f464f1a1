"""/api/v1/apps/{appid}/quota and /users: what a tenant can still send, per app and per user."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from formids import quotas
from pushhub.api import ApiError, CursorPagination
from tenants.models import MiniProgram
from tenants.viewsets import TenantScopedViewSet


class QuotaCreditsSerializer(serializers.Serializer):
    formid = serializers.IntegerField(help_text="usable formId/prepay_id sends")
    subscribe = serializers.DictField(
        child=serializers.IntegerField(), help_text="usable sends per template id"
    )


class QuotaSerializer(serializers.Serializer):
    users = serializers.IntegerField()
    users_reachable = serializers.IntegerField(help_text="users with at least one usable credit")
    credits = QuotaCreditsSerializer()
    expiring_24h = serializers.IntegerField(help_text="formId/prepay_id sends that expire within 24 h")
    sent_today = serializers.IntegerField()
    failed_today = serializers.IntegerField()


class AppUserSerializer(serializers.Serializer):
    openid = serializers.CharField()
    push_enabled = serializers.BooleanField()
    formid_credits = serializers.IntegerField()
    subscribe_credits = serializers.DictField(child=serializers.IntegerField())
    next_expiry = serializers.CharField(
        allow_null=True, help_text="UTC ISO-8601 of the soonest-expiring formId"
    )
    first_seen = serializers.CharField()
    last_seen = serializers.CharField()


class UserPagination(CursorPagination):
    ordering = "-id"


def _reachable_param(request) -> bool | None:
    value = request.query_params.get("reachable")
    if value in (None, ""):
        return None
    if value.lower() in {"true", "1"}:
        return True
    if value.lower() in {"false", "0"}:
        return False
    raise ApiError(400, "validation_error", "reachable must be true or false.", field="reachable")


class AppQuotaViewSet(TenantScopedViewSet):
    tenant_queryset = MiniProgram.objects.live()
    lookup_field = "appid"
    pagination_class = UserPagination
    serializer_class = AppUserSerializer

    @extend_schema(responses={200: QuotaSerializer}, operation_id="apps_quota_retrieve")
    def quota(self, request, appid=None):
        return Response(quotas.app_quota(self.get_object()))

    @extend_schema(
        responses={200: AppUserSerializer(many=True)},
        parameters=[
            OpenApiParameter(
                "reachable",
                OpenApiTypes.BOOL,
                description="only users with (true) or without (false) a usable credit",
            ),
            OpenApiParameter("search", OpenApiTypes.STR, description="openid prefix"),
        ],
        operation_id="apps_users_list",
    )
    def users(self, request, appid=None):
        app = self.get_object()
        users = quotas.app_users(
            app, reachable=_reachable_param(request), search=request.query_params.get("search", "")[:64]
        )
        page = self.paginate_queryset(users)
        summaries = quotas.credit_summaries(page)
        return self.get_paginated_response([quotas.user_payload(u, summaries[u.pk]) for u in page])

    @extend_schema(responses={200: AppUserSerializer}, operation_id="apps_users_retrieve")
    def user(self, request, appid=None, openid=None):
        app = self.get_object()
        user = quotas.app_users(app).filter(openid=openid).first()
        if user is None:
            raise Http404
        return Response(quotas.user_payload(user, quotas.credit_summaries([user])[user.pk]))

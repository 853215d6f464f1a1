"""/api/v1/apps/{appid}/quota, /users and /tags: what a tenant can still send, per app and per user; the
users' aliases and tags (../shared/API.md "Quotas" and "Audience — aliases and tags")."""

from __future__ import annotations

from django.conf import settings
from django.http import Http404
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.response import Response

from formids import audience, quotas
from formids.models import MiniUser
from pushhub.api import ApiError, CursorPagination, RejectUnknownFieldsMixin
from tenants.models import MiniProgram
from tenants.viewsets import TenantScopedViewSet


class QuotaCreditsSerializer(serializers.Serializer):
    formid = serializers.IntegerField(help_text="usable formId/prepay_id sends")
    subscribe = serializers.DictField(
        child=serializers.IntegerField(), help_text="usable sends per one-time template id"
    )
    long_term = serializers.DictField(
        child=serializers.IntegerField(),
        help_text="standing subscribers per long-term template id (sends do not use them up)",
    )


class QuotaSerializer(serializers.Serializer):
    users = serializers.IntegerField()
    users_reachable = serializers.IntegerField(help_text="users with at least one usable credit")
    credits = QuotaCreditsSerializer()
    expiring_24h = serializers.IntegerField(help_text="formId/prepay_id sends that expire within 24 h")
    sent_today = serializers.IntegerField()
    failed_today = serializers.IntegerField()


ERROR = {"$ref": "#/components/schemas/Error"}  # added to the schema by pushhub.api.add_error_responses
ALIAS_SCHEMA = {"type": "string", "minLength": 1, "maxLength": audience.ALIAS_MAX_LENGTH}
TAG_SCHEMA = {"type": "string", "pattern": audience.TAG_PATTERN}


class AppUserSerializer(serializers.Serializer):
    openid = serializers.CharField()
    alias = serializers.CharField(allow_null=True, help_text="the tenant's own id for this user, or null")
    tags = serializers.ListField(child=serializers.CharField(), help_text="sorted")
    push_enabled = serializers.BooleanField()
    formid_credits = serializers.IntegerField()
    subscribe_credits = serializers.DictField(
        child=serializers.IntegerField(), help_text="usable sends per one-time template id"
    )
    long_term = serializers.ListField(
        child=serializers.CharField(),
        help_text="long-term template ids the user stands subscribed to, sorted",
    )
    next_expiry = serializers.CharField(
        allow_null=True, help_text="UTC ISO-8601 of the soonest-expiring formId"
    )
    last_credit = serializers.BooleanField(
        help_text="one send left for some way of reaching the user: one formId use in all, or one credit of a "
        "subscribe template (user.unreachable fires when it is used)"
    )
    first_seen = serializers.CharField()
    last_seen = serializers.CharField()


@extend_schema_field({**ALIAS_SCHEMA, "nullable": True})
class AliasField(serializers.Field):
    """Passed on as sent: formids.audience checks it (the one home of the alias rules)."""

    def to_internal_value(self, data):
        return data

    def to_representation(self, value):
        return value


@extend_schema_field({"type": "array", "items": TAG_SCHEMA, "maxItems": audience.MAX_TAGS_PER_USER})
class TagListField(AliasField):
    pass


class UserAudienceSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """What PATCH /users/{openid} changes: the alias, the tag set, or both (no other field)."""

    alias = AliasField(
        required=False,
        allow_null=True,
        help_text="1-128 printable characters, stored as given; null unbinds. An alias another user of the "
        "app holds moves to this one (the other user's becomes null).",
    )
    tags = TagListField(
        required=False,
        help_text="the user's whole tag set (replaces the current one): at most 50 tags matching "
        f"`{audience.TAG_PATTERN}`",
    )


def _member_list_schema(item: dict) -> dict:
    return {"type": "array", "items": item, "maxItems": audience.MAX_MEMBERS_PER_CALL}


@extend_schema_field(_member_list_schema({"type": "string", "minLength": 1, "maxLength": 64}))
class OpenidListField(AliasField):
    pass


@extend_schema_field(_member_list_schema(ALIAS_SCHEMA))
class AliasListField(AliasField):
    pass


class TagMembersSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """The users to tag or untag: 1 to 10,000 openids and aliases in all."""

    openids = OpenidListField(required=False)
    aliases = AliasListField(required=False)


class TagAddedSerializer(serializers.Serializer):
    added = serializers.IntegerField(help_text="users newly tagged (users already tagged are not counted)")
    unknown = serializers.ListField(
        child=serializers.CharField(), help_text="openids and aliases no user of the app holds, as sent"
    )


class TagRemovedSerializer(serializers.Serializer):
    removed = serializers.IntegerField(help_text="users that had the tag")
    unknown = serializers.ListField(
        child=serializers.CharField(), help_text="openids and aliases no user of the app holds, as sent"
    )


class TagCountSerializer(serializers.Serializer):
    tag = serializers.CharField()
    users = serializers.IntegerField()
    users_reachable = serializers.IntegerField(
        help_text="tagged users with pushes on and at least one usable credit"
    )


class TagCountsSerializer(serializers.Serializer):
    results = TagCountSerializer(many=True)


class UserPagination(CursorPagination):
    ordering = "-id"


def _bool_param(request, name: str) -> bool | None:
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    if value.lower() in {"true", "1"}:
        return True
    if value.lower() in {"false", "0"}:
        return False
    raise ApiError(400, "validation_error", f"{name} must be true or false.", field=name)


def _query_value(request, name: str, check) -> str:
    """An optional query parameter checked by the audience rules; empty means absent."""
    value = request.query_params.get(name, "")
    return check(value, name) if value else ""


def users_payload(users: list[MiniUser]) -> list[dict]:
    """The user objects of a page: its credits and its tags in one grouped query each, whatever its size."""
    summaries, tags = quotas.credit_summaries(users), audience.tags_by_user(users)
    return [
        {
            **quotas.user_payload(user, summaries[user.pk]),
            "last_credit": quotas.has_last_credit(summaries[user.pk]),
            "alias": user.alias,
            "tags": tags[user.pk],
        }
        for user in users
    ]


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
            OpenApiParameter(
                "last_credit",
                OpenApiTypes.BOOL,
                description="only users down to their last send for some way of reaching them (true), or not",
            ),
            OpenApiParameter("search", OpenApiTypes.STR, description="openid prefix"),
            OpenApiParameter(
                "tag", {**TAG_SCHEMA}, description="only users carrying this tag (a malformed tag is a 400)"
            ),
            OpenApiParameter("alias", {**ALIAS_SCHEMA}, description="only the user holding this alias"),
        ],
        operation_id="apps_users_list",
    )
    def users(self, request, appid=None):
        app = self.get_object()
        users = quotas.app_users(
            app,
            reachable=_bool_param(request, "reachable"),
            last_credit=_bool_param(request, "last_credit"),
            search=request.query_params.get("search", "")[:64],
            tag=_query_value(request, "tag", audience.check_tag),
            alias=_query_value(request, "alias", audience.check_alias),
        )
        return self.get_paginated_response(users_payload(self.paginate_queryset(users)))

    def _user(self, openid: str) -> MiniUser:
        user = quotas.app_users(self.get_object()).filter(openid=openid).first()
        if user is None:
            raise Http404
        return user

    @extend_schema(responses={200: AppUserSerializer}, operation_id="apps_users_retrieve")
    def user(self, request, appid=None, openid=None):
        return Response(users_payload([self._user(openid)])[0])

    @extend_schema(
        request=UserAudienceSerializer,
        responses={
            200: AppUserSerializer,
            409: OpenApiResponse(
                ERROR,
                description="conflict: the alias is being bound to other users at this very moment; retry",
            ),
        },
        operation_id="apps_users_partial_update",
        description="Set the user's alias and/or their whole tag set. Malformed aliases and tags are a 400 "
        "`validation_error` naming the field (`alias`, `tags[2]`, `tags` when over 50).",
    )
    def update_user(self, request, appid=None, openid=None):
        user = self._user(openid)
        data = UserAudienceSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        audience.set_user_audience(user, **data.validated_data)
        return Response(users_payload([user])[0])


class DeleteWithBodySchema(AutoSchema):
    """drf-spectacular leaves DELETE without a request body; the members DELETE takes the POST's body."""

    def _get_request_body(self, direction="request"):
        if self.method != "DELETE":
            return super()._get_request_body(direction)
        self.method = "POST"
        try:
            return super()._get_request_body(direction)
        finally:
            self.method = "DELETE"


MEMBERS_400 = OpenApiResponse(
    ERROR,
    description="validation_error: a malformed tag, openid or alias (`field` names it: `tag`, `openids[3]`, "
    "`aliases[0]`), none or over 10,000 members, a user over 50 tags",
)
MEMBERS_413 = OpenApiResponse(
    ERROR,
    description=f"payload_too_large: body over {settings.API_BULK_BODY_LIMIT // 1024 // 1024} MiB "
    "(10,000 openids take about 310 KB, 10,000 ASCII aliases of 128 characters 1.3 MB)",
)


class AppTagViewSet(TenantScopedViewSet):
    """/api/v1/apps/{appid}/tags: the app's tags with their counts, and bulk (un)tagging of members."""

    tenant_queryset = MiniProgram.objects.live()
    lookup_field = "appid"
    serializer_class = TagCountSerializer
    schema = DeleteWithBodySchema()
    # 10,000 members per call do not fit the API's 64 KiB (pushhub.middleware.ApiBodyLimitMiddleware).
    body_limit = settings.API_BULK_BODY_LIMIT

    @extend_schema(responses={200: TagCountsSerializer}, operation_id="apps_tags_list")
    def tags(self, request, appid=None):
        return Response({"results": audience.tag_counts(self.get_object())})

    def _members(self, request) -> dict:
        data = TagMembersSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return data.validated_data

    @extend_schema(
        request=TagMembersSerializer,
        responses={200: TagAddedSerializer, 400: MEMBERS_400, 413: MEMBERS_413},
        operation_id="apps_tags_members_create",
        parameters=[OpenApiParameter("tag", {**TAG_SCHEMA}, OpenApiParameter.PATH)],
        description="Tag 1 to 10,000 users, named by openid and/or alias, in one call. A user who would "
        "carry more than 50 tags is a 400 naming them (`openids[i]` / `aliases[i]`) and nobody is tagged.",
    )
    def add_members(self, request, appid=None, tag=None):
        app = self.get_object()
        return Response(audience.tag_members(app, tag, **self._members(request)))

    @extend_schema(
        request=TagMembersSerializer,
        responses={200: TagRemovedSerializer, 400: MEMBERS_400, 413: MEMBERS_413},
        operation_id="apps_tags_members_destroy",
        parameters=[OpenApiParameter("tag", {**TAG_SCHEMA}, OpenApiParameter.PATH)],
        description="Untag 1 to 10,000 users, named by openid and/or alias (the POST's body).",
    )
    def remove_members(self, request, appid=None, tag=None):
        app = self.get_object()
        return Response(audience.untag_members(app, tag, **self._members(request)))

"""/sdk/v1/{appid}/… routes that templates_app serves (../shared/API.md "Opens and the in-app inbox"): opens and
the in-app inbox. The same SDK base view as formids' routes (the app must be live, a session of that app, rate
limits per IP and per user); the work is in templates_app.opens and templates_app.inbox."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema_field
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from formids.sdk_views import ERROR, SdkView, sdk_schema
from pushhub.api import (
    ApiError,
    RejectUnknownFieldsMixin,
    StrictBooleanField,
    StrictCharField,
    absolute_url,
    limit_param,
)
from templates_app import inbox, opens
from templates_app.opens_ref import MAX_REF, QUERY_NAME

# --- opens ----------------------------------------------------------------------------------------------


class SdkOpenSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    # No max_length: a ref too long to be one is malformed, answered 404 like a forged one.
    ref = StrictCharField(
        min_length=1,
        help_text=f"the `{QUERY_NAME}` query parameter of the opened page (≤ {MAX_REF} characters)",
    )


class SdkOpenedSerializer(serializers.Serializer):
    opened = serializers.BooleanField(help_text="always true: a repeated report is answered the same")


class OpensView(SdkView):
    @sdk_schema(
        operation_id="sdk_opens_create",
        summary="Report that the user opened the mini-program from a sent message",
        description=f"`ref` is the `{QUERY_NAME}` query parameter the message's page carried (the SDK reports "
        "it by itself on launch and on show from scenes 1014 and 1107). Idempotent: an open counts once per "
        "message; a repeat is answered the same. A ref that is malformed, forged, of another user or app, or "
        "of a message not sent is 404 `not_found`.",
        request=SdkOpenSerializer,
        responses={
            200: SdkOpenedSerializer,
            404: OpenApiResponse(ERROR, description="not_found: no such sent message for this user"),
        },
    )
    def post(self, request, appid):
        opens.record_open(self.app, self.user, self.parse(SdkOpenSerializer)["ref"])
        return Response({"opened": True})


# --- shapes ------------------------------------------------------------------------------------------
class InboxFieldSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="the template's name for the field (its key when it has none)")
    value = serializers.CharField()


class InboxMessageSerializer(serializers.Serializer):
    id = serializers.CharField()
    title = serializers.CharField(help_text="the template's title")
    fields = InboxFieldSerializer(many=True, help_text="in the template's order")
    page = serializers.CharField(help_text="the push's page (no ph=: a tap in the inbox is not an open)")
    sent_at = serializers.DateTimeField()
    read = serializers.BooleanField()


class InboxPageSerializer(serializers.Serializer):
    results = InboxMessageSerializer(many=True, help_text="newest first")
    next = serializers.URLField(allow_null=True, help_text="the next page, or null")
    unread = serializers.IntegerField(help_text="the user's unread messages, all pages")


@extend_schema_field(
    {
        "type": "array",
        "items": {"oneOf": [{"type": "integer"}, {"type": "string", "pattern": "^[0-9]+$"}]},
        "maxItems": inbox.MAX_READ_IDS,
        "description": "message ids as the inbox gave them",
    }
)
class MessageIdListField(serializers.Field):
    """A list of up to 500 message ids: the strings the inbox gives out, or the same as JSON integers."""

    def to_internal_value(self, data):
        if not isinstance(data, list):
            raise serializers.ValidationError("Must be a list of message ids.", code="invalid")
        if len(data) > inbox.MAX_READ_IDS:
            raise serializers.ValidationError(f"At most {inbox.MAX_READ_IDS} ids per call.", code="invalid")
        ids = []
        for item in data:
            if isinstance(item, str) and item.isascii() and item.isdigit():
                item = int(item)
            if isinstance(item, bool) or not isinstance(item, int):
                raise serializers.ValidationError("Each id must be a message id.", code="invalid")
            if 0 < item <= inbox.MAX_ID:  # out of range: nobody's message, ignored like another user's
                ids.append(item)
        return ids

    def to_representation(self, value):
        return value


class InboxReadSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    ids = MessageIdListField(required=False, help_text="these messages (others' ids are ignored)")
    all = StrictBooleanField(required=False, help_text="true: every message of the user's")

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if "all" in attrs and not attrs["all"]:
            raise serializers.ValidationError({"all": ["Send all: true, or ids."]}, code="invalid")
        if "ids" not in attrs and "all" not in attrs:
            raise serializers.ValidationError({"ids": ["Send ids, or all: true."]}, code="invalid")
        if "ids" in attrs and "all" in attrs:
            raise serializers.ValidationError({"all": ["Send ids or all: true, not both."]}, code="invalid")
        return attrs


class InboxUnreadSerializer(serializers.Serializer):
    unread = serializers.IntegerField(help_text="the user's unread messages after the call")


INBOX_DISABLED = OpenApiResponse(ERROR, description="inbox_disabled: the app has the inbox turned off")


# --- views -------------------------------------------------------------------------------------------
class InboxBaseView(SdkView):
    """An SDK view of the inbox: 404 ``inbox_disabled`` while the app has it off."""

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if not self.app.inbox_enabled:
            raise ApiError(404, "inbox_disabled", "This mini-program has the in-app inbox turned off.")


class InboxView(InboxBaseView):
    @sdk_schema(
        operation_id="sdk_inbox_list",
        summary="The signed-in user's messages, newest first",
        description="Messages sent to this user (kept INBOX_RETENTION_DAYS), each with the template's title "
        "and field names and the push's values and page. `next` is the next page's URL (its `cursor`), null "
        "on the last; a cursor not given out here is a 400 (field `cursor`).",
        parameters=[
            OpenApiParameter("cursor", OpenApiTypes.STR, description="the `next` link's cursor"),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1},
                description=f"messages per page (default {inbox.PAGE_SIZE}; at most {inbox.MAX_PAGE_SIZE})",
            ),
        ],
        responses={200: InboxPageSerializer, 404: INBOX_DISABLED},
    )
    def get(self, request, appid):
        limit = limit_param(request, inbox.PAGE_SIZE, inbox.MAX_PAGE_SIZE)
        result = inbox.page(
            self.app.pk, request.user.openid, request.query_params.get("cursor", ""), limit=limit
        )
        next_url = None
        if result.next_cursor:
            next_url = replace_query_param(
                absolute_url(request, request.get_full_path()), "cursor", result.next_cursor
            )
        return Response({"results": result.results, "next": next_url, "unread": result.unread})


class InboxReadView(InboxBaseView):
    @sdk_schema(
        operation_id="sdk_inbox_read",
        summary="Mark messages read",
        description="`{ids: [...]}` (up to 500) or `{all: true}`. Ids that are not this user's messages are "
        "ignored. Idempotent.",
        request=InboxReadSerializer,
        responses={200: InboxUnreadSerializer, 404: INBOX_DISABLED},
    )
    def post(self, request, appid):
        data = self.parse(InboxReadSerializer)
        unread = inbox.mark_read(
            self.app.pk, request.user.openid, data.get("ids"), everything=data.get("all", False)
        )
        return Response({"unread": unread})

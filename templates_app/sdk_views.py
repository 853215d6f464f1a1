"""/sdk/v1/{appid}/… routes that templates_app serves (../shared/API.md "Opens and the in-app inbox"): the
same SDK base view as formids' routes (the app must be live, a session of that app, rate limits per IP and
per user); the work is in templates_app.opens."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.response import Response

from formids.sdk_views import ERROR, SdkView, sdk_schema
from pushhub.api import RejectUnknownFieldsMixin, StrictCharField
from templates_app import opens
from templates_app.opens_ref import MAX_REF, QUERY_NAME


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

"""/sdk/v1/{appid}/…: what the mini-program SDK (static/sdk/pushhub.js) calls (../shared/API.md "SDK").

Every call: the app in the URL must be live (else 404 ``not_found``) and counts against the client IP;
calls after the login carry ``Authorization: Session <token>`` for that app and also count against the
app + openid. Views parse, authorise and format; the work is in the plain functions below.
"""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone
from django.utils.http import http_date
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from formids import audience, live_apps
from formids import sdk_serializers as s
from formids.models import MiniUser
from formids.quotas import user_summary
from formids.sdk_auth import HasSdkSession, SdkSession, SdkSessionAuthentication, log_in
from formids.services import report_subscriptions, set_push_enabled, take_uploaded_ids, touch_user
from pushhub import idempotency, logs, ratelimit
from pushhub.api import ApiError, iso_utc
from tenants.models import MiniProgram

RATE_WINDOW = 60  # seconds; SDK_RATE_PER_IP and SDK_RATE_PER_OPENID are per this window
# What django.utils.cache.add_never_cache_headers writes, written directly: it parses and re-joins the header
# twice, 3 % of an upload's CPU.
NEVER_CACHE = "max-age=0, no-cache, no-store, must-revalidate, private"


# --- the work ----------------------------------------------------------------------------------------
def live_app(appid: str) -> MiniProgram:
    """The live (not deleted) app with this AppID; 404 for anything else, malformed ids included. From the
    process's short cache (formids.live_apps: a deleted app is refused within SDK_APP_CACHE_SECONDS)."""
    app = live_apps.live_app(appid)
    if app is None:
        raise ApiError(404, "not_found", "No such mini-program.")
    return app


def client_ip(request) -> str:
    return request.META.get("REMOTE_ADDR") or "unknown"


# --- the views ---------------------------------------------------------------------------------------
APPID_PARAMETER = OpenApiParameter(
    "appid", OpenApiTypes.STR, OpenApiParameter.PATH, description="the mini-program's AppID"
)


ERROR = {"$ref": "#/components/schemas/Error"}  # added to the schema by pushhub.api.add_error_responses


def sdk_schema(parameters: list | None = None, **kwargs):
    return extend_schema(tags=["sdk"], parameters=[APPID_PARAMETER, *(parameters or [])], **kwargs)


class SdkView(APIView):
    """Resolves the app, rate-limits, authenticates the session and loads its user (``self.user``)."""

    authentication_classes = [SdkSessionAuthentication]
    permission_classes = [HasSdkSession]

    app: MiniProgram
    user: MiniUser | None = None
    # False: the view reads (or makes) the session's user itself, in its own statement (the upload's).
    loads_user = True

    def initial(self, request, *args, **kwargs):
        # One Redis round trip for both rate limits: the app (cached) and the session (a signature, no
        # query) are read first, then both counted in order. The answers are those of checking the IP first:
        # over the IP's limit is a 429 whatever the rest (an unknown app, a bad session, and the user's
        # counter is not counted); then 404 for the app, 401 for the session, 429 for the user's limit.
        app = request.sdk_app = live_apps.live_app(kwargs["appid"])
        refused = None
        if app is not None:
            self.app = app
            logs.bind(tenant=app.tenant_id, app=app.appid)
            try:
                super().initial(request, *args, **kwargs)  # authentication and permissions
            except exceptions.APIException as exc:
                refused = exc
        ip = f"sdk:ip:{client_ip(request)}"
        limits = [(ip, settings.SDK_RATE_PER_IP, RATE_WINDOW, "SDK requests from this address")]
        session = request.user if app is not None and refused is None else None
        if isinstance(session, SdkSession):
            user = f"sdk:user:{app.pk}:{session.openid}"
            limits.append((user, settings.SDK_RATE_PER_OPENID, RATE_WINDOW, "SDK requests for this user"))
        ratelimit.check_all(limits)
        if app is None:
            raise ApiError(404, "not_found", "No such mini-program.")
        if refused is not None:
            raise refused
        if isinstance(session, SdkSession) and self.loads_user:
            self.user = touch_user(app, session.openid)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        # Sessions and per-user data: never in a shared cache.
        response.headers["Expires"] = http_date()
        response.headers["Cache-Control"] = NEVER_CACHE
        return response

    def parse(self, serializer_class) -> dict:
        serializer = serializer_class(data=self.request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


class LoginView(SdkView):
    authentication_classes = []
    permission_classes = [AllowAny]

    @sdk_schema(
        operation_id="sdk_login",
        summary="Exchange a wx.login code for a session",
        description="WeChat refusing the code (40029, 40163) → 400 `invalid_code`; other WeChat errors → "
        "502 `wechat_error` (with `errcode`, `errmsg`) or `wechat_unreachable`.",
        request=s.SdkLoginSerializer,
        responses={
            200: s.SdkSessionSerializer,
            502: OpenApiResponse(
                ERROR, description="wechat_error (with errcode, errmsg) or wechat_unreachable"
            ),
        },
        auth=[],
    )
    def post(self, request, appid):
        login = log_in(self.app, self.parse(s.SdkLoginSerializer)["code"])
        return Response(
            {"session": login.session, "openid": login.user.openid, "expires_at": iso_utc(login.expires_at)}
        )


class FormidsView(SdkView):
    loads_user = False  # take_uploaded_ids reads the user in the upload's one statement

    @sdk_schema(
        operation_id="sdk_formids_create",
        summary="Upload formIds and prepay_ids",
        description="Each list 1..100 items. Values that cannot be ids are rejected one by one with a reason; "
        "values already stored are counted as duplicates. A formId is used until 7 days after it was "
        "received, less the server's safety margin (FORMID_EXPIRY_MARGIN, default 1 h); a prepay_id gives "
        "3 sends in the same time.",
        request=s.SdkFormidsSerializer,
        responses={200: s.SdkIntakeSerializer},
    )
    def post(self, request, appid):
        data = request.data
        if not s.is_plain_id_upload(data):  # the serializer answers everything else, errors included
            data = self.parse(s.SdkFormidsSerializer)
        intake = take_uploaded_ids(
            self.app,
            request.user.openid,
            formids=data.get("formids", ()),
            prepay_ids=data.get("prepay_ids", ()),
        )
        return Response(
            {"accepted": intake.accepted, "duplicates": intake.duplicates, "rejected": intake.rejected}
        )


class SubscriptionsView(SdkView):
    @sdk_schema(
        operation_id="sdk_subscriptions_create",
        summary="Report wx.requestSubscribeMessage answers",
        description="Accepts become one send each when the app's `credit_source` is `sdk`; with `events` the "
        "report is recorded only. An accept of a long-term template makes the user a standing subscriber "
        "(once: sends do not use it up); a `reject` or `ban` of one ends the subscription, whatever the "
        "`credit_source`. Ids that are not the app's subscribe templates are returned in `ignored`. "
        "With an `Idempotency-Key` the same report retried within 24 h gets the first answer and credits "
        "nothing more.",
        request=s.SdkSubscriptionsSerializer,
        responses={
            200: s.SdkSubscriptionsResultSerializer,
            409: OpenApiResponse(
                ERROR,
                description="idempotency_mismatch (the key came with another body) or conflict (the first "
                "request with the key is still running; Retry-After)",
            ),
        },
        parameters=[
            OpenApiParameter(
                idempotency.IDEMPOTENCY_HEADER,
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description=f"≤ {idempotency.IDEMPOTENCY_MAX_LENGTH} characters, one per report",
            )
        ],
    )
    def post(self, request, appid):
        results = self.parse(s.SdkSubscriptionsSerializer)["results"]
        key = idempotency.check_key(request.headers.get(idempotency.IDEMPOTENCY_HEADER, ""))

        def report() -> dict:
            return report_subscriptions(self.app, self.user, results)

        if not key:
            return Response(report())
        cache_key = idempotency.cache_key(f"sdk:{self.app.pk}:{self.user.openid}", key)
        return Response(idempotency.run_once(cache_key, idempotency.body_fingerprint(results), report))


class MeView(SdkView):
    @sdk_schema(
        operation_id="sdk_me_retrieve",
        summary="This user's credits and push setting",
        description='For the mini-program to show "you will be notified": usable formId/prepay_id sends, '
        "one-time subscribe sends per template, the long-term templates the user stands subscribed to, the "
        "soonest formId expiry and whether pushes are on.",
        responses={200: s.SdkMeSerializer},
    )
    def get(self, request, appid):
        return Response(user_summary(self.user, now=timezone.now()))


class IdentifyView(SdkView):
    @sdk_schema(
        operation_id="sdk_identify",
        summary="Bind the tenant's own id (alias) to this user, or unbind it",
        description="`user_hash` is what the tenant's server computes: lowercase hex HMAC-SHA256 with the app's "
        "`identity_secret` as the key and the alias as the message (UTF-8 both), so that nobody can bind "
        "an alias (and receive its messages) without the tenant's say. A wrong or missing hash is a 403 "
        "`invalid_user_hash`: nothing changes, and the call counts against the SDK's rate limits like any "
        "other. An alias another user of the app holds moves to this one. `{alias: null}` unbinds "
        "without a hash.",
        request=s.SdkIdentifySerializer,
        responses={
            200: s.SdkIdentifyResultSerializer,
            403: OpenApiResponse(ERROR, description="invalid_user_hash: the hash is wrong or missing"),
            409: OpenApiResponse(
                ERROR, description="conflict: the alias is being bound to other users at this very moment"
            ),
        },
    )
    def post(self, request, appid):
        data = self.parse(s.SdkIdentifySerializer)
        alias = audience.check_alias(data["alias"])
        if alias is not None and not audience.user_hash_matches(self.app, alias, data.get("user_hash")):
            raise ApiError(
                403,
                "invalid_user_hash",
                "user_hash is not this alias's HMAC-SHA256 with the app's identity secret: compute it on "
                "your server.",
                field="user_hash",
            )
        user = audience.set_user_audience(self.user, alias=alias)
        return Response({"alias": user.alias})


class SettingsView(SdkView):
    @sdk_schema(
        operation_id="sdk_settings_update",
        summary="Turn this app's pushes off (or on) for this user",
        description="Triggers skip users who turned pushes off (counted as `opted_out`) unless they send "
        "`force: true`.",
        request=s.SdkSettingsSerializer,
        responses={200: s.SdkSettingsResultSerializer},
    )
    def post(self, request, appid):
        user = set_push_enabled(self.user, self.parse(s.SdkSettingsSerializer)["push_enabled"])
        return Response({"push_enabled": user.push_enabled})

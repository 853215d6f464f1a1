"""SDK sessions: ``POST /sdk/v1/{appid}/login`` turns a ``wx.login`` code into a signed session token;
later SDK calls send ``Authorization: Session <token>``.

The token is ``django.core.signing`` output (HMAC with SECRET_KEY, its own salt) over the app's primary key
and the openid, with the signing time: nothing is stored server-side, and ``max_age`` enforces the
SDK_SESSION_DAYS lifetime. Binding the primary key (not only the AppID) means an app deleted and registered
again does not inherit the old sessions.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core import signing
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import BasePermission

from formids.models import MiniUser
from formids.services import touch_user
from pushhub.api import ApiError, wechat_failure
from pushhub.wechat.client import WeChatClient
from pushhub.wechat.errors import WeChatError, WeChatUnavailable
from tenants.models import MiniProgram

SESSION_SALT = "pushhub.sdk.session"
SCHEME = "Session"
# jscode2session answers these for a code that is unknown, expired or already used: the SDK asks
# wx.login for a fresh one. Anything else is WeChat's problem (or the app's credentials'), not the code's.
INVALID_CODE_ERRCODES = frozenset({40029, 40163})
MAX_OPENID_LENGTH = MiniUser._meta.get_field("openid").max_length


def session_lifetime() -> timedelta:
    return timedelta(days=settings.SDK_SESSION_DAYS)


@dataclass(frozen=True)
class SdkSession:
    """What a valid session token says: this openid of this app. ``request.user`` on SDK calls."""

    app_id: int
    openid: str

    is_authenticated = True
    is_anonymous = False

    def __str__(self) -> str:
        return f"sdk:{self.openid}"


def issue_session(app: MiniProgram, openid: str, now: datetime | None = None) -> tuple[str, datetime]:
    """(token, expires_at) for ``openid`` of ``app``."""
    now = now or timezone.now()
    token = signing.dumps({"app": app.pk, "openid": openid}, salt=SESSION_SALT, compress=True)
    return token, now.replace(microsecond=0) + session_lifetime()


def read_session(token: str, app: MiniProgram) -> SdkSession:
    """The session ``token`` carries for ``app``; AuthenticationFailed when it is forged, expired,
    malformed or another app's."""
    try:
        data, signed_at = _verified_session(token)
    except signing.BadSignature:
        raise exceptions.AuthenticationFailed("Invalid session token.") from None
    if time.time() - signed_at > session_lifetime().total_seconds():
        raise exceptions.AuthenticationFailed("The session has expired: log in again.")
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("openid"), str)
        or not isinstance(data.get("app"), int)
    ):
        raise exceptions.AuthenticationFailed("Invalid session token.")
    if data["app"] != app.pk:
        # Same answer as a forgery: a session says nothing about other apps.
        raise exceptions.AuthenticationFailed("Invalid session token.")
    return SdkSession(app_id=app.pk, openid=data["openid"])


@functools.lru_cache(maxsize=4096)
def _verified_session(token: str) -> tuple[object, int]:
    """(what ``token`` carries, when it was signed) for a token signed by us; BadSignature otherwise. Kept
    per process for the tokens seen last (every SDK call verifies its session: the HMAC, base64, zlib and
    JSON were a tenth of an upload's CPU). A signature stays ours, so only its age is checked at each use;
    the cached data is never handed out to be changed (read_session builds a new SdkSession)."""
    data = signing.loads(token, salt=SESSION_SALT)
    return data, signing.b62_decode(token.rsplit(":", 2)[-2])


@dataclass(frozen=True)
class Login:
    user: MiniUser
    session: str
    expires_at: datetime


def log_in(app: MiniProgram, code: str) -> Login:
    """``wx.login`` code → jscode2session (the sandbox for sandbox apps) → the user, created on first
    sight → a session. WeChat's answers become the contract's errors."""
    try:
        answer = WeChatClient.for_app(app).code2session(code)
    except WeChatError as exc:
        if exc.errcode in INVALID_CODE_ERRCODES:
            raise ApiError(
                400,
                "invalid_code",
                "WeChat refused the login code (unknown, expired or already used): call wx.login again.",
                field="code",
                errcode=exc.errcode,
            ) from None
        raise wechat_failure(exc) from None
    except WeChatUnavailable as exc:
        raise wechat_failure(exc) from None
    openid, unionid = answer.get("openid"), answer.get("unionid") or ""
    if not isinstance(openid, str) or not 0 < len(openid) <= MAX_OPENID_LENGTH:
        raise ApiError(502, "wechat_unreachable", "WeChat's answer carried no usable openid.")
    if not isinstance(unionid, str) or len(unionid) > MAX_OPENID_LENGTH:
        unionid = ""
    user = touch_user(app, openid, unionid)
    session, expires_at = issue_session(app, openid)
    return Login(user=user, session=session, expires_at=expires_at)


class SdkSessionAuthentication(BaseAuthentication):
    """``Authorization: Session <token>`` for the app in the URL (the view puts it on ``request.sdk_app``
    before authentication runs)."""

    def authenticate(self, request):
        header = get_authorization_header(request)
        if not header:
            return None
        try:
            scheme, _, token = header.decode("ascii").partition(" ")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Authorization header is not ASCII.") from None
        token = token.strip()
        if scheme.lower() != SCHEME.lower() or not token:
            raise exceptions.AuthenticationFailed(f"Use 'Authorization: {SCHEME} <token>' from the login.")
        session = read_session(token, request.sdk_app)
        return session, token

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (not 403) when the session is missing or bad.
        return f'{SCHEME} realm="pushhub-sdk"'


class HasSdkSession(BasePermission):
    message = f"Send 'Authorization: {SCHEME} <token>' (POST /sdk/v1/{{appid}}/login gives one)."

    def has_permission(self, request, view) -> bool:
        if not isinstance(request.user, SdkSession):
            raise exceptions.NotAuthenticated(self.message)
        return True


class SdkSessionScheme(OpenApiAuthenticationExtension):
    target_class = "formids.sdk_auth.SdkSessionAuthentication"
    name = SCHEME

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": (
                f"`Authorization: {SCHEME} <token>`: the `session` that `POST /sdk/v1/{{appid}}/login` "
                f"returned; valid for that app and user, {settings.SDK_SESSION_DAYS} days."
            ),
        }

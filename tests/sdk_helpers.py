"""Helpers shared by the SDK endpoint tests."""

from __future__ import annotations

from rest_framework.test import APIClient

from formids.sdk_auth import issue_session
from formids.services import touch_user

OPENID = "oSdkUser00000000000000000001"


def sdk_client(app, openid: str = OPENID) -> APIClient:
    """An SDK client with a session for ``openid`` of ``app`` (as a login would give it)."""
    touch_user(app, openid)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Session {issue_session(app, openid)[0]}")
    return client


def url(app_or_appid, endpoint: str) -> str:
    appid = getattr(app_or_appid, "appid", app_or_appid)
    return f"/sdk/v1/{appid}/{endpoint}"


def error(response) -> dict:
    return response.json()["error"]

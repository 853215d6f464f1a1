"""Fixtures for the sandbox tests: an app with a user, templates and tokens, and a WeChat-ish test client."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from pushhub.wechat.sandbox import services, wechat_endpoints

from .helpers import APPID, BASE, FORMID_CONTENT, SECRET, SUBSCRIBE_CONTENT

URLCONF = __name__.rsplit(".", 1)[0] + ".urls"


@pytest.fixture(autouse=True)
def sandbox_urls(settings):
    """Route only the sandbox, mounted at /sandbox/wechat/ like pushhub/urls.py does."""
    settings.ROOT_URLCONF = URLCONF
    settings.SANDBOX_CONTROL_TOKEN = ""


class WeChat:
    """Calls the sandbox like PushHub's client would, through Django's test client; answers parsed JSON."""

    def __init__(self, client: Client):
        self.client = client

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self.client.get(BASE + path, params).json()

    def post(self, path: str, body: Any = None, access_token: str | None = None) -> dict[str, Any]:
        url = BASE + path + (f"?access_token={access_token}" if access_token is not None else "")
        return self.client.post(url, json.dumps(body or {}), content_type="application/json").json()

    def control(self, method: str, path: str, body: Any = None, **headers: str):
        """A control call; returns the raw response (tests look at the status code)."""
        url = BASE + "_control/" + path
        if method in ("GET", "DELETE") and body is None:
            return getattr(self.client, method.lower())(url, headers=headers)
        data = json.dumps(body) if body is not None else ""
        return self.client.generic(method, url, data, content_type="application/json", headers=headers)


@pytest.fixture
def wechat(client) -> WeChat:
    return WeChat(client)


@pytest.fixture
def app(db):
    return services.register_app(APPID, SECRET)


@pytest.fixture
def user(app):
    return services.create_user(APPID, unionid="oUnion0123456789abcdefghijkl")


@pytest.fixture
def other_user(app):
    return services.create_user(APPID)


@pytest.fixture
def token(app) -> str:
    return wechat_endpoints.issue_stable_token(APPID, SECRET, "client_credential")["access_token"]


@pytest.fixture
def subscribe_template(app):
    return services.add_template(APPID, kind="subscribe", title="订单发货通知", content=SUBSCRIBE_CONTENT)


@pytest.fixture
def formid_template(app):
    return services.add_template(APPID, kind="formid", title="购买成功通知", content=FORMID_CONTENT)

"""Errors go to Sentry with every credential PushHub handles scrubbed first (pushhub/sentry.py): a 500 in a
trigger request and an exception raised with secrets in its message and its frame's variables."""

from __future__ import annotations

import json

import pytest
import sentry_sdk
from django.test import Client
from sentry_sdk.transport import Transport

from pushhub.sentry import init_sentry, scrub_text
from templates_app import trigger_views

APP_SECRET = "0123456789abcdef0123456789abcdef"
API_KEY = "phk_Zx9WqK2mYtR8vLp4Nf6HjG3sDa1QeUoIcBn7"
WEBHOOK_SECRET = "whsec_c2VjcmV0LXNpZ25pbmcta2V5LWZvci10ZXN0cw=="
SESSION = "sess.Yk3Jf8Qw2Lp9Zr4Tx7Nv1Bm6Hc5Gd0Ae"
ACCESS_TOKEN = "83_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
JS_CODE = "081Xyz0w3abcDEF1ghiJKL2mno3PQRs4"


class KeptEvents(Transport):
    """Keeps what would have been sent, instead of sending it."""

    def __init__(self, options=None):
        super().__init__(options)
        self.envelopes = []

    def capture_envelope(self, envelope):
        self.envelopes.append(envelope)

    def events(self) -> list[dict]:
        return [item.payload.json for e in self.envelopes for item in e.items if item.type == "event"]


@pytest.fixture
def sentry():
    kept = KeptEvents()
    init_sentry("https://public@sentry.example.invalid/1", environment="test", transport=kept)
    yield kept
    sentry_sdk.init()  # no DSN: off again


def assert_no_secret(events: list[dict], *secrets: str) -> str:
    text = json.dumps(events, ensure_ascii=False)
    for secret in secrets:
        assert secret not in text, f"{secret[:12]}… reached Sentry"
    return text


@pytest.mark.django_db
def test_a_500_in_a_trigger_request_reaches_sentry_without_its_credentials(sentry, sandbox_app, monkeypatch):
    from templates_app.catalogue import create_template

    template = create_template(
        sandbox_app,
        kind="formid",
        template_id="TPL_SENTRY",
        title="t",
        fields=[{"key": "keyword1", "name": "k"}],
        actor="test",
    )
    token = template.get_trigger_token()

    def broken(template, body, **kwargs):
        app_secret = APP_SECRET  # noqa: F841 — a frame variable Sentry would show
        raise RuntimeError(
            f"WeChat said no: POST https://api.weixin.qq.com/cgi-bin/message/wxopen/template/send"
            f"?access_token={ACCESS_TOKEN} (after jscode2session?appid=wx1&secret={APP_SECRET}&js_code={JS_CODE})"
        )

    monkeypatch.setattr(trigger_views.endpoint, "send", broken)
    client = Client(raise_request_exception=False)
    response = client.post(
        f"/t/{token}?secret={APP_SECRET}",
        {"to": "oUser", "keyword1": "x"},
        HTTP_AUTHORIZATION=f"Bearer {API_KEY}",
        HTTP_X_WEBHOOK_SECRET=WEBHOOK_SECRET,
    )
    sentry_sdk.flush()

    assert response.status_code == 500
    events = sentry.events()
    assert len(events) == 1 and events[0]["exception"]["values"][-1]["type"] == "RuntimeError"
    text = assert_no_secret(events, token, APP_SECRET, API_KEY, WEBHOOK_SECRET, ACCESS_TOKEN, JS_CODE)
    assert "/t/[token]" in text and "access_token=[Filtered]" in text  # what happened is still readable


def test_secrets_in_an_exceptions_message_and_variables_are_scrubbed(sentry):
    def refresh(app_secret, session_token, webhook_secret, headers):
        raise ValueError(f"token refresh failed for session {session_token}: {webhook_secret}")

    try:
        refresh(APP_SECRET, f"Session {SESSION}", WEBHOOK_SECRET, {"Authorization": f"Bearer {API_KEY}"})
    except ValueError:
        sentry_sdk.capture_exception()
    sentry_sdk.flush()

    events = sentry.events()
    assert len(events) == 1
    assert_no_secret(events, APP_SECRET, SESSION, WEBHOOK_SECRET, API_KEY)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET /t/AbCdEfGh12345678_-x 500", "GET /t/[token] 500"),
        ("key phk_abc-DEF_123", "key phk_[Filtered]"),
        ("Authorization: Session a.b-c", "Authorization: Session [Filtered]"),
        (
            "?appid=wx1&secret=s3&js_code=c0de&grant_type=x",
            "?appid=wx1&secret=[Filtered]&js_code=[Filtered]&grant_type=x",
        ),
        ("nothing to hide, openid oUser1", "nothing to hide, openid oUser1"),
    ],
)
def test_scrub_text(text, expected):
    assert scrub_text(text) == expected

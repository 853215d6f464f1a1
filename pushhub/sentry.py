"""Errors to Sentry (``SENTRY_DSN``), with every credential PushHub handles scrubbed before an event leaves.

sentry-sdk's own scrubber already drops the usual names (password, secret, token, authorization, cookies,
sessions…) from request data and frame variables. ``scrub_event`` adds what is PushHub's: the values
themselves wherever they appear in text (an exception message, a log line, a URL, a breadcrumb) —
trigger URLs (``/t/{token}``), API keys (``phk_…``), webhook secrets (``whsec_…``), ``Authorization``
headers (``Bearer …``, ``Session …``), WeChat's ``access_token=``, ``secret=`` and ``js_code=`` query
parameters — and the names of our own secret fields (``app_secret``, ``secret_ciphertext``,
``encoding_aes_key``, ``events_token``, ``identity_secret``, ``session_key``…) at any depth.
"""

from __future__ import annotations

import re
from typing import Any

FILTERED = "[Filtered]"

# Field names whose values are never sent, at any depth of the event (matched on the lower-cased name).
SECRET_NAME = re.compile(
    r"secret|token|password|passwd|authorization|cookie|session|aes_?key|api_?key|signature|js_?code|"
    r"ciphertext|credential|private"
)

# Credentials inside free text.
SECRET_TEXT = (
    (re.compile(r"/t/[A-Za-z0-9_\-]{8,}"), "/t/[token]"),
    (re.compile(r"\bphk_[A-Za-z0-9_\-]+"), "phk_" + FILTERED),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]+"), "whsec_" + FILTERED),
    (re.compile(r"\b(Bearer|Session)\s+[A-Za-z0-9._~+/=\-]+"), r"\1 " + FILTERED),
    (
        re.compile(
            r"\b(access_token|secret|js_code|token|appsecret|session_key)=[^&\s\"'<>]+", re.IGNORECASE
        ),
        r"\1=" + FILTERED,
    ),
)


def scrub_text(text: str) -> str:
    for pattern, replacement in SECRET_TEXT:
        text = pattern.sub(replacement, text)
    return text


def scrub(value: Any) -> Any:
    """A copy of ``value`` (an event or any part of it) with secret-named fields and secrets in text removed."""
    if isinstance(value, dict):
        return {
            key: FILTERED
            if isinstance(key, str)
            and SECRET_NAME.search(key.lower())
            and value[key] not in (None, "", [], {})
            else scrub(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(item) for item in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value


def scrub_event(event: dict, hint: dict | None = None) -> dict:
    """sentry-sdk's ``before_send`` / ``before_send_transaction`` / ``before_breadcrumb``."""
    return scrub(event)


def init_sentry(
    dsn: str, *, environment: str = "", release: str = "", traces_sample_rate: float = 0.0, **options: Any
) -> None:
    """Start sentry-sdk with the Django and Celery integrations. ``options`` go to ``sentry_sdk.init`` (the
    tests pass a transport that keeps the events)."""
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=environment or None,
        release=release or None,
        integrations=[DjangoIntegration(), CeleryIntegration()],
        traces_sample_rate=traces_sample_rate,  # 0: errors only (SENTRY_TRACES_SAMPLE_RATE)
        before_send=scrub_event,
        before_send_transaction=scrub_event,
        before_breadcrumb=scrub_event,
        **options,
    )

"""Typed WeChat errors. Messages never carry secrets or tokens."""

from __future__ import annotations

# Token-bad answers: refresh once (only if the cache still holds the failing token), retry once.
TOKEN_ERRCODES = frozenset({40001, 40014, 42001})
# Answers to a token fetch that mean "these credentials are wrong / not usable", not "try later".
CREDENTIAL_ERRCODES = frozenset({40002, 40013, 40125, 40164, 40243, 41002, 41004})
# Worth retrying later with backoff: busy, rate limits.
TRANSIENT_ERRCODES = frozenset({-1, 45009, 45011})
# The legacy formId template API is gone on real WeChat (2020-01-10).
API_RETIRED_ERRCODE = 45103

ERRCODE_TEXT = {
    -1: "WeChat is busy, try again later",
    40001: "access token invalid or not the latest",
    40003: "invalid openid",
    40013: "invalid AppID",
    40014: "invalid access token",
    40029: "invalid login code",
    40037: "invalid template id",
    40125: "invalid AppSecret",
    40163: "login code already used",
    40164: "server IP not in the mini-program's whitelist",
    40243: "AppSecret frozen",
    41002: "AppID missing",
    41004: "AppSecret missing",
    41028: "formId invalid or expired",
    41029: "formId already used",
    41030: "invalid page",
    42001: "access token expired",
    43101: "user has not accepted this subscription (no credit)",
    45009: "daily API limit reached",
    45011: "API minute limit reached",
    45103: "API retired by WeChat (template messages)",
    47003: "template data does not follow WeChat's rules",
}


class WeChatError(Exception):
    """WeChat answered with a non-zero errcode."""

    def __init__(self, errcode: int, errmsg: str = ""):
        self.errcode = int(errcode)
        self.errmsg = errmsg
        super().__init__(f"WeChat errcode {self.errcode}: {errmsg}")

    @property
    def is_token_error(self) -> bool:
        return self.errcode in TOKEN_ERRCODES

    @property
    def is_transient(self) -> bool:
        return self.errcode in TRANSIENT_ERRCODES

    @property
    def is_credential_error(self) -> bool:
        return self.errcode in CREDENTIAL_ERRCODES


class WeChatUnavailable(Exception):
    """No usable answer: connection failure, timeout, HTTP error status or a body that is not JSON.

    ``maybe_delivered`` is False only when the request provably never reached WeChat (connect error), so
    a non-idempotent send (subscribe message) may be retried only then.
    """

    def __init__(self, reason: str, *, maybe_delivered: bool):
        self.reason = reason
        self.maybe_delivered = maybe_delivered
        super().__init__(reason)


class WeChatTimeout(WeChatUnavailable):
    """The request was sent but no answer came in time: WeChat may have acted on it."""

    def __init__(self, reason: str = "read timeout"):
        super().__init__(reason, maybe_delivered=True)

"""The sandbox's two ways of saying no, one per face.

- :class:`ErrcodeReply` (with ``ERRMSG`` and ``argument_invalid``): WeChat's own refusal, raised behind the
  WeChat-compatible endpoints (``issue_token``, ``code2session``, ``handle_call`` + ``send_*`` …); the views
  answer HTTP 200 ``{"errcode", "errmsg"}``.
- :class:`SandboxError`: a refusal of a control operation (``register_app``, ``issue_formids`` …); the control
  views answer ``{"error": {code, message, field?}}`` with a 4xx status.

Its own module so that every part of the sandbox can import it without importing another: it imports none.
"""

from __future__ import annotations

from typing import Any

ERRMSG = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40013: "invalid appid",
    40014: "invalid access_token",
    40029: "invalid code",
    40037: "invalid template_id",
    40125: "invalid appsecret",
    40163: "code been used",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    41008: "missing code",
    41028: "invalid form id",
    41029: "form id used count reach limit",
    41030: "invalid page",
    42001: "access_token expired",
    43001: "require GET method",
    43002: "require POST method",
    43101: "user refuse to accept the msg",
    45009: "reach max api daily quota limit",
    45011: "api minute-quota reach limit mustslower retry next minute",
    45103: "This API has been unsupported",
    47001: "data format error",
}


class ErrcodeReply(Exception):
    """The sandbox refuses the way WeChat does: the views answer HTTP 200 ``{"errcode", "errmsg"}``.

    PushHub's client raises :class:`pushhub.wechat.errors.WeChatError` when it hears such an answer; this
    is the other side of the wire, hence its own name."""

    def __init__(self, errcode: int, errmsg: str | None = None):
        self.errcode = errcode
        self.errmsg = errmsg or ERRMSG.get(errcode, "error")
        super().__init__(f"{self.errcode} {self.errmsg}")

    def body(self) -> dict[str, Any]:
        return {"errcode": self.errcode, "errmsg": self.errmsg}


def argument_invalid(what: str) -> ErrcodeReply:
    """47003 naming the offending argument, e.g. ``argument invalid! data.thing3.value invalid``."""
    return ErrcodeReply(47003, f"argument invalid! {what} invalid")


class SandboxError(Exception):
    """A refusal of a control operation: the control views answer ``{"error": {code, message, field?}}``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        super().__init__(message)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            error["field"] = self.field
        return {"error": error}

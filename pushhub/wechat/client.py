"""The only module that talks HTTP to WeChat (or to the sandbox, which answers the same way).

One pooled keep-alive ``requests.Session`` per process, explicit timeouts, typed errors, and access tokens
from ``pushhub.wechat.tokens`` with one refresh-and-retry on a token error.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter

from pushhub.wechat.errors import WeChatError, WeChatTimeout, WeChatUnavailable

_session_lock = threading.Lock()
_session: requests.Session | None = None
_session_pid: int | None = None


def http_session() -> requests.Session:
    """The process's pooled session; recreated after a fork so children never share sockets."""
    global _session, _session_pid
    pid = os.getpid()
    if _session is None or _session_pid != pid:
        with _session_lock:
            if _session is None or _session_pid != pid:
                session = requests.Session()
                # No proxy/netrc lookups from the environment on every request: WeChat is called directly.
                session.trust_env = False
                adapter = HTTPAdapter(
                    pool_connections=16, pool_maxsize=settings.WECHAT_POOL_SIZE, max_retries=0
                )
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                session.headers["User-Agent"] = "PushHub/1.0"
                _session, _session_pid = session, pid
    return _session


def close_http_session() -> None:
    """Close the pooled keep-alive connections (worker shutdown; tests whose server goes away)."""
    global _session
    with _session_lock:
        if _session is not None:
            _session.close()
            _session = None


@dataclass(frozen=True)
class TokenGrant:
    access_token: str
    expires_in: int


def api_base_for(sandbox: bool) -> str:
    return settings.SANDBOX_API_BASE if sandbox else settings.WECHAT_API_BASE


class WeChatClient:
    """WeChat server API for one mini-program (AppID + AppSecret) at one API base URL."""

    def __init__(self, appid: str, secret: str, base_url: str | None = None):
        self.appid = appid
        self._secret = secret
        self.base_url = (base_url or settings.WECHAT_API_BASE).rstrip("/")

    def __repr__(self) -> str:  # never show the secret
        return f"WeChatClient(appid={self.appid!r}, base_url={self.base_url!r})"

    @classmethod
    def for_app(cls, app) -> WeChatClient:
        """Client for a tenants.MiniProgram: sandbox apps talk to the sandbox."""
        return cls(app.appid, app.get_secret(), api_base_for(app.sandbox))

    # --- transport -------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        timeout: tuple[float, float] | None = None,
    ) -> dict[str, Any]:
        """One HTTP call; returns the JSON body or raises WeChatError / WeChatUnavailable."""
        url = f"{self.base_url}/{path.lstrip('/')}"
        data = None
        headers = {}
        if body is not None:
            # Raw UTF-8 rather than \\u escapes, as WeChat's own samples and wechatpy send it.
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = "application/json; charset=utf-8"
        timeout = timeout or (settings.WECHAT_CONNECT_TIMEOUT, settings.WECHAT_READ_TIMEOUT)
        try:
            response = http_session().request(
                method, url, params=params, data=data, headers=headers, timeout=timeout
            )
        except requests.exceptions.ConnectTimeout:
            raise WeChatUnavailable("connect timeout", maybe_delivered=False) from None
        except requests.exceptions.ReadTimeout:
            raise WeChatTimeout() from None
        except requests.exceptions.ConnectionError as exc:
            # A refused/unresolvable connection never reached WeChat; a reset mid-request may have.
            reached = _connection_was_established(exc)
            raise WeChatUnavailable(
                f"connection error: {type(exc).__name__}", maybe_delivered=reached
            ) from None
        except requests.exceptions.RequestException as exc:
            raise WeChatUnavailable(f"request failed: {type(exc).__name__}", maybe_delivered=True) from None
        if response.status_code >= 400:
            raise WeChatUnavailable(
                f"HTTP {response.status_code}", maybe_delivered=response.status_code >= 500
            )
        try:
            payload = response.json()
        except ValueError:
            raise WeChatUnavailable("answer is not JSON", maybe_delivered=True) from None
        if not isinstance(payload, dict):
            raise WeChatUnavailable("answer is not a JSON object", maybe_delivered=True)
        errcode = payload.get("errcode", 0)
        try:
            errcode = int(errcode or 0)
        except (TypeError, ValueError):
            raise WeChatUnavailable("errcode is not a number", maybe_delivered=True) from None
        if errcode != 0:
            raise WeChatError(errcode, str(payload.get("errmsg", "")))
        return payload

    def call_with_token(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A business call with ?access_token=; on 40001/40014/42001 refresh once and retry once."""
        from pushhub.wechat import tokens  # tokens imports this module

        token = tokens.get_access_token(self)
        try:
            return self.request(method, path, params={**(params or {}), "access_token": token}, body=body)
        except WeChatError as exc:
            if not exc.is_token_error:
                raise
        token = tokens.refresh_after_failure(self, failing_token=token)
        return self.request(method, path, params={**(params or {}), "access_token": token}, body=body)

    # --- access token ----------------------------------------------------------------------------
    def fetch_stable_token(self, force_refresh: bool = False) -> TokenGrant:
        """POST cgi-bin/stable_token. Use tokens.get_access_token() instead: it caches and locks."""
        payload = self.request(
            "POST",
            "cgi-bin/stable_token",
            body={
                "grant_type": "client_credential",
                "appid": self.appid,
                "secret": self._secret,
                "force_refresh": force_refresh,
            },
        )
        try:
            return TokenGrant(str(payload["access_token"]), int(payload["expires_in"]))
        except (KeyError, TypeError, ValueError):
            raise WeChatUnavailable(
                "token answer without access_token/expires_in", maybe_delivered=True
            ) from None

    # --- business calls --------------------------------------------------------------------------
    def code2session(self, js_code: str) -> dict[str, Any]:
        """sns/jscode2session: a wx.login code → {openid, session_key, unionid?}. No access token."""
        return self.request(
            "GET",
            "sns/jscode2session",
            params={
                "appid": self.appid,
                "secret": self._secret,
                "js_code": js_code,
                "grant_type": "authorization_code",
            },
        )

    def send_template_message(
        self,
        *,
        touser: str,
        template_id: str,
        form_id: str,
        data: dict[str, Any],
        page: str | None = None,
        emphasis_keyword: str | None = None,
    ) -> dict[str, Any]:
        """Legacy formId template message (retired on real WeChat: 45103)."""
        body: dict[str, Any] = {
            "touser": touser,
            "template_id": template_id,
            "form_id": form_id,
            "data": data,
        }
        if page:
            body["page"] = page
        if emphasis_keyword:
            body["emphasis_keyword"] = emphasis_keyword
        return self.call_with_token("POST", "cgi-bin/message/wxopen/template/send", body=body)

    def send_subscribe_message(
        self,
        *,
        touser: str,
        template_id: str,
        data: dict[str, Any],
        page: str | None = None,
        miniprogram_state: str | None = None,
        lang: str | None = None,
    ) -> dict[str, Any]:
        """Subscribe message; success carries ``msgid`` (the final outcome arrives later as an event)."""
        body: dict[str, Any] = {"touser": touser, "template_id": template_id, "data": data}
        if page:
            body["page"] = page
        if miniprogram_state:
            body["miniprogram_state"] = miniprogram_state
        if lang:
            body["lang"] = lang
        return self.call_with_token("POST", "cgi-bin/message/subscribe/send", body=body)

    def get_subscribe_templates(self) -> list[dict[str, Any]]:
        """wxaapi/newtmpl/gettemplate: the app's private subscribe templates."""
        return list(self.call_with_token("GET", "wxaapi/newtmpl/gettemplate").get("data") or [])

    def list_formid_templates(self) -> list[dict[str, Any]]:
        """cgi-bin/wxopen/template/list, paged 20 at a time (WeChat's maximum page size)."""
        templates: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = (
                self.call_with_token(
                    "POST", "cgi-bin/wxopen/template/list", body={"offset": offset, "count": 20}
                ).get("list")
                or []
            )
            templates.extend(page)
            if len(page) < 20:
                return templates
            offset += 20


def _connection_was_established(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the error happened after the connection was up (reset, broken pipe): maybe delivered."""
    text = repr(exc)
    never_connected = (
        "NewConnectionError",
        "NameResolutionError",
        "ConnectionRefusedError",
        "Failed to establish",
    )
    return not any(marker in text for marker in never_connected)

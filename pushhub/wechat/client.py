"""The only module that talks HTTP to WeChat (or to the sandbox, which answers the same way).

One pooled keep-alive urllib3 ``PoolManager`` per process, explicit timeouts, typed errors, and access tokens
from ``pushhub.wechat.tokens`` with one refresh-and-retry on a token error.

urllib3 directly rather than ``requests`` (which sits on it): a broadcast spends most of its CPU building and
sending small JSON POSTs, and requests' per-call work (merging settings, preparing the request, header
dicts) was a quarter of a worker's time. We need none of it: no cookies, redirects, auth or proxies.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import urllib3
from django.conf import settings
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from pushhub import metrics
from pushhub.wechat.errors import WeChatError, WeChatTimeout, WeChatUnavailable

_pool_lock = threading.Lock()
_pool: urllib3.PoolManager | None = None
_pool_pid: int | None = None
_HEADERS = {"User-Agent": "PushHub/1.0"}
_JSON_HEADERS = {**_HEADERS, "Content-Type": "application/json; charset=utf-8"}


def http_pool() -> urllib3.PoolManager:
    """The process's connection pool; recreated after a fork so children never share sockets."""
    global _pool, _pool_pid
    pid = os.getpid()
    if _pool is None or _pool_pid != pid:
        with _pool_lock:
            if _pool is None or _pool_pid != pid:
                # retries=False: a send is never repeated behind our back (a repeat may be a double send);
                # the delivery service decides what to retry. block=False: past maxsize, extra connections
                # are opened and closed rather than making a sender wait.
                _pool = urllib3.PoolManager(num_pools=16, maxsize=settings.WECHAT_POOL_SIZE, retries=False)
                _pool_pid = pid
    return _pool


def close_http_session() -> None:
    """Close the pooled keep-alive connections (worker shutdown; tests whose server goes away)."""
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.clear()
            _pool = None


@dataclass(frozen=True)
class TokenGrant:
    access_token: str
    expires_in: int


def api_base_for(sandbox: bool) -> str:
    return settings.SANDBOX_API_BASE if sandbox else settings.WECHAT_API_BASE


def query_string(params: dict[str, Any]) -> str:
    """``urlencode(params)``, remembered for the last few distinct ones: every send of a broadcast has the same
    ``?access_token=``, and quoting it again per send was 3–4 % of a broadcast worker's CPU."""
    try:
        return _query_string(tuple(params.items()))
    except TypeError:  # a value that can't be a cache key (a list): quoted each time
        return urlencode(params)


@functools.lru_cache(maxsize=256)
def _query_string(items: tuple[tuple[str, Any], ...]) -> str:
    return urlencode(items)


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
        url, data, headers = self.prepare(path, params, body)
        connect, read = timeout or (settings.WECHAT_CONNECT_TIMEOUT, settings.WECHAT_READ_TIMEOUT)
        started = time.perf_counter()
        try:
            response = http_pool().request(
                method, url, body=data, headers=headers, timeout=urllib3.Timeout(connect=connect, read=read)
            )
        except NewConnectionError as exc:  # refused or unresolvable: never reached WeChat
            raise WeChatUnavailable(
                f"connection error: {type(exc).__name__}", maybe_delivered=False
            ) from None
        except ConnectTimeoutError:
            raise WeChatUnavailable("connect timeout", maybe_delivered=False) from None
        except ReadTimeoutError:
            raise WeChatTimeout() from None
        except ProtocolError as exc:  # reset or closed after the request went out: it may have arrived
            raise WeChatUnavailable(f"connection error: {type(exc).__name__}", maybe_delivered=True) from None
        except (HTTPError, OSError) as exc:
            raise WeChatUnavailable(f"request failed: {type(exc).__name__}", maybe_delivered=True) from None
        finally:
            metrics.wechat_call(path, time.perf_counter() - started)
        return self.answer(response.status, response.data)

    def prepare(
        self, path: str, params: dict[str, Any] | None, body: dict[str, Any] | None
    ) -> tuple[str, bytes | None, dict[str, str]]:
        """(url, body bytes, headers) of a call; shared with pushhub.wechat.sending."""
        url = f"{self.base_url}/{path.lstrip('/')}"
        if params:
            url = f"{url}?{query_string(params)}"
        if body is None:
            return url, None, _HEADERS
        # Raw UTF-8 rather than \\u escapes, as WeChat's own samples and wechatpy send it.
        return url, json.dumps(body, ensure_ascii=False).encode("utf-8"), _JSON_HEADERS

    @staticmethod
    def answer(status: int, raw: bytes) -> dict[str, Any]:
        """The JSON body of an HTTP answer, or WeChatError / WeChatUnavailable."""
        if status >= 400:
            raise WeChatUnavailable(f"HTTP {status}", maybe_delivered=status >= 500)
        try:
            payload = json.loads(raw)
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

    def send_template_message(self, **message: Any) -> dict[str, Any]:
        """Legacy formId template message (retired on real WeChat: 45103)."""
        path, body = template_message(**message)
        return self.call_with_token("POST", path, body=body)

    def send_subscribe_message(self, **message: Any) -> dict[str, Any]:
        """Subscribe message; success carries ``msgid`` (the final outcome arrives later as an event)."""
        path, body = subscribe_message(**message)
        return self.call_with_token("POST", path, body=body)

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


# --- messages (the send endpoints' path and body), for the blocking client and pushhub.wechat.sending ---
def template_message(
    *,
    touser: str,
    template_id: str,
    form_id: str,
    data: dict[str, Any],
    page: str | None = None,
    emphasis_keyword: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """A legacy formId template message: (path, body)."""
    body: dict[str, Any] = {"touser": touser, "template_id": template_id, "form_id": form_id, "data": data}
    if page:
        body["page"] = page
    if emphasis_keyword:
        body["emphasis_keyword"] = emphasis_keyword
    return "cgi-bin/message/wxopen/template/send", body


def subscribe_message(
    *,
    touser: str,
    template_id: str,
    data: dict[str, Any],
    page: str | None = None,
    miniprogram_state: str | None = None,
    lang: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """A subscribe message: (path, body)."""
    body: dict[str, Any] = {"touser": touser, "template_id": template_id, "data": data}
    if page:
        body["page"] = page
    if miniprogram_state:
        body["miniprogram_state"] = miniprogram_state
    if lang:
        body["lang"] = lang
    return "cgi-bin/message/subscribe/send", body

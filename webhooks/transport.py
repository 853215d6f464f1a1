"""The one seam through which PushHub calls tenants' webhook URLs (nothing else here imports an HTTP library).

One POST, to the address ``guard.check`` approved (the Host header and TLS name stay the URL's host, so
certificates are verified against it), with a 10 s budget, no redirects followed, no retries (``dispatch``
owns the schedule), and at most 1 KiB of the answer read. Connections are kept alive per (address, host) in
a small pool per process: a receiver answering quickly is not reconnected for every event.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import urllib3
from django.conf import settings
from urllib3 import exceptions as u3

from webhooks.guard import Target

BODY_KEPT = 1024  # bytes of the answer kept per attempt
POOLS_KEPT = 64
_pools: OrderedDict[tuple, urllib3.HTTPConnectionPool] = OrderedDict()
_pools_lock = threading.Lock()


@dataclass(frozen=True)
class Answer:
    status_code: int | None  # None: no HTTP answer (see error)
    body: str
    error: str
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _pool(target: Target) -> urllib3.HTTPConnectionPool:
    key = (target.scheme, target.address, target.port, target.host)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is not None:
            _pools.move_to_end(key)
            return pool
        options = {"maxsize": 4, "block": False, "retries": False}
        if target.scheme == "https":
            pool = urllib3.HTTPSConnectionPool(
                target.address,
                target.port,
                server_hostname=target.host,
                assert_hostname=target.host,
                cert_reqs="CERT_REQUIRED",
                **options,
            )
        else:
            pool = urllib3.HTTPConnectionPool(target.address, target.port, **options)
        _pools[key] = pool
        while len(_pools) > POOLS_KEPT:
            _pools.popitem(last=False)[1].close()
        return pool


def _host_header(target: Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    default = 443 if target.scheme == "https" else 80
    return host if target.port == default else f"{host}:{target.port}"


def _describe(exc: Exception) -> str:
    # NewConnectionError first: urllib3 makes it a kind of ConnectTimeoutError.
    if isinstance(exc, u3.NewConnectionError):
        return f"connection failed: {exc}"[:255]
    if isinstance(exc, u3.ConnectTimeoutError | u3.ReadTimeoutError | TimeoutError):
        return "timeout: no answer within the time limit"
    if isinstance(exc, u3.SSLError):
        return f"tls: {exc}"[:255]
    return f"{type(exc).__name__}: {exc}"[:255]


def post(target: Target, body: bytes, headers: dict[str, str]) -> Answer:
    """POST ``body`` to the target; never raises for what the network or the receiver does."""
    seconds = settings.WEBHOOK_TIMEOUT
    timeout = urllib3.Timeout(connect=min(5.0, seconds), read=seconds, total=seconds)
    started = time.monotonic()
    all_headers = {
        "Host": _host_header(target),
        "Content-Type": "application/json",
        "User-Agent": "PushHub-Webhooks/1",
        **headers,
    }
    try:
        response = _pool(target).urlopen(
            "POST",
            target.path,
            body=body,
            headers=all_headers,
            redirect=False,
            retries=False,
            timeout=timeout,
            preload_content=False,
            assert_same_host=False,
        )
    except Exception as exc:  # urllib3's errors, and OSError underneath: all mean "no answer"
        return Answer(None, "", _describe(exc), _elapsed(started))
    try:
        raw = response.read(BODY_KEPT)
        error = ""
        if 300 <= response.status < 400:
            error = f"redirect not followed (Location: {response.headers.get('Location', '')})"[:255]
    except Exception as exc:  # the answer's body broke off or was too slow: the status still counts
        raw, error = b"", _describe(exc)
    finally:
        if response.length_remaining == 0:
            response.release_conn()
        else:
            response.close()  # an unread remainder: drop the connection rather than read it
    return Answer(response.status, raw[:BODY_KEPT].decode("utf-8", "replace"), error, _elapsed(started))


def _elapsed(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def close_pools() -> None:
    with _pools_lock:
        while _pools:
            _pools.popitem()[1].close()

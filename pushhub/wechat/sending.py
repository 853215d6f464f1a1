"""Sends from a broadcast, on one asyncio event loop per process, instead of a thread per send.

The delivery pipeline keeps SEND_CONCURRENCY sends of a chunk in flight. With blocking HTTP that took a
thread per send, and the threads' Python (urllib3 and http.client parsing, GIL hand-offs) was most of a
broadcast worker's CPU: 0.43 ms per request against 0.15–0.2 ms on aiohttp's C parser and one loop, measured
on the same fake WeChat; the loop's keep-alive pool (pushhub.wechat.http_pool) then took a third of that
again off aiohttp's. Everything else (token fetches, template sync, jscode2session) stays on the blocking
client in pushhub.wechat.client; both share its request building and answer parsing, so an answer means the
same on either path.

Errors are mapped as by the blocking client: refused or unresolvable connections and connect timeouts were
provably not delivered; a read timeout is ambiguous (WeChatTimeout); a connection lost after the request
went out may have delivered it.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any

from django.conf import settings
from django.db import connections

from pushhub import metrics
from pushhub.wechat import tokens
from pushhub.wechat.client import WeChatClient
from pushhub.wechat.errors import WeChatError, WeChatTimeout, WeChatUnavailable
from pushhub.wechat.http_pool import ConnectFailed, ConnectionLost, ConnectionPool, ReadTimedOut

_lock = threading.Lock()
_runner: _Loop | None = None


class _Loop:
    """An event loop in a daemon thread, with one keep-alive connection pool made on it."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.pool: ConnectionPool | None = None
        threading.Thread(target=self.loop.run_forever, daemon=True, name="pushhub-sending").start()
        asyncio.run_coroutine_threadsafe(self._open(), self.loop).result()

    async def _open(self) -> None:
        self.pool = ConnectionPool(settings.WECHAT_POOL_SIZE)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(timeout=15)
        self.loop.call_soon_threadsafe(self.loop.stop)

    async def _close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
        await self.loop.shutdown_default_executor()  # DNS look-ups and our token refreshes


def _the_loop() -> _Loop:
    global _runner
    pid = os.getpid()
    if _runner is None or _runner.pid != pid:  # made again in a forked child (prefork workers)
        with _lock:
            if _runner is None or _runner.pid != pid:
                _runner = _Loop()
    return _runner


def submit(coroutine: Coroutine[Any, Any, Any]) -> Future:
    """Run ``coroutine`` on the process's sending loop; a concurrent.futures.Future of its result."""
    return asyncio.run_coroutine_threadsafe(coroutine, _the_loop().loop)


def close() -> None:
    """Close the keep-alive connections and stop the loop (tests whose server goes away)."""
    global _runner
    with _lock:
        if _runner is not None and _runner.pid == os.getpid():
            _runner.close()
        _runner = None


async def call_with_token(
    client: WeChatClient, path: str, body: dict[str, Any], token: str | None = None
) -> dict[str, Any]:
    """POST ``body`` with ?access_token=; on 40001/40014/42001 refresh once and retry once.

    ``token``: the app's current token, read by the caller in its own thread. Reading and refreshing it
    touch the cache (the database cache in development), which Django forbids on an event loop's thread:
    without one, and for a refresh, it runs in a thread of the loop's executor."""
    loop = asyncio.get_running_loop()
    if token is None:
        token = await loop.run_in_executor(None, _in_thread, tokens.get_access_token, client)
    try:
        return await post(client, path, {"access_token": token}, body)
    except WeChatError as exc:
        if not exc.is_token_error:
            raise
    token = await loop.run_in_executor(None, _in_thread, tokens.refresh_after_failure, client, token)
    return await post(client, path, {"access_token": token}, body)


def _in_thread(fn, *args):
    """Run ``fn`` in an executor thread and close the database connections it may have opened there."""
    try:
        return fn(*args)
    finally:
        connections.close_all()


async def post(
    client: WeChatClient, path: str, params: dict[str, Any], body: dict[str, Any]
) -> dict[str, Any]:
    url, data, headers = client.prepare(path, params, body)
    pool = _the_loop().pool
    started = time.perf_counter()
    try:
        status, raw = await pool.post(
            url,
            data or b"",
            headers,
            connect_timeout=settings.WECHAT_CONNECT_TIMEOUT,
            read_timeout=settings.WECHAT_READ_TIMEOUT,
        )
    except ConnectFailed as exc:  # refused, unresolvable or timed out connecting: never reached WeChat
        raise WeChatUnavailable(str(exc), maybe_delivered=False) from None
    except ReadTimedOut:
        raise WeChatTimeout() from None
    except (ConnectionLost, OSError) as exc:  # lost after the request went out: it may have arrived
        raise WeChatUnavailable(f"connection error: {exc}", maybe_delivered=True) from None
    finally:
        metrics.wechat_call(path, time.perf_counter() - started)
    return client.answer(status, raw)

"""The broadcast's HTTP client: POSTs over a pool of keep-alive connections, on the process's sending loop
(pushhub.wechat.sending).

aiohttp's ClientSession took 130–185 µs of CPU a request against a local server (its request and response
objects, header multidicts, cookie jar, tracing, timers), about a third of a broadcast worker's CPU per
delivery; this takes 70–85 (``python -m bench.http_client``, same loop, same server). A broadcast makes one kind of request, over and over:
a small JSON POST to one host, answered with a small JSON body. So this does only that, and parses with
httptools (llhttp, Node.js's parser: Content-Length, chunked and close-delimited bodies, keep-alive rules).
What it does not do, because WeChat's API needs none of it: redirects, proxies, cookies, compression (no
Accept-Encoding is sent), HTTP/2.

Errors say whether the request can have reached the server, which is what a send's outcome hangs on:
``ConnectFailed`` (refused, unresolvable, connect timeout, TLS handshake failure: never sent),
``ReadTimedOut`` (sent, no complete answer in time: ambiguous), ``ConnectionLost`` (sent, then the connection
broke or the answer was not HTTP: ambiguous). A connection is reused only after a complete answer that
allows it; one found closed, or sent anything while idle, is dropped before use.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from urllib.parse import urlsplit

import httptools


class HttpError(Exception):
    """A request without a usable answer."""


class ConnectFailed(HttpError):
    """No connection: the request was never sent."""


class ReadTimedOut(HttpError):
    """Sent, and no complete answer within the read timeout."""


class ConnectionLost(HttpError):
    """Sent, and the connection broke (or the answer was not HTTP) before the answer was complete."""


_ssl_context: ssl.SSLContext | None = None


def ssl_context() -> ssl.SSLContext:
    """The system's CAs, hostname checked (made once: loading the CAs is slow)."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = ssl.create_default_context()
    return _ssl_context


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; at most one request on it at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._answer: asyncio.Future | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._body: list[bytes] = []
        self._headers_done = False
        self._framed = False  # Content-Length or chunked: the end of the body is known without a close

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._parser is None:  # nothing asked: an idle connection that talks is not reused
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionLost(f"answer is not HTTP: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._answer is not None and not self._answer.done():
            if self._headers_done and not self._framed:  # a body that ends with the connection
                self._finish(keep_alive=False)
            else:
                self._fail(ConnectionLost("connection lost before the answer was complete"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length" or (name == b"transfer-encoding" and b"chunked" in value.lower()):
            self._framed = True

    def on_headers_complete(self) -> None:
        self._headers_done = True
        status = self._parser.get_status_code()
        if status in (204, 304) or 100 <= status < 200:
            self._framed = True  # no body

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._finish(keep_alive=self._parser.should_keep_alive())

    # requests
    async def request(self, head_and_body: bytes, read_timeout: float) -> tuple[int, bytes, bool]:
        """(status, body, whether the connection may be reused)."""
        if not self.usable():  # closed while it was being opened: nothing was sent
            raise ConnectFailed("connection closed before the request was sent")
        loop = asyncio.get_running_loop()
        self._answer = answer = loop.create_future()
        self._parser = httptools.HttpResponseParser(self)
        self._body, self._headers_done, self._framed = [], False, False
        self.transport.write(head_and_body)
        timer = loop.call_later(read_timeout, self._time_out)
        try:
            return await answer
        finally:
            timer.cancel()
            self._answer = self._parser = None

    def _time_out(self) -> None:
        self._fail(ReadTimedOut())
        self.close()  # a late answer must not be read as the next request's

    def _finish(self, keep_alive: bool) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result((self._parser.get_status_code(), b"".join(self._body), keep_alive))

    def _fail(self, error: HttpError) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)

    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class ConnectionPool:
    """At most ``limit`` requests in flight, each on a connection of its own; connections are kept open
    between requests (the most recently used first) and at most ``limit`` are kept."""

    def __init__(self, limit: int) -> None:
        self._limit = max(int(limit), 1)
        self._slots = asyncio.Semaphore(self._limit)
        self._idle: dict[tuple[str, str, int], collections.deque[_Connection]] = {}
        self._targets: dict[str, tuple[tuple[str, str, int], str, str]] = {}  # base URL → parsed
        self._closed = False

    async def post(
        self, url: str, body: bytes, headers: dict[str, str], *, connect_timeout: float, read_timeout: float
    ) -> tuple[int, bytes]:
        """POST ``body`` to ``url``; (status, answer body). Raises ConnectFailed, ReadTimedOut or
        ConnectionLost."""
        key, host_header, target = self._split(url)
        head = [f"POST {target} HTTP/1.1\r\nHost: {host_header}\r\n"]
        for name, value in headers.items():
            head.append(f"{name}: {value}\r\n")
        head.append(f"Content-Length: {len(body)}\r\n\r\n")
        request = "".join(head).encode("latin-1") + body
        async with self._slots:
            connection = self._take_idle(key)
            if connection is None:
                connection = await self._connect(key, connect_timeout)
            try:
                status, answer, keep_alive = await connection.request(request, read_timeout)
            except BaseException:
                connection.close()
                raise
            if keep_alive and connection.usable() and not self._closed:
                self._idle.setdefault(key, collections.deque()).append(connection)
                self._trim(key)
            else:
                connection.close()
            return status, answer

    def _split(self, url: str) -> tuple[tuple[str, str, int], str, str]:
        """((scheme, host, port), Host header, request target) of ``url``; the part before the path is
        parsed once per base URL."""
        scheme_end = url.find("://")
        path_start = url.find("/", scheme_end + 3) if scheme_end >= 0 else -1
        base = url if path_start < 0 else url[:path_start]
        target = "/" if path_start < 0 else url[path_start:]
        if any(ch in target for ch in " \r\n"):
            raise ValueError("a request target with a space or a line break")
        parsed = self._targets.get(base)
        if parsed is None:
            parts = urlsplit(base)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an http(s) URL: {base!r}")
            default = 443 if parts.scheme == "https" else 80
            port = parts.port or default
            host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
            host_header = host if port == default else f"{host}:{port}"
            parsed = self._targets[base] = ((parts.scheme, parts.hostname, port), host_header, "")
        key, host_header, _ = parsed
        return key, host_header, target

    def _take_idle(self, key) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.usable():
                return connection
        return None

    def _trim(self, key) -> None:
        idle = self._idle[key]
        while sum(len(connections) for connections in self._idle.values()) > self._limit and idle:
            idle.popleft().close()  # the least recently used

    async def _connect(self, key, timeout: float) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        tls = ssl_context() if scheme == "https" else None
        try:
            _transport, connection = await asyncio.wait_for(
                loop.create_connection(
                    _Connection, host, port, ssl=tls, server_hostname=host if tls else None
                ),
                timeout,
            )
        except TimeoutError:
            raise ConnectFailed("connect timeout") from None
        except (OSError, ssl.SSLError) as exc:  # refused, unresolvable, unreachable, TLS handshake refused
            raise ConnectFailed(f"connection error: {type(exc).__name__}") from None
        return connection

    async def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        await asyncio.sleep(0)  # let the transports close

"""pushhub.wechat.http_pool, the broadcast's HTTP client, against real sockets: servers that answer the ways
an HTTP server may (Content-Length, chunked, close-delimited, TLS) and fail the ways a network does (refused,
closed while idle, cut mid-answer, silent, not HTTP). What a send's outcome hangs on is asserted: whether the
request can have been sent (ConnectFailed: no; ReadTimedOut and ConnectionLost: maybe), and that a
connection is reused only when that is safe."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import ipaddress
import ssl

import pytest

from pushhub.wechat.http_pool import ConnectFailed, ConnectionLost, ConnectionPool, ReadTimedOut

JSON = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "PushHub/1.0"}


async def read_request(reader) -> tuple[str, dict[str, str], bytes] | None:
    head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
    if not head:
        return None
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return lines[0], headers, body


class Server:
    """A TCP server on 127.0.0.1 whose every connection runs ``answer(reader, writer, n)`` (n: the
    connection's number), counting connections and requests."""

    def __init__(self, answer, tls: ssl.SSLContext | None = None):
        self.answer, self.tls = answer, tls
        self.connections = 0
        self.requests: list[tuple[str, dict, bytes]] = []

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    async def _serve(self, reader, writer):
        self.connections += 1
        try:
            await self.answer(self, reader, writer, self.connections)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def next_request(self, reader):
        request = await read_request(reader)
        if request is not None:
            self.requests.append(request)
        return request


def ok(body: bytes = b'{"errcode":0,"errmsg":"ok"}', extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def keep_alive(server, reader, writer, n):
    while await server.next_request(reader) is not None:
        writer.write(ok(b'{"errcode":0,"connection":%d}' % n))
        await writer.drain()


def run(coroutine):
    """Run on a loop of its own, in a thread of its own: earlier tests in the session (the browser test's
    playwright) may leave an event loop marked running in the main thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, coroutine).result(timeout=60)


def post(pool, port, body=b'{"touser":"o1"}', path="/cgi-bin/message/subscribe/send?access_token=T", **kw):
    kw.setdefault("connect_timeout", 2)
    kw.setdefault("read_timeout", 2)
    return pool.post(f"http://127.0.0.1:{port}{path}", body, JSON, **kw)


def test_a_post_is_sent_as_http_and_its_connection_is_kept_for_the_next():
    async def scenario():
        async with Server(keep_alive) as server:
            pool = ConnectionPool(4)
            answers = [await post(pool, server.port, body=f'{{"n":{n}}}'.encode()) for n in range(3)]
            await pool.close()
            return server, answers

    server, answers = run(scenario())
    assert answers == [(200, b'{"errcode":0,"connection":1}')] * 3
    assert server.connections == 1
    line, headers, body = server.requests[0]
    assert line == "POST /cgi-bin/message/subscribe/send?access_token=T HTTP/1.1"
    assert headers["host"] == f"127.0.0.1:{server.port}"
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert headers["user-agent"] == "PushHub/1.0"
    assert [request[2] for request in server.requests] == [b'{"n":0}', b'{"n":1}', b'{"n":2}']


def test_chunked_and_close_delimited_answers_are_read_whole():
    async def chunked(server, reader, writer, n):
        await server.next_request(reader)
        writer.write(
            b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"err\r\n8\r\ncode":0}\r\n0\r\n\r\n'
        )
        await writer.drain()
        await server.next_request(reader)  # kept alive: a second request on the same connection
        writer.write(ok(b'{"second":1}'))

    async def until_close(server, reader, writer, n):
        await server.next_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"errcode":0,"errmsg":"till the end"}')
        await writer.drain()

    async def scenario():
        pool = ConnectionPool(2)
        async with Server(chunked) as server:
            first = await post(pool, server.port)
            second = await post(pool, server.port)
            chunked_connections = server.connections
        async with Server(until_close) as server:
            third = await post(pool, server.port)
            fourth = await post(pool, server.port)  # the closed connection is not reused
            close_connections = server.connections
        await pool.close()
        return first, second, chunked_connections, third, fourth, close_connections

    first, second, chunked_connections, third, fourth, close_connections = run(scenario())
    assert first == (200, b'{"errcode":0}')
    assert second == (200, b'{"second":1}')
    assert chunked_connections == 1
    assert third == fourth == (200, b'{"errcode":0,"errmsg":"till the end"}')
    assert close_connections == 2


def test_a_connection_the_server_closed_while_idle_is_replaced_without_an_error():
    async def one_then_close(server, reader, writer, n):
        await server.next_request(reader)
        writer.write(ok())
        await writer.drain()
        # keep-alive timeout on the server's side: it closes the idle connection

    async def scenario():
        async with Server(one_then_close) as server:
            pool = ConnectionPool(2)
            first = await post(pool, server.port)
            await asyncio.sleep(0.05)  # the close arrives while the connection is idle in the pool
            second = await post(pool, server.port)
            await pool.close()
            return first, second, server.connections

    first, second, connections = run(scenario())
    assert first == second == (200, b'{"errcode":0,"errmsg":"ok"}')
    assert connections == 2


def test_an_answer_cut_short_or_not_http_is_a_lost_connection():
    async def cut(server, reader, writer, n):
        await server.next_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"errcode":')
        await writer.drain()

    async def garbage(server, reader, writer, n):
        await server.next_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async def scenario(answer):
        async with Server(answer) as server:
            pool = ConnectionPool(2)
            try:
                with pytest.raises(ConnectionLost):
                    await post(pool, server.port)
                return len(server.requests)
            finally:
                await pool.close()

    assert run(scenario(cut)) == 1  # it was sent: the outcome is unknown, not "never sent"
    assert run(scenario(garbage)) == 1


def test_a_silent_server_is_a_read_timeout_and_its_late_answer_is_never_read_as_the_next_one():
    async def late(server, reader, writer, n):
        while (request := await server.next_request(reader)) is not None:
            if n == 1:
                await asyncio.sleep(0.5)  # past the client's read timeout
            writer.write(ok(request[2]))
            await writer.drain()

    async def scenario():
        async with Server(late) as server:
            pool = ConnectionPool(1)
            with pytest.raises(ReadTimedOut):
                await post(pool, server.port, body=b'{"n":1}', read_timeout=0.2)
            answer = await post(pool, server.port, body=b'{"n":2}')
            await pool.close()
            return answer, server.connections

    answer, connections = run(scenario())
    assert answer == (200, b'{"n":2}')  # its own answer, on a new connection
    assert connections == 2


def test_refused_and_unresolvable_hosts_are_connect_failures():
    async def scenario():
        pool = ConnectionPool(2)
        with pytest.raises(ConnectFailed):
            await post(pool, 9)  # nothing listens on the discard port
        with pytest.raises(ConnectFailed):
            await pool.post("http://no-such-host.invalid/x", b"{}", JSON, connect_timeout=2, read_timeout=2)
        await pool.close()

    run(scenario())


def test_no_more_requests_in_flight_than_the_limit():
    in_flight, peak = [0], [0]

    async def slow(server, reader, writer, n):
        while await server.next_request(reader) is not None:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
            await asyncio.sleep(0.02)
            in_flight[0] -= 1
            writer.write(ok())
            await writer.drain()

    async def scenario():
        async with Server(slow) as server:
            pool = ConnectionPool(3)
            answers = await asyncio.gather(*(post(pool, server.port) for _ in range(12)))
            await pool.close()
            return answers, server.connections

    answers, connections = run(scenario())
    assert len(answers) == 12 and {status for status, _ in answers} == {200}
    assert peak[0] == 3
    assert connections == 3


def _self_signed() -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def test_https_is_tls_with_the_certificate_checked(tmp_path, monkeypatch):
    from pushhub.wechat import http_pool

    cert, key = _self_signed()
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")

    async def scenario():
        async with Server(keep_alive, tls=server_tls) as server:
            url = f"https://127.0.0.1:{server.port}/cgi-bin/message/subscribe/send?access_token=T"
            pool = ConnectionPool(2)
            # The system's CAs do not know this certificate: refused in the handshake, nothing sent.
            with pytest.raises(ConnectFailed):
                await pool.post(url, b"{}", JSON, connect_timeout=2, read_timeout=2)
            requests_before_trust = len(server.requests)
            trusting = ssl.create_default_context(cadata=cert.decode())
            monkeypatch.setattr(http_pool, "_ssl_context", trusting)
            answers = [await pool.post(url, b"{}", JSON, connect_timeout=2, read_timeout=2) for _ in range(2)]
            await pool.close()
            return requests_before_trust, answers, server.requests

    requests_before_trust, answers, requests = run(scenario())
    assert requests_before_trust == 0
    assert [status for status, _ in answers] == [200, 200]
    assert len(requests) == 2
    assert requests[0][1]["host"].startswith("127.0.0.1:")

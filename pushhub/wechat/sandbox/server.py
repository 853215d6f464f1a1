"""The standalone sandbox server: the standard library's WSGI server with a bounded thread pool.

Used by ``python -m pushhub.wechat.sandbox`` and ``manage.py run_sandbox`` for benchmarks and demos without
PushHub's web process. No new dependencies: wsgiref + socketserver.ThreadingMixIn, with requests handed to a
fixed pool (``--threads``) instead of one new thread each, so a load test cannot exhaust the database.
"""

from __future__ import annotations

import socketserver
from concurrent.futures import ThreadPoolExecutor
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.conf import settings
from django.core.management import call_command

STANDALONE_URLCONF = "pushhub.wechat.sandbox.standalone_urls"


class PooledWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """Each connection runs on one of ``threads`` pooled workers (which also keep their DB connection)."""

    daemon_threads = True
    request_queue_size = 256
    threads = 16

    def server_activate(self) -> None:
        super().server_activate()
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="sandbox")

    def process_request(self, request, client_address) -> None:
        self._pool.submit(self.process_request_thread, request, client_address)

    def server_close(self) -> None:
        super().server_close()
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


class QuietHandler(WSGIRequestHandler):
    """No access log by default: at benchmark rates it costs more than the requests."""

    def log_message(self, format: str, *args) -> None:
        return None


def configure_standalone() -> None:
    """Serve the sandbox at the root, without PushHub's middleware (sessions, CSRF, locale: not needed).

    DEBUG off: JSON 404/500 pages, and no per-query log growing for the life of a benchmark.
    """
    settings.ROOT_URLCONF = STANDALONE_URLCONF
    settings.MIDDLEWARE = []
    settings.DEBUG = False


def serve(
    host: str = "127.0.0.1",
    port: int = 9100,
    threads: int = 16,
    migrate: bool = True,
    access_log: bool = False,
) -> None:
    """Migrate the sandbox's tables (only those), then serve until interrupted. Django must be set up."""
    from django.core.wsgi import get_wsgi_application

    if migrate:
        call_command("migrate", "sandbox", verbosity=0)
    configure_standalone()
    server_class = type("SandboxServer", (PooledWSGIServer,), {"threads": threads})
    handler = WSGIRequestHandler if access_log else QuietHandler
    with make_server(
        host, port, get_wsgi_application(), server_class=server_class, handler_class=handler
    ) as httpd:
        bound_host, bound_port = httpd.server_address[:2]
        print(
            f"WeChat sandbox at http://{bound_host}:{bound_port}/ (control: /_control/), {threads} threads",
            flush=True,
        )
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass

"""Prometheus metrics: every series PushHub exports at ``/metrics`` (README "Operations: metrics").

Counters and the latency histogram are counted where things happen (the web processes, the Celery workers).
With ``PROMETHEUS_MULTIPROC_DIR`` set (the Procfile and ``make run`` do), prometheus-client's multiprocess
mode writes each process's values to files in that directory and a scrape of any web process sums them all:
every gunicorn worker and every Celery process (prefork children, the threads-pool webhook worker) is
counted, whichever process answers the scrape. Without it (tests, one process) the values live in memory.

Gauges that describe shared state (held deliveries, queue lengths) are not kept by any process: they are
read from PostgreSQL and the broker when scraped (``ScrapeTimeCollector``), so they are right whichever
worker died or never started.

Labels are bounded: an errcode WeChat may invent is ``other``, an endpoint we did not name is ``other``;
nothing names a tenant, an app, a user or a secret.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import os
from collections.abc import Iterable, Mapping

# prometheus-client reads the variable when it is imported; its directory must exist by then.
_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
if _MULTIPROC_DIR:
    os.makedirs(_MULTIPROC_DIR, exist_ok=True)
elif "PROMETHEUS_MULTIPROC_DIR" in os.environ:
    # Set but empty (the Procfile's ${PROMETHEUS_MULTIPROC_DIR-var/metrics} run with it empty, as the benches and
    # the fault suite do) means "count in memory"; prometheus-client would take it as a directory, the working
    # one, and leave a counter_*.db file per process there.
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]

from prometheus_client import (  # noqa: E402
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess  # noqa: E402
from prometheus_client.core import GaugeMetricFamily  # noqa: E402

from pushhub.wechat.errors import ERRCODE_TEXT  # noqa: E402

log = logging.getLogger(__name__)
# No *_created series: multiprocess mode has none, and the two modes then export the same series.
disable_created_metrics()

# --- the series ------------------------------------------------------------------------------------------
PUSHES_STARTED = Counter(
    "pushhub_pushes_started", "Pushes accepted (created), by audience kind.", ["audience"]
)
PUSHES_FINISHED = Counter("pushhub_pushes_finished", "Pushes finished, by final status.", ["status"])
DELIVERIES = Counter(
    "pushhub_deliveries",
    "Delivery outcomes written: sent, failed, no_credit (final); retry (an answer that leaves the delivery "
    "pending: a transient error, or a spent formId replaced by the user's next credit); failed_by_event "
    "(a sent subscribe message WeChat's subscribe_msg_sent_event reported failed). By WeChat errcode.",
    ["outcome", "errcode"],
)
WECHAT_LATENCY = Histogram(
    "pushhub_wechat_request_duration_seconds",
    "WeChat API calls (or the sandbox's), from the request leaving to its answer or failure, by endpoint.",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
TOKEN_REFRESHES = Counter(
    "pushhub_wechat_token_refreshes", "Access-token fetches from WeChat, by result (ok, error).", ["result"]
)
CREDITS_INGESTED = Counter(
    "pushhub_credits_ingested",
    "Credits stored: formid, prepay, subscribe, long_term (new standing subscriptions), by source "
    "(sdk, events, api).",
    ["kind", "source"],
)
SDK_UPLOADS_PER_STATEMENT = Histogram(
    "pushhub_sdk_uploads_per_statement",
    "SDK formId uploads stored by one statement: concurrent uploads of an app in one web process share it "
    "(formids.services.take_uploaded_ids). Its _count is the statements, its _sum the uploads.",
    buckets=(1, 2, 4, 8, 16, 32),
)
WEBHOOK_ATTEMPTS = Counter(
    "pushhub_webhook_attempts",
    "Webhook deliveries attempted, by result (success, http_4xx, http_5xx, redirect, timeout, "
    "connection_error, tls_error, refused, error).",
    ["result"],
)

# --- bounded label values --------------------------------------------------------------------------------
# What a delivery's errcode can be: WeChat's codes we know, and the pipeline's own words.
KNOWN_ERRCODES = frozenset(
    {str(code) for code in ERRCODE_TEXT}
    | {"", "timeout_ambiguous", "timeout", "unavailable", "canceled", "error"}
)
# WeChat endpoints by path (the client's own constants): anything else is "other".
ENDPOINTS = {
    "cgi-bin/message/subscribe/send": "subscribe_send",
    "cgi-bin/message/wxopen/template/send": "template_send",
    "cgi-bin/stable_token": "stable_token",
    "sns/jscode2session": "jscode2session",
    "wxaapi/newtmpl/gettemplate": "subscribe_templates",
    "cgi-bin/wxopen/template/list": "template_list",
}
CREDIT_KINDS = frozenset({"formid", "prepay", "subscribe", "long_term"})
CREDIT_SOURCES = frozenset({"sdk", "events", "api"})
AUDIENCES = frozenset({"openids", "aliases", "all", "tags"})
PUSH_STATUSES = frozenset({"done", "canceled"})


def errcode_label(errcode: str) -> str:
    return errcode if errcode in KNOWN_ERRCODES else "other"


def endpoint_label(path: str) -> str:
    return ENDPOINTS.get(path.lstrip("/"), "other")


def _bounded(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else "other"


# --- counting (cheap: one inc per label set, never one per delivery) -------------------------------------
def _never_raises(fn):
    """A metric that cannot be written (the multiprocess directory full or gone) is logged, never an error
    of the send, the upload or the request that counted it."""

    @functools.wraps(fn)
    def counted(*args, **kwargs):
        try:
            fn(*args, **kwargs)
        except Exception:  # noqa: BLE001
            log.warning("metrics: %s not counted", fn.__name__, exc_info=True)

    return counted


def after_commit(count, *args) -> None:
    """``count(*args)`` once the caller's transaction commits (now, outside one): a write rolled back and
    retried is counted once."""
    from django.db import transaction

    transaction.on_commit(functools.partial(count, *args), robust=True)


@_never_raises
def push_started(audience: str) -> None:
    PUSHES_STARTED.labels(_bounded(audience, AUDIENCES)).inc()


@_never_raises
def push_finished(status: str) -> None:
    PUSHES_FINISHED.labels(_bounded(status, PUSH_STATUSES)).inc()


@_never_raises
def deliveries(tally: Mapping[tuple[str, str], int]) -> None:
    """``tally``: {(outcome, errcode): how many}: one inc(n) per pair."""
    for (outcome, errcode), n in tally.items():
        if n:
            DELIVERIES.labels(outcome, errcode_label(errcode)).inc(n)


# The histogram's child per API path (one observe per call is on every send: labels() each time was a
# third of its cost).
_latency_by_path: dict[str, Histogram] = {}


@_never_raises
def wechat_call(path: str, seconds: float) -> None:
    child = _latency_by_path.get(path)
    if child is None:
        child = _latency_by_path.setdefault(path, WECHAT_LATENCY.labels(endpoint_label(path)))
    child.observe(seconds)


@_never_raises
def sdk_upload_statement(uploads: int) -> None:
    SDK_UPLOADS_PER_STATEMENT.observe(uploads)


@_never_raises
def token_refresh(ok: bool) -> None:
    TOKEN_REFRESHES.labels("ok" if ok else "error").inc()


@_never_raises
def credits_ingested(kind: str, source: str, n: int) -> None:
    if n > 0:
        CREDITS_INGESTED.labels(_bounded(kind, CREDIT_KINDS), _bounded(source, CREDIT_SOURCES)).inc(n)


def webhook_result(status_code: int | None, error: str) -> str:
    """An attempt's result (webhooks.transport.Answer) as a label value."""
    if status_code is not None:
        if 200 <= status_code < 300:
            return "success"
        if 300 <= status_code < 400:
            return "redirect"
        return "http_4xx" if status_code < 500 else "http_5xx"
    for prefix, result in (
        ("refused:", "refused"),
        ("timeout:", "timeout"),
        ("connection failed", "connection_error"),
        ("tls:", "tls_error"),
    ):
        if error.startswith(prefix):
            return result
    return "error"


@_never_raises
def webhook_attempts(results: Iterable[tuple[int | None, str]]) -> None:
    tally: dict[str, int] = {}
    for status_code, error in results:
        result = webhook_result(status_code, error)
        tally[result] = tally.get(result, 0) + 1
    for result, n in tally.items():
        WEBHOOK_ATTEMPTS.labels(result).inc(n)


# --- scrape-time gauges ----------------------------------------------------------------------------------
BROKER_TIMEOUT = 2.0  # seconds: a broker that does not answer by then gives "unknown", not a slow scrape


def held_deliveries() -> int:
    """Deliveries waiting for a credit: a count of the partial index on held rows (delivery_held_openid)."""
    from templates_app.models import Delivery

    return Delivery.objects.filter(status=Delivery.Status.HELD).count()


def queue_names() -> list[str]:
    from django.conf import settings

    from pushhub.celery import app as celery_app

    # Every lane (README "Procfile"), so each one's depth shows: one name when they are configured as one queue.
    lanes = [settings.SEND_QUEUE, settings.BROADCAST_QUEUE, settings.MAINTENANCE_QUEUE]
    return list(dict.fromkeys([celery_app.conf.task_default_queue, *lanes, settings.WEBHOOK_QUEUE]))


def queue_lengths(names: Iterable[str]) -> dict[str, int | None]:
    """Messages waiting in each Celery queue, by a passive ``queue_declare`` (Redis and RabbitMQ both
    answer it with the message count; it never creates a queue); None where the broker cannot tell.
    A queue the broker does not know holds nothing (Redis drops an empty list)."""
    from kombu.exceptions import ChannelError

    from pushhub.celery import app as celery_app

    names = list(names)
    lengths: dict[str, int | None] = dict.fromkeys(names)
    try:
        with celery_app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT)
            for name in names:
                channel = conn.channel()  # one per queue: RabbitMQ closes a channel on NOT_FOUND
                try:
                    lengths[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
                except ChannelError:  # NOT_FOUND (a 404 from RabbitMQ, no key in Redis): empty
                    lengths[name] = 0
                except Exception:  # noqa: BLE001 — a transport that cannot tell: unknown
                    log.debug("queue %s: length unknown", name, exc_info=True)
                finally:
                    try:
                        channel.close()
                    except Exception:  # noqa: BLE001 — already closed by the broker
                        pass
    except Exception:  # noqa: BLE001 — the broker is unreachable: every length is unknown
        log.warning("metrics: the broker did not answer; queue lengths unknown", exc_info=True)
    return lengths


class ScrapeTimeCollector:
    """Gauges read when scraped, from the database and the broker (never kept in a process)."""

    def collect(self):
        held = GaugeMetricFamily(
            "pushhub_held_deliveries", "Deliveries waiting for a credit (status held), all tenants."
        )
        try:
            held.add_metric([], held_deliveries())
        except Exception:  # noqa: BLE001 — the database is down: the series is absent, the scrape still works
            log.warning("metrics: held deliveries not counted", exc_info=True)
        yield held
        length = GaugeMetricFamily(
            "pushhub_queue_length",
            "Messages waiting in a Celery queue (absent when the broker cannot tell; see _known).",
            labels=["queue"],
        )
        known = GaugeMetricFamily(
            "pushhub_queue_length_known",
            "1 when the broker told the queue's length, 0 when it is unknown.",
            labels=["queue"],
        )
        for name, n in queue_lengths(queue_names()).items():
            known.add_metric([name], 0 if n is None else 1)
            if n is not None:
                length.add_metric([name], n)
        yield length
        yield known


class _ThisProcess:
    """The in-process registry's series (no multiprocess directory): this process's counts."""

    def collect(self):
        yield from REGISTRY.collect()


def multiprocess_dir() -> str:
    return _MULTIPROC_DIR


def exposition() -> bytes:
    """The text exposition of every series: all processes' counts (multiprocess mode) or this one's, and
    the gauges read now."""
    registry = CollectorRegistry()
    if _MULTIPROC_DIR:
        _multiprocess.MultiProcessCollector(registry, path=_MULTIPROC_DIR)
    else:
        registry.register(_ThisProcess())
    registry.register(ScrapeTimeCollector())
    return generate_latest(registry)


def mark_process_dead(pid: int) -> None:
    """A process is gone (gunicorn's child_exit, Celery's worker_process_shutdown): its live gauges' files go.
    Its counters stay counted (their files are kept and summed)."""
    if _MULTIPROC_DIR:
        _multiprocess.mark_process_dead(pid, _MULTIPROC_DIR)


# --- access ----------------------------------------------------------------------------------------------
def address_allowed(address: str, networks: Iterable) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:  # ::ffff:127.0.0.1 on a dual-stack socket
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def _bearer_token(request) -> str:
    scheme, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def scrape_allowed(request) -> bool:
    """METRICS_TOKEN given as ``Authorization: Bearer …`` (constant-time compare), or the client address
    (REMOTE_ADDR: the proxy's, behind one) in METRICS_ALLOWED_NETWORKS. Neither configured: closed."""
    from django.conf import settings

    expected = settings.METRICS_TOKEN
    if expected and hmac.compare_digest(_bearer_token(request).encode(), expected.encode()):
        return True
    return address_allowed(request.META.get("REMOTE_ADDR", ""), settings.METRICS_ALLOWED_NETWORKS)


def metrics_view(request):
    """GET /metrics: the Prometheus text exposition, or 403 (JSON) to a client neither the token nor the
    address lets in."""
    from django.http import HttpResponse
    from django.utils.cache import add_never_cache_headers
    from prometheus_client import CONTENT_TYPE_LATEST

    from pushhub.api import error_response

    if not scrape_allowed(request):
        response = error_response(
            403, "forbidden", "metrics need METRICS_TOKEN as a Bearer token or an allowed network"
        )
    else:
        response = HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
    add_never_cache_headers(response)
    return response

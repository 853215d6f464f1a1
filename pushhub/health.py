"""Probes for the orchestrator: ``/healthz`` (the process answers) and ``/readyz`` (what it needs answers).

Both are unauthenticated, uncached and cheap, and say nothing a stranger may not know: each check's answer is
``ok`` or the class of the error it met (never its message, which can hold a host, a user or a URL), with
how long it took.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import JsonResponse
from django.views.decorators.cache import never_cache

from pushhub.celery import app as celery_app

BROKER_TIMEOUT = 2.0  # seconds: a broker that does not answer by then is reported down, not waited for

_migrations_applied = False  # once true, true for the life of the process (migrations are not unapplied)


@never_cache
def healthz(request):
    """Liveness: the process serves requests. Touches nothing else, so a database outage does not get every
    web process restarted."""
    return JsonResponse({"status": "ok"})


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_cache() -> None:
    """A write and a read through the cache (Redis in production): rate limits, token memo and leases."""
    key, value = "readyz:probe", uuid.uuid4().hex
    cache.set(key, value, timeout=10)
    if cache.get(key) != value:
        raise RuntimeError("the cache did not return what was written")


def check_broker() -> None:
    """A connection to Celery's broker (Redis, RabbitMQ, or the development filesystem transport)."""
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT)


def check_migrations() -> None:
    """Every migration this code ships is applied. The graph is loaded once per process while it is not
    (~50 ms); once it is, the answer is remembered."""
    global _migrations_applied
    if _migrations_applied:
        return
    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if pending:
        raise RuntimeError(f"{len(pending)} migrations not applied")
    _migrations_applied = True


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "cache": check_cache,
    "broker": check_broker,
    "migrations": check_migrations,
}


def run_checks() -> dict[str, dict]:
    results = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            check()
            status = "ok"
        except Exception as exc:  # noqa: BLE001 — any failure means not ready; only its class is shown
            status = f"error: {type(exc).__name__}"
        results[name] = {"status": status, "ms": round((time.perf_counter() - started) * 1000, 1)}
    return results


@never_cache
def readyz(request):
    """Readiness: 200 when the database, the cache, the broker and the schema are all there, else 503
    (take the process out of the load balancer until they are)."""
    checks = run_checks()
    ready = all(result["status"] == "ok" for result in checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )

"""Leases, budgets and backoff of the delivery pipeline, read from the settings at each use (tests and the
fault suite shorten them)."""

from __future__ import annotations

import random

from django.conf import settings


def _setting(name: str, default: float) -> float:
    return float(getattr(settings, name, default))


def in_flight_lease() -> float:
    """Seconds a started attempt may go unrecorded before its worker is presumed dead: longer than a
    chunk's sending budget plus WeChat's read timeout."""
    return _setting("DELIVERY_IN_FLIGHT_LEASE", 120.0)


def stall_after() -> float:
    """A push with pending work and no progress for this long is resumed by the sweep (its chunk tasks were
    lost with a worker, e.g. on a broker without redelivery)."""
    return _setting("DELIVERY_STALL_AFTER", 300.0)


def enumeration_lease() -> float:
    """How long the enumeration lock outlives its last heartbeat (one page of recipients)."""
    return _setting("DELIVERY_ENUMERATION_LEASE", 60.0)


def chunk_budget() -> float:
    """A chunk stops starting new sends after this many seconds and re-queues the rest."""
    return _setting("DELIVERY_CHUNK_BUDGET", 60.0)


def retry_countdown(attempts: int) -> float:
    """Exponential backoff with jitter: half the capped delay fixed, half random."""
    delay = min(
        _setting("DELIVERY_RETRY_MAX", 60.0), _setting("DELIVERY_RETRY_BASE", 2.0) * 2 ** max(attempts - 1, 0)
    )
    return delay / 2 + random.uniform(0, delay / 2)

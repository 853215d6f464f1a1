"""A push's heartbeat, enumeration cursors and enumeration lock, in the shared cache (Redis in production).

The heartbeat tells the stall sweep a push is alive; a cursor lets a redelivered ``deliver_push`` skip what
was queued already; the lock keeps two workers from enumerating the same push at once.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from django.core.cache import cache

from templates_app.delivery.timing import enumeration_lease

log = logging.getLogger(__name__)

PROGRESS_TTL = 2 * 86_400
_last_touch: dict[str, float] = {}


def _progress_key(push_id: Any) -> str:
    return f"delivery:progress:{push_id}"


def touch_progress(push_id: Any, force: bool = False) -> None:
    """Heartbeat of a push (at most once a second per process): the stall sweep leaves it alone."""
    key = str(push_id)
    now = time.monotonic()
    if not force and now - _last_touch.get(key, 0.0) < 1.0:
        return
    if len(_last_touch) > 10_000:  # a long-lived worker sees many pushes
        _last_touch.clear()
    _last_touch[key] = now
    try:
        cache.set(_progress_key(key), time.time(), timeout=PROGRESS_TTL)
    except Exception:  # a heartbeat: without Redis the sweep may queue a duplicate chunk, which is harmless
        log.warning("push %s: progress mark not stored", key, exc_info=True)


def last_progress(push_id: Any) -> float | None:
    """When the push last showed progress (a Unix time), or None if never (or too long ago)."""
    return cache.get(_progress_key(push_id))


def get_cursor(push_id: Any, what: str) -> int:
    """The last id queued of ``what`` (users or deliveries) for the push."""
    return cache.get(f"delivery:cursor:{push_id}:{what}") or 0


def set_cursor(push_id: Any, what: str, cursor: int) -> None:
    cache.set(f"delivery:cursor:{push_id}:{what}", cursor, timeout=PROGRESS_TTL)


def _lock_key(push_id: Any) -> str:
    return f"delivery:enumerating:{push_id}"


def take_lock(push_id: Any) -> str | None:
    """The enumeration lock of the push: an owner token, or None if another worker holds it."""
    owner = f"{time.time()}:{random.random()}"
    return owner if cache.add(_lock_key(push_id), owner, timeout=enumeration_lease()) else None


def renew_lock(push_id: Any, owner: str) -> None:
    if cache.get(_lock_key(push_id)) == owner:
        cache.set(_lock_key(push_id), owner, timeout=enumeration_lease())


def drop_lock(push_id: Any, owner: str) -> None:
    if cache.get(_lock_key(push_id)) == owner:
        cache.delete(_lock_key(push_id))


def is_locked(push_id: Any) -> bool:
    return cache.get(_lock_key(push_id)) is not None

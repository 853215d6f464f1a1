"""Fixed-window rate limits in the shared cache (Redis INCR in production), for any process count.

``check(key, limit, window)`` raises the contract's 429 ``rate_limited`` with ``Retry-After`` once
``limit`` hits were counted for ``key`` in the current window.
"""

from __future__ import annotations

import time

from django.core.cache import cache

from pushhub.api import ApiError


def hit(key: str, limit: int, window: int) -> int | None:
    """Count one hit; None if allowed, else the seconds until the window ends."""
    now = time.time()
    window_start = int(now // window) * window
    cache_key = f"ratelimit:{key}:{window_start}"
    # add() then incr(): atomic on Redis; the first hit of a window creates the counter with its TTL.
    if cache.add(cache_key, 1, timeout=window + 1):
        count = 1
    else:
        try:
            count = cache.incr(cache_key)
        except ValueError:  # expired between add() and incr()
            cache.add(cache_key, 1, timeout=window + 1)
            count = 1
    if count > limit:
        return max(1, int(window_start + window - now + 0.999))
    return None


def check(key: str, limit: int, window: int, what: str = "requests") -> None:
    retry_after = hit(key, limit, window)
    if retry_after is not None:
        raise ApiError(
            429,
            "rate_limited",
            f"Too many {what}: at most {limit} per {window} s. Retry after {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )

"""Fixed-window rate limits in the shared cache (Redis INCR in production), for any process count.

``check(key, limit, window)`` raises the contract's 429 ``rate_limited`` with ``Retry-After`` once
``limit`` hits were counted for ``key`` in the current window.
"""

from __future__ import annotations

import os
import threading
import time

from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache

from pushhub.api import ApiError

_redis_lock = threading.Lock()
_redis: tuple[int, str, object] | None = None


def count(key: str, amount: int, ttl: int) -> int:
    """Add ``amount`` to the counter ``key`` (created with a ``ttl`` in seconds); returns its new value.

    With Redis one round trip: SET NX EX (creates it with its TTL) and INCRBY pipelined, on a client made once
    per process. Django's
    cache.add() + cache.incr() is three round trips (incr checks EXISTS first) and builds a client object
    per call, which was a tenth of a broadcast worker's CPU. The value is a plain integer, which the
    Django cache reads back as such. Other caches (development): add() then incr()."""
    client = _redis_client()
    if client is not None:
        full_key = cache.make_and_validate_key(key)
        pipe = client.pipeline(transaction=False)
        pipe.set(full_key, 0, ex=ttl, nx=True)  # the first hit creates it with its TTL (any Redis version)
        pipe.incrby(full_key, amount)
        return int(pipe.execute()[1])
    if cache.add(key, amount, timeout=ttl):
        return amount
    try:
        return cache.incr(key, amount)
    except ValueError:  # expired between add() and incr()
        return amount if cache.add(key, amount, timeout=ttl) else cache.incr(key, amount)


def _redis_client():
    """A redis-py client on the default cache's server (one per process and URL), or None when the cache
    is not Redis. Its pool is our own, built from the cache's LOCATION and options."""
    global _redis
    backend = caches["default"]
    if not isinstance(backend, RedisCache):
        return None
    url, pid = backend._cache._servers[0], os.getpid()  # ours is one URL, never a list of servers
    if _redis is None or _redis[:2] != (pid, url):
        with _redis_lock:
            if _redis is None or _redis[:2] != (pid, url):
                import redis

                _redis = (pid, url, redis.Redis.from_url(url, **backend._cache._pool_options))
    return _redis[2]


def hit(key: str, limit: int, window: int) -> int | None:
    """Count one hit; None if allowed, else the seconds until the window ends."""
    now = time.time()
    window_start = int(now // window) * window
    count_now = count(f"ratelimit:{key}:{window_start}", 1, window + 1)
    if count_now > limit:
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

"""Fixed-window rate limits in the shared cache (Redis INCR in production), for any process count.

``check(key, limit, window)`` raises the contract's 429 ``rate_limited`` with ``Retry-After`` once
``limit`` hits were counted for ``key`` in the current window. Every answer of a rate-limited endpoint
also carries ``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset`` (seconds) of the tightest
limit the request was counted against (IETF draft "RateLimit header fields for HTTP";
``RateLimitHeadersMiddleware`` adds them to successful answers), so a client can slow down before a 429.
"""

from __future__ import annotations

import contextvars
import os
import threading
import time
from dataclasses import dataclass

from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache

from pushhub.api import ApiError

_redis_lock = threading.Lock()
_redis: tuple[int, str, object] | None = None


def count(key: str, amount: int, ttl: int) -> int:
    """Add ``amount`` to the counter ``key`` (created with a ``ttl`` in seconds); returns its new value.

    With Redis one round trip: SET NX EX (creates it with its TTL) and INCRBY pipelined, on a client made once
    per process. Django's cache.add() + cache.incr() is three round trips (incr checks EXISTS first) and
    builds a client object per call, which was a tenth of a broadcast worker's CPU. The value is a plain integer, which the
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


@dataclass(frozen=True)
class Quota:
    """Where one limit stands after a hit."""

    limit: int
    remaining: int  # hits left in this window (0 when refused)
    reset: int  # seconds until the window ends (at least 1)
    exceeded: bool

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
        }


def _window(key: str, window: int) -> tuple[str, int]:
    """The counter of ``key`` for the current fixed window, and the seconds until that window ends."""
    now = time.time()
    window_start = int(now // window) * window
    return f"ratelimit:{key}:{window_start}", max(1, int(window_start + window - now + 0.999))


def take(key: str, limit: int, window: int) -> Quota:
    """Count one hit of ``key`` against ``limit`` per ``window`` seconds."""
    counter, reset = _window(key, window)
    count_now = count(counter, 1, window + 1)
    return Quota(limit=limit, remaining=max(0, limit - count_now), reset=reset, exceeded=count_now > limit)


# KEYS: the counters in order; ARGV: ttl, limit of each. Counts one hit on each until one is over its limit
# (the later ones are then not counted, as when they are checked one after another); returns the counts.
_TAKE_IN_ORDER = """
local counts = {}
for i, key in ipairs(KEYS) do
    redis.call('SET', key, 0, 'EX', ARGV[2 * i - 1], 'NX')
    local n = redis.call('INCRBY', key, 1)
    counts[i] = n
    if n > tonumber(ARGV[2 * i]) then break end
end
return counts
"""
_take_script: tuple[object, object] | None = None  # (client, its registered script)


def take_in_order(limits: list[tuple[str, int, int]]) -> list[Quota]:
    """``take`` for several (key, limit, window) in order, stopping at the first one exceeded (it is the last
    Quota returned); the same counts as calling ``take`` one after another, in one Redis round trip (a Lua
    script: atomic, EVALSHA once loaded). Other caches: one ``take`` after another."""
    global _take_script
    counters = [_window(key, window) for key, _, window in limits]
    client = _redis_client()
    if client is None:
        quotas = []
        for key, limit, window in limits:
            quotas.append(take(key, limit, window))
            if quotas[-1].exceeded:
                break
        return quotas
    if _take_script is None or _take_script[0] is not client:
        _take_script = (client, client.register_script(_TAKE_IN_ORDER))
    args = [value for (_, limit, window) in limits for value in (window + 1, limit)]
    counts = _take_script[1](
        keys=[cache.make_and_validate_key(counter) for counter, _ in counters], args=args
    )
    return [
        Quota(limit=limit, remaining=max(0, limit - int(n)), reset=reset, exceeded=int(n) > limit)
        for (_, limit, _), (_, reset), n in zip(limits, counters, counts, strict=False)
    ]


def peek(key: str, window: int) -> tuple[int, int]:
    """(hits counted for ``key`` in the current window, seconds until it ends), counting nothing."""
    counter, reset = _window(key, window)
    return int(cache.get(counter) or 0), reset


def hit(key: str, limit: int, window: int) -> int | None:
    """Count one hit; None if allowed, else the seconds until the window ends."""
    quota = take(key, limit, window)
    return quota.reset if quota.exceeded else None


def check(key: str, limit: int, window: int, what: str = "requests") -> None:
    check_all([(key, limit, window, what)])


def check_all(limits: list[tuple[str, int, int, str]]) -> None:
    """``check`` for several (key, limit, window, what) in one round trip: the first limit exceeded answers
    the 429 (the ones after it are not counted), as if each were checked in turn."""
    quotas = take_in_order([(key, limit, window) for key, limit, window, _ in limits])
    for (_, limit, window, what), quota in zip(limits, quotas, strict=False):
        if quota.exceeded:
            raise ApiError(
                429,
                "rate_limited",
                f"Too many {what}: at most {limit} per {window} s. Retry after {quota.reset} s.",
                headers={"Retry-After": str(quota.reset), **quota.headers()},
            )
        _note(quota)


# The tightest quota the current request was counted against, for RateLimitHeadersMiddleware.
_request_quota: contextvars.ContextVar[Quota | None] = contextvars.ContextVar("request_quota", default=None)


def _note(quota: Quota) -> None:
    current = _request_quota.get()
    if current is None or quota.remaining < current.remaining:
        _request_quota.set(quota)


class RateLimitHeadersMiddleware:
    """Adds the RateLimit-* headers of the request's tightest limit to its answer (a 429 has them already)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _request_quota.set(None)
        try:
            response = self.get_response(request)
            quota = _request_quota.get()
        finally:
            _request_quota.reset(token)
        if quota is not None and not response.has_header("RateLimit-Limit"):
            for name, value in quota.headers().items():
                response[name] = value
        return response

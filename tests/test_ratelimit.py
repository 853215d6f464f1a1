"""pushhub.ratelimit against the real cache (Redis in CI, the database cache otherwise)."""

from __future__ import annotations

import pytest

from pushhub import ratelimit
from pushhub.api import ApiError

pytestmark = pytest.mark.django_db


def test_it_allows_up_to_the_limit_then_refuses_with_retry_after():
    for _ in range(3):
        ratelimit.check("test:key", limit=3, window=60)
    with pytest.raises(ApiError) as caught:
        ratelimit.check("test:key", limit=3, window=60)
    error = caught.value
    assert (error.status_code, error.code) == (429, "rate_limited")
    assert 1 <= int(error.headers["Retry-After"]) <= 60


def test_keys_are_counted_separately():
    for _ in range(3):
        ratelimit.check("test:a", limit=3, window=60)
    ratelimit.check("test:b", limit=3, window=60)
    assert ratelimit.hit("test:a", limit=3, window=60) is not None
    assert ratelimit.hit("test:c", limit=3, window=60) is None


def test_count_adds_to_a_counter_that_expires_and_reads_back_as_a_number():
    from django.core.cache import cache

    assert ratelimit.count("test:sends", 32, ttl=5) == 32
    assert ratelimit.count("test:sends", 10, ttl=5) == 42
    assert cache.get("test:sends") == 42  # the Django cache reads the raw counter back
    client = ratelimit._redis_client()
    if client is not None:  # Redis: the first hit set the TTL, later hits did not extend it
        assert 0 < client.ttl(cache.make_and_validate_key("test:sends")) <= 5

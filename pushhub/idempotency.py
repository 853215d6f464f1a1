"""Idempotency keys: the same key and body within 24 h answer the first result and do nothing new.

Two stores use the rules here: the SDK's reports keep the answer in the cache (``run_once``); a push keeps
it in the database (``templates_app.models.IdempotencyRecord``, read by ``templates_app.pushes.start``),
whose unique index settles two concurrent requests with the same key.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

from django.core.cache import cache

from pushhub.api import ApiError

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_MAX_LENGTH = 255
IDEMPOTENCY_TTL = 24 * 3600
# The claim of a key expires on its own if its request dies before storing the answer.
IDEMPOTENCY_CLAIM_TTL = 60
# A retry arriving while the first request still runs waits this long for its answer, then gets 409.
IDEMPOTENCY_WAIT = 2.0
IDEMPOTENCY_POLL = 0.05


def cache_key(scope: str, key: str) -> str:
    """A cache key for an Idempotency-Key within ``scope`` (e.g. an app and a user); the key is hashed."""
    return f"idempotency:{scope}:{hashlib.sha256(key.encode()).hexdigest()}"


def check_key(key: str) -> str:
    """The request's Idempotency-Key ("" when none), or a 400 when it is too long."""
    if len(key) > IDEMPOTENCY_MAX_LENGTH:
        raise ApiError(
            400,
            "validation_error",
            f"{IDEMPOTENCY_HEADER} is at most {IDEMPOTENCY_MAX_LENGTH} characters.",
            field=IDEMPOTENCY_HEADER,
        )
    return key


def body_fingerprint(data) -> str:
    """The same JSON body gives the same fingerprint, whatever the order of its keys."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def mismatch() -> ApiError:
    """The same key with another body: a client bug, answered 409."""
    return ApiError(
        409,
        "idempotency_mismatch",
        f"This {IDEMPOTENCY_HEADER} was used with another body.",
        field=IDEMPOTENCY_HEADER,
    )


def run_once(cache_key: str, fingerprint: str, produce: Callable[[], dict]) -> dict:
    """``produce()`` once per key for 24 h: a repeat gets the first answer. The key is claimed with an
    atomic ``cache.add``, so of two concurrent retries only one produces; the other waits briefly for the
    answer. The same key with another body is a client bug: 409 ``idempotency_mismatch``."""
    deadline = time.monotonic() + IDEMPOTENCY_WAIT
    while True:
        if cache.add(cache_key, {"fingerprint": fingerprint}, timeout=IDEMPOTENCY_CLAIM_TTL):
            try:
                answer = produce()
            except BaseException:
                cache.delete(cache_key)  # nothing was done: a retry may try again
                raise
            cache.set(cache_key, {"fingerprint": fingerprint, "answer": answer}, timeout=IDEMPOTENCY_TTL)
            return answer
        stored = cache.get(cache_key)
        if stored is not None:
            if stored.get("fingerprint") != fingerprint:
                raise mismatch()
            if "answer" in stored:
                return stored["answer"]
        if time.monotonic() >= deadline:
            raise ApiError(
                409,
                "conflict",
                f"A request with this {IDEMPOTENCY_HEADER} is still being processed; retry shortly.",
                headers={"Retry-After": "1"},
            )
        time.sleep(IDEMPOTENCY_POLL)

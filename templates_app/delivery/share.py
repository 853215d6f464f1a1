"""A tenant's share of the broadcast lane: a window of chunks queued or running per tenant.

The broadcast lane is one FIFO queue. Without a window, a tenant's 100k broadcast queues 200 chunks, and a
second tenant's broadcast (its enumeration task first) waits behind all of them. With it, a tenant has at most
BROADCAST_WINDOW chunks in the queue or running; its other chunks are *parked* in Redis (push id and delivery
ids only, rows untouched) and queued as its chunks finish, one for one. So the queue holds at most
BROADCAST_WINDOW chunks of each tenant broadcasting, interleaved, and a tenant that starts a broadcast waits
behind a few chunks of each other tenant, not behind their whole broadcasts; two broadcasting tenants take
turns in the queue and progress together. A tenant alone keeps every slot busy as long as the window is at
least the broadcast slots (worker processes × WORKER_CONCURRENCY) plus a few queued.

Each chunk in the window holds a lease (a sorted set per tenant, scored by expiry, BROADCAST_SHARE_LEASE),
named for the chunk (push, first delivery id, size), given back when the chunk's task ends. A chunk lost with
a SIGKILLed worker stops counting when its lease expires; beat's sweep (``unpark``) then queues the parked
chunks that fit. Nothing here can lose or double a send: if Redis loses a parked chunk, its deliveries are
pending with no attempt in flight and the stall sweep queues them again; a chunk queued twice skips what the
other run finished (``chunk.deliver_chunk`` is idempotent). Transactional sends (the sends lane) are never
held. Without Redis (development's database cache), with BROADCAST_SHARE off, or when Redis fails, chunks
are queued at once, as before.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.cache import cache

from pushhub.ratelimit import _redis_client
from templates_app.delivery import lanes, progress

log = logging.getLogger(__name__)

# KEYS: the tenant's leases (sorted set: chunk → expiry), its parked chunks (list), the tenants with parked
# chunks (set). ARGV: now, expiry, window, chunk name, chunk (JSON), tenant.
# 1: in the window (queue it); 0: parked.
_ADMIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[4]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
  return 1
end
redis.call('RPUSH', KEYS[2], ARGV[5])
redis.call('SADD', KEYS[3], ARGV[6])
return 0
"""
# The same keys; ARGV: now, expiry, window, tenant. The next parked chunk if the window has room (its lease
# taken), else nil; the tenant leaves the set when it has nothing parked.
_NEXT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return nil end
local chunk = redis.call('LPOP', KEYS[2])
if not chunk then
  redis.call('SREM', KEYS[3], ARGV[4])
  return nil
end
local decoded = cjson.decode(chunk)
redis.call('ZADD', KEYS[1], ARGV[2], decoded[1] .. ':' .. decoded[2][1] .. ':' .. #decoded[2])
return chunk
"""


def _keys(tenant: Any) -> list[str]:
    return [
        cache.make_and_validate_key(f"share:leases:{tenant}"),
        cache.make_and_validate_key(f"share:parked:{tenant}"),
        cache.make_and_validate_key("share:waiting"),
    ]


def chunk_name(push_id: Any, ids: Sequence[int]) -> str:
    """A chunk's lease: the same for the same chunk queued again, distinct for another chunk of the push."""
    return f"{push_id}:{ids[0]}:{len(ids)}"


def _args(*extra: Any) -> list[Any]:
    now = time.time()
    return [now, now + float(settings.BROADCAST_SHARE_LEASE), int(settings.BROADCAST_WINDOW), *extra]


def _client_for(push_id: Any) -> tuple[Any, int] | None:
    """(Redis client, tenant id) when the push's chunks are held to the share, else None."""
    if not settings.BROADCAST_SHARE:
        return None
    client = _redis_client()
    if client is None:
        return None
    found = lanes.of_push_id(push_id)
    if found is None or found[0] != lanes.BROADCAST:
        return None
    return client, found[1]


def admit(push_id: Any, ids: Sequence[int]) -> bool:
    """True: queue the chunk now (it is in its tenant's window, or not held to it). False: it was parked."""
    try:
        target = _client_for(push_id)
        if target is None:
            return True
        client, tenant = target
        chunk = json.dumps([str(push_id), [int(pk) for pk in ids]])
        args = _args(chunk_name(push_id, ids), chunk, tenant)
        admitted = bool(client.eval(_ADMIT, 3, *_keys(tenant), *args))
    except Exception:  # Redis failing: sending matters more than sharing
        log.warning("push %s: broadcast share unavailable; the chunk is queued", push_id, exc_info=True)
        return True
    if not admitted:
        progress.touch_progress(push_id)  # waiting its turn is not a stall: the sweep leaves it parked
    return admitted


def finish(push_id: Any, ids: Sequence[int]) -> list[tuple[str, list[int]]]:
    """A chunk's task ended: give its lease back, and return the tenant's parked chunks that now fit (their
    leases taken: the caller queues them)."""
    if not ids:
        return []
    try:
        target = _client_for(push_id)
        if target is None:
            return []
        client, tenant = target
        client.zrem(_keys(tenant)[0], chunk_name(push_id, ids))
        return _take_parked(client, tenant, limit=int(settings.BROADCAST_WINDOW))
    except Exception:  # the lease expires by itself; beat's sweep queues what is parked
        log.warning("push %s: broadcast share not updated", push_id, exc_info=True)
        return []


def unpark() -> list[tuple[str, list[int]]]:
    """Beat's sweep: every tenant's parked chunks that fit its window again (its chunks died with a worker
    and their leases expired, or a finish could not reach Redis)."""
    if not settings.BROADCAST_SHARE:
        return []
    client = _redis_client()
    if client is None:
        return []
    found: list[tuple[str, list[int]]] = []
    try:
        for tenant in client.smembers(_keys(0)[2]):
            found += _take_parked(client, tenant.decode(), limit=int(settings.BROADCAST_WINDOW))
    except Exception:
        log.warning("broadcast share: parked chunks not looked at", exc_info=True)
    return found


def _take_parked(client: Any, tenant: Any, limit: int) -> list[tuple[str, list[int]]]:
    taken = []
    while len(taken) < limit:
        raw = client.eval(_NEXT, 3, *_keys(tenant), *_args(tenant))
        if raw is None:
            break
        push_id, ids = json.loads(raw)
        taken.append((push_id, ids))
    return taken

"""A tenant's share of the broadcast lane: two tenants broadcasting at once both progress.

Every broadcast chunk that starts takes a lease in Redis (a sorted set of running chunks, each with its
expiry). A chunk may start while its tenant runs fewer chunks than its fair share:
``ceil((chunks running + 1) / tenants running chunks)``, counting the asking tenant; a tenant alone may
therefore take every slot, and a second tenant's first chunk always starts. A chunk over its share is
*parked*: its push id and delivery ids go to its tenant's list in Redis and the task ends, its rows untouched
(parking does not bounce it through the broker again and again). Each chunk that finishes queues up to
PUMP_PER_FINISH parked chunks again (the tenants running the fewest first), and beat's sweep does too, so a
parked chunk whose tenant's chunks died with a worker still runs once their leases expire.

Nothing here can lose or double a send: a parked chunk is only ids; if Redis loses it, its deliveries are
pending with no attempt in flight, and the stall sweep queues them again; a chunk queued twice skips what the
other run finished (``chunk.deliver_chunk`` is idempotent). Without Redis (development's database cache) or
with BROADCAST_SHARE off, every chunk runs at once, as before.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.cache import cache

from pushhub.ratelimit import _redis_client
from templates_app.delivery import lanes, progress, queue

log = logging.getLogger(__name__)

PUMP_PER_FINISH = 2  # parked chunks queued again per finished chunk: one to replace it, one to catch up

# KEYS[1] running chunks (member "tenant|token", score: lease expiry). ARGV: now, expiry, tenant, token.
# 1: started (the lease taken); 0: over its tenant's share.
_TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local member = ARGV[3] .. '|' .. ARGV[4]
if redis.call('ZSCORE', KEYS[1], member) then
  redis.call('ZADD', KEYS[1], ARGV[2], member)
  return 1
end
local running = redis.call('ZRANGE', KEYS[1], 0, -1)
local tenants, mine, active = {}, 0, 1
tenants[ARGV[3]] = true
for _, m in ipairs(running) do
  local t = string.match(m, '^([^|]+)|')
  if t == ARGV[3] then mine = mine + 1 end
  if not tenants[t] then tenants[t] = true; active = active + 1 end
end
if mine < math.ceil((#running + 1) / active) then
  redis.call('ZADD', KEYS[1], ARGV[2], member)
  return 1
end
return 0
"""


def _key(name: str) -> str:
    return cache.make_and_validate_key(f"share:{name}")


def _enabled() -> Any:
    """The Redis client when the share applies, else None."""
    return _redis_client() if settings.BROADCAST_SHARE else None


def run_chunk(push_id: Any, delivery_ids: list[int], token: str | None, send: Callable[[], dict]) -> dict:
    """Run ``send`` (the chunk) now if the push's tenant is within its share of the broadcast lane, else
    park the chunk. Transactional sends (the sends lane) and chunks run outside a worker (no ``token``) run
    at once."""
    client = _enabled()
    found = lanes.of_push_id(push_id) if client is not None and token else None
    if found is None or found[0] != lanes.BROADCAST:
        return send()
    tenant = str(found[1])
    try:
        started = _take(client, tenant, token)
        if not started:
            _park(client, tenant, push_id, delivery_ids)
    except Exception:  # Redis failing: sending matters more than sharing
        log.warning("push %s: broadcast share unavailable; the chunk runs", push_id, exc_info=True)
        return send()
    if not started:
        progress.touch_progress(push_id)  # waiting its turn is not a stall
        return {"parked": len(delivery_ids)}
    try:
        return send()
    finally:
        try:
            client.zrem(_key("running"), f"{tenant}|{token}")
            pump(PUMP_PER_FINISH)
        except Exception:  # the lease expires by itself; beat's sweep pumps
            log.warning("push %s: broadcast share not updated", push_id, exc_info=True)


def _take(client: Any, tenant: str, token: str) -> bool:
    now = time.time()
    expiry = now + float(settings.BROADCAST_SHARE_LEASE)
    return bool(client.eval(_TAKE, 1, _key("running"), now, expiry, tenant, token))


def _park(client: Any, tenant: str, push_id: Any, delivery_ids: list[int]) -> None:
    pipe = client.pipeline(transaction=True)
    pipe.rpush(_key(f"parked:{tenant}"), json.dumps([str(push_id), list(delivery_ids)]))
    pipe.sadd(_key("waiting"), tenant)
    pipe.execute()


def pump(limit: int) -> int:
    """Queue up to ``limit`` parked chunks again, the tenants running the fewest chunks first, each only while
    its tenant is below its share (the rule ``_TAKE`` applies when the chunk starts). Returns how many."""
    client = _enabled()
    if client is None:
        return 0
    waiting = [t.decode() for t in client.smembers(_key("waiting"))]
    if not waiting:
        return 0
    client.zremrangebyscore(_key("running"), "-inf", time.time())
    running: dict[str, int] = {}
    for member in client.zrange(_key("running"), 0, -1):
        tenant = member.decode().split("|", 1)[0]
        running[tenant] = running.get(tenant, 0) + 1
    queued = 0
    while queued < limit and waiting:
        waiting.sort(key=lambda t: running.get(t, 0))
        tenant = waiting[0]
        active = len(set(running) | {tenant})
        if running.get(tenant, 0) >= math.ceil((sum(running.values()) + 1) / active):
            return queued  # the tenant running the fewest is at its share: so is everyone waiting
        raw = client.lpop(_key(f"parked:{tenant}"))
        if raw is None:
            client.srem(_key("waiting"), tenant)
            # A park between the LPOP and the SREM put its tenant back: found again by the next pump.
            if client.llen(_key(f"parked:{tenant}")):
                client.sadd(_key("waiting"), tenant)
            waiting.pop(0)
            continue
        push_id, ids = json.loads(raw)
        queue.enqueue_chunk(push_id, ids)
        # Counted as running from now: the next pick sees the share it will take when it starts.
        running[tenant] = running.get(tenant, 0) + 1
        queued += 1
    return queued


def pump_all(limit: int = 100) -> int:
    """Beat's pump: parked chunks whose tenant has room again (its chunks died with a worker and their leases
    expired, or a finish's pump failed)."""
    try:
        return pump(limit)
    except Exception:
        log.warning("broadcast share: parked chunks not pumped", exc_info=True)
        return 0

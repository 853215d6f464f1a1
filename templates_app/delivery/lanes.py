"""Lanes: which Celery queue each task of the pipeline waits in (the Celery router, ``CELERY_TASK_ROUTES``).

- ``sends``: transactional sends — a push to listed recipients (at most SEND_LANE_MAX_RECIPIENTS; the API
  takes 1,000, two chunks) and hold releases. Consumed by the Procfile's ``sends`` worker, so a one-user
  trigger never waits behind another tenant's broadcast chunks.
- ``broadcast``: ``@all`` and segment pushes, their enumeration (``deliver_push``) and every chunk, with the
  per-tenant share (``share.py``). The Procfile's ``worker`` processes.
- ``maintenance``: beat's sweeps and the retention sweep (the ``maintenance`` worker): a long sweep never
  takes a sending slot.

A push's lane follows from its ``to`` alone (fixed when it is made), so every task of a push — its start,
chunks, retries, requeues, the stall sweep's re-queues — goes to the same lane. The router runs where a task
is queued; a push's lane is looked up once per process (``remember`` spares the lookup where the push is
at hand, e.g. the trigger's request).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from templates_app.models import Push

SENDS, BROADCAST, MAINTENANCE = "sends", "broadcast", "maintenance"

# Tasks whose lane is their name's.
_BY_NAME = {
    "templates_app.release_holds": SENDS,
    "templates_app.run_scheduled_pushes": MAINTENANCE,
    "templates_app.sweep_holds": MAINTENANCE,
    "templates_app.sweep_retention": MAINTENANCE,
    "formids.expire_credits": MAINTENANCE,
    "formids.release_stale_claims": MAINTENANCE,
}
# Tasks whose lane is their push's (the push id is their first argument).
_BY_PUSH = frozenset({"templates_app.deliver_push", "templates_app.deliver_chunk"})

_MEMO_SIZE = 10_000
_memo: dict[str, tuple[str, int]] = {}  # push id → (lane, tenant id); both fixed when the push is made


def lane_of(push: Push) -> str:
    """A broadcast, or a listed push above SEND_LANE_MAX_RECIPIENTS: the broadcast lane; else sends."""
    if push.is_broadcast:
        return BROADCAST
    listed = push.to["aliases"] if isinstance(push.to, dict) else push.to
    return SENDS if len(listed or ()) <= settings.SEND_LANE_MAX_RECIPIENTS else BROADCAST


def queue_of(lane: str) -> str:
    return {SENDS: settings.SEND_QUEUE, BROADCAST: settings.BROADCAST_QUEUE}.get(
        lane, settings.MAINTENANCE_QUEUE
    )


def remember(push: Push) -> str:
    """Note the push's lane and tenant in this process (no lookup when its tasks are queued); returns the lane."""
    lane = lane_of(push)
    _store(str(push.pk), lane, push.tenant_id)
    return lane


def of_push_id(push_id: Any) -> tuple[str, int] | None:
    """(lane, tenant id) of a push, or None if there is no such push."""
    key = str(push_id)
    found = _memo.get(key)
    if found is None:
        push = Push.objects.filter(pk=key).only("audience", "to", "tenant_id").first()
        if push is None:
            return None
        found = _store(key, lane_of(push), push.tenant_id)
    return found


def _store(key: str, lane: str, tenant_id: int) -> tuple[str, int]:
    if len(_memo) >= _MEMO_SIZE:  # a long-lived worker sees many pushes
        _memo.clear()
    _memo[key] = (lane, tenant_id)
    return _memo[key]


def route(name: str, args: Any, kwargs: Any, options: dict, task: Any = None, **kw: Any) -> dict | None:
    """Celery router (``CELERY_TASK_ROUTES``): the queue of a task of the pipeline; None for the others (their
    own ``queue`` option, e.g. the webhook workers', or DEFAULT_QUEUE). A queue given by the caller wins."""
    if options.get("queue"):
        return None
    lane = _BY_NAME.get(name)
    if lane is None and name in _BY_PUSH and args:
        try:
            found = of_push_id(args[0])
        except Exception:  # no database here and now: the broadcast lane consumes every push's tasks too
            found = None
        lane = found[0] if found else BROADCAST
    return {"queue": queue_of(lane)} if lane else None

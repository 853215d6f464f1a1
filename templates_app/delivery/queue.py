"""The one place that queues the delivery pipeline's tasks (``templates_app.tasks``).

Tasks are sent by name through the Celery app, so nothing here imports the task module (which imports the
pipeline): no import cycle. Tests swap ``enqueue`` for an in-process queue; every other function here goes
through it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db import transaction

from pushhub.celery import app as celery_app
from templates_app.delivery import share

log = logging.getLogger(__name__)

# The pipeline's tasks by short name (their Celery names are in templates_app.tasks).
TASKS = {
    "deliver_push": "templates_app.deliver_push",
    "deliver_chunk": "templates_app.deliver_chunk",
    "run_scheduled_pushes": "templates_app.run_scheduled_pushes",
    "release_holds": "templates_app.release_holds",
}


def enqueue(task: str, *args: Any, countdown: float | None = None) -> None:
    """Queue the pipeline's ``task`` (a key of TASKS) with ``args``, after ``countdown`` seconds, at most
    BROKER_MAX_COUNTDOWN: a task waiting for its ETA is held unacknowledged by a worker, and RabbitMQ's
    consumer_timeout would close its channel (Redis: redeliver it after the visibility timeout) past that. The
    pipeline's countdowns (in-flight lease + 1 s, retry backoff, 2 s) are well below it by default; when a
    lease is set longer, a chunk run early re-checks the lease and queues itself again."""
    options = (
        {"countdown": min(countdown, settings.BROKER_MAX_COUNTDOWN)} if countdown and countdown > 0 else {}
    )
    celery_app.send_task(TASKS[task], args=args, **options)


def enqueue_chunk(push_id: Any, ids: Sequence[int], countdown: float | None = None) -> None:
    """Queue ``deliver_chunk`` for these deliveries of the push (nothing for none). A broadcast's chunk
    beyond its tenant's window is parked instead, and queued when one of the tenant's chunks finishes
    (``share.py``)."""
    if ids and share.admit(push_id, ids):
        enqueue("deliver_chunk", str(push_id), list(ids), countdown=countdown)


def chunk_finished(push_id: Any, ids: Sequence[int]) -> None:
    """A chunk's task ended (whatever its outcome): its place in the tenant's window goes to the tenant's
    next parked chunks. If the broker is down, they are the stall sweep's."""
    _enqueue_parked(share.finish(push_id, ids))


def unpark() -> int:
    """Beat: queue the parked chunks whose tenant's window has room again; returns how many."""
    chunks = share.unpark()
    _enqueue_parked(chunks)
    return len(chunks)


def _enqueue_parked(chunks: list[tuple[str, list[int]]]) -> None:
    for push_id, ids in chunks:  # their places in the window are taken already
        try:
            enqueue("deliver_chunk", push_id, ids)
        except Exception:
            log.warning("push %s: a parked chunk is left for the stall sweep", push_id, exc_info=True)


def enqueue_push(push_id: Any) -> None:
    """Queue ``deliver_push``: enumerate (or resume) the push and fan out its chunks."""
    enqueue("deliver_push", str(push_id))


def start_after_commit(push_id: Any, chunk: Sequence[int] | None = None) -> None:
    """Once the caller's transaction commits, queue a new push's delivery: its one chunk of prepared
    deliveries straight to ``deliver_chunk`` (one queue hop fewer than through ``deliver_push``: a trigger
    for one user reaches WeChat ~10 ms sooner), else ``deliver_push``.

    The push is committed by then: if the broker is down, the answer still stands and beat's stall sweep
    (``sweeps.resume_stalled_pushes``) queues it again, so nothing is lost."""
    push_id, ids = str(push_id), list(chunk or ())

    def start() -> None:
        try:
            if ids:
                enqueue_chunk(push_id, ids)
            else:
                enqueue_push(push_id)
        except Exception:  # kombu/redis connection errors vary by transport
            log.exception("could not queue push %s; the stuck-push sweep will queue it again", push_id)

    transaction.on_commit(start)

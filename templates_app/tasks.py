"""Celery tasks of the delivery pipeline: thin wrappers that take ids and call templates_app.delivery
(``start``, ``chunk``, ``sweeps``); they are queued by ``templates_app.delivery.queue`` only.

All are ``acks_late`` (with the project's reject_on_worker_lost): a task whose worker dies is delivered
again, and every service below is idempotent under that. A database that is briefly unavailable (SQLite
busy, a PostgreSQL failover) retries the task with backoff instead of dropping it until the stall sweep.
"""

from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from templates_app import retention
from templates_app.delivery import chunk, holds, queue, start, sweeps

RETRY_ON_DATABASE = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 5,
}


@shared_task(name="templates_app.deliver_push", acks_late=True, ignore_result=True, **RETRY_ON_DATABASE)
def deliver_push(push_id: str) -> str:
    """Enumerate a push's recipients and queue its chunks."""
    return start.deliver_push(push_id)


@shared_task(name="templates_app.deliver_chunk", acks_late=True, ignore_result=True, **RETRY_ON_DATABASE)
def deliver_chunk(push_id: str, delivery_ids: list[int]) -> dict[str, int]:
    """Send one chunk of a push's deliveries; then its tenant's next parked broadcast chunk may go."""
    try:
        return chunk.deliver_chunk(push_id, delivery_ids)
    finally:
        queue.chunk_finished(push_id, delivery_ids)


@shared_task(name="templates_app.run_scheduled_pushes", acks_late=True, ignore_result=True)
def run_scheduled_pushes(stall_seconds: float | None = None) -> dict[str, int]:
    """Beat, every 15 s: start scheduled pushes that are due, resume pushes whose workers died."""
    return {
        "started": sweeps.start_due_pushes(),
        "resumed": sweeps.resume_stalled_pushes(stall_seconds),
        "unparked": queue.unpark(),
    }


@shared_task(name="templates_app.release_holds", acks_late=True, ignore_result=True, **RETRY_ON_DATABASE)
def release_holds(app_id: int) -> int:
    """Send to the app's held users who gained a credit."""
    return holds.release_app(app_id)


@shared_task(name="templates_app.sweep_holds", acks_late=True, ignore_result=True)
def sweep_holds() -> dict[str, int]:
    """Beat, every HOLD_SWEEP_SECONDS: end due holds, release what arrivals marked, recheck now and then."""
    return holds.sweep()


@shared_task(name="templates_app.sweep_retention", acks_late=True, ignore_result=True)
def sweep_retention() -> dict[str, int]:
    """Beat, every RETENTION_SWEEP_SECONDS: delete the rows past their *_RETENTION_DAYS, in batches."""
    try:
        reports = retention.sweep()
    except retention.SweepRunning:
        return {}  # the previous run is still at it
    return {report.name: report.deleted for report in reports}

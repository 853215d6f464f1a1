"""Periodic upkeep of the credit pools (Celery beat; see CELERY_BEAT_SCHEDULE). Thin: services do the work."""

from celery import shared_task

from formids import services


@shared_task(name="formids.expire_credits", ignore_result=True)
def expire_credits() -> int:
    return services.expire_due()


@shared_task(name="formids.release_stale_claims", ignore_result=True)
def release_stale_claims() -> int:
    return services.release_stale()

"""Settings of every process of the fault-injection stack (web, workers, beat, the runner): the project's,
on the suite's own Celery queue, with the beat's sweeps every FAULTS_BEAT_SECONDS instead of every 15-300 s,
so that work lost with a worker or with Redis is found again within seconds rather than minutes. The
delivery timings (leases, retries, timeouts) come from the environment the runner sets (tests/faults/stack.py)."""

import os

from pushhub.settings import *  # noqa: F403

DEBUG = False
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("FAULTS_QUEUE", "faults")
_beat = float(os.environ.get("FAULTS_BEAT_SECONDS", "2"))
CELERY_BEAT_SCHEDULE = {
    "release-stale-claims": {"task": "formids.release_stale_claims", "schedule": _beat},
    "run-scheduled-pushes": {"task": "templates_app.run_scheduled_pushes", "schedule": _beat},
}

# The webhook worker (the Procfile's ``webhooks`` process) on a queue of the suite's own, beat's sweep queueing
# its retries and lost drains every WEBHOOK_SWEEP_SECONDS; the retry schedule scaled by WEBHOOK_RETRY_SCALE and
# loopback receivers allowed (WEBHOOK_ALLOW_PRIVATE), both from the runner's environment.
WEBHOOK_QUEUE = f"{CELERY_TASK_DEFAULT_QUEUE}-webhooks"
CELERY_BEAT_SCHEDULE["webhooks-sweep"] = {
    "task": "webhooks.sweep",
    "schedule": WEBHOOK_SWEEP_SECONDS,  # noqa: F405
    "options": {"queue": WEBHOOK_QUEUE},
}

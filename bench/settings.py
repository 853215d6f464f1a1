"""Settings of the benchmark processes (web, workers, the bench itself): the project's, on the bench's own
Celery queue, with DEBUG off (no per-query log growing for a whole run)."""

import os

from pushhub.settings import *  # noqa: F403

DEBUG = False
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("BENCH_QUEUE", "bench")
# The webhook worker's queue is the bench's own too (bench.webhooks, bench.broadcast --webhooks), and its
# receiver listens on loopback, which the SSRF guard refuses unless told otherwise.
WEBHOOK_QUEUE = os.environ.get("BENCH_WEBHOOK_QUEUE") or f"{CELERY_TASK_DEFAULT_QUEUE}-webhooks"
WEBHOOK_ALLOW_PRIVATE = True

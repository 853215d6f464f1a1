"""The Celery app. Configuration comes from Django settings (CELERY_* names)."""

import os

from celery import Celery
from celery.signals import task_prerun, worker_process_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pushhub.settings")

app = Celery("pushhub")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Celery's Django fix-up closes the database connections before and after every task unless this is set:
# a new PostgreSQL connection (and backend process) per task, a few ms of latency on every trigger and a
# fifth of PostgreSQL's CPU in a broadcast. Connections are kept as in Django's request cycle instead:
# CONN_MAX_AGE and CONN_HEALTH_CHECKS decide, before each task (below). Celery still closes them every
# DB_REUSE_MAX tasks.
app.conf["CELERY_DB_REUSE_MAX"] = 1000
app.autodiscover_tasks()


# Tasks whose first argument is the push they work on: their log lines carry it.
PUSH_TASKS = frozenset({"templates_app.deliver_push", "templates_app.deliver_chunk"})


@task_prerun.connect
def _bind_log_context(task_id=None, task=None, args=(), **kwargs) -> None:
    """A task's log lines carry its id as the request id, and the push it works on."""
    from pushhub import logs

    logs.clear()
    logs.bind(request_id=task_id)
    if task is not None and task.name in PUSH_TASKS and args:
        logs.bind(push=args[0])


@task_prerun.connect
def _close_old_connections(task=None, **kwargs) -> None:
    """What Django does at the start of each request: drop connections that are too old or unusable.
    Not for a task run in the caller's process (``apply()``): it may be inside the caller's transaction."""
    if task is not None and getattr(task.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


@worker_process_shutdown.connect
def _metrics_process_gone(pid=None, **kwargs) -> None:
    """A prefork child exits: prometheus-client's multiprocess mode drops its live-gauge files (its counters
    stay counted). Nothing to do without PROMETHEUS_MULTIPROC_DIR."""
    from pushhub import metrics

    metrics.mark_process_dead(pid or os.getpid())

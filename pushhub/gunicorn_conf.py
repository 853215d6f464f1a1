"""gunicorn settings the Procfile loads (``-c python:pushhub.gunicorn_conf``): the Prometheus multiprocess
bookkeeping of the web workers. Everything else stays on the Procfile's command line."""

from __future__ import annotations


def child_exit(server, worker) -> None:
    """A worker exited (restarted, killed, timed out): prometheus-client drops its live-gauge files; its
    counters stay counted (pushhub/metrics.py)."""
    from pushhub import metrics

    metrics.mark_process_dead(worker.pid)

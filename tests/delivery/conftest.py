"""Delivery fixtures: a sandbox app served over real HTTP, templates on both sides, and an in-process task
queue standing in for Celery (the real-worker tests in test_worker.py bring their own)."""

from __future__ import annotations

from collections import deque

import pytest

from pushhub.wechat import sending
from pushhub.wechat.client import close_http_session
from templates_app import receivers, tasks
from templates_app.delivery import queue as delivery_queue

from .helpers import make_template


@pytest.fixture(autouse=True)
def _receivers_connected():
    receivers.connect()  # TemplatesAppConfig.ready() will do this; connecting twice is a no-op


@pytest.fixture(autouse=True)
def _fast_retries(settings):
    settings.DELIVERY_RETRY_BASE = 0.01
    settings.DELIVERY_RETRY_MAX = 0.05
    settings.SEND_CONCURRENCY = 8
    yield
    close_http_session()
    sending.close()


@pytest.fixture
def app(sandbox_base, sandbox_app):
    """A sandbox app whose WeChat calls (and WeChat's event pushes back to us) go over HTTP."""
    return sandbox_app


@pytest.fixture
def formid_template(app):
    return make_template(app, "formid")


@pytest.fixture
def subscribe_template(app):
    return make_template(app, "subscribe")


class TaskQueue:
    """Collects what the pipeline enqueues and runs it here, in order (countdowns are recorded, not waited)."""

    def __init__(self):
        self.pending: deque = deque()
        self.history: list[tuple[str, tuple, float | None]] = []

    def __call__(self, task: str, *args, countdown: float | None = None) -> None:
        self.pending.append((task, args))
        self.history.append((task, args, countdown))

    def run_one(self):
        task, args = self.pending.popleft()
        return getattr(tasks, task)(*args)

    def run(self, limit: int = 1000) -> int:
        """Run until nothing is left (retries included); returns how many tasks ran."""
        ran = 0
        while self.pending:
            assert ran < limit, "the queue does not drain"
            self.run_one()
            ran += 1
        return ran

    def names(self) -> list[str]:
        return [task for task, _ in self.pending]


@pytest.fixture
def task_queue(monkeypatch) -> TaskQueue:
    queue = TaskQueue()
    monkeypatch.setattr(delivery_queue, "enqueue", queue)
    return queue

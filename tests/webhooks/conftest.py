"""Webhook fixtures: a verifying receiver over real HTTP, endpoints pointing at it, and the webhook queue run
in-process (``drains``): what ``webhooks.queue`` would hand to the webhook worker, run here on demand."""

from __future__ import annotations

import pytest

from templates_app.delivery import queue as delivery_queue
from tests.delivery.conftest import TaskQueue
from webhooks import dispatch, queue, services, transport

from .receiver import Receiver


@pytest.fixture(autouse=True)
def _private_targets_allowed(settings):
    """The receiver listens on loopback: the SSRF guard is lifted, as WEBHOOK_ALLOW_PRIVATE=1 does (the guard's
    own tests turn it back on)."""
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_TIMEOUT = 2.0
    yield
    transport.close_pools()


class Drains:
    """Endpoint ids queued for a drain, run on demand (as the webhook worker would)."""

    def __init__(self):
        self.queued: list[str] = []

    def __call__(self, endpoint_id) -> None:
        self.queued.append(str(endpoint_id))

    def run(self, limit: int = 200) -> int:
        """Drain until nothing is queued; how many attempts were made."""
        attempts = rounds = 0
        while self.queued:
            rounds += 1
            assert rounds <= limit, "the webhook queue does not drain"
            attempts += dispatch.drain_endpoint(self.queued.pop(0))
        return attempts


@pytest.fixture
def drains(monkeypatch) -> Drains:
    queued = Drains()
    monkeypatch.setattr(queue, "enqueue", queued)
    return queued


@pytest.fixture
def receiver():
    served = Receiver().start()
    yield served
    served.stop()


@pytest.fixture
def endpoint(tenant, receiver):
    """An endpoint of the tenant wanting every event, at the receiver (which knows its secret)."""
    created, secret = services.create_endpoint(tenant, url=receiver.url, events=["*"], actor="tests")
    receiver.secret = secret
    return created


@pytest.fixture
def task_queue(monkeypatch) -> TaskQueue:
    tasks = TaskQueue()
    monkeypatch.setattr(delivery_queue, "enqueue", tasks)
    return tasks


@pytest.fixture
def app(sandbox_base, sandbox_app):
    """A sandbox app whose WeChat calls go over HTTP (as in tests/delivery)."""
    from pushhub.wechat import sending
    from pushhub.wechat.client import close_http_session

    yield sandbox_app
    close_http_session()
    sending.close()

"""Redis or RabbitMQ as Celery's broker (CELERY_BROKER_URL): what the pipeline and the webhooks queue lands on
the configured broker (make test-rabbitmq runs this on RabbitMQ, make test on Redis), each transport gets only
its own options, and /readyz names a dead RabbitMQ without its address."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone
from kombu import Exchange, Queue

from pushhub import health
from pushhub.celery import app as celery_app
from templates_app.delivery import queue as delivery_queue
from webhooks import queue as webhook_queue

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def own_queue(monkeypatch):
    """The default queue and the webhook queue, each a new one of this test's own on the configured broker;
    returns get(name) → the next message on it (or None), and deletes both queues at the end."""
    name = f"broker-test-{uuid.uuid4().hex[:12]}"
    previous = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = name
    monkeypatch.setattr(settings, "WEBHOOK_QUEUE", f"{name}-webhooks")
    for lane in ("SEND_QUEUE", "BROADCAST_QUEUE", "MAINTENANCE_QUEUE"):  # the delivery lanes: that queue too
        monkeypatch.setattr(settings, lane, name)
    conn = celery_app.connection_for_write()
    queues = {
        queue_name: Queue(
            queue_name, Exchange(queue_name), routing_key=queue_name, channel=conn.default_channel
        )
        for queue_name in (name, f"{name}-webhooks")
    }
    for queue in queues.values():  # as Celery declares them, so that an empty one can be read on RabbitMQ
        queue.declare()

    def get(queue_name: str):
        return queues[queue_name].get(no_ack=True)

    get.name = name
    yield get
    celery_app.conf.task_default_queue = previous
    for queue_name in (name, f"{name}-webhooks"):
        try:
            conn.default_channel.queue_delete(queue_name)
        except Exception:  # the filesystem transport has nothing to delete for a queue it never made
            pass
    conn.release()


def _eta(message) -> datetime:
    return datetime.fromisoformat(message.headers["eta"])


def test_a_chunk_retry_waits_its_countdown_on_the_broker(own_queue):
    before = timezone.now()
    delivery_queue.enqueue_chunk("push-1", [7, 8], countdown=5)

    message = own_queue(own_queue.name)
    assert message is not None, "nothing reached the broker"
    assert message.headers["task"] == "templates_app.deliver_chunk"
    assert json.loads(message.body)[0] == ["push-1", [7, 8]]
    assert before + timedelta(seconds=4) <= _eta(message) <= timezone.now() + timedelta(seconds=6)
    assert message.properties.get("delivery_mode") == 2  # persistent: on RabbitMQ it survives a restart


def test_no_countdown_outlasts_the_brokers_unacked_limit(own_queue, settings):
    # An ETA task waits unacknowledged in a worker: past RabbitMQ's consumer_timeout its channel is closed
    # (Redis: redelivered after the visibility timeout). The pipeline never asks for more than the cap.
    settings.BROKER_MAX_COUNTDOWN = 30
    before = timezone.now()
    delivery_queue.enqueue_chunk("push-2", [9], countdown=3600)

    eta = _eta(own_queue(own_queue.name))
    assert before + timedelta(seconds=29) <= eta <= timezone.now() + timedelta(seconds=31)


def test_the_default_cap_is_far_below_rabbitmqs_consumer_timeout_and_above_every_pipeline_countdown():
    # RabbitMQ's default consumer_timeout is 30 min; the pipeline's longest countdown is the in-flight lease
    # + 1 s, its longest backoff DELIVERY_RETRY_MAX: none is cut by the cap with the defaults.
    assert settings.BROKER_MAX_COUNTDOWN <= 15 * 60
    assert settings.BROKER_MAX_COUNTDOWN > max(
        settings.DELIVERY_IN_FLIGHT_LEASE + 1, settings.DELIVERY_RETRY_MAX
    )


def test_a_webhook_drain_goes_to_the_webhook_queue_not_the_senders(own_queue):
    webhook_queue.enqueue("endpoint-1")

    message = own_queue(f"{own_queue.name}-webhooks")
    assert message is not None and message.headers["task"] == "webhooks.drain_endpoint"
    assert json.loads(message.body)[0] == ["endpoint-1"]
    assert own_queue(own_queue.name) is None  # nothing on the senders' queue


def _broker_settings(url: str) -> dict:
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.BROKER_KIND, s.CELERY_BROKER_TRANSPORT_OPTIONS, s.REDIS_URL]))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "pushhub.settings", "CELERY_BROKER_URL": url}
    env["REDIS_URL"] = "redis://127.0.0.1:6379/9"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    kind, options, redis_url = json.loads(result.stdout.strip().splitlines()[-1])
    return {"kind": kind, "options": options, "redis_url": redis_url}


def test_each_broker_gets_only_its_own_transport_options():
    rabbit = _broker_settings("amqp://guest:guest@127.0.0.1:5672/pushhub")
    assert rabbit == {
        "kind": "rabbitmq",
        "options": {"confirm_publish": True},
        "redis_url": "redis://127.0.0.1:6379/9",
    }
    redis = _broker_settings("redis://127.0.0.1:6379/9")
    assert redis["kind"] == "redis" and redis["options"] == {"visibility_timeout": 3600}


def test_readyz_is_503_naming_an_unreachable_rabbitmq_without_its_address(db, client, monkeypatch):
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)  # Celery prefers it to conf.broker_url
    monkeypatch.setattr(celery_app.conf, "broker_url", "amqp://pushhub:s3cret-pass@127.0.0.1:1/prod")
    monkeypatch.setattr(health, "BROKER_TIMEOUT", 0.5)

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["broker"]["status"].startswith("error: ")
    assert response.json()["checks"]["database"]["status"] == "ok"
    text = response.content.decode()
    assert "s3cret" not in text and "127.0.0.1" not in text and "prod" not in text

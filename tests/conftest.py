"""Shared fixtures: three personas (owner, member, outsider), keys, and the sandbox over real HTTP."""

from __future__ import annotations

import secrets
import uuid

import pytest
from rest_framework.test import APIClient

from pushhub.wechat import sending
from pushhub.wechat.client import close_http_session
from tenants import services
from tenants.models import Membership

SECRET = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="session", autouse=True)
def _celery_queue_of_our_own():
    """Tasks the tests queue (e.g. a trigger's deliver_push) go to a queue of this run's own, deleted at the
    end: the real broker, and nothing left behind for a developer's running worker to pick up."""
    from django.conf import settings

    from pushhub.celery import app

    queue = f"pushhub-tests-{uuid.uuid4().hex[:10]}"
    previous, previous_webhooks = app.conf.task_default_queue, settings.WEBHOOK_QUEUE
    lanes = ("SEND_QUEUE", "BROADCAST_QUEUE", "MAINTENANCE_QUEUE")
    previous_lanes = {name: getattr(settings, name) for name in lanes}
    app.conf.task_default_queue = queue
    settings.WEBHOOK_QUEUE = f"{queue}-webhooks"  # the webhook workers' queue: ours too
    for name in lanes:  # the delivery lanes: all on our queue (tests of the lanes set their own)
        setattr(settings, name, queue)
    yield queue
    app.conf.task_default_queue, settings.WEBHOOK_QUEUE = previous, previous_webhooks
    for name, value in previous_lanes.items():
        setattr(settings, name, value)
    try:
        with app.connection_for_write() as connection:
            for name in (queue, f"{queue}-webhooks"):
                connection.default_channel.queue_delete(name)
    except Exception:  # the broker may be gone at teardown; nothing to clean then
        pass


@pytest.fixture(autouse=True)
def _fast_and_isolated(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # A cache namespace of its own per test: real Redis in CI, nothing shared between tests, no FLUSHDB.
    caches = {name: dict(conf) for name, conf in settings.CACHES.items()}
    caches["default"]["KEY_PREFIX"] = f"test-{uuid.uuid4().hex[:12]}"
    settings.CACHES = caches
    # Sandbox apps registered by a test push their WeChat events nowhere (discard port) unless the test
    # serves PushHub over HTTP (sandbox_base), so a developer's running `make run` never receives them.
    settings.SANDBOX_EVENTS_BASE = "http://127.0.0.1:9"
    # The broadcast share reorders a tenant's chunks (parked beyond its window): tests of the pipeline see them
    # queued as the pipeline makes them; tests/delivery/test_lanes.py turns it on.
    settings.BROADCAST_SHARE = False
    # The in-process token memo is keyed like the cache, whose namespace changes per test: start empty.
    from pushhub.wechat import tokens

    tokens.clear_memo()
    # The SDK's cache of live apps (per process) starts empty too: apps of an earlier test are gone.
    from formids import live_apps

    live_apps.forget_all()


def random_appid() -> str:
    return "wx" + secrets.token_hex(8)


def random_secret() -> str:
    return secrets.token_hex(16)


@pytest.fixture
def tenant(db):
    return services.create_tenant("Acme", "owner@acme.test", password="correct horse battery").tenant


@pytest.fixture
def other_tenant(db):
    return services.create_tenant("Globex", "owner@globex.test", password="correct horse battery").tenant


@pytest.fixture
def viewer(tenant, django_user_model):
    user = django_user_model.objects.create_user(
        "viewer@acme.test", "viewer@acme.test", "correct horse battery"
    )
    Membership.objects.create(tenant=tenant, user=user, role=Membership.Role.VIEWER)
    return user


def api_client(raw_key: str | None) -> APIClient:
    client = APIClient()
    if raw_key:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


@pytest.fixture
def write_key(tenant):
    return services.create_api_key(tenant, "write", name="tests")[1]


@pytest.fixture
def read_key(tenant):
    return services.create_api_key(tenant, "read", name="tests")[1]


@pytest.fixture
def api(write_key):
    return api_client(write_key)


@pytest.fixture
def read_api(read_key):
    return api_client(read_key)


@pytest.fixture
def outsider_api(other_tenant):
    return api_client(services.create_api_key(other_tenant, "write", name="outsider")[1])


@pytest.fixture
def sandbox_app(tenant):
    return services.register_app(
        tenant, appid=random_appid(), secret=random_secret(), name="Sandbox shop", sandbox_app=True
    )


@pytest.fixture
def sandbox_base(live_server, settings):
    """The sandbox served over real HTTP by the live server; every app (sandbox or not) points at it."""
    base = f"{live_server.url}/sandbox/wechat"
    settings.SANDBOX_API_BASE = base
    settings.WECHAT_API_BASE = base
    settings.SANDBOX_EVENTS_BASE = live_server.url
    yield base
    # Keep-alive sockets would keep the live server's request threads (and their DB connections) alive.
    close_http_session()
    sending.close()

"""The SSRF guard: which URLs may be registered, and the check again before every attempt (DNS can change)."""

from __future__ import annotations

import pytest

from webhooks import guard, outbox, services
from webhooks.models import EventDispatch, WebhookAttempt, WebhookEndpoint

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _guarded(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False


PRIVATE = [
    "http://127.0.0.1/x",
    "http://localhost:8000/x",
    "http://10.1.2.3/x",
    "http://172.16.0.1/x",
    "http://192.168.1.1/x",
    "http://169.254.169.254/latest/meta-data",  # cloud metadata: link-local
    "http://100.64.0.1/x",  # carrier-grade NAT (shared)
    "http://0.0.0.0/x",
    "http://224.0.0.1/x",  # multicast
    "http://240.0.0.1/x",  # reserved
    "http://[::1]/x",
    "http://[fe80::1]/x",
    "http://[fc00::1]/x",
    "http://[::ffff:127.0.0.1]/x",  # IPv4-mapped loopback
]


@pytest.mark.parametrize("url", PRIVATE)
def test_non_public_targets_are_refused_at_registration(api, url):
    response = api.post("/api/v1/webhooks", {"url": url, "events": ["*"]}, format="json")
    assert response.status_code == 400, url
    assert response.json()["error"] == {
        "code": "invalid_url",
        "message": response.json()["error"]["message"],
        "field": "url",
    }
    assert "non-public" in response.json()["error"]["message"]
    assert not WebhookEndpoint.objects.exists()


def test_webhook_allow_private_lifts_it(api, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    response = api.post(
        "/api/v1/webhooks", {"url": "http://127.0.0.1:8000/x", "events": ["*"]}, format="json"
    )
    assert response.status_code == 201


def test_production_takes_https_only(api, settings):
    settings.PRODUCTION = True
    response = api.post("/api/v1/webhooks", {"url": "http://93.184.216.34/x", "events": ["*"]}, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_url"
    assert "https" in response.json()["error"]["message"]
    ok = api.post("/api/v1/webhooks", {"url": "https://93.184.216.34/x", "events": ["*"]}, format="json")
    assert ok.status_code == 201


def test_a_host_that_does_not_resolve_is_refused(api, monkeypatch):
    def nowhere(host, port):
        raise guard.BlockedUrl(f"the host {host!r} does not resolve")

    monkeypatch.setattr(guard, "resolve", nowhere)
    response = api.post(
        "/api/v1/webhooks", {"url": "https://hooks.example.com/x", "events": ["*"]}, format="json"
    )
    assert response.status_code == 400 and "does not resolve" in response.json()["error"]["message"]


def test_a_host_that_resolves_to_any_private_address_is_refused(api, monkeypatch):
    monkeypatch.setattr(guard, "resolve", lambda host, port: ["93.184.216.34", "10.0.0.5"])
    response = api.post(
        "/api/v1/webhooks", {"url": "https://hooks.example.com/x", "events": ["*"]}, format="json"
    )
    assert response.status_code == 400 and "10.0.0.5" in response.json()["error"]["message"]


@pytest.mark.django_db(transaction=True)
def test_the_check_runs_again_before_each_attempt(tenant, monkeypatch):
    """Registered while the name pointed at a public address; it now points at the metadata service: the
    attempt is refused (and logged), nothing is sent, the event waits for a retry."""
    from webhooks import dispatch, queue

    monkeypatch.setattr(queue, "enqueue", lambda endpoint_id: None)
    monkeypatch.setattr(guard, "resolve", lambda host, port: ["93.184.216.34"])
    endpoint, _ = services.create_endpoint(tenant, url="https://hooks.example.com/x", events=["*"])
    outbox.record(tenant.pk, outbox.WEBHOOK_TEST, [{}], endpoint_ids=[endpoint.pk])
    monkeypatch.setattr(guard, "resolve", lambda host, port: ["169.254.169.254"])
    sent = []
    monkeypatch.setattr(dispatch.transport, "post", lambda *args: sent.append(args))
    dispatch.drain_endpoint(endpoint.pk)
    attempt = WebhookAttempt.objects.get(endpoint=endpoint)
    assert sent == [] and attempt.status_code is None
    assert attempt.error.startswith("refused:") and "169.254.169.254" in attempt.error
    assert EventDispatch.objects.get(endpoint=endpoint).status == "pending"


def test_the_attempt_connects_to_the_address_that_was_checked(monkeypatch):
    monkeypatch.setattr(guard, "resolve", lambda host, port: ["93.184.216.34"])
    target = guard.check("https://hooks.example.com:8443/in?x=1")
    assert (target.address, target.host, target.port, target.path) == (
        "93.184.216.34",
        "hooks.example.com",
        8443,
        "/in?x=1",
    )

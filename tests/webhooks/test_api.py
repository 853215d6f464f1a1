"""/api/v1/webhooks: the contract's endpoints, their errors, and tenant isolation."""

from __future__ import annotations

import base64

import pytest

from tenants.models import AuditEvent
from webhooks import services
from webhooks.models import EventDispatch, WebhookEndpoint

pytestmark = pytest.mark.django_db

URL = "https://93.184.216.34/hooks"  # a public address: needs no DNS, passes the SSRF guard


@pytest.fixture(autouse=True)
def _guarded(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False


def create(api, **body):
    return api.post("/api/v1/webhooks", {"url": URL, "events": ["push.finished"], **body}, format="json")


def test_it_creates_an_endpoint_and_shows_the_secret_once(api, tenant):
    response = create(api, events=["push.finished", "deliveries.failed"], description="ops")
    assert response.status_code == 201
    body = response.json()
    assert body["url"] == URL and body["events"] == ["push.finished", "deliveries.failed"]
    assert body["enabled"] is True and body["description"] == "ops"
    assert body["created_at"].endswith("Z")
    assert body["secret"].startswith("whsec_") and len(base64.b64decode(body["secret"][6:])) >= 24
    shown = api.get(f"/api/v1/webhooks/{body['id']}").json()
    assert "secret" not in shown and shown["id"] == body["id"]
    assert "secret" not in api.get("/api/v1/webhooks").json()["results"][0]
    stored = WebhookEndpoint.objects.get(pk=body["id"])
    assert body["secret"] not in stored.secret_ciphertext and stored.get_secret() == body["secret"]
    audit = AuditEvent.objects.get(tenant=tenant, action="webhook.create")
    assert body["secret"] not in str(audit.data)


def test_star_means_every_event(api):
    assert create(api, events=["*", "push.finished"]).json()["events"] == ["*"]


def test_rotate_secret_answers_the_new_one(api, tenant):
    created = create(api).json()
    response = api.post(f"/api/v1/webhooks/{created['id']}/rotate-secret")
    assert response.status_code == 200
    secret = response.json()["secret"]
    assert secret.startswith("whsec_") and secret != created["secret"]
    assert WebhookEndpoint.objects.get(pk=created["id"]).get_secret() == secret
    assert AuditEvent.objects.filter(tenant=tenant, action="webhook.rotate_secret").count() == 1


def test_patch_changes_url_events_enabled_description(api):
    created = create(api).json()
    response = api.patch(
        f"/api/v1/webhooks/{created['id']}",
        {"url": "https://93.184.216.35/other", "events": ["*"], "enabled": False, "description": "x"},
        format="json",
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["url"], body["events"], body["enabled"], body["description"]) == (
        "https://93.184.216.35/other",
        ["*"],
        False,
        "x",
    )


def test_delete_answers_204_and_the_endpoint_is_gone(api):
    created = create(api).json()
    assert api.delete(f"/api/v1/webhooks/{created['id']}").status_code == 204
    assert api.get(f"/api/v1/webhooks/{created['id']}").status_code == 404


def test_the_list_is_paginated(api):
    for _ in range(3):
        create(api)
    first = api.get("/api/v1/webhooks?limit=2").json()
    assert len(first["results"]) == 2 and first["next"]
    second = api.get(first["next"]).json()
    assert len(second["results"]) == 1 and second["next"] is None


def test_a_test_event_is_queued_for_that_endpoint(api):
    created = create(api).json()
    response = api.post(f"/api/v1/webhooks/{created['id']}/test")
    assert response.status_code == 202
    dispatch = EventDispatch.objects.get(event_id=response.json()["event_id"])
    assert str(dispatch.endpoint_id) == created["id"] and dispatch.event.type == "webhook.test"


def test_a_disabled_endpoint_gets_no_test_event(api):
    created = create(api).json()
    api.patch(f"/api/v1/webhooks/{created['id']}", {"enabled": False}, format="json")
    response = api.post(f"/api/v1/webhooks/{created['id']}/test")
    assert response.status_code == 409 and response.json()["error"]["code"] == "webhook_disabled"


def test_resending_an_event_the_endpoint_never_had_is_404(api):
    created = create(api).json()
    response = api.post(f"/api/v1/webhooks/{created['id']}/events/msg_nope/resend")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"url": "not a url"}, "url", "invalid_url"),
        ({"url": "ftp://93.184.216.34/x"}, "url", "invalid_url"),
        ({"url": "https://user:pw@93.184.216.34/x"}, "url", "invalid_url"),
        ({"url": 12}, "url", "validation_error"),
        ({"events": ["push.sent"]}, "events", "validation_error"),
        ({"events": []}, "events", "validation_error"),
        ({"events": "push.finished"}, "events", "validation_error"),
        ({"description": "x" * 201}, "description", "validation_error"),
        ({"secret": "whsec_mine"}, "secret", "validation_error"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, body, field, code):
    response = create(api, **body)
    assert response.status_code == 400, response.json()
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["field"] == field
    assert not WebhookEndpoint.objects.exists()


def test_a_bad_patch_changes_nothing(api):
    created = create(api).json()
    response = api.patch(f"/api/v1/webhooks/{created['id']}", {"url": "http://10.0.0.1/x"}, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_url"
    assert WebhookEndpoint.objects.get(pk=created["id"]).url == URL


def test_a_tenant_has_at_most_20_endpoints(api, tenant):
    for _ in range(services.MAX_ENDPOINTS):
        assert create(api).status_code == 201
    response = create(api)
    assert response.status_code == 409 and response.json()["error"]["code"] == "too_many_webhooks"
    assert WebhookEndpoint.objects.for_tenant(tenant).count() == services.MAX_ENDPOINTS


def test_a_read_key_reads_but_does_not_write(api, read_api):
    created = create(api).json()
    assert read_api.get("/api/v1/webhooks").status_code == 200
    assert read_api.get(f"/api/v1/webhooks/{created['id']}/attempts").status_code == 200
    for method, path in [
        ("post", "/api/v1/webhooks"),
        ("patch", f"/api/v1/webhooks/{created['id']}"),
        ("delete", f"/api/v1/webhooks/{created['id']}"),
        ("post", f"/api/v1/webhooks/{created['id']}/rotate-secret"),
        ("post", f"/api/v1/webhooks/{created['id']}/test"),
        ("post", f"/api/v1/webhooks/{created['id']}/events/msg_x/resend"),
    ]:
        response = getattr(read_api, method)(path, {"url": URL, "events": ["*"]}, format="json")
        assert response.status_code == 403, path
        assert response.json()["error"]["code"] == "permission_denied"
    assert WebhookEndpoint.objects.count() == 1


def test_another_tenants_endpoint_is_not_found(api, outsider_api):
    created = create(api).json()
    base = f"/api/v1/webhooks/{created['id']}"
    for method, path in [
        ("get", base),
        ("patch", base),
        ("delete", base),
        ("post", f"{base}/rotate-secret"),
        ("post", f"{base}/test"),
        ("get", f"{base}/attempts"),
        ("post", f"{base}/events/msg_x/resend"),
    ]:
        response = getattr(outsider_api, method)(path, {"enabled": False}, format="json")
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    assert outsider_api.get("/api/v1/webhooks").json()["results"] == []
    endpoint = WebhookEndpoint.objects.get(pk=created["id"])
    assert endpoint.enabled and endpoint.get_secret() == created["secret"]


def test_a_malformed_id_is_a_json_404(api):
    response = api.get("/api/v1/webhooks/not-a-uuid")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_without_a_key_it_is_401(client):
    response = client.get("/api/v1/webhooks")
    assert response.status_code == 401

"""Webhook pages: the list and create form, one endpoint's page (secret shown once, rotate, enable / disable,
edit, delete, test event, attempts log, resend); viewers read only, outsiders get 404; and the admin console."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.admin.utils import quote
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tenants.models import AuditEvent
from tests.dashboard.conftest import PASSWORD, signed_in
from tests.webhooks.conftest import Drains
from tests.webhooks.receiver import Receiver
from webhooks import dispatch, outbox, queue, services, transport
from webhooks.dashboard_views import ATTEMPTS_PAGE_SIZE, NEW_SECRET_SESSION_KEY
from webhooks.models import EventDispatch, WebhookAttempt, WebhookEndpoint, WebhookEvent

pytestmark = pytest.mark.django_db

URL = "https://93.184.216.34/hooks"  # a public address: needs no DNS, passes the SSRF guard
SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]+")


@pytest.fixture(autouse=True)
def _guarded(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False


@pytest.fixture
def drains(monkeypatch) -> Drains:
    queued = Drains()
    monkeypatch.setattr(queue, "enqueue", queued)
    return queued


@pytest.fixture
def receiver(settings):
    """tests/webhooks' verifying receiver on loopback (so private targets are allowed for these tests)."""
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_TIMEOUT = 2.0
    served = Receiver().start()
    yield served
    served.stop()
    transport.close_pools()


@pytest.fixture
def endpoint(tenant) -> WebhookEndpoint:
    return services.create_endpoint(
        tenant, url=URL, events=["push.finished"], description="ops", actor="test"
    )[0]


@pytest.fixture
def live_endpoint(tenant, receiver, drains) -> WebhookEndpoint:
    """An endpoint at the receiver, which knows its secret."""
    created, secret = services.create_endpoint(tenant, url=receiver.url, events=["*"], actor="test")
    receiver.secret = secret
    return created


def detail(endpoint) -> str:
    return reverse("webhook-detail", args=[endpoint.pk])


def secrets_in(response) -> list[str]:
    return SECRET.findall(response.content.decode())


def record_test_event(endpoint) -> WebhookEvent:
    (event,) = outbox.record(endpoint.tenant_id, outbox.WEBHOOK_TEST, [{"n": 1}], endpoint_ids=[endpoint.pk])
    return event


# --- the list and create -----------------------------------------------------------------------------
def test_the_list_shows_each_endpoint_with_its_state(owner_client, tenant, endpoint):
    off = services.create_endpoint(tenant, url=URL + "/off", events=["*"], actor="test")[0]
    services.update_endpoint(off, enabled=False)
    failing = services.create_endpoint(tenant, url=URL + "/failing", events=["*"], actor="test")[0]
    since = timezone.now() - timedelta(days=6)
    WebhookEndpoint.objects.filter(pk=failing.pk).update(
        enabled=False, disabled_reason="failing", failing_since=since
    )

    page = owner_client.get(reverse("webhook-list"))
    assert page.status_code == 200
    html = page.content.decode()
    for each in (endpoint, off, failing):
        assert detail(each) in html and each.url in html
    assert "<code>push.finished</code>" in html and "All events" in html
    assert "disabled: failing" in html and "its events failed for 5 days" in html
    assert since.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ") in html
    assert endpoint.created_at.strftime("%Y-%m-%dT%H:%M:") in html
    assert not secrets_in(page)


def test_create_shows_the_secret_once(owner_client, tenant):
    response = owner_client.post(
        reverse("webhook-list"),
        {"url": URL, "events": ["push.finished", "deliveries.failed"], "description": "ops"},
    )
    created = WebhookEndpoint.objects.get(tenant=tenant)
    assert response.status_code == 302 and response["Location"] == detail(created)
    assert (created.url, created.events, created.description) == (
        URL,
        ["push.finished", "deliveries.failed"],
        "ops",
    )

    first = owner_client.get(detail(created))
    assert first.status_code == 200
    assert secrets_in(first) == [created.get_secret()]
    assert "no-cache" in first["Cache-Control"] or "max-age=0" in first["Cache-Control"]
    assert NEW_SECRET_SESSION_KEY not in owner_client.session
    assert not secrets_in(owner_client.get(detail(created)))  # never again
    assert not secrets_in(owner_client.get(reverse("webhook-list")))
    assert AuditEvent.objects.filter(tenant=tenant, action="webhook.create").count() == 1


def test_all_events_wins_over_the_other_checkboxes(owner_client, tenant):
    owner_client.post(reverse("webhook-list"), {"url": URL, "events": ["*", "push.finished"]})
    assert WebhookEndpoint.objects.get(tenant=tenant).events == ["*"]


def test_a_private_url_is_a_form_error_and_creates_nothing(owner_client, tenant):
    response = owner_client.post(reverse("webhook-list"), {"url": "http://10.0.0.1/x", "events": ["*"]})
    assert response.status_code == 400
    assert re.search(r'id="error-url">[^<]*non-public address', response.content.decode())
    assert 'value="http://10.0.0.1/x"' in response.content.decode()  # the form keeps what was typed
    assert not WebhookEndpoint.objects.filter(tenant=tenant).exists()


def test_no_event_type_chosen_is_a_form_error(owner_client, tenant):
    response = owner_client.post(reverse("webhook-list"), {"url": URL})
    assert response.status_code == 400
    assert 'id="error-events"' in response.content.decode()
    assert not WebhookEndpoint.objects.filter(tenant=tenant).exists()


def test_the_twenty_first_endpoint_is_refused_on_the_form(owner_client, tenant):
    for n in range(services.MAX_ENDPOINTS):
        services.create_endpoint(tenant, url=f"{URL}/{n}", events=["*"], actor="test")
    response = owner_client.post(reverse("webhook-list"), {"url": URL, "events": ["*"]})
    assert response.status_code == 400
    assert 'id="error-form">a tenant has at most 20 webhook endpoints' in response.content.decode()


# --- one endpoint --------------------------------------------------------------------------------------
def test_rotate_shows_the_new_secret_once(owner_client, tenant, endpoint):
    old = endpoint.get_secret()
    response = owner_client.post(reverse("webhook-rotate-secret", args=[endpoint.pk]))
    assert response.status_code == 302 and response["Location"] == detail(endpoint)
    endpoint.refresh_from_db()
    new = endpoint.get_secret()
    assert new != old
    assert secrets_in(owner_client.get(detail(endpoint))) == [new]
    assert not secrets_in(owner_client.get(detail(endpoint)))
    assert AuditEvent.objects.filter(tenant=tenant, action="webhook.rotate_secret").count() == 1


def test_a_new_secret_is_shown_only_on_its_own_endpoints_page(owner_client, tenant, endpoint):
    other = services.create_endpoint(tenant, url=URL + "/2", events=["*"], actor="test")[0]
    owner_client.post(reverse("webhook-rotate-secret", args=[endpoint.pk]))
    assert not secrets_in(owner_client.get(detail(other)))
    endpoint.refresh_from_db()
    assert secrets_in(owner_client.get(detail(endpoint))) == [endpoint.get_secret()]


def test_disable_and_enable(owner_client, endpoint):
    update = reverse("webhook-update", args=[endpoint.pk])
    assert owner_client.post(update, {"enabled": "false"}).status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.enabled is False and endpoint.disabled_reason == ""
    page = owner_client.get(detail(endpoint)).content.decode()
    assert ">disabled<" in page and 'name="enabled" value="true"' in page
    assert reverse("webhook-test", args=[endpoint.pk]) not in page  # a disabled endpoint gets no test

    assert owner_client.post(update, {"enabled": "true"}).status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.enabled is True


def test_enabling_a_failing_endpoint_clears_its_failure(owner_client, endpoint):
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        enabled=False, disabled_reason="failing", failing_since=timezone.now() - timedelta(days=5)
    )
    assert "PushHub disabled it" in owner_client.get(detail(endpoint)).content.decode()
    owner_client.post(reverse("webhook-update", args=[endpoint.pk]), {"enabled": "true"})
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.disabled_reason, endpoint.failing_since) == (True, "", None)


def test_the_settings_form_changes_url_events_and_description(owner_client, endpoint):
    response = owner_client.post(
        reverse("webhook-update", args=[endpoint.pk]),
        {"url": "https://93.184.216.35/new", "events": ["message.opened"], "description": "new"},
    )
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert (endpoint.url, endpoint.events, endpoint.description) == (
        "https://93.184.216.35/new",
        ["message.opened"],
        "new",
    )


def test_a_bad_url_in_the_settings_form_changes_nothing(owner_client, endpoint):
    response = owner_client.post(
        reverse("webhook-update", args=[endpoint.pk]), {"url": "ftp://x", "events": ["*"]}
    )
    assert response.status_code == 400
    assert 'id="error-url">url must be an http(s) URL with a host' in response.content.decode()
    endpoint.refresh_from_db()
    assert (endpoint.url, endpoint.events) == (URL, ["push.finished"])


def test_delete_removes_the_endpoint(owner_client, tenant, endpoint):
    page = owner_client.get(detail(endpoint)).content.decode()
    assert "data-confirm=" in page and reverse("webhook-delete", args=[endpoint.pk]) in page
    response = owner_client.post(reverse("webhook-delete", args=[endpoint.pk]))
    assert response.status_code == 302 and response["Location"] == reverse("webhook-list")
    assert not WebhookEndpoint.objects.filter(pk=endpoint.pk).exists()
    assert owner_client.get(detail(endpoint)).status_code == 404
    assert AuditEvent.objects.filter(tenant=tenant, action="webhook.delete").count() == 1


def test_send_test_queues_a_test_event(owner_client, endpoint, drains, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(reverse("webhook-test", args=[endpoint.pk]))
    assert response.status_code == 302
    (queued,) = EventDispatch.objects.filter(endpoint=endpoint)
    assert queued.status == "pending" and queued.event.type == "webhook.test"
    assert drains.queued == [str(endpoint.pk)]
    page = owner_client.get(detail(endpoint)).content.decode()
    assert queued.event_id in page  # the message naming the event
    assert '<dd id="pending-events">1</dd>' in page


def test_a_test_event_for_a_disabled_endpoint_is_a_form_error(owner_client, endpoint):
    services.update_endpoint(endpoint, enabled=False)
    response = owner_client.post(reverse("webhook-test", args=[endpoint.pk]))
    assert response.status_code == 400
    assert 'id="error-form">the endpoint is disabled' in response.content.decode()
    assert not EventDispatch.objects.filter(endpoint=endpoint).exists()


# --- the attempts log and resend ---------------------------------------------------------------------
def test_the_attempts_log_shows_an_attempt(owner_client, live_endpoint, receiver, drains):
    receiver.answers.append(500)
    receiver.body = b"receiver says no"
    event = record_test_event(live_endpoint)
    assert dispatch.drain_endpoint(live_endpoint.pk) == 1
    (attempt,) = WebhookAttempt.objects.filter(endpoint=live_endpoint)

    response = owner_client.get(detail(live_endpoint))
    html = response.content.decode()
    (row,) = re.findall(r"<tr>\s*<td><time>.*?</tr>", html, flags=re.S)
    assert f"<code>{event.pk}</code>" in row and "<code>webhook.test</code>" in row
    assert "#1" in row and ">500<" in row and "receiver says no" in row
    assert attempt.next_attempt_at.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ") in row
    assert reverse("webhook-resend", args=[live_endpoint.pk, event.pk]) in row


def test_resend_sends_the_event_again(owner_client, live_endpoint, receiver, drains):
    event = record_test_event(live_endpoint)
    dispatch.drain_endpoint(live_endpoint.pk)
    assert EventDispatch.objects.get(event=event).status == "succeeded"

    response = owner_client.post(reverse("webhook-resend", args=[live_endpoint.pk, event.pk]))
    assert response.status_code == 302 and response["Location"] == detail(live_endpoint)
    assert EventDispatch.objects.get(event=event).status == "pending"
    dispatch.drain_endpoint(live_endpoint.pk)
    assert [r.webhook_id for r in receiver.received] == [event.pk, event.pk]

    html = owner_client.get(detail(live_endpoint)).content.decode()
    assert html.index("#2") < html.index("#1")  # newest first
    assert AuditEvent.objects.filter(action="webhook.resend").count() == 1


def test_resending_an_event_the_endpoint_never_had_is_a_form_error(owner_client, endpoint):
    response = owner_client.post(reverse("webhook-resend", args=[endpoint.pk, "msg_nothing"]))
    assert response.status_code == 400
    assert 'id="error-form">This endpoint has no event with that id.' in response.content.decode()


def test_the_attempts_log_pages_newest_first(owner_client, endpoint):
    event = record_test_event(endpoint)
    queued = EventDispatch.objects.get(event=event)
    for n in range(1, ATTEMPTS_PAGE_SIZE + 3):
        WebhookAttempt.objects.create(
            dispatch=queued, endpoint=endpoint, event=event, attempt=n, status_code=503
        )
    first = owner_client.get(detail(endpoint))
    numbers = [a["attempt"].attempt for a in first.context["rows"]]
    assert numbers == list(range(ATTEMPTS_PAGE_SIZE + 2, 2, -1))
    second = owner_client.get(detail(endpoint), {"page": 2})
    assert [a["attempt"].attempt for a in second.context["rows"]] == [2, 1]
    assert "Page 2 of 2" in second.content.decode()


# --- who may do what ---------------------------------------------------------------------------------
def write_routes(endpoint) -> list[tuple[str, dict]]:
    return [
        (reverse("webhook-list"), {"url": URL, "events": ["*"]}),
        (reverse("webhook-update", args=[endpoint.pk]), {"enabled": "false"}),
        (reverse("webhook-update", args=[endpoint.pk]), {"url": URL + "/x", "events": ["*"]}),
        (reverse("webhook-rotate-secret", args=[endpoint.pk]), {}),
        (reverse("webhook-test", args=[endpoint.pk]), {}),
        (reverse("webhook-resend", args=[endpoint.pk, "msg_x"]), {}),
        (reverse("webhook-delete", args=[endpoint.pk]), {}),
    ]


def state(endpoint) -> tuple:
    endpoint.refresh_from_db()
    return (
        endpoint.url,
        endpoint.events,
        endpoint.enabled,
        endpoint.secret_ciphertext,
        WebhookEndpoint.objects.count(),
        EventDispatch.objects.count(),
    )


def test_a_viewer_sees_the_pages_without_write_buttons(viewer_client, endpoint):
    listing = viewer_client.get(reverse("webhook-list"))
    assert listing.status_code == 200 and endpoint.url in listing.content.decode()
    assert 'name="events"' not in listing.content.decode()
    page = viewer_client.get(detail(endpoint))
    assert page.status_code == 200
    html = page.content.decode()
    for name in ("webhook-update", "webhook-rotate-secret", "webhook-test", "webhook-delete"):
        assert reverse(name, args=[endpoint.pk]) not in html, name
    assert "you can see this endpoint" in html


def test_a_viewer_gets_403_on_every_change(viewer_client, endpoint):
    before = state(endpoint)
    for url, body in write_routes(endpoint):
        assert viewer_client.post(url, body).status_code == 403, url
    assert state(endpoint) == before


def test_an_outsider_gets_404_and_does_not_see_the_endpoint(outsider_client, endpoint):
    assert endpoint.url not in outsider_client.get(reverse("webhook-list")).content.decode()
    assert outsider_client.get(detail(endpoint)).status_code == 404
    before = state(endpoint)
    for url, body in write_routes(endpoint)[1:]:
        assert outsider_client.post(url, body).status_code == 404, url
    assert state(endpoint) == before


def test_posts_need_the_csrf_token(tenant, endpoint):
    browser = Client(enforce_csrf_checks=True)
    assert browser.login(username="owner@acme.test", password=PASSWORD)
    assert browser.post(reverse("webhook-delete", args=[endpoint.pk])).status_code == 403
    assert WebhookEndpoint.objects.filter(pk=endpoint.pk).exists()


def test_signed_out_visitors_are_sent_to_log_in(client, endpoint):
    response = client.get(reverse("webhook-list"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_the_nav_links_to_the_webhooks_page(owner_client):
    assert f'href="{reverse("webhook-list")}"' in owner_client.get(reverse("members")).content.decode()


def test_the_pages_in_chinese(tenant, endpoint):
    owner = signed_in("owner@acme.test")
    owner.cookies["django_language"] = "zh-hans"
    listing = owner.get(reverse("webhook-list")).content.decode()
    assert "添加端点" in listing and "消息被打开" in listing
    assert "发送测试事件" in owner.get(detail(endpoint)).content.decode()
    refused = owner.post(reverse("webhook-list"), {"url": "ftp://x", "events": ["*"]}).content.decode()
    assert "URL 必须是带主机名的 http(s) 地址" in refused


# --- admin -------------------------------------------------------------------------------------------
@pytest.fixture
def ops(client, django_user_model):
    django_user_model.objects.create_superuser("root", "root@pushhub.test", PASSWORD)
    client.login(username="root", password=PASSWORD)
    return client


@pytest.fixture
def logged(endpoint) -> WebhookAttempt:
    """An event for the endpoint with one failed attempt in its log."""
    event = record_test_event(endpoint)
    queued = EventDispatch.objects.get(event=event)
    return WebhookAttempt.objects.create(
        dispatch=queued,
        endpoint=endpoint,
        event=event,
        attempt=1,
        status_code=502,
        error="",
        response_body="x",
    )


@pytest.mark.parametrize("model", ["webhookendpoint", "webhookevent", "eventdispatch", "webhookattempt"])
def test_the_admin_pages_load(ops, logged, model):
    changelist = ops.get(reverse(f"admin:webhooks_{model}_changelist"))
    assert changelist.status_code == 200
    obj = {
        "webhookendpoint": logged.endpoint_id,
        "webhookevent": logged.event_id,
        "eventdispatch": logged.dispatch_id,
        "webhookattempt": logged.pk,
    }[model]
    # quote(): the admin's own links escape ids ("evt_2F…" would otherwise be unquoted to "evt/…").
    assert ops.get(reverse(f"admin:webhooks_{model}_change", args=[quote(str(obj))])).status_code == 200


def test_the_admin_never_shows_the_secret(ops, endpoint):
    for url in (
        reverse("admin:webhooks_webhookendpoint_changelist"),
        reverse("admin:webhooks_webhookendpoint_change", args=[endpoint.pk]),
    ):
        html = ops.get(url).content.decode()
        assert endpoint.secret_ciphertext not in html and endpoint.get_secret() not in html
        assert "secret_ciphertext" not in html


def test_the_admin_disables_and_enables_through_the_services(ops, endpoint):
    changelist = reverse("admin:webhooks_webhookendpoint_changelist")
    for action, enabled in (("disable_endpoints", False), ("enable_endpoints", True)):
        response = ops.post(changelist, {"action": action, "_selected_action": [str(endpoint.pk)]})
        assert response.status_code == 302
        endpoint.refresh_from_db()
        assert endpoint.enabled is enabled
    assert AuditEvent.objects.filter(action="webhook.update", actor="user:root").count() == 2


def test_the_admin_resends_a_dispatch(ops, logged, drains):
    EventDispatch.objects.filter(pk=logged.dispatch_id).update(status="failed", finished_at=timezone.now())
    response = ops.post(
        reverse("admin:webhooks_eventdispatch_changelist"),
        {"action": "resend_now", "_selected_action": [str(logged.dispatch_id)]},
    )
    assert response.status_code == 302
    assert EventDispatch.objects.get(pk=logged.dispatch_id).status == "pending"
    assert AuditEvent.objects.filter(action="webhook.resend", actor="user:root").count() == 1

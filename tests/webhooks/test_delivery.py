"""The webhook workers against a real receiver: signatures a Standard Webhooks library verifies, retries with
the same webhook-id, the schedule, the attempts log, timeouts, redirects, disabling, resends, fairness."""

from __future__ import annotations

import socket
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from tenants.models import AuditEvent
from webhooks import dispatch, outbox, services
from webhooks.models import EventDispatch, WebhookAttempt, WebhookEndpoint

pytestmark = pytest.mark.django_db(transaction=True)


def record_test_event(endpoint, **data):
    (event,) = outbox.record(
        endpoint.tenant_id, outbox.WEBHOOK_TEST, [{"n": 1, **data}], endpoint_ids=[endpoint.pk]
    )
    return event


def make_due(endpoint) -> None:
    """Time passes: every pending retry of the endpoint is due now."""
    EventDispatch.objects.filter(endpoint=endpoint, status="pending").update(next_attempt_at=timezone.now())


def test_an_event_arrives_signed_and_the_library_verifies_it(endpoint, receiver, drains):
    event = record_test_event(endpoint, note="你好")
    assert drains.queued == [str(endpoint.pk)]  # queued for the webhook worker at commit
    drains.run()
    (got,) = receiver.received
    assert got.verified, "standardwebhooks.Webhook.verify refused our signature"
    assert got.webhook_id == event.pk and got.path == "/hooks/pushhub"
    assert got.headers["content-type"] == "application/json"
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 30
    assert got.event == {
        "type": "webhook.test",
        "timestamp": got.event["timestamp"],
        "data": {"n": 1, "note": "你好"},
    }
    assert got.event["timestamp"].endswith("Z")
    assert EventDispatch.objects.get(event=event).status == "succeeded"


def test_a_wrong_secret_does_not_verify(endpoint, receiver, drains):
    receiver.secret = services.new_secret()
    record_test_event(endpoint)
    drains.run()
    assert receiver.received and not receiver.received[0].verified


def test_failed_attempts_are_retried_with_the_same_webhook_id(endpoint, receiver, drains):
    receiver.answers.extend([500, 503])
    event = record_test_event(endpoint)
    drains.run()
    row = EventDispatch.objects.get(event=event)
    assert (row.status, row.attempts, row.retries) == ("pending", 1, 1)
    wait = (row.next_attempt_at - timezone.now()).total_seconds()
    assert 3 <= wait <= 6.5, "the first retry comes after about 5 s"
    dispatch.sweep()
    drains.run()
    assert len(receiver.received) == 1, "not due yet: nothing sent"
    for _ in range(2):
        make_due(endpoint)
        dispatch.sweep()
        drains.run()
    assert [r.answered for r in receiver.received] == [500, 503, 200]
    assert {r.webhook_id for r in receiver.received} == {event.pk}
    assert all(r.verified for r in receiver.received)
    assert len({r.body for r in receiver.received}) == 1, "the same body every time"
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("succeeded", 3)
    endpoint.refresh_from_db()
    assert endpoint.failing_since is None


def test_the_backoff_schedule_then_failure(endpoint, receiver, drains):
    receiver.default = 500
    event = record_test_event(endpoint)
    waits = []
    for _ in range(len(dispatch.RETRY_SCHEDULE) + 1):
        make_due(endpoint)
        drains(endpoint.pk)
        drains.run()
        row = EventDispatch.objects.get(event=event)
        if row.status == "pending":
            waits.append((row.next_attempt_at - timezone.now()).total_seconds())
    assert len(waits) == len(dispatch.RETRY_SCHEDULE)
    for wait, planned in zip(waits, dispatch.RETRY_SCHEDULE, strict=True):
        assert planned * 0.75 <= wait <= planned * 1.25
    row = EventDispatch.objects.get(event=event)
    assert (row.status, row.attempts) == ("failed", 8)
    log = list(WebhookAttempt.objects.filter(dispatch=row).order_by("attempt"))
    assert [a.attempt for a in log] == list(range(1, 9))
    assert all(a.status_code == 500 for a in log)
    assert log[-1].next_attempt_at is None and log[0].next_attempt_at is not None


def test_the_attempts_log_keeps_status_and_at_most_1_kib_of_the_answer(endpoint, receiver, drains, api):
    receiver.answers.append(422)
    receiver.body = b"x" * 5000
    event = record_test_event(endpoint)
    drains.run()
    response = api.get(f"/api/v1/webhooks/{endpoint.pk}/attempts")
    assert response.status_code == 200
    (attempt,) = response.json()["results"]
    assert attempt["event_id"] == event.pk and attempt["type"] == "webhook.test"
    assert attempt["attempt"] == 1 and attempt["status_code"] == 422 and attempt["error"] is None
    assert len(attempt["response_body"]) == 1024
    assert attempt["next_attempt_at"].endswith("Z") and attempt["created_at"].endswith("Z")


def test_no_answer_within_the_timeout_is_a_failed_attempt(endpoint, receiver, drains, settings):
    settings.WEBHOOK_TIMEOUT = 0.3
    receiver.delay = 1.0
    event = record_test_event(endpoint)
    drains.run()
    attempt = WebhookAttempt.objects.get(event=event)
    assert attempt.status_code is None and attempt.error.startswith("timeout")
    assert EventDispatch.objects.get(event=event).status == "pending"


def test_a_redirect_is_not_followed(endpoint, receiver, drains):
    receiver.answers.append(302)
    receiver.headers = {"Location": "http://127.0.0.1:1/elsewhere"}
    event = record_test_event(endpoint)
    drains.run()
    attempt = WebhookAttempt.objects.get(event=event)
    assert attempt.status_code == 302 and "redirect not followed" in attempt.error
    assert len(receiver.received) == 1
    assert EventDispatch.objects.get(event=event).status == "pending"


def test_a_dead_endpoint_is_a_failed_attempt_not_an_error(tenant, drains):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint, _ = services.create_endpoint(tenant, url=f"http://127.0.0.1:{port}/nothing-here", events=["*"])
    event = record_test_event(endpoint)
    drains.run()
    attempt = WebhookAttempt.objects.get(event=event)
    assert attempt.status_code is None and attempt.error.startswith("connection failed")


def test_five_days_of_failures_disable_the_endpoint_audited(endpoint, receiver, drains):
    receiver.default = 500
    record_test_event(endpoint)
    drains.run()
    endpoint.refresh_from_db()
    assert endpoint.failing_since is not None and endpoint.enabled
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        failing_since=timezone.now() - timedelta(days=5, minutes=1)
    )
    make_due(endpoint)
    drains(endpoint.pk)
    drains.run()
    endpoint.refresh_from_db()
    assert not endpoint.enabled and endpoint.disabled_reason == "failing"
    assert AuditEvent.objects.filter(
        action="webhook.disable", object_id=str(endpoint.pk), actor="system"
    ).exists()
    # Disabled: nothing more is sent, nothing is lost; enabling sends what waited.
    record_test_event(endpoint)
    sent = len(receiver.received)
    make_due(endpoint)
    dispatch.sweep()
    drains.run()
    assert len(receiver.received) == sent
    receiver.default = 200
    services.update_endpoint(endpoint, enabled=True)
    drains.run()
    assert EventDispatch.objects.filter(endpoint=endpoint, status="pending").count() == 0
    endpoint.refresh_from_db()
    assert endpoint.failing_since is None and endpoint.disabled_reason == ""


def test_a_success_clears_the_failing_state(endpoint, receiver, drains):
    receiver.answers.append(500)
    record_test_event(endpoint)
    drains.run()
    endpoint.refresh_from_db()
    assert endpoint.failing_since is not None
    make_due(endpoint)
    dispatch.sweep()
    drains.run()
    endpoint.refresh_from_db()
    assert endpoint.failing_since is None


def test_resend_sends_the_same_event_again(endpoint, receiver, drains, api):
    event = record_test_event(endpoint)
    drains.run()
    response = api.post(f"/api/v1/webhooks/{endpoint.pk}/events/{event.pk}/resend")
    assert response.status_code == 202 and response.json() == {"event_id": event.pk}
    drains.run()
    assert [r.webhook_id for r in receiver.received] == [event.pk, event.pk]
    assert receiver.received[0].body == receiver.received[1].body
    assert EventDispatch.objects.get(event=event).attempts == 2


def test_after_a_rotation_events_are_signed_with_the_new_secret_only(endpoint, receiver, drains):
    receiver.answers.append(500)
    record_test_event(endpoint)
    drains.run()
    old = receiver.secret
    receiver.secret = services.rotate_secret(endpoint)
    make_due(endpoint)
    dispatch.sweep()
    drains.run()
    first, second = receiver.received
    assert first.verified and second.verified
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(second.body, second.headers)


def test_a_lost_queue_message_is_found_by_the_sweep(endpoint, receiver, drains):
    event = record_test_event(endpoint)
    drains.queued.clear()  # the worker died before queueing the drain
    assert dispatch.sweep() == 1
    drains.run()
    assert receiver.ids_succeeded() == {event.pk}


def test_a_drain_never_runs_past_the_endpoints_slots(endpoint, receiver, drains, settings):
    settings.WEBHOOK_ENDPOINT_CONCURRENCY = 1
    record_test_event(endpoint)
    slot = dispatch._take_slot(endpoint.pk)
    assert slot is not None
    assert dispatch.drain_endpoint(endpoint.pk) == 0, "its only slot is taken"
    dispatch.cache.delete(slot)
    assert dispatch.drain_endpoint(endpoint.pk) == 1


def test_a_slow_endpoint_does_not_hold_up_another_tenants(tenant, other_tenant, drains, settings):
    from .receiver import Receiver

    slow, fast = Receiver(delay=1.5).start(), Receiver().start()
    try:
        slow_endpoint, slow.secret = services.create_endpoint(tenant, url=slow.url, events=["*"])
        fast_endpoint, fast.secret = services.create_endpoint(other_tenant, url=fast.url, events=["*"])
        for _ in range(4):
            record_test_event(slow_endpoint)
        drains.queued.clear()
        started = time.monotonic()
        slow_drain = threading.Thread(target=dispatch.drain_endpoint, args=(slow_endpoint.pk,))
        slow_drain.start()
        slow.wait_for(lambda: len(slow.received) or slow.lock.locked() or time.monotonic() - started > 0.2, 5)
        record_test_event(fast_endpoint)
        dispatch.drain_endpoint(fast_endpoint.pk)
        fast_took = time.monotonic() - started
        assert fast.ids_succeeded() and fast_took < 1.0, f"the fast endpoint waited {fast_took:.2f} s"
        slow_drain.join(20)
        assert len(slow.ids_succeeded()) == 4
    finally:
        slow.stop()
        fast.stop()


def test_a_dead_receiver_is_probed_not_hammered(endpoint, receiver, drains):
    receiver.default = 500
    for _ in range(8):
        record_test_event(endpoint)
    drains.queued.clear()
    assert dispatch.drain_endpoint(endpoint.pk) == dispatch.PAUSE_AFTER_FAILURES
    assert drains.queued == [], "it waits for the sweep rather than queueing itself again"
    untouched = EventDispatch.objects.filter(endpoint=endpoint, attempts=0)
    assert untouched.count() == 8 - dispatch.PAUSE_AFTER_FAILURES
    assert not untouched.filter(leased_until__isnull=False).exists(), "left for the next drain, not leased"
    assert dispatch.sweep() == 1, "the three never tried are due"


def test_an_endpoint_deleted_while_its_event_is_in_flight(endpoint, receiver, drains, monkeypatch):
    record_test_event(endpoint)
    post = dispatch.transport.post

    def delete_meanwhile(*args):
        answer = post(*args)
        services.delete_endpoint(endpoint)
        return answer

    monkeypatch.setattr(dispatch.transport, "post", delete_meanwhile)
    assert dispatch.drain_endpoint(endpoint.pk) == 1
    assert len(receiver.received) == 1
    assert not WebhookAttempt.objects.exists() and not EventDispatch.objects.exists()


def test_a_receiver_that_answered_keeps_its_drain_going_through_refusals(endpoint, receiver, drains):
    """Five refusals in a row from a receiver that answered 2xx in this drain are the events' to retry, not
    a reason to leave the endpoint idle until the sweep (at 50 % refused, a run of five every ~60 attempts)."""
    receiver.answers.extend([200] + [500] * 6)  # then 200s
    outbox.record(
        endpoint.tenant_id, outbox.WEBHOOK_TEST, [{"n": n} for n in range(12)], endpoint_ids=[endpoint.pk]
    )
    assert drains.run() == 12
    assert EventDispatch.objects.filter(endpoint=endpoint, status="succeeded").count() == 6
    assert EventDispatch.objects.filter(endpoint=endpoint, status="pending", retries=1).count() == 6

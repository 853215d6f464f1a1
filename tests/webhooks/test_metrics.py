"""Webhook attempts are counted by result as the webhook worker makes them (a real receiver over HTTP)."""

from __future__ import annotations

import ipaddress

import pytest
from django.utils import timezone

from tests.metrics_helpers import delta, scrape
from webhooks import dispatch, outbox
from webhooks.models import EventDispatch

pytestmark = pytest.mark.django_db(transaction=True)


def test_attempts_are_counted_by_result(client, settings, endpoint, receiver, drains):
    settings.METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network("127.0.0.0/8")]
    receiver.answers.extend([503])  # the first attempt fails, the retry succeeds
    before = scrape(client)

    (event,) = outbox.record(endpoint.tenant_id, outbox.WEBHOOK_TEST, [{"n": 1}], endpoint_ids=[endpoint.pk])
    drains.run()
    EventDispatch.objects.filter(event=event).update(next_attempt_at=timezone.now())  # the retry is due now
    dispatch.sweep()
    drains.run()

    after = scrape(client)
    assert EventDispatch.objects.get(event=event).status == "succeeded"
    assert delta(before, after, "pushhub_webhook_attempts_total", result="http_5xx") == 1
    assert delta(before, after, "pushhub_webhook_attempts_total", result="success") == 1
    assert delta(before, after, "pushhub_webhook_attempts_total", result="timeout") == 0

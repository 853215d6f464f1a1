"""The webhooks page in a real browser: add an endpoint (its secret shown once), send a test event that a
receiver verifies with the standardwebhooks library, and see the attempt in the log.

The webhook worker's drain runs in a thread of the test (``inline_drains``), over real HTTP to the receiver."""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path

import pytest

pytest.importorskip("playwright")
if not (Path("/usr/bin/chromium").exists() and shutil.which("/usr/bin/chromium")):
    pytest.skip("no Chromium at /usr/bin/chromium", allow_module_level=True)

from playwright.sync_api import expect  # noqa: E402

from tests.webhooks.receiver import Receiver  # noqa: E402

DEADLINE = 20_000  # ms


@pytest.fixture
def inline_drains(monkeypatch, settings):
    """Each drain queued for the webhook worker runs in a thread here, after the queuing request commits."""
    from django.db import connections

    from webhooks import dispatch, queue

    settings.WEBHOOK_ALLOW_PRIVATE = True  # the receiver is on loopback
    threads: list[threading.Thread] = []

    def run(endpoint_id) -> None:
        try:
            dispatch.drain_endpoint(endpoint_id)
        finally:
            connections.close_all()

    def enqueue(endpoint_id) -> None:
        thread = threading.Thread(target=run, args=(endpoint_id,), daemon=True)
        threads.append(thread)
        thread.start()

    monkeypatch.setattr(queue, "enqueue", enqueue)
    yield
    for thread in threads:
        thread.join(15)


@pytest.fixture
def receiver():
    served = Receiver().start()
    yield served
    served.stop()


@pytest.mark.django_db(transaction=True)
def test_add_an_endpoint_and_see_a_test_event_arrive(
    page, live_server, tenant, django_user_model, inline_drains, receiver, screenshot
):
    owner = django_user_model.objects.get(memberships__tenant=tenant, memberships__role="owner")
    owner.set_password("correct horse battery staple")
    owner.save()
    page.goto("/accounts/login/")
    page.get_by_label(re.compile("E-mail|Username")).fill(owner.get_username())
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name=re.compile("Log in|Sign in")).click()

    page.get_by_role("link", name="Webhooks").first.click()
    expect(page.get_by_role("heading", name="Webhooks")).to_be_visible()
    page.get_by_role("textbox", name="URL").fill(receiver.url)
    page.locator('input[name="events"][value="*"]').check()
    page.get_by_label("Description (optional)").fill("order system")
    page.get_by_role("button", name="Add the endpoint").click()

    secret = page.locator("#webhook-secret").inner_text().strip()
    assert secret.startswith("whsec_")
    receiver.secret = secret
    page.get_by_role("button", name="Send a test event").click()
    # The POST's redirect lands first: a reload while it is still navigating loses the page (seen once).
    expect(page.get_by_text(re.compile(r"Test event \S+ queued"))).to_be_visible()
    receiver.wait_for(lambda: receiver.ids_succeeded(), timeout=10)
    assert receiver.received[0].verified and receiver.received[0].event["type"] == "webhook.test"

    page.reload()
    expect(page.locator("#webhook-secret")).to_have_count(0)  # shown once
    log = page.locator("table", has_text="webhook.test")
    expect(log).to_contain_text("200", timeout=DEADLINE)
    expect(log).to_contain_text(receiver.received[0].webhook_id)
    screenshot(page, "webhooks")

"""Retention (templates_app/retention.py): rows past their *_RETENTION_DAYS go in batches, rows inside it and
rows in use stay, what the API and the dashboard show does not change, 0 keeps forever, one sweep at a time."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from formids.models import Credit, InboundEvent, MiniUser
from pushhub.celery import app as celery_app
from pushhub.wechat.sandbox.models import SandboxApp, SandboxMessage
from templates_app import retention, tasks
from templates_app.models import Delivery, IdempotencyRecord, Push
from tests.dashboard.conftest import signed_in
from webhooks import services as webhook_services
from webhooks.models import EventDispatch, WebhookAttempt, WebhookEvent

from .helpers import make_push, new_openid, seed_users

pytestmark = pytest.mark.django_db(transaction=True)

DAY = timedelta(days=1)


def ago(days: float):
    return timezone.now() - days * DAY


def finished_push(template, n: int, *, status="done", finished_days=100, delivery_status="sent") -> Push:
    """A push of ``n`` deliveries (``delivery_status``) that finished ``finished_days`` ago."""
    push = Push.objects.create(
        tenant=template.app.tenant,
        app=template.app,
        template=template,
        status=status,
        recipients=n,
        sent=n if delivery_status == "sent" else 0,
        finished_at=None if status in ("queued", "running") else ago(finished_days),
    )
    Delivery.objects.bulk_create(
        [Delivery(push=push, openid=new_openid(), status=delivery_status) for _ in range(n)]
    )
    Delivery.objects.filter(push=push).update(created_at=ago(finished_days + 1))
    return push


def sweep(**kwargs) -> dict[str, retention.Report]:
    return {report.name: report for report in retention.sweep(**kwargs)}


# --- what the API and the dashboard show ----------------------------------------------------------------
def test_the_counts_shown_are_the_same_after_the_sweep(app, formid_template, task_queue, api, tenant):
    users = seed_users(app, 5, formids=1)
    push = make_push(formid_template, users)
    tasks.deliver_push(str(push.pk))
    task_queue.run()
    push.refresh_from_db()
    assert (push.status, push.sent) == ("done", 5)
    owner = signed_in("owner@acme.test")

    def shown() -> dict:
        detail = api.get(f"/api/v1/pushes/{push.pk}").json()
        listed = [p for p in api.get("/api/v1/pushes").json()["results"] if p["id"] == str(push.pk)]
        page = owner.get(reverse("push-page", args=[push.pk]))
        return {
            "detail": detail["counts"],
            "list": listed[0]["counts"],
            "progress": owner.get(reverse("push-progress", args=[push.pk])).json()["counts"],
            "segments": page.context["segments"],
            "quota": api.get(f"/api/v1/apps/{app.appid}/quota").json(),
            "chart": owner.get(reverse("app-quota-chart", args=[app.appid])).json(),
        }

    before = shown()
    assert before["detail"]["sent"] == 5 and before["quota"]["sent_today"] == 5
    assert before["chart"]["messages"]["sent"][-1] == 5
    # 100 days pass for the rows (the daily statistics are per day and stay where they are).
    Push.objects.filter(pk=push.pk).update(finished_at=ago(100))
    Delivery.objects.filter(push=push).update(created_at=ago(100))
    Credit.objects.filter(app=app).update(created_at=ago(101), finished_at=ago(100))

    reports = sweep()

    assert reports["deliveries"].deleted == 5 and not Delivery.objects.filter(push=push).exists()
    assert reports["credits"].deleted == 5 and not Credit.objects.filter(app=app).exists()
    assert shown() == before
    assert api.get(f"/api/v1/pushes/{push.pk}/deliveries").json()["results"] == []


# --- cutoff and rows in use -----------------------------------------------------------------------------
def test_deliveries_past_the_cutoff_go_and_the_others_stay(formid_template):
    old = finished_push(formid_template, 3)
    canceled = finished_push(formid_template, 2, status="canceled", delivery_status="failed")
    recent = finished_push(formid_template, 2, finished_days=10)
    running = finished_push(formid_template, 2, status="running", delivery_status="pending")
    holding = finished_push(formid_template, 2, status="running", delivery_status="held")

    reports = sweep()

    assert reports["deliveries"].deleted == 5
    assert not Delivery.objects.filter(push__in=[old, canceled]).exists()
    assert Delivery.objects.filter(push=recent).count() == 2
    assert Delivery.objects.filter(push__in=[running, holding]).count() == 4
    assert Push.objects.filter(pk__in=[old.pk, canceled.pk]).count() == 2  # pushes are kept


def test_only_credits_that_ended_before_the_cutoff_go(app):
    seed_users(app, 5, formids=1)
    ids = list(Credit.objects.filter(app=app).order_by("pk").values_list("pk", flat=True))
    Credit.objects.filter(app=app).update(created_at=ago(60))
    Credit.objects.filter(pk=ids[0]).update(state="consumed", finished_at=ago(40))
    Credit.objects.filter(pk=ids[1]).update(state="expired", finished_at=ago(31))
    Credit.objects.filter(pk=ids[2]).update(state="consumed", finished_at=ago(5))  # inside the 30 days
    Credit.objects.filter(pk=ids[3]).update(state="claimed", claimed_at=ago(40))  # in use
    # ids[4] stays available: the pool

    assert sweep()["credits"].deleted == 2

    assert set(Credit.objects.values_list("pk", flat=True)) == set(ids[2:])


def test_a_deleted_credit_leaves_its_delivery(formid_template):
    push = finished_push(formid_template, 1, finished_days=10)  # deliveries kept 90 days
    user = MiniUser.objects.create(app=formid_template.app, openid=new_openid())
    credit = Credit.objects.create(
        app=formid_template.app, user=user, kind="formid", value="f1", state="consumed"
    )
    Credit.objects.filter(pk=credit.pk).update(created_at=ago(50), finished_at=ago(40))
    Delivery.objects.filter(push=push).update(credit=credit)

    sweep()

    assert not Credit.objects.filter(pk=credit.pk).exists()
    assert Delivery.objects.get(push=push).credit_id is None


def test_inbound_events_idempotency_records_and_sandbox_messages(app, formid_template, settings):
    settings.IDEMPOTENCY_RETENTION_DAYS = 1
    old_event = InboundEvent.objects.create(app=app, source="wechat", event="x")
    new_event = InboundEvent.objects.create(app=app, source="sdk", event="y")
    InboundEvent.objects.filter(pk=old_event.pk).update(received_at=ago(31))
    push = finished_push(formid_template, 0, finished_days=0)
    expired = IdempotencyRecord.objects.create(template=formid_template, key="a", fingerprint="f", push=push)
    honoured = IdempotencyRecord.objects.create(template=formid_template, key="b", fingerprint="f", push=push)
    IdempotencyRecord.objects.filter(pk=expired.pk).update(created_at=ago(25 / 24))
    IdempotencyRecord.objects.filter(pk=honoured.pk).update(created_at=ago(23 / 24))  # still honoured
    phone = SandboxApp.objects.get(appid=app.appid)
    old_message, new_message = (
        SandboxMessage.objects.create(app=phone, openid="o", kind="formid", template_id="t", created_at=at)
        for at in (ago(31), ago(29))
    )

    reports = sweep()

    assert [
        reports[name].deleted for name in ("inbound_events", "idempotency_records", "sandbox_messages")
    ] == [
        1,
        1,
        1,
    ]
    assert list(InboundEvent.objects.values_list("pk", flat=True)) == [new_event.pk]
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["b"]
    assert list(SandboxMessage.objects.values_list("pk", flat=True)) == [new_message.pk]
    assert old_message.pk != new_message.pk


def test_webhook_events_go_with_their_dispatches_once_none_is_pending(tenant, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    endpoint, _ = webhook_services.create_endpoint(
        tenant, url="http://127.0.0.1:9/hook", events=["*"], actor="tests"
    )

    def event(days: float, status: str) -> WebhookEvent:
        created = WebhookEvent.objects.create(tenant=tenant, type="webhook.test", data={})
        WebhookEvent.objects.filter(pk=created.pk).update(created_at=ago(days))
        dispatch = EventDispatch.objects.create(
            event=created, endpoint=endpoint, status=status, next_attempt_at=timezone.now(), attempts=1
        )
        WebhookAttempt.objects.create(dispatch=dispatch, endpoint=endpoint, event=created, attempt=1)
        return created

    done = event(40, "succeeded")
    failed = event(35, "failed")
    retrying = event(40, "pending")  # still being retried
    recent = event(10, "succeeded")

    assert sweep()["webhook_events"].deleted == 2

    assert set(WebhookEvent.objects.values_list("pk", flat=True)) == {retrying.pk, recent.pk}
    assert not EventDispatch.objects.filter(event__in=[done.pk, failed.pk]).exists()
    assert set(WebhookAttempt.objects.values_list("event_id", flat=True)) == {retrying.pk, recent.pk}


# --- batches, settings, the command, the beat ------------------------------------------------------------
def test_batches_of_two_over_five_rows(formid_template, app):
    finished_push(formid_template, 5)
    for _ in range(5):
        InboundEvent.objects.create(app=app, source="wechat")
    InboundEvent.objects.update(received_at=ago(40))
    batches = []

    reports = sweep(batch_size=2, on_batch=lambda name, rows, took: batches.append((name, rows)))

    assert [rows for name, rows in batches if name == "deliveries"] == [2, 2, 1]
    assert [rows for name, rows in batches if name == "inbound_events"] == [2, 2, 1, 0]  # 0: the last probe
    assert (reports["deliveries"].batches, reports["inbound_events"].batches) == (3, 3)
    assert not Delivery.objects.exists() and not InboundEvent.objects.exists()


def test_zero_keeps_forever(formid_template, app, settings):
    settings.DELIVERY_RETENTION_DAYS = 0
    settings.INBOUND_EVENT_RETENTION_DAYS = 0
    finished_push(formid_template, 3, finished_days=3000)
    InboundEvent.objects.create(app=app, source="wechat")
    InboundEvent.objects.update(received_at=ago(3000))

    reports = sweep()

    assert Delivery.objects.count() == 3 and InboundEvent.objects.count() == 1
    assert reports["deliveries"].line() == "deliveries: kept forever (DELIVERY_RETENTION_DAYS=0)"


def test_the_command_prints_per_table_and_dry_run_deletes_nothing(formid_template):
    finished_push(formid_template, 3)
    out = io.StringIO()

    call_command("sweep_retention", "--dry-run", stdout=out)

    assert "deliveries: would delete 3 older than 90 days" in out.getvalue()
    assert "webhook_events: would delete 0" in out.getvalue()
    assert Delivery.objects.count() == 3
    out = io.StringIO()
    call_command("sweep_retention", stdout=out)
    assert "deliveries: deleted 3 older than 90 days" in out.getvalue()
    assert Delivery.objects.count() == 0


def test_one_sweep_at_a_time(formid_template):
    finished_push(formid_template, 3)
    cache.add(retention.LOCK_KEY, "another worker", timeout=60)

    with pytest.raises(retention.SweepRunning):
        retention.sweep()
    with pytest.raises(CommandError, match="another retention sweep is running"):
        call_command("sweep_retention", stdout=io.StringIO())
    assert tasks.sweep_retention() == {}
    assert Delivery.objects.count() == 3

    cache.delete(retention.LOCK_KEY)
    assert tasks.sweep_retention()["deliveries"] == 3
    assert cache.get(retention.LOCK_KEY) is None  # released after the run


def test_a_run_out_of_time_resumes_where_it_stopped(formid_template):
    finished_push(formid_template, 4)
    finished_push(formid_template, 2, status="running", delivery_status="pending")
    reports = sweep(budget=0)
    assert reports["deliveries"].complete is False and Delivery.objects.count() == 6

    reports = sweep(batch_size=2)
    assert reports["deliveries"].complete and reports["deliveries"].deleted == 4
    assert Delivery.objects.count() == 2


def test_the_beat_runs_the_sweep():
    entry = django_settings.CELERY_BEAT_SCHEDULE["sweep-retention"]
    assert entry["task"] == "templates_app.sweep_retention"
    assert entry["schedule"] == django_settings.RETENTION_SWEEP_SECONDS > 0
    assert "templates_app.sweep_retention" in celery_app.tasks

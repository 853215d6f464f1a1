"""The funnel's counters (formids.funnel): each bumped by the event it counts — credits stored by the SDK and by
WeChat's events, opens, re-subscriptions within 24 h of an open — the one-statement upsert under concurrency,
and the sweep of the opens whose 24 h are over."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from formids import events, funnel
from formids import services as credits
from formids.models import DailyStat, RecentOpen, TemplateDailyStat
from templates_app import catalogue, retention
from tenants import services as tenant_services

pytestmark = pytest.mark.django_db

ORDER, ARRIVAL, MONTHLY, FORMID_TPL = "TPL-ORDER", "TPL-ARRIVAL", "TPL-MONTHLY", "TPL-FORMID"


def stat(app, template_id: str, day: date | None = None) -> dict:
    """The funnel row of (app, template, day) as a dict of its counters, zeros when there is none."""
    row = (
        TemplateDailyStat.objects.filter(app=app, template_id=template_id, day=day or timezone.now().date())
        .values(*funnel.COUNTERS)
        .first()
    )
    return row or dict.fromkeys(funnel.COUNTERS, 0)


@pytest.fixture
def shop(sandbox_app):
    """An app (credit_source "sdk") with two one-time subscribe templates, a long-term one and a formId one."""
    for template_id, kind, subscription in (
        (ORDER, "subscribe", "one_time"),
        (ARRIVAL, "subscribe", "one_time"),
        (MONTHLY, "subscribe", "long_term"),
        (FORMID_TPL, "formid", None),
    ):
        catalogue.create_template(
            sandbox_app,
            kind=kind,
            template_id=template_id,
            title=template_id,
            fields=[{"key": "thing1" if kind == "subscribe" else "keyword1", "name": "item"}],
            subscription=subscription,
            actor="test",
        )
    return sandbox_app


@pytest.fixture
def alice(shop):
    return credits.touch_user(shop, "o-alice")


# --- credits_collected ------------------------------------------------------------------------------
def test_formids_and_prepay_ids_are_collected_under_no_template(shop, alice):
    credits.take_ids(
        shop, alice, formids=["formid-0001", "formid-0002", "formid-0002"], prepay_ids=["wx-prepay-1"]
    )
    credits.take_ids(shop, alice, formids=["formid-0001"])  # a duplicate: nothing new

    assert stat(shop, "")["credits_collected"] == 3
    assert TemplateDailyStat.objects.filter(app=shop).count() == 1
    assert DailyStat.objects.get(app=shop).formids_collected == 3


def test_subscribe_accepts_are_collected_per_template(shop, alice):
    credits.report_subscriptions(shop, alice, {ORDER: "accept", ARRIVAL: "accept", "TPL-UNKNOWN": "accept"})
    credits.report_subscriptions(shop, alice, {ORDER: "accept", ARRIVAL: "reject"})

    assert stat(shop, ORDER)["credits_collected"] == 2
    assert stat(shop, ARRIVAL)["credits_collected"] == 1
    assert stat(shop, "TPL-UNKNOWN")["credits_collected"] == 0
    assert DailyStat.objects.get(app=shop).subscribe_collected == 3


def test_a_long_term_subscription_is_collected_when_it_starts_only(shop, alice):
    credits.report_subscriptions(shop, alice, {MONTHLY: "accept"})
    credits.report_subscriptions(shop, alice, {MONTHLY: "accept"})  # already standing: nothing new

    assert stat(shop, MONTHLY)["credits_collected"] == 1


def test_wechat_subscribe_events_are_collected_per_template(shop):
    app = tenant_services.update_app(shop, credit_source="events")
    event = events.normalise(
        {
            "ToUserName": "gh_123456789abc",
            "FromUserName": "o-bob",
            "CreateTime": 1_700_000_000,
            "MsgType": "event",
            "Event": "subscribe_msg_popup_event",
            "List": [
                {"TemplateId": ORDER, "SubscribeStatusString": "accept", "PopupScene": "0"},
                {"TemplateId": ARRIVAL, "SubscribeStatusString": "reject", "PopupScene": "0"},
            ],
        }
    )
    events.process(app, event)

    assert stat(app, ORDER)["credits_collected"] == 1
    assert stat(app, ARRIVAL)["credits_collected"] == 0


def test_the_sdk_report_of_an_events_app_collects_nothing(shop, alice):
    app = tenant_services.update_app(shop, credit_source="events")
    credits.report_subscriptions(app, alice, {ORDER: "accept"})
    assert stat(app, ORDER)["credits_collected"] == 0


# --- opened and resubscribed --------------------------------------------------------------------------
def test_an_open_counts_on_its_day_and_waits_for_a_new_credit(shop):
    opened_at = timezone.now() - timedelta(hours=2)
    funnel.record_open(shop.pk, "o-alice", ORDER, opened_at)

    assert stat(shop, ORDER, opened_at.date())["opened"] == 1
    assert RecentOpen.objects.filter(app=shop, openid="o-alice", template_id=ORDER).count() == 1


def test_a_new_credit_within_24_h_of_an_open_counts_once_on_the_day_of_the_open(shop, alice):
    opened_at = timezone.now() - timedelta(hours=23)
    funnel.record_open(shop.pk, alice.openid, ORDER, opened_at)

    credits.report_subscriptions(shop, alice, {ORDER: "accept"})
    credits.report_subscriptions(shop, alice, {ORDER: "accept"})  # the open is counted already

    assert stat(shop, ORDER, opened_at.date())["resubscribed"] == 1
    assert sum(row["resubscribed"] for row in TemplateDailyStat.objects.values("resubscribed")) == 1
    assert RecentOpen.objects.get(openid=alice.openid).resubscribed_at is not None


def test_each_open_is_counted_once_one_open_per_new_credit(shop, alice):
    now = timezone.now()
    funnel.record_open(shop.pk, alice.openid, ORDER, now - timedelta(hours=5))
    funnel.record_open(shop.pk, alice.openid, ORDER, now - timedelta(hours=1))

    credits.report_subscriptions(shop, alice, {ORDER: "accept"})
    assert RecentOpen.objects.filter(resubscribed_at__isnull=False).count() == 1
    credits.report_subscriptions(shop, alice, {ORDER: "accept"})
    credits.report_subscriptions(shop, alice, {ORDER: "accept"})  # no open left to count

    assert RecentOpen.objects.filter(resubscribed_at__isnull=True).count() == 0
    total = sum(TemplateDailyStat.objects.filter(template_id=ORDER).values_list("resubscribed", flat=True))
    assert total == 2


def test_a_credit_more_than_24_h_after_the_open_does_not_count(shop, alice):
    funnel.record_open(shop.pk, alice.openid, ORDER, timezone.now() - timedelta(hours=24, minutes=1))
    credits.report_subscriptions(shop, alice, {ORDER: "accept"})

    assert sum(TemplateDailyStat.objects.values_list("resubscribed", flat=True)) == 0


def test_only_the_opened_template_and_the_same_user_count(shop, alice):
    bob = credits.touch_user(shop, "o-bob")
    opened_at = timezone.now() - timedelta(hours=1)
    funnel.record_open(shop.pk, alice.openid, ORDER, opened_at)

    credits.report_subscriptions(shop, alice, {ARRIVAL: "accept"})  # another template
    credits.report_subscriptions(shop, bob, {ORDER: "accept"})  # another user
    assert sum(TemplateDailyStat.objects.values_list("resubscribed", flat=True)) == 0

    credits.report_subscriptions(shop, alice, {ORDER: "accept", ARRIVAL: "accept"})
    assert stat(shop, ORDER, opened_at.date())["resubscribed"] == 1
    assert stat(shop, ARRIVAL, opened_at.date())["resubscribed"] == 0


def test_formids_never_count_as_a_resubscription(shop, alice):
    funnel.record_open(shop.pk, alice.openid, FORMID_TPL, timezone.now() - timedelta(hours=1))
    credits.take_ids(shop, alice, formids=["formid-0009"])

    assert sum(TemplateDailyStat.objects.values_list("resubscribed", flat=True)) == 0
    assert RecentOpen.objects.get().resubscribed_at is None


def test_only_subscribe_credits_look_up_the_recent_opens(shop, alice):
    with CaptureQueriesContext(connection) as queries:
        credits.take_ids(shop, alice, formids=["formid-0010", "formid-0011"])
    assert not [q for q in queries.captured_queries if RecentOpen._meta.db_table in q["sql"]]
    with CaptureQueriesContext(connection) as queries:
        credits.report_subscriptions(shop, alice, {ORDER: "accept"})
    assert len([q for q in queries.captured_queries if RecentOpen._meta.db_table in q["sql"]]) == 1


def test_a_long_term_subscription_started_after_an_open_counts(shop, alice):
    opened_at = timezone.now() - timedelta(hours=3)
    funnel.record_open(shop.pk, alice.openid, MONTHLY, opened_at)
    credits.report_subscriptions(shop, alice, {MONTHLY: "accept"})
    assert stat(shop, MONTHLY, opened_at.date())["resubscribed"] == 1


def test_the_sweep_deletes_opens_past_their_24_h_and_keeps_the_others(shop, settings):
    now = timezone.now()
    funnel.record_open(shop.pk, "o-old", ORDER, now - timedelta(hours=25))
    funnel.record_open(shop.pk, "o-new", ORDER, now - timedelta(hours=23))
    settings.RECENT_OPEN_RETENTION_DAYS = 1

    reports = {report.name: report for report in retention.sweep(now=now)}

    assert reports["recent_opens"].deleted == 1
    assert list(RecentOpen.objects.values_list("openid", flat=True)) == ["o-new"]


# --- the upsert -------------------------------------------------------------------------------------
def test_add_to_counters_is_one_statement_and_creates_then_adds(shop, django_assert_num_queries):
    day = date(2026, 11, 30)
    with django_assert_num_queries(1):
        funnel.add_to_counters(DailyStat, {"app": shop, "day": day}, {"sent": 2, "failed": 0})
    with django_assert_num_queries(1):
        funnel.add_to_counters(DailyStat, {"app_id": shop.pk, "day": day}, {"sent": 3, "failed": 1})
    with django_assert_num_queries(0):
        funnel.add_to_counters(DailyStat, {"app": shop, "day": day}, {"sent": 0})
    row = DailyStat.objects.get(app=shop, day=day)
    assert (row.sent, row.failed, row.formids_collected, row.subscribe_collected) == (5, 1, 0, 0)
    with pytest.raises(ValueError):
        funnel.add_to_counters(DailyStat, {"app": shop, "day": day}, {"bogus": 1})


def test_a_sent_event_failure_moves_one_from_sent_to_failed_on_the_day_it_was_sent(shop):
    day = date(2026, 11, 29)
    credits.bump_daily_stat(shop, day, sent=2)
    funnel.bump_template_stat(shop.pk, ORDER, day, sent=2)

    funnel.sent_turned_failed(shop.pk, ORDER, day)
    funnel.sent_turned_failed(shop.pk, ARRIVAL, day)  # no such row: nothing, and nothing negative

    assert (stat(shop, ORDER, day)["sent"], stat(shop, ORDER, day)["failed"]) == (1, 1)
    daily = DailyStat.objects.get(app=shop, day=day)
    assert (daily.sent, daily.failed) == (0, 2)  # ARRIVAL's call moved the app's day again (it had sent 1)
    assert stat(shop, ARRIVAL, day)["sent"] == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_events_of_a_day_all_count(sandbox_app):
    """Threads, each with its own connection, bump the same new (app, template, day) row at once: on
    PostgreSQL the upsert makes every increment count, none lost to a unique-violation."""
    if connection.vendor != "postgresql":
        pytest.skip("row-level concurrency needs PostgreSQL")
    day, threads, per_thread = date(2026, 12, 1), 8, 25
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def bump():
        try:
            barrier.wait(timeout=10)
            for _ in range(per_thread):
                funnel.bump_template_stat(sandbox_app.pk, ORDER, day, sent=1, opened=2)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()

    workers = [threading.Thread(target=bump) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert not errors
    row = TemplateDailyStat.objects.get(app=sandbox_app, template_id=ORDER, day=day)
    assert (row.sent, row.opened) == (threads * per_thread, 2 * threads * per_thread)


def test_record_open_uses_the_utc_day_of_the_open(shop):
    late = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)
    funnel.record_open(shop.pk, "o-x", ORDER, late)
    assert stat(shop, ORDER, date(2026, 11, 30))["opened"] == 1


def test_a_batch_for_several_templates_is_one_statement_on_the_funnel_rows(shop, alice):
    table = TemplateDailyStat._meta.db_table
    with CaptureQueriesContext(connection) as queries:
        credits.report_subscriptions(shop, alice, {ORDER: "accept", ARRIVAL: "accept"})
    assert len([q for q in queries.captured_queries if table in q["sql"]]) == 1
    assert [stat(shop, tid)["credits_collected"] for tid in (ORDER, ARRIVAL)] == [1, 1]

    day = date(2026, 11, 28)
    funnel.add_to_counter_rows(
        TemplateDailyStat,
        [
            ({"app_id": shop.pk, "template_id": ORDER, "day": day}, {"sent": 2}),
            ({"app_id": shop.pk, "template_id": "", "day": day}, {"credits_collected": 5}),
            ({"app_id": shop.pk, "template_id": ORDER, "day": day + timedelta(days=1)}, {"sent": 0}),
        ],
    )
    funnel.add_to_counter_rows(
        TemplateDailyStat, [({"app_id": shop.pk, "template_id": ORDER, "day": day}, {"sent": 1, "opened": 1})]
    )
    assert (stat(shop, ORDER, day)["sent"], stat(shop, ORDER, day)["opened"]) == (3, 1)
    assert stat(shop, "", day)["credits_collected"] == 5
    assert not TemplateDailyStat.objects.filter(day=day + timedelta(days=1)).exists()  # nothing to add


@pytest.mark.django_db(transaction=True)
def test_credits_racing_for_one_open_count_it_once(shop):
    """Four threads store a new credit of the opened template for the same user at once (reports of several
    taps in flight): the open is re-subscribed once, every credit is collected."""
    if connection.vendor != "postgresql":
        pytest.skip("row-level concurrency needs PostgreSQL")
    opened_at = timezone.now() - timedelta(hours=1)
    funnel.record_open(shop.pk, "o-racer", ORDER, opened_at)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def give_credit():
        try:
            barrier.wait(timeout=10)
            funnel.credits_collected(shop.pk, timezone.now().date(), subscribe={ORDER: 1}, openid="o-racer")
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()

    workers = [threading.Thread(target=give_credit) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert not errors
    assert stat(shop, ORDER, opened_at.date())["resubscribed"] == 1
    assert stat(shop, ORDER)["credits_collected"] == 4

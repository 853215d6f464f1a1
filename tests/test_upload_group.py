"""Concurrent SDK uploads of one app share a statement (real transactions in threads, PostgreSQL): the uploads
that arrive while one statement runs are stored by the next, and each still gets its own answer — accepted
and duplicates as if it had been alone, its user's credits, the day's statistics, the held deliveries'
wake-up — while an upload that repeats another's formId or user waits for a statement of its own."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Sum
from django.utils import timezone

from formids import hooks, services
from formids.models import Credit, DailyStat, MiniUser
from pushhub import metrics
from tests.plans import explained_plans, plan_of

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="one statement per upload group: PostgreSQL's"
    ),
]


def statements_and_uploads() -> tuple[float, float]:
    histogram = metrics.SDK_UPLOADS_PER_STATEMENT
    samples = {s.name: s.value for metric in histogram.collect() for s in metric.samples}
    return samples["pushhub_sdk_uploads_per_statement_count"], samples[
        "pushhub_sdk_uploads_per_statement_sum"
    ]


def wait_until(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def statement_waits_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


def test_uploads_arriving_during_a_statement_share_the_next_and_each_gets_its_own_answer(
    sandbox_app, monkeypatch
):
    app = sandbox_app
    openids = ["oGroupFirst", "oGroupBob", "oGroupCarol", "oGroupDave"]
    for openid in openids:
        services.touch_user(app, openid)
    heard: list[list[str]] = []
    # Carol waits for a credit (as a held delivery would make her): the listener hears of her alone.
    monkeypatch.setattr(hooks, "_arrival_listeners", [lambda app_id, who: heard.append(who)])
    monkeypatch.setattr(hooks, "_arrival_probes", ["{openid} = 'oGroupCarol'"])
    # The day's statistics rows, made by a first upload; then held by another transaction, so that the next
    # upload's statement waits (on a row every upload of the app updates) while the others arrive.
    services.take_uploaded_ids(app, openids[0], formids=["groupfirst000000000000"])
    group = services._upload_group(app.pk)
    holding, release = threading.Event(), threading.Event()
    answers: dict[str, object] = {}

    def hold_the_statistics_rows():
        try:
            with transaction.atomic():
                list(DailyStat.objects.select_for_update().filter(app=app))
                holding.set()
                release.wait(timeout=10)
        finally:
            connection.close()

    def upload(name: str, openid: str, formids: list[str]):
        def run():
            try:
                answers[name] = services.take_uploaded_ids(app, openid, formids=formids)
            except Exception as exc:  # asserted below
                answers[name] = exc
            finally:
                connection.close()

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    holder = threading.Thread(target=hold_the_statistics_rows)
    holder.start()
    assert holding.wait(timeout=10)
    statements_before, uploads_before = statements_and_uploads()
    threads = [upload("first", openids[0], ["groupfirst000000000001", "groupfirst000000000000"])]
    wait_until(statement_waits_on_a_lock)  # the first upload's statement, on the held rows
    queued = [
        ("bob", openids[1], ["groupbob00000000000001", "groupbob00000000000002"]),
        ("carol", openids[2], ["groupcarol000000000001", "groupshared00000000001"]),
        ("dave", openids[3], ["groupshared00000000001", "groupdave0000000000001"]),  # carol's too
        ("bob again", openids[1], ["groupbob00000000000003"]),  # bob's second upload
    ]
    for n, (name, openid, formids) in enumerate(queued, 1):
        threads.append(upload(name, openid, formids))
        wait_until(lambda n=n: group.waiting_count() == n)
    release.set()
    for thread in [*threads, holder]:
        thread.join(timeout=20)
        assert not thread.is_alive()

    def answer(name):
        intake = answers[name]
        assert not isinstance(intake, Exception), intake
        return intake.accepted, intake.duplicates

    assert answer("first") == (1, 1)  # its second formId was the first upload's
    assert answer("bob") == (2, 0)
    assert answer("carol") == (2, 0)
    assert answer("dave") == (1, 1)  # the shared formId: carol's statement stored it first
    assert answer("bob again") == (1, 0)
    # Three statements for the five: first; bob + carol; dave + bob again (each clashed with the batch before).
    statements_after, uploads_after = statements_and_uploads()
    assert (statements_after - statements_before, uploads_after - uploads_before) == (3, 5)

    stored = dict(
        Credit.objects.filter(app=app)
        .values("user__openid")
        .annotate(n=Count("id"))
        .values_list("user__openid", "n")
    )
    assert stored == {"oGroupFirst": 2, "oGroupBob": 3, "oGroupCarol": 2, "oGroupDave": 1}
    day = DailyStat.objects.filter(app=app, day=timezone.now().date())
    assert day.aggregate(n=Sum("formids_collected"))["n"] == 8
    assert heard == [["oGroupCarol"]]


def test_a_statement_touches_only_its_uploaders_whose_last_seen_is_stale(sandbox_app, settings):
    settings.SDK_LAST_SEEN_RESOLUTION = 300
    app = sandbox_app
    stale_user = services.touch_user(app, "oGroupStale")
    fresh_user = services.touch_user(app, "oGroupFresh")
    stale, fresh = timezone.now() - timedelta(seconds=301), timezone.now() - timedelta(seconds=299)
    MiniUser.objects.filter(pk=stale_user.pk).update(last_seen=stale)
    MiniUser.objects.filter(pk=fresh_user.pk).update(last_seen=fresh)
    before = timezone.now()
    results = services._store_uploads(
        app.pk,
        [
            services._Upload("oGroupStale", ("groupstale00000000001",), (), True),
            services._Upload("oGroupFresh", ("groupfresh00000000001",), (), True),
            services._Upload("oGroupNobody", ("groupnobody0000000001",), (), True),
        ],
    )
    assert [r and r.kinds for r in results] == [{"formid": 1}, {"formid": 1}, None]
    assert MiniUser.objects.get(pk=stale_user.pk).last_seen >= before
    assert MiniUser.objects.get(pk=fresh_user.pk).last_seen == fresh


@pytest.mark.skipif(settings.DATABASE_POOL_MODE != "session", reason="prepared statements: session mode only")
def test_the_upload_plan_kept_from_a_small_table_reads_each_uploader_by_index(sandbox_app):
    """The statement's one plan is made at the connection's first upload (a generic plan, kept): made here
    while the app has two users and nothing is held, it must still read users and held deliveries by
    index, one uploader at a time, never scan them as a set (which it did, joined, as the tables grew)."""
    app = sandbox_app
    for openid in ("oPlanAnn", "oPlanBen"):
        services.touch_user(app, openid)
    connection.close()  # a new connection: the statement is prepared (planned) at its first run below
    services._store_uploads(app.pk, [services._Upload("oPlanAnn", ("planann000000000000001",), (), True)])
    MiniUser.objects.bulk_create(
        MiniUser(app=app, openid=f"oPlanMany{i}", last_seen=timezone.now()) for i in range(3000)
    )
    uploads = [
        services._Upload("oPlanAnn", ("planann000000000000002",), (), True),
        services._Upload("oPlanBen", ("planben000000000000001",), (), True),
    ]
    with explained_plans() as plans:  # (the session's settings: the connection is closed after)
        assert [r.kinds for r in services._store_uploads(app.pk, uploads)] == [{"formid": 1}, {"formid": 1}]
    plan = plan_of(plans, "INSERT INTO formids_credit")
    assert "$1" in plan  # the prepared statement's kept plan, its parameters unbound
    scans = [line.strip() for line in plan.splitlines() if " on formids_miniuser" in line]
    assert scans and all(line.startswith("->  Index Scan using miniuser_unique_openid") for line in scans)
    assert "Index Cond: ((app_id = $" in plan and "(openid)::text = m.openid))" in plan
    probes = [line.strip() for line in plan.splitlines() if " on templates_app_delivery" in line]
    assert probes and all("Index Only Scan using delivery_held_openid" in line for line in probes)
    assert "Index Cond: (openid = uploader.openid)" in plan
    # the probe does not join the pushes (holds.waiting_for_credit_sql)
    assert "templates_app_push" not in plan

"""claim / consume / release / release_stale / expire_due on the credit pools (PostgreSQL in CI, SQLite too)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from formids import services
from formids.models import Credit
from tenants import services as tenant_services
from tests.conftest import random_appid, random_secret
from tests.plans import explained_plans, plan_of, table_reads

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


def formid(n: int) -> str:
    return f"formid{n:026d}"


@pytest.fixture
def app(sandbox_app):
    return sandbox_app


@pytest.fixture
def alice(app):
    return services.touch_user(app, "oAlice000000000000000000000")


@pytest.fixture
def bob(app):
    return services.touch_user(app, "oBob00000000000000000000000")


def claim(app, openids, kind="formid", template_id="", holder="chunk-1", now=None):
    return services.claim_credits(
        app, template_kind=kind, template_id=template_id, openids=openids, claimed_by=holder, now=now
    )


def state(credit_id: int) -> tuple[str, int]:
    credit = Credit.objects.get(pk=credit_id)
    return credit.state, credit.uses_left


def test_it_claims_the_formid_that_expires_soonest(app, alice):
    now = timezone.now()
    services.add_formids(app, alice, [formid(1)], now=now - 2 * DAY)
    services.add_formids(app, alice, [formid(2)], now=now - 5 * DAY)  # expires first
    services.add_formids(app, alice, [formid(3)], now=now - 1 * DAY)
    claimed = claim(app, [alice.openid])
    assert claimed[alice.openid].value == formid(2)
    assert state(claimed[alice.openid].id) == ("claimed", 1)
    assert claim(app, [alice.openid], holder="chunk-2")[alice.openid].value == formid(1)


def test_one_credit_per_recipient_and_nothing_for_users_without_one(app, alice, bob):
    services.add_formids(app, alice, [formid(1), formid(2)])
    claimed = claim(app, [alice.openid, bob.openid, "oNobody", alice.openid])
    assert list(claimed) == [alice.openid]
    assert Credit.objects.filter(state="claimed").count() == 1


def test_a_formid_inside_the_expiry_margin_is_not_claimed(app, alice, settings):
    margin = timedelta(seconds=settings.FORMID_EXPIRY_MARGIN)
    now = timezone.now()
    # received 7 days minus (margin - 1 min) ago: expires one minute inside the margin
    services.add_formids(
        app, alice, [formid(1)], now=now - services.FORMID_LIFETIME + margin - timedelta(minutes=1)
    )
    assert claim(app, [alice.openid], now=now) == {}
    # one minute outside the margin: still claimable
    services.add_formids(
        app, alice, [formid(2)], now=now - services.FORMID_LIFETIME + margin + timedelta(minutes=1)
    )
    assert claim(app, [alice.openid], now=now)[alice.openid].value == formid(2)


def test_a_prepay_id_gives_three_sends_then_is_gone(app, alice):
    services.add_formids(app, alice, ["wx20261124120000abcdef0123456789abcd"], kind="prepay")
    for uses_left_after in (2, 1, 0):
        credit = claim(app, [alice.openid])[alice.openid]
        assert credit.kind == "prepay"
        assert services.consume([credit.id], "chunk-1") == 1
        assert state(credit.id) == ("available" if uses_left_after else "consumed", uses_left_after)
    assert claim(app, [alice.openid]) == {}


def test_wechat_saying_used_spends_a_prepay_id_at_once(app, alice):
    services.add_formids(app, alice, ["wx20261124120000abcdef0123456789abcd"], kind="prepay")
    credit = claim(app, [alice.openid])[alice.openid]
    services.consume([credit.id], "chunk-1", exhausted=True)
    assert state(credit.id) == ("consumed", 0)


def test_subscribe_credits_serve_only_their_template(app, alice):
    services.add_subscribe_credits(app, alice, ["TPL_A", "TPL_A", "TPL_B"], source="sdk")
    assert claim(app, [alice.openid], kind="formid") == {}
    first = claim(app, [alice.openid], kind="subscribe", template_id="TPL_A")[alice.openid]
    second = claim(app, [alice.openid], kind="subscribe", template_id="TPL_A", holder="x")[alice.openid]
    assert first.id != second.id
    assert claim(app, [alice.openid], kind="subscribe", template_id="TPL_A", holder="y") == {}
    assert claim(app, [alice.openid], kind="subscribe", template_id="TPL_B")[alice.openid]


def test_only_the_holder_can_settle_a_claim(app, alice):
    services.add_formids(app, alice, [formid(1)])
    credit = claim(app, [alice.openid], holder="chunk-1")[alice.openid]
    assert services.consume([credit.id], "chunk-2") == 0
    assert services.release([credit.id], "chunk-2") == 0
    assert state(credit.id) == ("claimed", 1)


def test_release_puts_a_credit_back(app, alice):
    services.add_formids(app, alice, [formid(1)])
    credit = claim(app, [alice.openid])[alice.openid]
    assert services.release([credit.id], "chunk-1") == 1
    assert state(credit.id) == ("available", 1)
    assert claim(app, [alice.openid])[alice.openid].id == credit.id


def test_release_expires_a_credit_that_can_no_longer_be_used(app, alice):
    services.add_formids(app, alice, [formid(1)], now=timezone.now() - 6 * DAY)
    credit = claim(app, [alice.openid])[alice.openid]
    Credit.objects.filter(pk=credit.id).update(expires_at=timezone.now() + timedelta(minutes=5))
    services.release([credit.id], "chunk-1")
    assert state(credit.id) == ("expired", 1)


def test_stale_claims_are_released_and_fresh_ones_kept(app, alice, bob, settings):
    services.add_formids(app, alice, [formid(1)])
    services.add_formids(app, bob, [formid(2)])
    stale = claim(
        app, [alice.openid], now=timezone.now() - timedelta(seconds=settings.CREDIT_CLAIM_LEASE + 60)
    )
    fresh = claim(app, [bob.openid])
    assert services.release_stale() == 1
    assert state(stale[alice.openid].id) == ("available", 1)
    assert state(fresh[bob.openid].id) == ("claimed", 1)


def test_the_sweep_expires_due_formids_only(app, alice):
    services.add_formids(app, alice, [formid(1)], now=timezone.now() - 7 * DAY)
    services.add_formids(app, alice, [formid(2)])
    services.add_subscribe_credits(app, alice, ["TPL_A"], source="sdk")
    assert services.expire_due(batch_size=1) == 1
    assert dict(Credit.objects.values_list("value", "state")) == {
        formid(1): "expired",
        formid(2): "available",
        "": "available",
    }


def test_claims_never_cross_apps(app, alice, tenant):
    other = tenant_services.register_app(
        tenant, appid=random_appid(), secret=random_secret(), name="Other", sandbox_app=True
    )
    twin = services.touch_user(other, alice.openid)  # same openid string, another app's user
    services.add_formids(other, twin, [formid(9)])
    assert claim(app, [alice.openid]) == {}
    assert claim(other, [alice.openid])[alice.openid].value == formid(9)


def test_a_duplicate_upload_is_stored_once(app, alice, bob):
    first = services.add_formids(app, alice, [formid(1), formid(2), formid(1)])
    assert (first.accepted, first.duplicates) == (2, 1)
    again = services.add_formids(app, bob, [formid(2), formid(3)])  # someone else's formId is a duplicate too
    assert (again.accepted, again.duplicates) == (1, 1)
    assert Credit.objects.get(value=formid(2)).user == alice


def test_malformed_and_mock_formids_are_rejected_with_a_reason(app, alice):
    result = services.add_formids(
        app, alice, ["the formId is a mock one", "has space x", 42, None, "", formid(1)]
    )
    assert result.accepted == 1
    assert [r["reason"] for r in result.rejected] == [
        "mock_formid",
        "malformed",
        "not_a_string",
        "not_a_string",
        "malformed",
    ]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the single-statement claim is PostgreSQL's")
def test_a_chunk_is_claimed_in_one_statement(app, django_assert_max_num_queries):
    users = [services.touch_user(app, f"oUser{n:022d}") for n in range(500)]
    for n, user in enumerate(users):
        services.add_formids(app, user, [formid(n)])
    with django_assert_max_num_queries(1):
        claimed = claim(app, [u.openid for u in users])
    assert len(claimed) == 500


@pytest.mark.django_db(transaction=True)
def test_concurrent_claimers_never_share_a_credit(app):
    users = [services.touch_user(app, f"oUser{n:022d}") for n in range(40)]
    for n, user in enumerate(users):
        services.add_formids(app, user, [formid(3 * n), formid(3 * n + 1), formid(3 * n + 2)])
    openids = [u.openid for u in users]
    barrier = threading.Barrier(8)
    taken: list[int] = []
    errors: list[Exception] = []
    lock = threading.Lock()

    def claimer(worker: int) -> None:
        try:
            barrier.wait()
            for round_ in range(6):
                got = claim(app, openids, holder=f"worker-{worker}-{round_}")
                with lock:
                    taken.extend(c.id for c in got.values())
        except Exception as exc:  # asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=claimer, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(taken) == len(set(taken)), "a credit was handed out twice"
    assert len(taken) == 120  # 8 × 6 rounds asked for far more: every credit was claimed exactly once
    assert Credit.objects.filter(state="claimed").count() == 120


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the plan of PostgreSQL's claim statement")
def test_a_claim_reaches_its_credits_by_key_after_a_burst_the_statistics_miss(app):
    """The claim's rows are found by key (each recipient's user by app and openid, each credit to update by
    primary key), not by hashing the chosen ids against every available credit: with statistics from before
    a burst of uploads, that join read every available credit of every app (1.3 s for a release's 500 in
    bench.holds)."""
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO formids_miniuser (app_id, openid, unionid, push_enabled, first_seen, last_seen)"
            " SELECT %s, 'oStats' || lpad(n::text, 20, '0'), '', true, %s, %s"
            " FROM generate_series(1, 2000) n",
            [app.pk, now, now],
        )
        credits = (
            "INSERT INTO formids_credit (app_id, user_id, kind, value, template_id, uses_left, expires_at, state,"
            " source, claimed_by, created_at) SELECT %s, u.id, 'formid', %s || u.id || '-' || k, '', 1,"
            " %s, %s, 'sdk', '', %s FROM formids_miniuser u, generate_series(1, %s) k WHERE u.app_id = %s"
        )
        # The statistics are taken while nearly every credit is spent ...
        cursor.execute(credits, [app.pk, "spent", now + 3 * DAY, "consumed", now, 2, app.pk])
        cursor.execute(
            "UPDATE formids_credit SET state = 'available' WHERE app_id = %s AND id %% 20 = 0", [app.pk]
        )
        cursor.execute("ANALYZE formids_credit")
        cursor.execute("ANALYZE formids_miniuser")
        # ... then a burst of uploads stores 10 usable ones a user, which they don't know of.
        cursor.execute(credits, [app.pk, "usable", now + 6 * DAY, "available", now, 10, app.pk])
    openids = [f"oStats{n:020d}" for n in range(1, 501)]
    with explained_plans() as plans:
        claimed = claim(app, openids)
    assert sorted(claimed) == openids
    assert len({c.id for c in claimed.values()}) == 500
    plan = plan_of(plans, "UPDATE formids_credit")
    credit_reads = table_reads(plan, "formids_credit")
    assert credit_reads and all(line.startswith("->  Index Scan using ") for line in credit_reads), (
        credit_reads
    )
    assert any("formids_credit_pkey on formids_credit claimed" in line for line in credit_reads), credit_reads
    user_reads = table_reads(plan, "formids_miniuser")
    assert user_reads and all("Index Scan using miniuser_unique_openid" in line for line in user_reads), (
        user_reads
    )

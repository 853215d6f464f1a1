"""What issue 19 made cheaper on the SDK's hot path keeps its behaviour: the cached app (a deleted or changed
app is followed within SDK_APP_CACHE_SECONDS), both rate limits in one round trip with the same answers, no
user write when nothing changed, the upload and the day's statistics in one statement with the same answers
and counts, and held deliveries still marked by an upload."""

from __future__ import annotations

import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from formids import funnel, live_apps
from formids.models import Credit, DailyStat, MiniUser, TemplateDailyStat
from pushhub import ratelimit
from tenants import services as tenants
from tenants.models import MiniProgram
from tests.sdk_helpers import OPENID, error, sdk_client, url

pytestmark = pytest.mark.django_db


def formid(n: int) -> str:
    return f"formid{n:026d}"


@pytest.fixture
def app(sandbox_app):
    return sandbox_app


@pytest.fixture
def phone(app):
    return sdk_client(app)


@pytest.fixture
def clock(monkeypatch):
    """The cache's clock, moved by hand."""
    now = [1000.0]
    monkeypatch.setattr(live_apps, "time", SimpleNamespace(monotonic=lambda: now[0]))
    return now


def upload(phone, app, **lists):
    return phone.post(url(app, "formids"), lists, format="json")


# --- the app, cached per process -------------------------------------------------------------------------
def test_an_app_deleted_by_another_process_is_refused_once_the_cache_time_is_over(
    app, phone, clock, settings
):
    settings.SDK_APP_CACHE_SECONDS = 5
    assert phone.get(url(app, "me")).status_code == 200  # read and kept
    # Another process deletes it: a queryset update sends no signal here, as a save elsewhere would not.
    MiniProgram.objects.filter(pk=app.pk).update(deleted_at=timezone.now())

    clock[0] += 4.9
    assert phone.get(url(app, "me")).status_code == 200  # within the documented time: still served
    clock[0] += 0.2
    response = phone.get(url(app, "me"))
    assert response.status_code == 404
    assert error(response)["code"] == "not_found"


def test_an_app_deleted_in_this_process_is_refused_at_once(app, phone, clock):
    assert phone.get(url(app, "me")).status_code == 200
    tenants.delete_app(MiniProgram.objects.get(pk=app.pk))
    assert phone.get(url(app, "me")).status_code == 404


def test_a_changed_credit_source_is_followed_within_the_cache_time(app, phone, clock, settings, monkeypatch):
    settings.SDK_APP_CACHE_SECONDS = 5
    seen = []
    monkeypatch.setattr(
        "formids.sdk_views.report_subscriptions",
        lambda app, user, results: seen.append(app.credit_source) or {"credited": {}, "ignored": []},
    )
    report = {"results": {"TID": "accept"}}
    assert phone.post(url(app, "subscriptions"), report, format="json").status_code == 200
    MiniProgram.objects.filter(pk=app.pk).update(credit_source="events")  # another process
    phone.post(url(app, "subscriptions"), report, format="json")
    clock[0] += 5.1
    phone.post(url(app, "subscriptions"), report, format="json")
    assert seen == ["sdk", "sdk", "events"]


def test_no_cache_when_the_time_is_zero(app, phone, settings):
    settings.SDK_APP_CACHE_SECONDS = 0
    assert phone.get(url(app, "me")).status_code == 200
    MiniProgram.objects.filter(pk=app.pk).update(deleted_at=timezone.now())
    assert phone.get(url(app, "me")).status_code == 404


def test_each_request_gets_its_own_copy_of_the_app(app, clock):
    first = live_apps.live_app(app.appid)
    first.name = "changed by a request"
    assert live_apps.live_app(app.appid).name == app.name


def test_an_unknown_app_is_not_kept_so_a_new_one_is_served_at_once(tenant, clock, settings):
    settings.SDK_APP_CACHE_SECONDS = 5
    appid = "wx0123456789abcd01"
    assert live_apps.live_app(appid) is None
    MiniProgram.objects.create(tenant=tenant, appid=appid, name="new", events_token="t" * 32)
    assert live_apps.live_app(appid) is not None


# --- the upload: round trips and writes ------------------------------------------------------------------
def user_row_version(app) -> str | None:
    """PostgreSQL's xmin of the user's row: it changes with every write of the row."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT xmin::text FROM formids_miniuser WHERE app_id = %s AND openid = %s", [app.pk, OPENID]
        )
        return cursor.fetchone()[0]


def test_an_upload_is_one_statement_and_writes_no_user_when_nothing_changed(app, phone):
    assert upload(phone, app, formids=[formid(1)]).status_code == 200  # the app is cached, last_seen fresh
    last_seen = MiniUser.objects.get(app=app, openid=OPENID).last_seen
    version = user_row_version(app) if connection.vendor == "postgresql" else None
    with CaptureQueriesContext(connection) as queries:
        response = upload(phone, app, formids=[formid(2), formid(3)])
    assert response.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    statements = [q["sql"] for q in queries.captured_queries]
    assert not any("tenants_miniprogram" in sql for sql in statements), statements  # the cached app
    assert MiniUser.objects.get(app=app, openid=OPENID).last_seen == last_seen
    if connection.vendor == "postgresql":
        # the user's read, the insert and the day's statistics in one (the held deliveries' mark follows
        # the commit, which a test's transaction never reaches: tests/delivery/test_holds.py)
        assert len(statements) == 1, statements
        assert user_row_version(app) == version  # not even a write of the same values


def test_an_upload_refreshes_a_stale_last_seen(app, phone, settings):
    settings.SDK_LAST_SEEN_RESOLUTION = 300
    stale = timezone.now() - timedelta(seconds=301)
    MiniUser.objects.filter(app=app, openid=OPENID).update(last_seen=stale)
    before = timezone.now()
    assert upload(phone, app, formids=[formid(1)]).json()["accepted"] == 1
    assert MiniUser.objects.get(app=app, openid=OPENID).last_seen >= before
    fresh = timezone.now() - timedelta(seconds=299)
    MiniUser.objects.filter(app=app, openid=OPENID).update(last_seen=fresh)
    assert upload(phone, app, formids=[formid(2)]).json()["accepted"] == 1
    assert MiniUser.objects.get(app=app, openid=OPENID).last_seen == fresh


def test_an_upload_from_a_session_whose_user_was_erased_makes_the_user_again(app, phone):
    assert phone.get(url(app, "me")).status_code == 200
    MiniUser.objects.filter(app=app, openid=OPENID).delete()
    response = upload(phone, app, formids=[formid(1), formid(2)], prepay_ids=[formid(3)])
    assert response.json() == {"accepted": 3, "duplicates": 0, "rejected": []}
    user = MiniUser.objects.get(app=app, openid=OPENID)
    assert sorted(Credit.objects.filter(user=user).values_list("value", "kind")) == [
        (formid(1), "formid"), (formid(2), "formid"), (formid(3), "prepay")
    ]  # fmt: skip
    assert DailyStat.objects.get(app=app, day=timezone.now().date()).formids_collected == 3


def test_an_upload_of_nothing_usable_stores_nothing_and_makes_no_statement(app, phone):
    assert upload(phone, app, formids=[formid(1)]).status_code == 200
    with CaptureQueriesContext(connection) as queries:
        response = upload(phone, app, formids=["the formId is a mock one", "bad value"])
    assert response.json()["accepted"] == 0 and len(response.json()["rejected"]) == 2
    assert Credit.objects.filter(app=app).count() == 1
    if connection.vendor == "postgresql":  # (elsewhere the user is read first, as every SDK call does)
        assert queries.captured_queries == []


def test_a_stale_last_seen_is_written_once(app, phone, settings):
    settings.SDK_LAST_SEEN_RESOLUTION = 300
    stale = timezone.now() - timedelta(seconds=301)
    MiniUser.objects.filter(app=app, openid=OPENID).update(last_seen=stale)
    with CaptureQueriesContext(connection) as queries:
        phone.get(url(app, "me"))
        phone.get(url(app, "me"))
    writes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert len([sql for sql in writes if "formids_miniuser" in sql]) == 1
    assert MiniUser.objects.get(app=app, openid=OPENID).last_seen > stale


def test_the_answers_and_the_days_statistics_of_uploads(app, phone):
    first = upload(
        phone,
        app,
        formids=[formid(1), formid(2), formid(2), "the formId is a mock one", 7],
        prepay_ids=[formid(3), formid(1)],
    )
    assert first.json() == {
        "accepted": 3,
        "duplicates": 2,
        "rejected": [
            {"formid": "the formId is a mock one", "reason": "mock_formid"},
            {"formid": "7", "reason": "not_a_string"},
        ],
    }
    second = upload(phone, app, formids=[formid(3), formid(4)])
    assert second.json() == {"accepted": 1, "duplicates": 1, "rejected": []}
    only_duplicates = upload(phone, app, formids=[formid(4)])
    assert only_duplicates.json() == {"accepted": 0, "duplicates": 1, "rejected": []}

    stored = dict(Credit.objects.filter(app=app).values_list("value", "kind"))
    assert stored == {formid(1): "formid", formid(2): "formid", formid(3): "prepay", formid(4): "formid"}
    assert Credit.objects.get(app=app, value=formid(3)).uses_left == 3
    today = timezone.now().date()
    assert DailyStat.objects.get(app=app, day=today).formids_collected == 4
    row = TemplateDailyStat.objects.get(app=app, template_id=funnel.FORMID_TEMPLATE, day=today)
    assert (row.credits_collected, row.sent, row.opened) == (4, 0, 0)


# --- rate limits: one round trip, the same answers ----------------------------------------------------------
@pytest.fixture
def redis_commands(monkeypatch):
    """The commands the rate limits send to Redis (None when the cache is not Redis)."""
    client = ratelimit._redis_client()
    if client is None:
        pytest.skip("the rate limits count in Redis only when the cache is Redis")
    sent = []
    original = client.execute_command

    def execute_command(*args, **kwargs):
        sent.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(client, "execute_command", execute_command)
    return sent


def test_both_rate_limits_are_one_redis_round_trip(app, phone, redis_commands):
    assert phone.get(url(app, "me")).status_code == 200
    assert phone.get(url(app, "me")).status_code == 200
    assert redis_commands[-1:] == ["EVALSHA"] and len(redis_commands) <= 3  # (a first EVAL loads the script)
    assert redis_commands.count("EVALSHA") + redis_commands.count("EVAL") == 2


def test_over_the_address_limit_the_users_counter_is_not_counted(app, phone, settings):
    settings.SDK_RATE_PER_IP = 1
    assert phone.get(url(app, "me")).status_code == 200
    assert phone.get(url(app, "me")).status_code == 429
    hits, _ = ratelimit.peek(f"sdk:user:{app.pk}:{OPENID}", 60)
    assert hits == 1


def test_over_the_address_limit_an_unknown_app_and_a_bad_session_are_429(app, settings):
    settings.SDK_RATE_PER_IP = 1
    from rest_framework.test import APIClient

    client = APIClient(HTTP_AUTHORIZATION="Session forged")
    assert client.get(url(app, "me")).status_code == 401  # counted
    assert client.get(url(app, "me")).status_code == 429
    assert client.get(url("wx0000000000000000", "me")).status_code == 429


def test_take_in_order_counts_like_one_take_after_another(settings):
    first = ratelimit.take_in_order([("t:a", 2, 60), ("t:b", 5, 60)])
    assert [(q.limit, q.remaining, q.exceeded) for q in first] == [(2, 1, False), (5, 4, False)]
    ratelimit.take_in_order([("t:a", 2, 60), ("t:b", 5, 60)])
    over = ratelimit.take_in_order([("t:a", 2, 60), ("t:b", 5, 60)])
    assert [(q.limit, q.remaining, q.exceeded) for q in over] == [(2, 0, True)]  # b not counted
    assert ratelimit.peek("t:b", 60)[0] == 2


# --- login: its own database work -----------------------------------------------------------------------------
def test_a_login_of_a_known_user_reads_it_and_writes_nothing_unless_the_unionid_is_new(app, monkeypatch):
    from rest_framework.test import APIClient

    from pushhub.wechat.client import WeChatClient

    answers = iter([{"openid": OPENID, "unionid": "uOne"}] * 2 + [{"openid": OPENID, "unionid": "uTwo"}])
    monkeypatch.setattr(WeChatClient, "code2session", lambda self, code: next(answers))
    client = APIClient()

    def log_in():
        with CaptureQueriesContext(connection) as queries:
            response = client.post(url(app, "login"), {"code": "a-code"}, format="json")
        assert response.status_code == 200, response.content
        return [q["sql"] for q in queries.captured_queries if "formids_miniuser" in q["sql"]]

    first = log_in()  # first sight: created
    assert any(sql.startswith("INSERT") for sql in first)
    again = log_in()
    assert len(again) == 1 and again[0].startswith("SELECT"), again  # one read, no write
    new_unionid = log_in()
    assert [sql.split()[0] for sql in new_unionid] == ["SELECT", "UPDATE"]
    assert MiniUser.objects.get(app=app, openid=OPENID).unionid == "uTwo"


# --- the session: verified once per process, its age checked at every call ---------------------------------
def test_a_session_kept_as_verified_is_refused_once_it_expires(app, monkeypatch, settings):
    from rest_framework.test import APIClient

    from formids import sdk_auth

    token = sdk_auth.issue_session(app, OPENID)[0]
    client = APIClient(HTTP_AUTHORIZATION=f"Session {token}")
    assert client.get(url(app, "me")).status_code == 200  # verified, and kept
    assert client.get(url(app, "me")).status_code == 200
    later = time.time() + settings.SDK_SESSION_DAYS * 86400 + 5
    monkeypatch.setattr(sdk_auth, "time", SimpleNamespace(time=lambda: later))
    response = client.get(url(app, "me"))
    assert response.status_code == 401
    assert "expired" in error(response)["message"]
    tampered = APIClient(HTTP_AUTHORIZATION=f"Session {token[:-1]}{'A' if token[-1] != 'A' else 'B'}")
    assert tampered.get(url(app, "me")).status_code == 401


# --- credit arrivals: the listeners hear of a user who waits, in any case when they gave no probe -----------
def test_an_arrival_listener_without_a_probe_hears_of_every_upload(app, phone, monkeypatch):
    from formids import hooks

    heard = []
    monkeypatch.setattr(hooks, "_arrival_listeners", [lambda app_id, openids: heard.append(openids)])
    monkeypatch.setattr(hooks, "_arrival_probes", [])
    assert upload(phone, app, formids=[formid(1)]).json()["accepted"] == 1
    assert heard == [[OPENID]]


def test_a_probe_that_says_no_keeps_its_listener_quiet_and_yes_calls_it(app, phone, monkeypatch):
    from formids import hooks

    heard = []
    monkeypatch.setattr(hooks, "_arrival_listeners", [lambda app_id, openids: heard.append(openids)])
    monkeypatch.setattr(hooks, "_arrival_probes", ["{openid} = 'nobody'"])
    assert upload(phone, app, formids=[formid(1)]).json()["accepted"] == 1
    if connection.vendor == "postgresql":  # (elsewhere the listeners are always called: no probe is run)
        assert heard == []
    monkeypatch.setattr(hooks, "_arrival_probes", [f"{{openid}} = '{OPENID}' AND %(app)s = {app.pk}"])
    assert upload(phone, app, formids=[formid(2)]).json()["accepted"] == 1
    assert heard[-1] == [OPENID]


# --- the JSON check's shortcut: a NUL escape is still refused, whatever the charset -------------------------
@pytest.mark.parametrize("charset", ["utf-8", "utf-16"])
def test_a_nul_escape_is_refused_in_any_charset_the_shortcut_notwithstanding(app, phone, charset):
    body = '{"formids": ["formid\\u0000000000000000000000000"]}'.encode(charset)
    response = phone.post(url(app, "formids"), body, content_type=f"application/json; charset={charset}")
    assert response.status_code == 400, response.content
    assert error(response)["code"] == "validation_error"
    assert not Credit.objects.filter(app=app).exists()

"""GET /sdk/v1/{appid}/inbox and POST /sdk/v1/{appid}/inbox/read (../shared/API.md "Opens and the in-app
inbox"): the signed-in user's messages newest first with the template's field names, keyset pages without
duplicates or gaps, unread counts and read marks, nobody else's messages, the inbox off, bad input, retention."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from formids.sdk_auth import issue_session
from templates_app import catalogue, inbox, retention
from templates_app.models import InboxMessage, Push
from templates_app.pushes.request import parse_send_request
from templates_app.pushes.start import start_push
from tenants import services
from tests.conftest import random_appid, random_secret
from tests.sdk_helpers import OPENID, error, sdk_client, url

pytestmark = pytest.mark.django_db

FIELDS = [
    {"key": "character_string1", "name": "订单号"},
    {"key": "thing2", "name": ""},
    {"key": "time3", "name": "时间"},
]


def make_template(app, title="订单发货", fields=FIELDS):
    return catalogue.create_template(
        app,
        kind="subscribe",
        template_id=f"TPL-ORDER-{app.pk}",
        title=title,
        fields=fields,
        page="pages/order/index",
        actor="test",
    )


def make_push(template, openids, data=None, page=None) -> Push:
    body = {
        "to": openids,
        "data": data
        or {
            "character_string1": {"value": "A1"},
            "thing2": {"value": "键盘"},
            "time3": {"value": "2026-12-06 08:00"},
        },
    }
    if page is not None:
        body["page"] = page
    return start_push(
        template, parse_send_request(template, body), created_by="test", status_url=lambda p: f"/x/{p.pk}"
    ).push


def deliver(push, openid=OPENID, sent_at=None) -> InboxMessage:
    """The inbox row the send path writes for ``openid``'s delivery of ``push``."""
    delivery = push.deliveries.get(openid=openid)
    return InboxMessage.objects.create(
        app=push.app, openid=openid, push=push, delivery_id=delivery.pk, sent_at=sent_at or timezone.now()
    )


@pytest.fixture
def app(sandbox_app):
    return sandbox_app


@pytest.fixture
def template(app):
    return make_template(app)


# --- reading ---------------------------------------------------------------------------------------
def test_the_inbox_shows_the_users_messages_newest_first_with_field_names(app, template):
    now = timezone.now().replace(microsecond=0)
    older = deliver(make_push(template, [OPENID]), sent_at=now - timedelta(hours=2))
    newer = deliver(
        make_push(
            template,
            [OPENID],
            page="pages/item?id=9",
            data={
                "character_string1": {"value": "B2"},
                "thing2": {"value": "鼠标", "color": "#ff0000"},
                "time3": {"value": "15:01"},
            },
        ),
        sent_at=now,
    )

    answer = sdk_client(app).get(url(app, "inbox"))

    assert answer.status_code == 200
    assert answer["Cache-Control"].startswith("max-age=0")
    body = answer.json()
    assert body == {
        "results": [
            {
                "id": str(newer.pk),
                "title": "订单发货",
                # The template's names in its order; a field without a name shows its key.
                "fields": [
                    {"name": "订单号", "value": "B2"},
                    {"name": "thing2", "value": "鼠标"},
                    {"name": "时间", "value": "15:01"},
                ],
                "page": "pages/item?id=9",
                "sent_at": now.isoformat().replace("+00:00", "Z"),
                "read": False,
            },
            {
                "id": str(older.pk),
                "title": "订单发货",
                "fields": [
                    {"name": "订单号", "value": "A1"},
                    {"name": "thing2", "value": "键盘"},
                    {"name": "时间", "value": "2026-12-06 08:00"},
                ],
                "page": "pages/order/index",  # the template's default page
                "sent_at": (now - timedelta(hours=2)).isoformat().replace("+00:00", "Z"),
                "read": False,
            },
        ],
        "next": None,
        "unread": 2,
    }


def test_an_empty_inbox(app):
    assert sdk_client(app).get(url(app, "inbox")).json() == {"results": [], "next": None, "unread": 0}


def test_pages_have_no_duplicates_or_gaps_even_with_equal_sent_at(app, template):
    same = timezone.now()
    pushes = [make_push(template, [OPENID]) for _ in range(7)]
    # Five messages sent in the same instant (one write), two earlier.
    made = [deliver(p, sent_at=same) for p in pushes[:5]]
    made += [deliver(p, sent_at=same - timedelta(seconds=i + 1)) for i, p in enumerate(pushes[5:])]
    client = sdk_client(app)

    seen, link, pages = [], url(app, "inbox") + "?limit=2", 0
    while link:
        body = client.get(link).json()
        assert len(body["results"]) <= 2 and body["unread"] == 7
        seen += [m["id"] for m in body["results"]]
        link, pages = body["next"], pages + 1
    assert pages == 4
    expected = sorted(made, key=lambda m: (m.sent_at, m.pk), reverse=True)
    assert seen == [str(m.pk) for m in expected]


def test_a_message_arriving_between_pages_does_not_shift_the_next_page(app, template):
    base = timezone.now() - timedelta(minutes=5)
    first = [deliver(make_push(template, [OPENID]), sent_at=base + timedelta(seconds=i)) for i in range(3)]
    client = sdk_client(app)
    page1 = client.get(url(app, "inbox") + "?limit=2").json()
    deliver(make_push(template, [OPENID]))  # newest: belongs before page 1, not on page 2
    page2 = client.get(page1["next"]).json()
    assert [m["id"] for m in page1["results"]] == [str(first[2].pk), str(first[1].pk)]
    assert [m["id"] for m in page2["results"]] == [str(first[0].pk)]
    assert page2["next"] is None and page2["unread"] == 4


def test_the_page_size_is_20_and_limit_goes_up_to_100(app, template):
    push = make_push(template, [OPENID])
    delivery = push.deliveries.get()
    now = timezone.now()
    # 105 messages of one push (distinct delivery ids: the view reads no delivery).
    InboxMessage.objects.bulk_create(
        [
            InboxMessage(app=app, openid=OPENID, push=push, delivery_id=delivery.pk + 1000 + i, sent_at=now)
            for i in range(105)
        ]
    )
    client = sdk_client(app)
    assert len(client.get(url(app, "inbox")).json()["results"]) == 20
    assert len(client.get(url(app, "inbox") + "?limit=500").json()["results"]) == 100
    assert len(client.get(url(app, "inbox") + "?limit=3").json()["results"]) == 3


def test_a_page_costs_a_fixed_number_of_queries(app, template):
    for _ in range(3):
        deliver(make_push(template, [OPENID]))
    client = sdk_client(app)
    client.get(url(app, "inbox"))  # warm: the user row exists
    with CaptureQueriesContext(connection) as few:
        client.get(url(app, "inbox") + "?limit=1")
    with CaptureQueriesContext(connection) as many:
        client.get(url(app, "inbox"))
    assert len(many) == len(few)
    inbox_queries = [q["sql"] for q in many if "templates_app_inboxmessage" in q["sql"]]
    assert len(inbox_queries) == 2  # the page and the unread count


def test_users_never_see_each_others_messages(app, template, tenant, other_tenant):
    mine = deliver(make_push(template, [OPENID]))
    neighbour = deliver(make_push(template, ["oNeighbour"]), openid="oNeighbour")
    # The same openid in another app of the same tenant, and in another tenant's app.
    sibling = services.register_app(
        tenant, appid=random_appid(), secret=random_secret(), name="Sibling", sandbox_app=True
    )
    foreign = services.register_app(
        other_tenant, appid=random_appid(), secret=random_secret(), name="Foreign", sandbox_app=True
    )
    theirs = {a.pk: deliver(make_push(make_template(a), [OPENID])) for a in (sibling, foreign)}

    def ids(a, openid=OPENID):
        return [m["id"] for m in sdk_client(a, openid).get(url(a, "inbox")).json()["results"]]

    assert ids(app) == [str(mine.pk)]
    assert ids(app, "oNeighbour") == [str(neighbour.pk)]
    assert ids(sibling) == [str(theirs[sibling.pk].pk)]
    assert ids(foreign) == [str(theirs[foreign.pk].pk)]
    # Another user's cursor says nothing useful: it only positions within one's own messages.
    for a in (sibling, foreign):
        answer = sdk_client(a).post(
            url(a, "inbox/read"), {"ids": [str(mine.pk), str(neighbour.pk)]}, format="json"
        )
        assert answer.json() == {"unread": 1}
    assert InboxMessage.objects.filter(pk__in=[mine.pk, neighbour.pk], read_at__isnull=False).count() == 0


# --- read marks ------------------------------------------------------------------------------------------
def test_marking_some_read_then_all(app, template):
    messages = [deliver(make_push(template, [OPENID])) for _ in range(3)]
    other = deliver(make_push(template, ["oOther"]), openid="oOther")
    client = sdk_client(app)

    marked = client.post(
        url(app, "inbox/read"), {"ids": [str(messages[0].pk), messages[1].pk, str(other.pk)]}, format="json"
    )
    assert marked.status_code == 200 and marked.json() == {"unread": 1}
    listed = {m["id"]: m["read"] for m in client.get(url(app, "inbox")).json()["results"]}
    assert listed == {str(messages[0].pk): True, str(messages[1].pk): True, str(messages[2].pk): False}
    first_read = InboxMessage.objects.get(pk=messages[0].pk).read_at

    # Idempotent: again is the same answer, and a read message keeps its first read time.
    again = client.post(url(app, "inbox/read"), {"ids": [str(messages[0].pk)]}, format="json")
    assert again.json() == {"unread": 1}
    assert InboxMessage.objects.get(pk=messages[0].pk).read_at == first_read

    assert client.post(url(app, "inbox/read"), {"all": True}, format="json").json() == {"unread": 0}
    assert client.post(url(app, "inbox/read"), {"all": True}, format="json").json() == {"unread": 0}
    assert client.get(url(app, "inbox")).json()["unread"] == 0
    # The other user's message was never touched.
    assert InboxMessage.objects.get(pk=other.pk).read_at is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ids": "1"}, "ids"),
        ({"ids": {"a": 1}}, "ids"),
        ({"ids": [1, "x"]}, "ids"),
        ({"ids": [1.5]}, "ids"),
        ({"ids": [True]}, "ids"),
        ({"ids": [None]}, "ids"),
        ({"ids": ["-3"]}, "ids"),
        ({"ids": list(range(1, 502))}, "ids"),
        ({"all": "yes"}, "all"),
        ({"all": False}, "all"),
        ({"ids": [1], "all": True}, "all"),
        ({}, "ids"),
        ({"ids": [1], "extra": 1}, "extra"),
    ],
)
def test_bad_read_requests_are_400_with_the_field(app, template, body, field):
    message = deliver(make_push(template, [OPENID]))
    answer = sdk_client(app).post(url(app, "inbox/read"), body, format="json")
    assert answer.status_code == 400
    assert error(answer)["code"] == "validation_error"
    assert error(answer).get("field") == field
    assert InboxMessage.objects.get(pk=message.pk).read_at is None


def test_500_ids_and_huge_ids_are_fine(app, template):
    message = deliver(make_push(template, [OPENID]))
    ids = [str(message.pk), str(2**70), *range(1, 499)]
    answer = sdk_client(app).post(url(app, "inbox/read"), {"ids": ids}, format="json")
    assert answer.status_code == 200 and answer.json() == {"unread": 0}


def test_a_non_json_or_non_object_body_is_400(app):
    client = sdk_client(app)
    assert client.post(url(app, "inbox/read"), "nope", content_type="application/json").status_code == 400
    assert client.post(url(app, "inbox/read"), [1, 2], format="json").status_code == 400


@pytest.mark.parametrize(
    "cursor",
    [
        "nonsense",
        "!!!",
        base64.urlsafe_b64encode(b"12:abc").decode(),
        base64.urlsafe_b64encode(b"99999999999999999999999:1").decode(),
        base64.urlsafe_b64encode(b"1:0").decode(),
        base64.urlsafe_b64encode(b"1:99999999999999999999999").decode(),
        base64.urlsafe_b64encode("\u00e9:1".encode()).decode(),
        "%00",
    ],
)
def test_a_bad_cursor_is_400(app, cursor):
    answer = sdk_client(app).get(url(app, "inbox"), {"cursor": cursor})
    assert answer.status_code == 400
    assert (error(answer)["code"], error(answer)["field"]) == ("validation_error", "cursor")


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "1.5", "２"])
def test_a_bad_limit_is_400(app, limit):
    answer = sdk_client(app).get(url(app, "inbox"), {"limit": limit})
    assert answer.status_code == 400 and error(answer)["field"] == "limit"


def test_the_cursor_round_trips_to_the_microsecond():
    sent_at = timezone.now().replace(microsecond=999_999)
    assert inbox.decode_cursor(inbox.encode_cursor(sent_at, 42)) == (sent_at, 42)


# --- sessions and the inbox off ------------------------------------------------------------------------
def test_no_session_or_another_apps_session_is_401(app, template, tenant):
    deliver(make_push(template, [OPENID]))
    other = services.register_app(
        tenant, appid=random_appid(), secret=random_secret(), name="Other", sandbox_app=True
    )
    from rest_framework.test import APIClient

    assert error(APIClient().get(url(app, "inbox")))["code"] == "not_authenticated"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Session {issue_session(other, OPENID)[0]}")
    for answer in (
        client.get(url(app, "inbox")),
        client.post(url(app, "inbox/read"), {"all": True}, format="json"),
    ):
        assert answer.status_code == 401
    assert InboxMessage.objects.filter(read_at__isnull=False).count() == 0


def test_an_app_with_the_inbox_off_answers_inbox_disabled(app, template):
    message = deliver(make_push(template, [OPENID]))
    app.inbox_enabled = False
    app.save(update_fields=["inbox_enabled"])
    client = sdk_client(app)
    for answer in (
        client.get(url(app, "inbox")),
        client.post(url(app, "inbox/read"), {"all": True}, format="json"),
    ):
        assert answer.status_code == 404
        assert error(answer)["code"] == "inbox_disabled"
    assert InboxMessage.objects.get(pk=message.pk).read_at is None


def test_an_unknown_or_deleted_app_is_404_not_found(app):
    client = sdk_client(app)
    assert error(client.get(url("wx0000000000000000", "inbox")))["code"] == "not_found"
    services.delete_app(app, actor="test")
    assert error(client.get(url(app, "inbox")))["code"] == "not_found"


# --- inbox_enabled in the apps API -------------------------------------------------------------------------
def test_the_apps_api_shows_and_changes_inbox_enabled(app, api, read_api):
    path = f"/api/v1/apps/{app.appid}"
    assert api.get(path).json()["inbox_enabled"] is True
    assert read_api.patch(path, {"inbox_enabled": False}, format="json").status_code == 403
    changed = api.patch(path, {"inbox_enabled": False}, format="json")
    assert changed.status_code == 200 and changed.json()["inbox_enabled"] is False
    app.refresh_from_db()
    assert app.inbox_enabled is False
    bad = api.patch(path, {"inbox_enabled": "no"}, format="json")
    assert bad.status_code == 400 and error(bad)["field"] == "inbox_enabled"
    assert api.patch(path, {"inbox_enabled": True}, format="json").json()["inbox_enabled"] is True


# --- retention ---------------------------------------------------------------------------------------------
def test_retention_deletes_messages_older_than_inbox_retention_days(app, template, settings):
    settings.INBOX_RETENTION_DAYS = 90
    now = timezone.now()
    old = deliver(make_push(template, [OPENID]), sent_at=now - timedelta(days=91))
    old_read = deliver(make_push(template, [OPENID]), sent_at=now - timedelta(days=90, hours=1))
    InboxMessage.objects.filter(pk=old_read.pk).update(read_at=now)
    kept = deliver(make_push(template, [OPENID]), sent_at=now - timedelta(days=89))

    reports = {r.name: r for r in retention.sweep()}

    assert reports["inbox_messages"].deleted == 2
    assert list(InboxMessage.objects.values_list("pk", flat=True)) == [kept.pk]
    assert old.pk != kept.pk
    # Their pushes stay (the inbox row only points at one).
    assert Push.objects.filter(template=template).count() == 3


def test_retention_0_keeps_messages_forever(app, template, settings):
    settings.INBOX_RETENTION_DAYS = 0
    deliver(make_push(template, [OPENID]), sent_at=timezone.now() - timedelta(days=4000))
    reports = {r.name: r for r in retention.sweep()}
    assert reports["inbox_messages"].deleted == 0
    assert "kept forever (INBOX_RETENTION_DAYS=0)" in reports["inbox_messages"].line()
    assert InboxMessage.objects.count() == 1

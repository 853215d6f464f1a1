"""Sending to an audience (../shared/API.md "Sending to an audience"): ``to: {"aliases": [...]}`` and
``to: {"tags": {"all", "any", "none"}}`` on the trigger URL and the API — the 202, what the push stores,
dry runs, form bodies (``to=@tag:vip``) and validation. Delivery to the sandbox: tests/delivery/test_audience.py."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from formids import services as credits
from formids.models import Credit, MiniUser, UserTag
from templates_app import catalogue
from templates_app.models import Delivery, Push

pytestmark = pytest.mark.django_db

ALICE, BOB, CAROL, DAVE = (f"o{name:0<26}" for name in ("Alice", "Bob", "Carol", "Dave"))
FIELDS = [{"key": "keyword1", "name": "订单号"}, {"key": "keyword2", "name": "金额"}]
DATA = {"keyword1": "A123", "keyword2": "¥99.00"}


@pytest.fixture
def app(sandbox_app):
    """alice (u-alice, vip) has a formId; bob (u-bob, vip) has none; carol (u-carol, vip, churned) has one
    but turned pushes off; dave (no alias, tagged city:sh) has one."""
    users = {}
    for openid, alias in ((ALICE, "u-alice"), (BOB, "u-bob"), (CAROL, "u-carol"), (DAVE, None)):
        users[openid] = MiniUser.objects.create(app=sandbox_app, openid=openid, alias=alias)
    for openid in (ALICE, CAROL, DAVE):
        credits.add_formids(sandbox_app, users[openid], [f"formid{openid}"])
    credits.set_push_enabled(users[CAROL], False)
    tags = [(ALICE, "vip"), (BOB, "vip"), (CAROL, "vip"), (CAROL, "churned"), (DAVE, "city:sh")]
    UserTag.objects.bulk_create(UserTag(app=sandbox_app, user=users[o], tag=t) for o, t in tags)
    return sandbox_app


@pytest.fixture
def template(app):
    return catalogue.create_template(
        app, kind="formid", template_id="TPL_FORM", title="支付成功", fields=FIELDS, actor="test"
    )


def via_trigger(template, body, query=""):
    return Client().post(
        f"/t/{template.get_trigger_token()}{query}", json.dumps(body), content_type="application/json"
    )


@pytest.fixture(params=["trigger", "api"])
def send(request, template, api):
    """send(body, query="") through the trigger URL or through the API with a write key."""

    def through_api(body, query=""):
        return api.generic(
            "POST",
            f"/api/v1/templates/{template.pk}/pushes{query}",
            json.dumps(body),
            content_type="application/json",
        )

    return (
        (lambda body, query="": via_trigger(template, body, query))
        if request.param == "trigger"
        else through_api
    )


def error(response) -> dict:
    return response.json()["error"]


# --- aliases -----------------------------------------------------------------------------------------
def test_an_alias_push_claims_now_and_names_recipients_by_alias(send):
    response = send({"to": {"aliases": ["u-alice", "u-bob", "u-carol", "u-ghost", "u-alice"]}, "data": DATA})
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["status"], body["recipients"]) == ("queued", 3)
    assert (body["no_credit"], body["opted_out"], body["unknown_aliases"]) == (
        ["u-bob"],
        ["u-carol"],
        ["u-ghost"],
    )
    push = Push.objects.get(pk=body["push_id"])
    assert (push.audience, push.to) == ("aliases", {"aliases": ["u-alice", "u-bob", "u-carol", "u-ghost"]})
    assert (push.recipients, push.no_credit, push.opted_out, push.pending, push.enumerated) == (
        3,
        1,
        1,
        1,
        True,
    )
    # Deliveries keep the openid the message goes to; an unknown alias is not attempted: no row.
    rows = dict(Delivery.objects.filter(push=push).values_list("openid", "status"))
    assert rows == {ALICE: "pending", BOB: "no_credit"}
    assert Delivery.objects.get(push=push, openid=ALICE).credit.claimed_by == push.claim_holder


def test_the_status_shows_to_as_the_request_gave_it(send, read_api):
    push_id = send({"to": {"aliases": ["u-alice", "u-ghost"]}, "data": DATA}).json()["push_id"]
    shown = read_api.get(f"/api/v1/pushes/{push_id}").json()
    assert shown["to"] == {"aliases": ["u-alice", "u-ghost"]}
    assert shown["counts"]["recipients"] == 1
    deliveries = read_api.get(f"/api/v1/pushes/{push_id}/deliveries").json()["results"]
    assert [d["openid"] for d in deliveries] == [ALICE]


def test_deliveries_show_their_users_alias_and_tags_in_a_fixed_number_of_queries(
    send, read_api, django_assert_max_num_queries
):
    by_alias = send({"to": {"aliases": ["u-alice", "u-bob"]}, "data": DATA}).json()["push_id"]
    strangers = [f"oStranger{n:02d}" for n in range(30)]
    listed = send({"to": [DAVE, *strangers], "data": DATA}).json()["push_id"]
    with django_assert_max_num_queries(6):
        rows = read_api.get(f"/api/v1/pushes/{by_alias}/deliveries").json()["results"]
    assert [(r["openid"], r["alias"], r["tags"]) for r in rows] == [
        (ALICE, "u-alice", ["vip"]),
        (BOB, "u-bob", ["vip"]),
    ]
    with django_assert_max_num_queries(6):  # 31 rows: the same queries
        rows = read_api.get(f"/api/v1/pushes/{listed}/deliveries").json()["results"]
    assert [(r["openid"], r["alias"], r["tags"]) for r in rows] == [(DAVE, None, ["city:sh"])] + [
        (o, None, []) for o in strangers
    ]


def test_an_alias_moved_to_another_user_reaches_its_new_holder(send):
    MiniUser.objects.filter(openid=ALICE).update(alias=None)
    MiniUser.objects.filter(openid=DAVE).update(alias="u-alice")
    body = send({"to": {"aliases": ["u-alice"]}, "data": DATA}).json()
    assert list(Delivery.objects.filter(push_id=body["push_id"]).values_list("openid", flat=True)) == [DAVE]


def test_aliases_nobody_holds_make_a_push_that_is_done_at_once(send):
    body = send({"to": {"aliases": ["u-ghost", "u-nobody"]}, "data": DATA}).json()
    assert (body["recipients"], body["no_credit"], body["unknown_aliases"]) == (
        0,
        [],
        ["u-ghost", "u-nobody"],
    )
    assert Push.objects.get(pk=body["push_id"]).status == "done"
    assert not Delivery.objects.exists()


def test_another_apps_aliases_are_unknown(send, tenant):
    from tenants import services as tenants
    from tests.conftest import random_appid, random_secret

    other = tenants.register_app(
        tenant, appid=random_appid(), secret=random_secret(), name="Other", sandbox_app=True
    )
    stranger = MiniUser.objects.create(app=other, openid="oStranger", alias="u-stranger")
    credits.add_formids(other, stranger, ["formidSTRANGER"])
    body = send({"to": {"aliases": ["u-stranger"]}, "data": DATA}).json()
    assert (body["recipients"], body["unknown_aliases"]) == (0, ["u-stranger"])
    assert not Credit.objects.filter(state="claimed").exists()


def test_only_alias_requests_answer_unknown_aliases(send):
    assert "unknown_aliases" not in send({"to": [ALICE], "data": DATA}).json()
    assert "unknown_aliases" not in send({"to": {"tags": {"any": ["vip"]}}, "data": DATA}).json()


def test_force_reaches_an_alias_that_turned_pushes_off(send):
    body = send({"to": {"aliases": ["u-carol"]}, "data": DATA, "force": True}).json()
    assert (body["opted_out"], body["no_credit"]) == ([], [])


def test_a_scheduled_alias_push_resolves_nothing_until_it_runs(send):
    when = (timezone.now() + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    body = send({"to": {"aliases": ["u-alice", "u-ghost"]}, "data": DATA, "send_at": when}).json()
    assert body["status"] == "scheduled"
    assert [body[k] for k in ("recipients", "no_credit", "opted_out", "unknown_aliases")] == [None] * 4
    push = Push.objects.get(pk=body["push_id"])
    assert (push.recipients, push.to) == (None, {"aliases": ["u-alice", "u-ghost"]})
    assert not Delivery.objects.exists() and not Credit.objects.filter(state="claimed").exists()


def test_an_alias_push_replays_its_first_answer_with_the_same_idempotency_key(template):
    body = {"to": {"aliases": ["u-alice", "u-ghost"]}, "data": DATA}
    token = template.get_trigger_token()
    first, again = (
        Client().post(
            f"/t/{token}", json.dumps(body), content_type="application/json", HTTP_IDEMPOTENCY_KEY="k1"
        )
        for _ in range(2)
    )
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json() == first.json() and first.json()["unknown_aliases"] == ["u-ghost"]
    assert Push.objects.count() == 1


# --- segments ----------------------------------------------------------------------------------------
def test_a_segment_push_is_left_to_the_workers(send):
    response = send({"to": {"tags": {"all": ["vip", "vip"], "none": ["churned"], "any": []}}, "data": DATA})
    assert response.status_code == 202, response.content
    body = response.json()
    assert [body[k] for k in ("recipients", "no_credit", "opted_out")] == [None, None, None]
    push = Push.objects.get(pk=body["push_id"])
    # As given, lists deduplicated and an empty one left out.
    assert (push.audience, push.to) == ("tags", {"tags": {"all": ["vip"], "none": ["churned"]}})
    assert (push.status, push.enumerated, push.recipients) == ("queued", False, None)
    assert not Delivery.objects.exists() and not Credit.objects.filter(state="claimed").exists()


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        # vip: alice (credit), bob (none), carol (credit, opted out)
        ({"tags": {"all": ["vip"]}}, {"recipients": 3, "reachable": 1, "no_credit": 1, "opted_out": 1}),
        (
            {"tags": {"all": ["vip"], "none": ["churned"]}},
            {"recipients": 2, "reachable": 1, "no_credit": 1, "opted_out": 0},
        ),
        (
            {"tags": {"any": ["churned", "city:sh"]}},
            {"recipients": 2, "reachable": 1, "no_credit": 0, "opted_out": 1},
        ),
        (
            {"tags": {"all": ["vip", "city:sh"]}},
            {"recipients": 0, "reachable": 0, "no_credit": 0, "opted_out": 0},
        ),
        (
            {"tags": {"any": ["nobody-has-this"]}},
            {"recipients": 0, "reachable": 0, "no_credit": 0, "opted_out": 0},
        ),
        (
            {"aliases": ["u-alice", "u-bob", "u-carol", "u-ghost"]},
            {"recipients": 3, "reachable": 1, "no_credit": 1, "opted_out": 1, "unknown_aliases": ["u-ghost"]},
        ),
    ],
)
def test_dry_run_counts_aliases_and_segments_and_claims_nothing(send, to, expected):
    response = send({"to": to, "data": DATA}, "?dry_run=1")
    assert response.status_code == 200, response.content
    assert response.json() == expected
    assert not Push.objects.exists() and not Credit.objects.filter(state="claimed").exists()


def test_a_forced_dry_run_counts_users_who_turned_pushes_off_as_reachable(send):
    answer = send({"to": {"tags": {"any": ["vip"]}}, "data": DATA, "force": True}, "?dry_run=1").json()
    assert answer == {"recipients": 3, "reachable": 2, "no_credit": 1, "opted_out": 0}


def test_a_form_body_sends_to_a_tag(template):
    path = f"/t/{template.get_trigger_token()}"
    response = Client().post(path, {"to": "@tag:vip", "keyword1": "A123", "keyword2": "9"})
    assert response.status_code == 202, response.content
    push = Push.objects.get(pk=response.json()["push_id"])
    assert (push.audience, push.to) == ("tags", {"tags": {"any": ["vip"]}})
    # Several @tag: values are the users with any of them; the dry run counts them.
    reach = Client().post(
        f"{path}?dry_run=1", {"to": "@tag:churned,@tag:city:sh", "keyword1": "A", "keyword2": "9"}
    )
    assert reach.json() == {"recipients": 2, "reachable": 1, "no_credit": 0, "opted_out": 1}
    bad = Client().post(path, {"to": "@tag:has space", "keyword1": "A", "keyword2": "9"})
    assert (bad.status_code, error(bad)["field"]) == (400, "to.tags.any[0]")
    mixed = Client().post(path, {"to": f"{ALICE},@tag:vip", "keyword1": "A", "keyword2": "9"})
    assert (mixed.status_code, error(mixed)["field"]) == (400, "to[1]")


# --- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("to", "field"),
    [
        ({"aliases": []}, "to.aliases"),
        ({"aliases": "u-alice"}, "to.aliases"),
        ({"aliases": [f"u{n}" for n in range(1001)]}, "to.aliases"),
        ({"aliases": ["u-alice", "u-bob", "u-carol", ""]}, "to.aliases[3]"),
        ({"aliases": ["u-alice", "a" * 129]}, "to.aliases[1]"),
        ({"aliases": ["u-alice", 7]}, "to.aliases[1]"),
        ({"aliases": ["u-alice", None]}, "to.aliases[1]"),
        ({"tags": {}}, "to.tags"),
        ({"tags": {"none": ["churned"]}}, "to.tags"),
        ({"tags": {"all": [], "any": [], "none": ["x"]}}, "to.tags"),
        ({"tags": ["vip"]}, "to.tags"),
        ({"tags": {"any": ["has space"]}}, "to.tags.any[0]"),
        ({"tags": {"all": ["vip", "t" * 65]}}, "to.tags.all[1]"),
        ({"tags": {"all": ["vip"], "none": ["vip\n"]}}, "to.tags.none[0]"),
        ({"tags": {"any": ["城市"]}}, "to.tags.any[0]"),
        ({"tags": {"any": ["vip", 1]}}, "to.tags.any[1]"),
        ({"tags": {"all": [f"t{n}" for n in range(21)]}}, "to.tags.all"),
        ({"tags": {"any": ["vip"], "none": [f"t{n}" for n in range(21)]}}, "to.tags.none"),
        ({"tags": {"any": "vip"}}, "to.tags.any"),
        ({"tags": {"any": ["vip"], "some": ["x"]}}, "to.tags.some"),
        ({"aliases": ["u-alice"], "tags": {"any": ["vip"]}}, "to"),
        ({"openids": [ALICE]}, "to.openids"),
        ({}, "to"),
        ("@tag:vip", "to"),
        ([ALICE, "@tag:vip"], "to[1]"),
    ],
)
def test_bad_audiences_name_the_field_and_change_nothing(send, to, field):
    response = send({"to": to, "data": DATA})
    assert response.status_code == 400, response.content
    assert (error(response)["code"], error(response)["field"]) == ("validation_error", field)
    assert not Push.objects.exists() and not Credit.objects.filter(state="claimed").exists()


def test_a_thousand_aliases_and_twenty_tags_are_accepted(send):
    aliases = send({"to": {"aliases": [f"u{n}" for n in range(1000)]}, "data": DATA})
    assert aliases.status_code == 202 and len(aliases.json()["unknown_aliases"]) == 1000
    tags = [f"t{n}" for n in range(20)]
    assert send({"to": {"tags": {"all": tags, "any": tags, "none": tags}}, "data": DATA}).status_code == 202

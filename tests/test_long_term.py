"""Long-term subscriptions (../shared/API.md "Long-term subscriptions"): the catalogue's ``subscription`` (sync
reads WeChat's type over real HTTP, POST may give it, PATCH may not), accepts that make one standing
subscription, the answers and events that end it, and how quota, users, me, the dashboard and other tenants
see it."""

from __future__ import annotations

import pytest
from django.urls import reverse

from formids.models import Credit, InboundEvent, MiniUser
from formids.services import add_subscribe_credits, start_long_term, touch_user
from pushhub.wechat.sandbox import services as sandbox
from templates_app import catalogue
from templates_app.models import Template
from tenants import services as tenant_services
from tests.conftest import api_client
from tests.dashboard.conftest import signed_in
from tests.sdk_helpers import error, sdk_client, url
from webhooks import services as webhook_services
from webhooks.models import WebhookEvent

pytestmark = pytest.mark.django_db

CONTENT = "预约项目:{{thing1.DATA}}\n预约时间:{{time2.DATA}}\n"
FIELDS = [{"key": "thing1", "name": "预约项目"}, {"key": "time2", "name": "预约时间"}]
OPENID = "oLongTerm0000000000000000001"


@pytest.fixture
def app(sandbox_app):
    return sandbox_app


def add(app, template_id: str, subscription: str | None = "long_term", kind: str = "subscribe") -> Template:
    return catalogue.create_template(
        app,
        kind=kind,
        template_id=template_id,
        title="预约提醒",
        fields=FIELDS if kind == "subscribe" else [{"key": "keyword1"}],
        subscription=subscription,
        actor="t",
    )


@pytest.fixture
def lt(app):
    return add(app, "LT_VISIT")


@pytest.fixture
def ot(app):
    return add(app, "OT_ORDER", subscription="one_time")


def report(app, results: dict, openid: str = OPENID):
    return sdk_client(app, openid).post(url(app, "subscriptions"), {"results": results}, format="json")


def standing(app, openid: str = OPENID) -> list[str]:
    return sorted(
        Credit.objects.filter(app=app, user__openid=openid, kind="long_term", state="available").values_list(
            "template_id", flat=True
        )
    )


# --- the catalogue --------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_the_sync_reads_wechats_type(api, app, sandbox_base):
    one_time = sandbox.add_template(app.appid, kind="subscribe", title="订单", content=CONTENT, type=2)
    long_term = sandbox.add_template(app.appid, kind="subscribe", title="预约", content=CONTENT, type=3)
    formid = sandbox.add_template(app.appid, kind="formid", title="支付", content="金额{{keyword1.DATA}}\n")

    response = api.post(f"/api/v1/apps/{app.appid}/templates/sync")
    assert response.status_code == 200, response.content
    listed = {
        t["template_id"]: t["subscription"]
        for t in api.get(f"/api/v1/apps/{app.appid}/templates").json()["results"]
    }
    assert listed == {
        one_time.template_id: "one_time",
        long_term.template_id: "long_term",
        formid.template_id: None,
    }


@pytest.mark.django_db(transaction=True)
def test_a_template_the_sync_finds_long_term_takes_its_users_accepts_along(api, app, sandbox_base):
    """Synced before PushHub read the type, a long-term template was one-time: its users' credits become
    standing subscriptions (and back), so nobody reachable is lost."""
    wechat = sandbox.add_template(app.appid, kind="subscribe", title="预约", content=CONTENT, type=2)
    api.post(f"/api/v1/apps/{app.appid}/templates/sync")
    alice, bob = touch_user(app, "oAlice"), touch_user(app, "oBob")
    add_subscribe_credits(app, alice, [wechat.template_id] * 3, source="sdk")
    add_subscribe_credits(app, bob, [wechat.template_id], source="sdk")

    sandbox.upsert_template(
        app.appid, kind="subscribe", title="预约", content=CONTENT, template_id=wechat.template_id, type=3
    )
    assert api.post(f"/api/v1/apps/{app.appid}/templates/sync").json() == {
        "created": 0,
        "updated": 1,
        "deleted": 0,
    }
    quota = api.get(f"/api/v1/apps/{app.appid}/quota").json()["credits"]
    assert quota["long_term"] == {wechat.template_id: 2} and quota["subscribe"] == {}

    sandbox.upsert_template(
        app.appid, kind="subscribe", title="预约", content=CONTENT, template_id=wechat.template_id, type=2
    )
    api.post(f"/api/v1/apps/{app.appid}/templates/sync")
    quota = api.get(f"/api/v1/apps/{app.appid}/quota").json()["credits"]
    assert quota["long_term"] == {} and quota["subscribe"] == {wechat.template_id: 2}


def test_post_takes_a_subscription_and_defaults_to_one_time(api, app):
    base = {"kind": "subscribe", "title": "预约提醒", "fields": FIELDS}
    created = api.post(
        f"/api/v1/apps/{app.appid}/templates",
        {**base, "template_id": "LT_1", "subscription": "long_term"},
        format="json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["subscription"] == "long_term"
    assert Template.objects.get(template_id="LT_1").is_long_term
    plain = api.post(f"/api/v1/apps/{app.appid}/templates", {**base, "template_id": "OT_1"}, format="json")
    assert plain.json()["subscription"] == "one_time"
    read = api.get(f"/api/v1/templates/{created.json()['id']}")
    assert read.json()["subscription"] == "long_term"


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "formid", "fields": [{"key": "keyword1"}], "subscription": "long_term"},
        {"kind": "formid", "fields": [{"key": "keyword1"}], "subscription": "one_time"},
        {"kind": "subscribe", "fields": FIELDS, "subscription": "forever"},
        {"kind": "subscribe", "fields": FIELDS, "subscription": 3},
    ],
)
def test_a_bad_subscription_is_a_400_naming_it(api, app, body):
    response = api.post(
        f"/api/v1/apps/{app.appid}/templates", {"template_id": "T_1", "title": "t", **body}, format="json"
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "validation_error"
    assert response.json()["error"]["field"] == "subscription"
    assert not Template.objects.exists()


def test_patch_cannot_change_the_subscription(api, lt):
    response = api.patch(f"/api/v1/templates/{lt.pk}", {"subscription": "one_time"}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "validation_error"
    assert response.json()["error"]["field"] == "subscription"
    assert "sync" in response.json()["error"]["message"]
    lt.refresh_from_db()
    assert lt.subscription == "long_term"


# --- accepts and what ends them ---------------------------------------------------------------------------
def test_an_accept_makes_one_standing_subscription_however_often_it_comes(app, lt, ot):
    first = report(app, {lt.template_id: "accept", ot.template_id: "accept"})
    assert first.status_code == 200, first.content
    assert first.json() == {"credited": {lt.template_id: 1, ot.template_id: 1}, "ignored": []}
    second = report(app, {lt.template_id: "accept", ot.template_id: "accept"})
    assert second.json()["credited"] == {lt.template_id: 1, ot.template_id: 1}

    assert Credit.objects.filter(kind="long_term").count() == 1
    assert Credit.objects.filter(kind="subscribe", template_id=ot.template_id).count() == 2
    assert standing(app) == [lt.template_id]


def test_two_accepts_racing_make_one_row(app, lt):
    user = touch_user(app, OPENID)
    start_long_term(app, user, [lt.template_id, lt.template_id], source="sdk")
    start_long_term(app, user, [lt.template_id], source="events")
    assert Credit.objects.filter(kind="long_term").count() == 1


@pytest.mark.parametrize("answer", ["reject", "ban"])
def test_an_sdk_reject_or_ban_ends_it(app, lt, ot, answer):
    report(app, {lt.template_id: "accept", ot.template_id: "accept"})
    response = report(app, {lt.template_id: answer, ot.template_id: answer})
    assert response.status_code == 200
    assert standing(app) == []
    assert Credit.objects.get(kind="long_term").state == "expired"
    # One-time credits already given stay: WeChat keeps them too.
    assert Credit.objects.filter(kind="subscribe", state="available").count() == 1
    outcome = InboundEvent.objects.filter(event="subscribe_report").order_by("pk").last().outcome
    assert outcome["ended"] == {lt.template_id: 1}


def test_filter_ends_nothing_and_accepting_again_starts_a_new_subscription(app, lt):
    report(app, {lt.template_id: "accept"})
    report(app, {lt.template_id: "filter"})
    assert standing(app) == [lt.template_id]
    report(app, {lt.template_id: "reject"})
    report(app, {lt.template_id: "accept"})
    assert standing(app) == [lt.template_id]
    assert list(Credit.objects.order_by("pk").values_list("state", flat=True)) == ["expired", "available"]


def test_a_disabled_long_term_template_starts_nothing_but_its_subscriptions_still_end(app, lt):
    report(app, {lt.template_id: "accept"})
    catalogue.update_template(lt, actor="t", status="disabled")
    assert report(app, {lt.template_id: "accept"}).json() == {"credited": {}, "ignored": [lt.template_id]}
    report(app, {lt.template_id: "ban"})
    assert standing(app) == []


def test_with_events_as_credit_source_a_report_starts_nothing_but_a_reject_still_ends_it(app, lt):
    app = tenant_services.update_app(app, credit_source="events")
    start_long_term(app, touch_user(app, OPENID), [lt.template_id], source="events")
    assert report(app, {lt.template_id: "accept"}).json() == {"credited": {}, "ignored": []}
    assert Credit.objects.count() == 1
    report(app, {lt.template_id: "reject"})
    assert standing(app) == []


def test_a_report_reject_tells_the_tenant(app, lt, tenant, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    webhook_services.create_endpoint(tenant, url="http://127.0.0.1:9/hook", events=["*"], actor="t")
    report(app, {lt.template_id: "accept"})
    report(app, {lt.template_id: "reject"})
    changes = [e.data for e in WebhookEvent.objects.filter(type="subscription.changed")]
    assert sorted((c["template_id"], c["status"]) for c in changes) == [
        (lt.template_id, "accept"),
        (lt.template_id, "reject"),
    ]


@pytest.mark.django_db(transaction=True)
def test_wechats_change_event_ends_it(app, lt, sandbox_base):
    tenant_services.connect_sandbox_events(app)  # WeChat pushes to this test's server
    sandbox.add_template(
        app.appid, kind="subscribe", title="预约", content=CONTENT, template_id="LT_VISIT", type=3
    )
    sandbox.create_user(app.appid, OPENID)
    report(app, {lt.template_id: "accept"})

    # The user turns it off in the mini-program's settings: WeChat pushes subscribe_msg_change_event (HTTP).
    sandbox.turn_off_subscription(app.appid, OPENID, lt.template_id)

    assert standing(app) == []
    event = InboundEvent.objects.get(event="subscribe_msg_change_event")
    assert event.outcome == {"dropped": {lt.template_id: 1}}


@pytest.mark.django_db(transaction=True)
def test_wechats_popup_events_start_and_end_it(app, lt, sandbox_base):
    app = tenant_services.update_app(app, credit_source="events")
    tenant_services.connect_sandbox_events(app)  # WeChat pushes to this test's server
    sandbox.add_template(
        app.appid, kind="subscribe", title="预约", content=CONTENT, template_id="LT_VISIT", type=3
    )
    sandbox.create_user(app.appid, OPENID)

    sandbox.accept_subscriptions(app.appid, OPENID, {lt.template_id: "accept"})
    sandbox.accept_subscriptions(app.appid, OPENID, {lt.template_id: "accept"})
    assert standing(app) == [lt.template_id]
    assert Credit.objects.count() == 1

    sandbox.accept_subscriptions(app.appid, OPENID, {lt.template_id: "reject"})
    assert standing(app) == []


# --- users the app never saw ---------------------------------------------------------------------------
def test_a_report_without_a_session_creates_nobody(client, app, lt):
    response = client.post(
        url(app, "subscriptions"), {"results": {lt.template_id: "accept"}}, content_type="application/json"
    )
    assert response.status_code == 401
    assert error(response)["code"] == "not_authenticated"
    assert not MiniUser.objects.exists() and not Credit.objects.exists()


def test_a_reject_from_a_user_without_a_subscription_is_recorded_only(app, lt):
    response = report(app, {lt.template_id: "ban"}, openid="oNeverSubscribed00000000001")
    assert response.status_code == 200, response.content
    assert response.json() == {"credited": {}, "ignored": []}
    assert not Credit.objects.exists()


def test_a_change_event_for_an_openid_never_seen_changes_nothing(client, app, lt):
    from tests.test_wechat_events import WeChatPush, now

    message = {
        "ToUserName": "gh_123456789abc",
        "FromUserName": "oNeverSeenByThisApp000000001",
        "CreateTime": now(),
        "MsgType": "event",
        "Event": "subscribe_msg_change_event",
        "List": {"TemplateId": lt.template_id, "SubscribeStatusString": "reject"},
    }
    response = WeChatPush(client, app).plain(message)
    assert response.status_code == 200, response.content
    assert not MiniUser.objects.exists() and not Credit.objects.exists()


def test_an_unknown_template_id_is_ignored(app, lt):
    response = report(app, {"NOT_OURS": "accept", lt.template_id: "accept"})
    assert response.json() == {"credited": {lt.template_id: 1}, "ignored": ["NOT_OURS"]}
    assert standing(app) == [lt.template_id]


# --- how it is counted ----------------------------------------------------------------------------------
@pytest.fixture
def subscribers(app, lt, ot):
    """Three users: two stand subscribed to LT_VISIT (one also has one-time credits), one has a one-time
    credit only; plus a user whose subscription ended."""
    for openid in ("oA", "oB"):
        start_long_term(app, touch_user(app, openid), [lt.template_id], source="sdk")
    add_subscribe_credits(app, touch_user(app, "oB"), [ot.template_id], source="sdk")
    add_subscribe_credits(app, touch_user(app, "oC"), [ot.template_id, ot.template_id], source="sdk")
    start_long_term(app, touch_user(app, "oD"), [lt.template_id], source="sdk")
    report(app, {lt.template_id: "reject"}, openid="oD")
    return lt


def test_the_quota_counts_standing_subscribers(api, app, subscribers, ot):
    quota = api.get(f"/api/v1/apps/{app.appid}/quota").json()
    assert quota["credits"] == {
        "formid": 0,
        "subscribe": {ot.template_id: 3},
        "long_term": {subscribers.template_id: 2},
    }
    assert (quota["users"], quota["users_reachable"]) == (4, 3)


def test_the_users_api_lists_long_term_templates(api, app, subscribers, ot):
    one = api.get(f"/api/v1/apps/{app.appid}/users/oB").json()
    assert one["long_term"] == [subscribers.template_id]
    assert one["subscribe_credits"] == {ot.template_id: 1}
    listed = {
        u["openid"]: u["long_term"] for u in api.get(f"/api/v1/apps/{app.appid}/users").json()["results"]
    }
    assert listed == {"oA": [subscribers.template_id], "oB": [subscribers.template_id], "oC": [], "oD": []}
    reachable = api.get(f"/api/v1/apps/{app.appid}/users?reachable=true").json()["results"]
    assert sorted(u["openid"] for u in reachable) == ["oA", "oB", "oC"]


def test_me_lists_long_term_templates(app, subscribers):
    me = sdk_client(app, "oA").get(url(app, "me")).json()
    assert me["long_term"] == [subscribers.template_id]
    assert me["subscribe_credits"] == {}
    assert sdk_client(app, "oD").get(url(app, "me")).json()["long_term"] == []


def test_another_tenant_sees_none_of_it(app, subscribers, other_tenant, outsider_api):
    assert outsider_api.get(f"/api/v1/apps/{app.appid}/quota").status_code == 404
    assert outsider_api.get(f"/api/v1/apps/{app.appid}/users/oA").status_code == 404
    theirs = tenant_services.register_app(
        other_tenant, appid="wx" + "ab" * 8, secret="cd" * 16, name="Theirs", sandbox_app=True
    )
    start_long_term(theirs, touch_user(theirs, "oA"), [subscribers.template_id], source="sdk")
    assert outsider_api.get(f"/api/v1/apps/{theirs.appid}/quota").json()["credits"]["long_term"] == {
        subscribers.template_id: 1
    }
    key = tenant_services.create_api_key(app.tenant, "read", name="r")[1]
    assert api_client(key).get(f"/api/v1/apps/{app.appid}/quota").json()["credits"]["long_term"] == {
        subscribers.template_id: 2
    }


def test_the_dashboard_shows_long_term_subscriptions(app, subscribers, other_tenant):
    owner = signed_in("owner@acme.test")
    quota = owner.get(reverse("app-quota", args=[app.appid]))
    assert quota.status_code == 200
    page = quota.content.decode()
    assert 'id="long-term"' in page and subscribers.template_id in page
    assert quota.context["long_term"] == [(subscribers.template_id, 2)]

    users = owner.get(reverse("app-users", args=[app.appid]))
    rows = {row["user"].openid: row["long_term"] for row in users.context["rows"]}
    assert rows == {"oA": [subscribers.template_id], "oB": [subscribers.template_id], "oC": [], "oD": []}
    assert 'class="long-term"' in users.content.decode()

    detail = owner.get(reverse("app-user", args=[app.appid, "oA"]))
    assert 'id="user-long-term"' in detail.content.decode()
    assert subscribers.template_id in detail.content.decode()

    chinese = owner.get(reverse("app-quota", args=[app.appid]), HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert "各模板的长期订阅用户" in chinese.content.decode()

    outsider = signed_in("owner@globex.test")
    assert outsider.get(reverse("app-quota", args=[app.appid])).status_code == 404
    assert outsider.get(reverse("app-users", args=[app.appid])).status_code == 404


def test_the_dashboard_adds_a_long_term_template_and_shows_it(app):
    owner = signed_in("owner@acme.test")
    form = {"kind": "subscribe", "template_id": "LT_FORM", "title": "预约提醒", "fields": "thing1:项目"}
    response = owner.post(reverse("templates", args=[app.appid]), {**form, "subscription": "long_term"})
    assert response.status_code == 302, response.content
    assert Template.objects.get(template_id="LT_FORM").is_long_term
    # The form always shows the choice: for a formId template it means nothing and is not an error.
    formid = {"kind": "formid", "template_id": "FORM_1", "title": "支付", "fields": "keyword1:金额"}
    assert (
        owner.post(
            reverse("templates", args=[app.appid]), {**formid, "subscription": "long_term"}
        ).status_code
        == 302
    )
    assert Template.objects.get(template_id="FORM_1").subscription == ""
    page = owner.get(reverse("templates", args=[app.appid])).content.decode()
    assert page.count('class="badge long-term"') == 1


def test_the_sandbox_phone_accepts_a_long_term_template(app):
    sandbox.add_template(
        app.appid, kind="subscribe", title="预约", content=CONTENT, template_id="LT_PHONE", type=3
    )
    template = add(app, "LT_PHONE")
    user = sandbox.create_user(app.appid)
    owner = signed_in("owner@acme.test")
    phone = owner.get(reverse("sandbox-phone", args=[app.appid]), {"openid": user.openid}).content.decode()
    assert 'class="badge long-term"' in phone
    for _ in range(2):
        answer = owner.post(
            reverse("sandbox-phone-accept", args=[app.appid]),
            {"openid": user.openid, "template_id": template.template_id},
            follow=True,
        )
        assert "sends do not use it up" in answer.content.decode()
    assert standing(app, user.openid) == ["LT_PHONE"]
    assert Credit.objects.count() == 1

"""The real SDK (static/sdk/pushhub.js, run by Node) against a real PushHub over HTTP (issue 14).

tests/js/live/phone.js loads the SDK with a `wx` whose wx.request is Node's fetch to the live server, and whose
WeChat side (login codes, formIds, prepay_ids, the subscribe dialog) is the sandbox's control API. The phone taps,
pays, subscribes, flushes and asks me(); this test then checks through the tenant's API key that every credit
reached /quota, that me() says the same, and that the server's refusals reach the app as the server gave them.
The SDK's unit tests (tests/js, a fake server) cannot show any of that: here nothing is faked on PushHub's side.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from formids.models import Credit
from pushhub.wechat.sandbox import services as sandbox
from tests.conftest import random_appid, random_secret

NODE = shutil.which("node")
PHONE = Path(__file__).resolve().parent / "js" / "live" / "phone.js"

pytestmark = [
    pytest.mark.skipif(
        NODE is None, reason="node not found: the SDK's live tests need Node.js >= 18 (CI has 20)"
    ),
    pytest.mark.django_db(transaction=True),
]


def run_phone(
    live_server,
    appid: str,
    openid: str,
    steps: list[dict],
    setting: dict | None = None,
    launch: dict | None = None,
    **options,
) -> dict:
    """Runs phone.js; `setting` is the phone's wx.getSetting subscriptionsSetting, `launch` its
    wx.getLaunchOptionsSync() (absent: the home screen), `options` the SDK's."""
    plan = {
        "server": live_server.url,
        "appid": appid,
        "control": f"{live_server.url}/sandbox/wechat/_control/apps/{appid}",
        "control_token": django_settings.SANDBOX_CONTROL_TOKEN,
        "openid": openid,
        "options": options,
        "steps": steps,
        "setting": setting,
        "launch": launch,
    }
    done = subprocess.run(
        [NODE, str(PHONE)], input=json.dumps(plan), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"phone.js failed:\n{done.stderr}"
    return json.loads(done.stdout)


def step(report: dict, op: str, n: int = 0) -> dict:
    return [s for s in report["steps"] if s["op"] == op][n]


@pytest.fixture
def shop(sandbox_base, sandbox_app, api):
    """The sandbox app with two subscribe templates in WeChat and in PushHub's catalogue, and one WeChat user."""
    templates = [
        sandbox.add_template(
            sandbox_app.appid, kind="subscribe", title=title, content="内容:{{thing1.DATA}}"
        ).template_id
        for title in ("发货通知", "到货提醒")
    ]
    synced = api.post(f"/api/v1/apps/{sandbox_app.appid}/templates/sync")
    assert synced.status_code == 200, synced.content
    return sandbox_app, templates, sandbox.create_user(sandbox_app.appid).openid


def quota(api, appid: str) -> dict:
    response = api.get(f"/api/v1/apps/{appid}/quota")
    assert response.status_code == 200, response.content
    return response.json()


def test_every_credit_the_sdk_collects_reaches_the_quota(live_server, shop, api):
    app, (order, arrival), openid = shop
    report = run_phone(
        live_server,
        app.appid,
        openid,
        [
            {"op": "form_taps", "count": 25},  # the 20th starts an upload by itself (batchSize)
            {"op": "payments", "count": 3},
            {"op": "subscribe", "tmplIds": [order, arrival]},
            {"op": "subscribe", "tmplIds": [order]},
            {"op": "flush"},
            {"op": "me"},
        ],
    )
    assert all(step(report, "form_taps")["collected"]) and all(step(report, "payments")["collected"])
    formids, prepay_ids = step(report, "form_taps")["ids"], step(report, "payments")["ids"]

    # What went over the wire: only the contract's routes, every answer a 200, every id uploaded once.
    sdk = f"/sdk/v1/{app.appid}/"
    assert {(r["method"], r["path"].removeprefix(sdk)) for r in report["requests"]} == {
        ("POST", "login"),
        ("POST", "formids"),
        ("POST", "subscriptions"),
        ("GET", "me"),
    }
    assert [r["status"] for r in report["requests"]] == [200] * len(report["requests"])
    uploads = [r["body"] for r in report["requests"] if r["path"] == sdk + "formids"]
    assert sorted(i for body in uploads for i in body.get("formids", [])) == sorted(formids)
    assert sorted(i for body in uploads for i in body.get("prepay_ids", [])) == sorted(prepay_ids)
    assert report["queue"] is None  # nothing left buffered on the phone
    assert report["warnings"] == []

    assert step(report, "subscribe", 0)["result"] == {
        "ok": True,
        "data": {
            "results": {order: "accept", arrival: "accept"},
            "credited": {order: 1, arrival: 1},
            "ignored": [],
            "unrequested": [],
        },
    }
    assert step(report, "subscribe", 1)["result"]["data"]["credited"] == {order: 1}
    flushed = step(report, "flush")["result"]
    assert flushed["ok"] is True and flushed["data"]["pending"] == 0 and flushed["data"]["dropped"] == 0

    # Every credit, as the tenant sees it: 25 formIds (1 send each) + 3 prepay_ids (3 sends each).
    assert quota(api, app.appid)["credits"] == {
        "formid": 25 + 3 * 3,
        "subscribe": {order: 2, arrival: 1},
        "long_term": {},
    }
    assert quota(api, app.appid)["users"] == 1
    stored = Credit.objects.filter(app=app, user__openid=openid)
    assert sorted(stored.filter(kind="formid").values_list("value", flat=True)) == sorted(formids)
    assert sorted(stored.filter(kind="prepay").values_list("value", flat=True)) == sorted(prepay_ids)

    # ...and as the user's mini-program sees it.
    me = step(report, "me")["result"]
    assert me["ok"] is True
    assert me["data"]["openid"] == openid
    assert me["data"]["push_enabled"] is True
    assert me["data"]["formid_credits"] == 25 + 3 * 3
    assert me["data"]["subscribe_credits"] == {order: 2, arrival: 1}


def test_ids_the_server_rejects_are_reported_as_the_server_reports_them(live_server, shop, api):
    app, _, openid = shop
    report = run_phone(
        live_server,
        app.appid,
        openid,
        [
            {"op": "form_taps", "count": 2},
            {"op": "collect", "values": ["has a space", "short"]},  # not the SDK's to judge: the server's
            {"op": "flush"},
        ],
    )
    assert step(report, "collect")["collected"] == [True, True]
    assert step(report, "flush")["result"] == {
        "ok": True,
        "data": {
            "sent": 4,
            "accepted": 2,
            "duplicates": 0,
            "rejected": [
                {"formid": "has a space", "reason": "malformed"},
                {"formid": "short", "reason": "malformed"},
            ],
            "dropped": 0,
            "pending": 0,
        },
    }
    assert quota(api, app.appid)["credits"]["formid"] == 2


def test_an_app_pushhub_does_not_know_keeps_the_ids_and_says_so(live_server, sandbox_base):
    """WeChat knows the app, PushHub does not (not registered yet, a typo'd appid): the login answers 404 and
    the app hears it, with the server's own code and message; the ids stay on the phone for later."""
    appid = random_appid()
    sandbox.register_app(appid, random_secret())
    openid = sandbox.create_user(appid).openid
    report = run_phone(
        live_server,
        appid,
        openid,
        [{"op": "form_taps", "count": 2}, {"op": "payments", "count": 1}, {"op": "flush"}],
    )
    assert step(report, "flush")["result"] == {
        "ok": False,
        "error": {"code": "not_found", "message": "No such mini-program.", "status": 404},
        "data": {"sent": 0, "accepted": 0, "duplicates": 0, "rejected": [], "dropped": 0, "pending": 3},
    }
    assert [(r["path"], r["status"]) for r in report["requests"]] == [(f"/sdk/v1/{appid}/login", 404)]
    assert [e["v"] for e in report["queue"]["formids"]] == step(report, "form_taps")["ids"]
    assert [e["v"] for e in report["queue"]["prepay_ids"]] == step(report, "payments")["ids"]
    assert len(report["warnings"]) == 1
    assert f"POST {live_server.url}/sdk/v1/{appid}/login answered 404 (not_found" in report["warnings"][0]


def test_identify_binds_the_alias_only_with_the_hash_the_tenants_server_computed(live_server, shop, api):
    """SDK identify() against the real server: the tenant's server computes user_hash with the app's identity
    secret (here as its own code would, with hmac), the phone sends it; a forged hash changes nothing."""
    import hashlib
    import hmac

    app, _, openid = shop
    secret = api.get(f"/api/v1/apps/{app.appid}").json()["identity_secret"]
    good = hmac.new(secret.encode(), b"user-42", hashlib.sha256).hexdigest()
    report = run_phone(
        live_server,
        app.appid,
        openid,
        [
            {"op": "identify", "alias": "user-42", "user_hash": "0" * 64},
            {"op": "identify", "alias": "user-42", "user_hash": good},
        ],
    )
    forged = step(report, "identify", 0)["result"]
    assert forged["ok"] is False and forged["error"]["code"] == "invalid_user_hash"
    assert forged["error"]["status"] == 403
    assert step(report, "identify", 1)["result"] == {"ok": True, "data": {"alias": "user-42"}}
    user = api.get(f"/api/v1/apps/{app.appid}/users/{openid}").json()
    assert user["alias"] == "user-42"

    unbound = run_phone(live_server, app.appid, openid, [{"op": "identify", "alias": None}])
    assert step(unbound, "identify")["result"] == {"ok": True, "data": {"alias": None}}
    assert api.get(f"/api/v1/apps/{app.appid}/users/{openid}").json()["alias"] is None


def test_a_silent_top_up_in_a_tap_reaches_the_quota_as_credits(live_server, shop, api):
    """pushhub.tap() on a phone whose user always accepts one of two topUp templates: each tap asks WeChat (the
    sandbox) for that one only, the report credits it, and the cap (topUpMax) stops it; /quota and me() agree."""
    app, (order, arrival), openid = shop
    report = run_phone(
        live_server,
        app.appid,
        openid,
        [{"op": "me"}, {"op": "tap"}, {"op": "tap"}, {"op": "tap"}, {"op": "me"}],
        topUp=[order, arrival],
        topUpMax=2,
        setting={"mainSwitch": True, "itemSettings": {order: "accept", arrival: "reject"}},
    )
    before = step(report, "me", 0)["result"]["data"]
    assert before["templates"][order] == {"left": 0, "always": "accept", "long_term": False, "top_up": True}
    assert before["templates"][arrival] == {
        "left": 0,
        "always": "reject",
        "long_term": False,
        "top_up": False,
    }
    for n in (0, 1):
        assert step(report, "tap", n)["result"] == {
            "ok": True,
            "data": {
                "requested": [order],
                "results": {order: "accept"},
                "credited": {order: 1},
                "ignored": [],
                "skipped": {arrival: "not_always"},
            },
        }
    assert step(report, "tap", 2)["result"]["data"]["requested"] == []
    assert step(report, "tap", 2)["result"]["data"]["skipped"] == {order: "at_cap", arrival: "not_always"}

    assert quota(api, app.appid)["credits"]["subscribe"] == {order: 2}
    after = step(report, "me", 1)["result"]["data"]
    assert after["subscribe_credits"] == {order: 2}
    assert after["templates"][order] == {"left": 2, "always": "accept", "long_term": False, "top_up": False}
    reports = [r for r in report["requests"] if r["path"].endswith("/subscriptions")]
    assert [r["body"] for r in reports] == [{"results": {order: "accept"}}] * 2
    assert [r["status"] for r in report["requests"]] == [200] * len(report["requests"])


# --- opens ------------------------------------------------------------------------------------------------
def test_an_open_from_a_sent_message_reaches_the_push(live_server, shop, api, monkeypatch):
    """A push is sent through the sandbox; the phone is launched from the message (scene 1014, the page's query
    as WeChat gives it); the SDK reports the open by itself, once though the launch and the show both carry it;
    the tenant sees opened_at and counts.opened = 1. Another user's phone with the same query is refused."""
    from urllib.parse import parse_qsl, urlsplit

    from templates_app.delivery import queue as delivery_queue
    from templates_app.models import Delivery, Template
    from templates_app.opens_ref import parse_ref
    from tests.delivery.conftest import TaskQueue

    tasks = TaskQueue()
    monkeypatch.setattr(delivery_queue, "enqueue", tasks)
    app, (order, _), openid = shop
    run_phone(live_server, app.appid, openid, [{"op": "subscribe", "tmplIds": [order]}])
    template = Template.objects.get(app=app, template_id=order)
    sent = api.post(
        f"/api/v1/templates/{template.pk}/pushes",
        {"to": [openid], "data": {"thing1": "键盘"}, "page": "pages/order/index?id=7"},
        format="json",
    )
    assert sent.status_code == 202, sent.content
    tasks.run()
    push_id = sent.json()["push_id"]
    delivery = Delivery.objects.get(push_id=push_id, openid=openid)
    assert delivery.status == "sent"

    [message] = sandbox.inbox(app.appid, openid)
    page = urlsplit(message.page)
    query = dict(parse_qsl(page.query))
    assert query["id"] == "7" and parse_ref(query["ph"]) == delivery.pk
    entry = {"scene": 1014, "path": page.path, "query": query}
    report = run_phone(
        live_server,
        app.appid,
        openid,
        [
            {"op": "show", "entry": entry},
            {"op": "wait_opens", "count": 1},
            {"op": "report_open", "query": query},
        ],
        launch=entry,
    )
    opens = [r for r in report["requests"] if r["path"].endswith("/opens")]
    assert [(r["body"], r["status"]) for r in opens] == [({"ref": query["ph"]}, 200)]
    assert step(report, "report_open")["result"] == {"ok": True, "data": {"opened": True, "repeated": True}}
    assert report["opens"] == [query["ph"]]

    delivery.refresh_from_db()
    assert delivery.opened_at is not None
    pushed = api.get(f"/api/v1/pushes/{push_id}").json()
    assert pushed["counts"]["opened"] == 1 and pushed["counts"]["sent"] == 1
    [row] = api.get(f"/api/v1/pushes/{push_id}/deliveries").json()["results"]
    assert row["opened_at"] is not None and row["opened_at"].endswith("Z")

    # The same page opened on another user's phone: 404, final (not retried), nothing counted.
    stranger = sandbox.create_user(app.appid).openid
    other = run_phone(live_server, app.appid, stranger, [{"op": "wait_opens", "count": 1}], launch=entry)
    refused = [r for r in other["requests"] if r["path"].endswith("/opens")]
    assert [r["status"] for r in refused] == [404]
    assert other["opens"] == ["!" + query["ph"]]
    assert api.get(f"/api/v1/pushes/{push_id}").json()["counts"]["opened"] == 1


def test_a_sent_message_is_in_the_sdks_inbox_with_its_fields_and_markread_clears_it(
    live_server, shop, api, monkeypatch
):
    """The inbox end to end: the phone subscribes, the tenant sends through the sandbox (the delivery pipeline
    run here, in order), the phone's inbox() lists the message with the template's field names and the
    values sent, and markRead turns the unread count to 0."""
    from templates_app import tasks
    from templates_app.delivery import queue as delivery_queue
    from templates_app.models import Template
    from templates_app.pushes.request import parse_send_request
    from templates_app.pushes.start import start_push
    from tests.delivery.conftest import TaskQueue

    app, (order, _arrival), openid = shop
    subscribed = run_phone(live_server, app.appid, openid, [{"op": "subscribe", "tmplIds": [order]}])
    assert step(subscribed, "subscribe")["result"]["data"]["credited"] == {order: 1}

    template = Template.objects.get(app=app, template_id=order)
    queue = TaskQueue()
    monkeypatch.setattr(delivery_queue, "enqueue", queue)
    body = {"to": [openid], "data": {"thing1": {"value": "机械键盘"}}, "page": "pages/order/index?id=7"}
    push = start_push(
        template, parse_send_request(template, body), created_by="test", status_url=lambda p: f"/x/{p.pk}"
    ).push
    tasks.deliver_push(str(push.pk))
    queue.run()
    push.refresh_from_db()
    assert (push.status, push.sent) == ("done", 1)

    report = run_phone(
        live_server,
        app.appid,
        openid,
        [
            {"op": "inbox"},
            {"op": "markRead", "ids": "listed"},
            {"op": "inbox", "options": {"limit": 5}},
            {"op": "markRead", "ids": "all"},
        ],
    )
    first = step(report, "inbox", 0)["result"]
    assert first["ok"] is True, first
    [message] = first["data"]["results"]
    assert message["title"] == "发货通知"
    assert message["fields"] == [{"name": "内容", "value": "机械键盘"}]
    assert message["page"] == "pages/order/index?id=7"  # as sent, without ph=
    assert message["read"] is False and message["sent_at"].endswith("Z")
    assert (first["data"]["unread"], first["data"]["next"], first["data"]["cursor"]) == (1, None, None)
    assert step(report, "markRead", 0)["result"] == {"ok": True, "data": {"unread": 0}}
    again = step(report, "inbox", 1)["result"]["data"]
    assert again["unread"] == 0 and again["results"][0]["read"] is True
    assert step(report, "markRead", 1)["result"] == {"ok": True, "data": {"unread": 0}}
    sdk = f"/sdk/v1/{app.appid}/"
    assert [(r["method"], r["path"].removeprefix(sdk), r["status"]) for r in report["requests"]] == [
        ("POST", "login", 200),
        ("GET", "inbox", 200),
        ("POST", "inbox/read", 200),
        ("GET", "inbox", 200),
        ("POST", "inbox/read", 200),
    ]
    assert report["warnings"] == []

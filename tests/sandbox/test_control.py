"""The _control/ API: apps, users, login codes, formIds, subscriptions, templates, inbox, stats, auth."""

import re

import pytest

from pushhub.wechat.sandbox import services

from .helpers import APPID, FORMID_CONTENT, SECRET, SUBSCRIBE_CONTENT, subscribe_body

pytestmark = pytest.mark.django_db


def test_put_creates_then_updates_an_app(wechat, db):
    created = wechat.control("PUT", f"apps/{APPID}", {"secret": SECRET})
    assert created.status_code == 201
    assert created.json()["appid"] == APPID
    assert created.json()["token_ttl"] == 7200
    assert "secret" not in created.json()
    assert created.json()["created_at"].endswith("Z")
    updated = wechat.control("PUT", f"apps/{APPID}", {"secret": "f" * 32})
    assert updated.status_code == 200
    assert services.get_app(APPID).secret == "f" * 32


def test_get_and_delete_an_app(wechat, app):
    assert wechat.control("GET", f"apps/{APPID}").json()["appid"] == APPID
    assert wechat.control("GET", "apps").json()["apps"][0]["appid"] == APPID
    assert wechat.control("DELETE", f"apps/{APPID}").status_code == 204
    missing = wechat.control("GET", f"apps/{APPID}")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_put_validates(wechat, db):
    response = wechat.control("PUT", f"apps/{APPID}", {})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "validation_error",
        "message": "secret must be a string of 1-128 characters.",
        "field": "secret",
    }


def test_bad_json_and_wrong_methods(wechat, client, app):
    bad = client.put(f"/sandbox/wechat/_control/apps/{APPID}", "{", content_type="application/json")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    assert wechat.control("POST", f"apps/{APPID}", {}).status_code == 405
    assert wechat.control("GET", f"apps/{APPID}/reset-tokens").status_code == 405


def test_control_requires_the_token_when_one_is_configured(wechat, app, settings):
    settings.SANDBOX_CONTROL_TOKEN = "s3cret-control"
    refused = wechat.control("GET", f"apps/{APPID}")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "not_authenticated"
    assert wechat.control("GET", f"apps/{APPID}", X_Sandbox_Token="wrong").status_code == 401
    assert wechat.control("GET", f"apps/{APPID}", X_Sandbox_Token="s3cret-control").status_code == 200


def test_in_production_the_control_api_is_closed_without_a_token(wechat, app, settings):
    """Otherwise anyone who knows a sandbox app's AppID could read its inbox or mint its users' login codes."""
    settings.PRODUCTION = True
    closed = wechat.control("GET", f"apps/{APPID}/inbox?openid=oSomeone")
    assert closed.status_code == 403 and closed.json()["error"]["code"] == "sandbox_control_closed"
    assert wechat.control("POST", f"apps/{APPID}/users", {}).status_code == 403
    settings.SANDBOX_CONTROL_TOKEN = "s3cret-control"
    assert wechat.control("GET", f"apps/{APPID}", X_Sandbox_Token="s3cret-control").status_code == 200


def test_wechat_endpoints_never_need_the_control_token(wechat, app, settings):
    settings.SANDBOX_CONTROL_TOKEN = "s3cret-control"
    answer = wechat.post(
        "cgi-bin/stable_token", {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
    )
    assert "access_token" in answer


def test_users_get_realistic_openids_and_are_idempotent(wechat, app):
    first = wechat.control("POST", f"apps/{APPID}/users", {})
    assert first.status_code == 201
    openid = first.json()["openid"]
    assert len(openid) == 28 and openid.startswith("o")
    assert re.fullmatch(r"[A-Za-z0-9_-]+", openid)
    second = services.create_user(APPID)
    assert second.openid[:6] == openid[:6]  # one app's openids share a prefix, like WeChat's
    again = wechat.control("POST", f"apps/{APPID}/users", {"openid": openid, "unionid": "oUnion1"})
    assert again.status_code == 200
    assert again.json() == {"openid": openid, "unionid": "oUnion1"}
    listed = wechat.control("GET", f"apps/{APPID}/users").json()["users"]
    assert [u["openid"] for u in listed] == [openid, second.openid]


def test_user_endpoints_answer_404_for_unknown_users_and_apps(wechat, app):
    assert wechat.control("POST", f"apps/{APPID}/users/oNobody/login-code").status_code == 404
    assert wechat.control("POST", "apps/wx00000000000000ff/users", {}).status_code == 404


def test_login_code(wechat, user):
    response = wechat.control("POST", f"apps/{APPID}/users/{user.openid}/login-code")
    assert response.status_code == 201
    code = response.json()["code"]
    answer = wechat.get(
        "sns/jscode2session", appid=APPID, secret=SECRET, js_code=code, grant_type="authorization_code"
    )
    assert answer["openid"] == user.openid


def test_formids_and_prepay_ids_have_wechat_shapes(wechat, user):
    formids = wechat.control("POST", f"apps/{APPID}/users/{user.openid}/formids", {"count": 3})
    assert formids.status_code == 201
    values = formids.json()["formids"]
    assert len(values) == 3 and all(re.fullmatch(r"[0-9a-f]{32}", v) for v in values)
    prepay = wechat.control("POST", f"apps/{APPID}/users/{user.openid}/formids", {"kind": "prepay"})
    assert re.fullmatch(r"wx\d{14}[0-9a-f]{20}", prepay.json()["formids"][0])
    assert services.user_credits(APPID, user.openid)["formid_sends"] == 3
    assert services.user_credits(APPID, user.openid)["prepay_sends"] == 3


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"count": 0}, "count"),
        ({"count": 101}, "count"),
        ({"kind": "coupon"}, "kind"),
        ({"age_seconds": -1}, "age_seconds"),
    ],
)
def test_formids_validate(wechat, user, body, field):
    response = wechat.control("POST", f"apps/{APPID}/users/{user.openid}/formids", body)
    assert response.status_code == 400 and response.json()["error"]["field"] == field


def test_subscriptions_answer_like_request_subscribe_message(wechat, user, subscribe_template):
    tid = subscribe_template.template_id
    response = wechat.control(
        "POST",
        f"apps/{APPID}/users/{user.openid}/subscriptions",
        {"results": {tid: "accept", "nope": "accept"}},
    )
    assert response.status_code == 200
    assert response.json() == {"errMsg": "requestSubscribeMessage:ok", tid: "accept", "nope": "filter"}
    detail = wechat.control("GET", f"apps/{APPID}/users/{user.openid}").json()
    assert detail["credits"]["subscriptions"] == {tid: 1}
    bad = wechat.control(
        "POST", f"apps/{APPID}/users/{user.openid}/subscriptions", {"results": {tid: "maybe"}}
    )
    assert bad.status_code == 400


def test_templates_are_created_listed_and_deleted(wechat, app):
    created = wechat.control(
        "POST",
        f"apps/{APPID}/templates",
        {"kind": "subscribe", "title": "订单发货通知", "content": SUBSCRIBE_CONTENT},
    )
    assert created.status_code == 201
    template = created.json()
    assert len(template["template_id"]) == 43
    assert template["type"] == 2
    assert template["fields"][0] == {"key": "character_string1", "name": "订单号"}
    own_id = wechat.control(
        "POST",
        f"apps/{APPID}/templates",
        {"kind": "formid", "template_id": "legacy-1", "title": "购买成功", "content": FORMID_CONTENT},
    )
    assert own_id.json()["template_id"] == "legacy-1"
    listed = wechat.control("GET", f"apps/{APPID}/templates").json()["templates"]
    assert [t["template_id"] for t in listed] == [template["template_id"], "legacy-1"]
    only_formid = wechat.control("GET", f"apps/{APPID}/templates?kind=formid").json()["templates"]
    assert [t["template_id"] for t in only_formid] == ["legacy-1"]
    assert wechat.control("GET", f"apps/{APPID}/templates/legacy-1").json()["title"] == "购买成功"
    assert wechat.control("DELETE", f"apps/{APPID}/templates/legacy-1").status_code == 204
    assert wechat.control("DELETE", f"apps/{APPID}/templates/legacy-1").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "email", "title": "t", "content": SUBSCRIBE_CONTENT}, "kind"),
        ({"kind": "subscribe", "title": "", "content": SUBSCRIBE_CONTENT}, "title"),
        ({"kind": "subscribe", "title": "t", "content": "no fields"}, "content"),
        ({"kind": "subscribe", "title": "t", "content": SUBSCRIBE_CONTENT, "type": 4}, "type"),
        (
            {"kind": "subscribe", "title": "t", "content": SUBSCRIBE_CONTENT, "template_id": "a b"},
            "template_id",
        ),
    ],
)
def test_templates_validate(wechat, app, body, field):
    response = wechat.control("POST", f"apps/{APPID}/templates", body)
    assert response.status_code == 400 and response.json()["error"]["field"] == field


def test_inbox_lists_newest_last_and_pages_with_after_id(wechat, token, user, other_user, subscribe_template):
    tid = subscribe_template.template_id
    for who in (user, other_user, user):
        services.accept_subscriptions(APPID, who.openid, {tid: "accept"})
        wechat.post(
            "cgi-bin/message/subscribe/send", subscribe_body(who, subscribe_template), access_token=token
        )
    everything = wechat.control("GET", f"apps/{APPID}/inbox").json()["messages"]
    assert [m["openid"] for m in everything] == [user.openid, other_user.openid, user.openid]
    first = everything[0]
    assert first["kind"] == "subscribe" and first["template_id"] == tid and first["title"] == "订单发货通知"
    assert first["data"]["thing2"] == {"value": "机械键盘"}
    assert first["msgid"] > 0 and first["form_id"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", first["created_at"])
    mine = wechat.control("GET", f"apps/{APPID}/inbox?openid={user.openid}").json()["messages"]
    assert [m["id"] for m in mine] == [everything[0]["id"], everything[2]["id"]]
    later = wechat.control("GET", f"apps/{APPID}/inbox?after_id={everything[0]['id']}").json()["messages"]
    assert [m["id"] for m in later] == [everything[1]["id"], everything[2]["id"]]
    latest = wechat.control("GET", f"apps/{APPID}/inbox?limit=1").json()["messages"]
    assert [m["id"] for m in latest] == [everything[2]["id"]]
    assert wechat.control("GET", f"apps/{APPID}/inbox?after_id=x").status_code == 400


def test_reset_tokens_and_stats(wechat, token, user, subscribe_template):
    wechat.post(
        "cgi-bin/message/subscribe/send", subscribe_body(user, subscribe_template), access_token=token
    )
    response = wechat.control("POST", f"apps/{APPID}/reset-tokens")
    assert response.json() == {"invalidated": 1}
    stats = wechat.control("GET", f"apps/{APPID}/stats").json()
    assert stats["tokens_issued"] == 1
    assert stats["tokens_issued_by_family"] == {"stable": 1, "plain": 0}
    assert stats["sends_by_errcode"] == {"43101": 1}
    assert stats["calls"] == {"subscribe_send": {"43101": 1}}
    assert stats["sends_ok"] == 0 and stats["inbox_messages"] == 0


def test_pushhub_serves_the_sandbox_under_sandbox_wechat(client, settings, db):
    """The real root URLconf mounts the sandbox where SANDBOX_API_BASE expects it."""
    settings.ROOT_URLCONF = "pushhub.urls"
    answer = client.get("/sandbox/wechat/cgi-bin/token", {"grant_type": "client_credential"})
    assert answer.json() == {"errcode": 41002, "errmsg": "appid missing"}
    assert client.get("/sandbox/wechat/_control/apps").json() == {"apps": []}

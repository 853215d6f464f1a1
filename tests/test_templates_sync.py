"""POST /api/v1/apps/{appid}/templates/sync against the sandbox over real HTTP: both kinds, fields in
content order, updates, vanished templates, manual templates untouched, WeChat refusing or unreachable."""

from __future__ import annotations

import pytest

from formids.hooks import known_subscribe_template_ids
from pushhub.wechat.client import WeChatClient
from pushhub.wechat.errors import WeChatError
from pushhub.wechat.sandbox import services as sandbox
from templates_app import catalogue
from templates_app.models import Template
from tenants.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True)

ORDER_CONTENT = "订单号:{{character_string1.DATA}}\n金额:{{amount2.DATA}}\n"
FORMID_CONTENT = "购买地点{{keyword1.DATA}}\n购买时间{{keyword2.DATA}}\n物品名称{{keyword3.DATA}}\n"


@pytest.fixture
def app(sandbox_app, sandbox_base):
    return sandbox_app


@pytest.fixture
def wechat(app):
    """The app's WeChat account (the sandbox): one subscribe and one formId template."""
    subscribe = sandbox.add_template(app.appid, kind="subscribe", title="订单支付成功", content=ORDER_CONTENT)
    formid = sandbox.add_template(app.appid, kind="formid", title="购买成功通知", content=FORMID_CONTENT)
    return {"subscribe": subscribe.template_id, "formid": formid.template_id}


def sync(api, app):
    return api.post(f"/api/v1/apps/{app.appid}/templates/sync")


def listed(api, app, query=""):
    response = api.get(f"/api/v1/apps/{app.appid}/templates{query}")
    assert response.status_code == 200
    return {item["template_id"]: item for item in response.json()["results"]}


def test_it_creates_both_kinds_with_fields_in_content_order(api, app, wechat):
    response = sync(api, app)
    assert response.status_code == 200, response.content
    assert response.json() == {"created": 2, "updated": 0, "deleted": 0}
    templates = listed(api, app)
    subscribe, formid = templates[wechat["subscribe"]], templates[wechat["formid"]]
    assert subscribe["kind"] == "subscribe" and subscribe["title"] == "订单支付成功"
    assert subscribe["fields"] == [
        {"key": "character_string1", "name": "订单号"},
        {"key": "amount2", "name": "金额"},
    ]
    assert formid["kind"] == "formid" and formid["title"] == "购买成功通知"
    assert formid["fields"] == [
        {"key": "keyword1", "name": "购买地点"},
        {"key": "keyword2", "name": "购买时间"},
        {"key": "keyword3", "name": "物品名称"},
    ]
    for item in (subscribe, formid):
        assert (item["source"], item["status"], item["trigger_enabled"]) == ("synced", "active", True)
        assert item["trigger_url"].startswith("http://testserver/t/")
    assert known_subscribe_template_ids(app) == {wechat["subscribe"]}
    event = AuditEvent.objects.get(action="template.sync")
    assert event.object_id == app.appid and event.data == {"created": 2, "updated": 0, "deleted": 0}


def test_a_second_sync_updates_what_changed_and_creates_nothing(api, app, wechat):
    assert sync(api, app).json()["created"] == 2
    before = Template.objects.get(template_id=wechat["subscribe"])
    token = before.get_trigger_token()
    assert sync(api, app).json() == {"created": 0, "updated": 0, "deleted": 0}

    sandbox.upsert_template(
        app.appid,
        kind="subscribe",
        template_id=wechat["subscribe"],
        title="订单已支付",
        content=ORDER_CONTENT + "商品:{{thing3.DATA}}",
    )
    assert sync(api, app).json() == {"created": 0, "updated": 1, "deleted": 0}
    after = Template.objects.get(template_id=wechat["subscribe"])
    assert after.pk == before.pk and after.get_trigger_token() == token  # the trigger URL keeps working
    assert after.title == "订单已支付"
    assert after.keys == ["character_string1", "amount2", "thing3"]
    assert Template.objects.count() == 2


def test_a_template_removed_in_wechat_is_marked_deleted(api, app, wechat):
    sync(api, app)
    sandbox.delete_template(app.appid, wechat["formid"])
    assert sync(api, app).json() == {"created": 0, "updated": 0, "deleted": 1}
    gone = Template.objects.get(template_id=wechat["formid"])
    assert gone.status == "deleted"
    assert wechat["formid"] not in listed(api, app)
    assert wechat["formid"] in listed(api, app, "?status=deleted")
    assert api.get(f"/api/v1/templates/{gone.pk}").status_code == 404
    # added back in WeChat: a new template (new trigger URL); the deleted one stays deleted
    sandbox.add_template(
        app.appid, kind="formid", title="购买成功通知", content=FORMID_CONTENT, template_id=wechat["formid"]
    )
    assert sync(api, app).json() == {"created": 1, "updated": 0, "deleted": 0}
    assert Template.objects.filter(template_id=wechat["formid"], status="active").exclude(pk=gone.pk).exists()


def test_manual_templates_are_never_touched(api, app, wechat):
    fields = [{"key": "thing1", "name": "我的名字"}]
    manual_same_id = catalogue.create_template(
        app, kind="subscribe", template_id=wechat["subscribe"], title="手写", fields=fields, actor="t"
    )
    manual_unknown = catalogue.create_template(
        app, kind="formid", template_id="NOT_IN_WECHAT", title="手写", fields=[{"key": "keyword1"}], actor="t"
    )
    assert sync(api, app).json() == {"created": 1, "updated": 0, "deleted": 0}  # only the formId one
    for manual in (manual_same_id, manual_unknown):
        row = Template.objects.get(pk=manual.pk)
        assert (row.source, row.status, row.title) == ("manual", "active", "手写")
    assert Template.objects.get(pk=manual_same_id.pk).fields == fields
    assert Template.objects.filter(template_id=wechat["subscribe"]).count() == 1


def test_a_disabled_synced_template_stays_disabled_but_follows_wechat(api, app, wechat):
    sync(api, app)
    template = Template.objects.get(template_id=wechat["subscribe"])
    catalogue.update_template(template, actor="t", status="disabled")
    sandbox.upsert_template(
        app.appid, kind="subscribe", template_id=wechat["subscribe"], title="新标题", content=ORDER_CONTENT
    )
    assert sync(api, app).json() == {"created": 0, "updated": 1, "deleted": 0}
    template.refresh_from_db()
    assert (template.status, template.title) == ("disabled", "新标题")
    assert known_subscribe_template_ids(app) == set()


def test_it_pages_through_more_than_twenty_formid_templates(api, app):
    for i in range(23):
        sandbox.add_template(app.appid, kind="formid", title=f"模板{i}", content=FORMID_CONTENT)
    assert sync(api, app).json() == {"created": 23, "updated": 0, "deleted": 0}
    assert Template.objects.filter(kind="formid", source="synced").count() == 23


def test_wechat_refusing_answers_502_with_its_errcode_and_changes_nothing(api, app, wechat):
    sandbox.set_knobs(app.appid, error_rate=1.0)
    response = sync(api, app)
    assert response.status_code == 502
    assert response.json()["error"] == {
        "code": "wechat_error",
        "message": "WeChat answered with an error.",
        "errcode": -1,
        "errmsg": "system error",
    }
    assert not Template.objects.exists()
    assert not AuditEvent.objects.filter(action="template.sync").exists()


def test_wechat_unreachable_answers_502(api, app, wechat, settings):
    sync(api, app)
    settings.SANDBOX_API_BASE = "http://127.0.0.1:9/sandbox/wechat"  # nothing listens there
    response = sync(api, app)
    assert response.status_code == 502
    assert response.json()["error"] == {
        "code": "wechat_unreachable",
        "message": "Could not reach WeChat (connection error: NewConnectionError).",
    }
    assert Template.objects.filter(status="active").count() == 2


def test_a_retired_formid_api_leaves_formid_templates_alone(api, app, wechat, monkeypatch):
    """Real WeChat retired the formId template API (45103): the subscribe side still syncs and the
    formId templates we know are not marked deleted."""
    sync(api, app)

    def retired(self):
        raise WeChatError(45103, "This API has been unsupported")

    monkeypatch.setattr(WeChatClient, "list_formid_templates", retired)
    sandbox.delete_template(app.appid, wechat["subscribe"])
    assert sync(api, app).json() == {"created": 0, "updated": 0, "deleted": 1}
    assert Template.objects.get(template_id=wechat["formid"]).status == "active"
    assert Template.objects.get(template_id=wechat["subscribe"]).status == "deleted"


def test_sync_needs_a_write_key_and_the_tenants_app(read_api, outsider_api, app, wechat):
    assert sync(read_api, app).status_code == 403
    assert sync(outsider_api, app).status_code == 404
    assert not Template.objects.exists()

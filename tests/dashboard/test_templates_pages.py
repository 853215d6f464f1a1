"""Template catalogue, one template (trigger URL, curl example, test send) and the sandbox phone."""

from __future__ import annotations

import json
import shlex

import pytest
from django.urls import reverse

from formids.quotas import app_quota
from pushhub.wechat.sandbox import services as sandbox
from templates_app import catalogue, tasks
from templates_app.delivery import queue
from templates_app.models import Push, Template
from templates_app.pushes import endpoint
from templates_app.pushes.request import parse_send_request

ALL_TYPES = [
    {"key": "thing1", "name": "商品"},
    {"key": "time2", "name": "时间"},
    {"key": "character_string3", "name": "单号"},
    {"key": "number4", "name": "数量"},
    {"key": "amount5", "name": "金额"},
    {"key": "date6", "name": "日期"},
    {"key": "phrase7", "name": "状态"},
    {"key": "phone_number8", "name": "电话"},
    {"key": "name9", "name": "姓名"},
    {"key": "car_number10", "name": "车牌"},
    {"key": "letter11", "name": "字母"},
    {"key": "symbol12", "name": "符号"},
]


@pytest.fixture
def template(sandbox_app):
    return catalogue.create_template(
        sandbox_app, kind="subscribe", template_id="TPL-ALL", title="全部类型", fields=ALL_TYPES, actor="test"
    )


@pytest.mark.django_db
def test_the_catalogue_and_template_page_render_for_the_owner(owner, sandbox_app, template):
    page = owner.get(reverse("templates", args=[sandbox_app.appid]))
    assert page.status_code == 200
    assert reverse("template-detail", args=[template.pk]) in page.content.decode()
    detail = owner.get(reverse("template-detail", args=[template.pk]))
    assert detail.status_code == 200
    assert template.trigger_path in detail.content.decode()


@pytest.mark.django_db
def test_a_template_added_by_hand_appears_with_its_trigger_url(owner, sandbox_app):
    response = owner.post(
        reverse("templates", args=[sandbox_app.appid]),
        {
            "kind": "subscribe",
            "template_id": "TPL-1",
            "title": "发货",
            "fields": "thing1:商品\ntime2：时间\n",
        },
    )
    assert response.status_code == 302
    template = Template.objects.get(app=sandbox_app, template_id="TPL-1")
    assert template.fields == [{"key": "thing1", "name": "商品"}, {"key": "time2", "name": "时间"}]
    assert response["Location"] == reverse("template-detail", args=[template.pk])
    html = owner.get(response["Location"]).content.decode()
    assert template.trigger_path in html
    assert "TPL-1" in owner.get(reverse("templates", args=[sandbox_app.appid])).content.decode()


@pytest.mark.django_db
def test_the_add_form_tracks_opens_unless_unticked(owner, sandbox_app):
    form = owner.get(reverse("templates", args=[sandbox_app.appid])).content.decode()
    assert 'name="track_opens" value="1" checked' in form
    body = {"kind": "subscribe", "title": "发货", "fields": "thing1:商品"}
    owner.post(
        reverse("templates", args=[sandbox_app.appid]), {**body, "template_id": "T-ON", "track_opens": "1"}
    )
    owner.post(reverse("templates", args=[sandbox_app.appid]), {**body, "template_id": "T-OFF"})
    tracked = dict(Template.objects.filter(app=sandbox_app).values_list("template_id", "track_opens"))
    assert tracked == {"T-ON": True, "T-OFF": False}


@pytest.mark.django_db
def test_open_tracking_is_switched_on_the_template_page(owner, template):
    from tenants.models import AuditEvent

    page = owner.get(reverse("template-detail", args=[template.pk])).content.decode()
    assert reverse("template-track-opens", args=[template.pk]) in page and "Stop tracking opens" in page
    assert (
        owner.post(reverse("template-track-opens", args=[template.pk]), {"track_opens": "0"}).status_code
        == 302
    )
    template.refresh_from_db()
    assert template.track_opens is False
    assert AuditEvent.objects.get(action="template.update").data["track_opens"] is False
    assert "Not tracked" in owner.get(reverse("template-detail", args=[template.pk])).content.decode()
    owner.post(reverse("template-track-opens", args=[template.pk]), {"track_opens": "maybe"})
    template.refresh_from_db()
    assert template.track_opens is False  # nothing changed
    owner.post(reverse("template-track-opens", args=[template.pk]), {"track_opens": "1"})
    template.refresh_from_db()
    assert template.track_opens is True


@pytest.mark.django_db
def test_a_bad_hand_template_shows_the_error_and_creates_nothing(owner, sandbox_app):
    response = owner.post(
        reverse("templates", args=[sandbox_app.appid]),
        {"kind": "subscribe", "template_id": "TPL-1", "title": "x", "fields": "Thing 1:x"},
    )
    assert response.status_code == 400
    assert "fields" in response.context["errors"]
    assert not Template.objects.exists()


@pytest.mark.django_db
def test_the_curl_example_carries_keys_and_values_that_pass_validation(owner, template):
    page = owner.get(reverse("template-detail", args=[template.pk]))
    html = page.content.decode()
    body = page.context["curl_body"]
    parse_send_request(template, body)  # raises ApiError if any sample value breaks WeChat's rules
    for field in ALL_TYPES:
        assert field["key"] in html
    curl = page.context["curl"]
    assert template.trigger_path in curl
    payload = shlex.split(curl.replace("\\\n", " "))[-1]
    assert json.loads(payload) == body
    assert body["data"]["time2"] == "15:01" and body["data"]["amount5"] == "¥1.00"


@pytest.mark.django_db
def test_rotate_and_disable_go_through_the_catalogue(owner, template):
    old = template.trigger_path
    assert owner.post(reverse("template-rotate", args=[template.pk])).status_code == 302
    template.refresh_from_db()
    assert template.trigger_path != old
    owner.post(reverse("template-status", args=[template.pk]), {"status": "disabled"})
    template.refresh_from_db()
    assert template.status == "disabled"
    owner.post(reverse("template-status", args=[template.pk]), {"status": "active"})
    template.refresh_from_db()
    assert template.status == "active"


@pytest.mark.django_db
def test_a_test_send_previews_reach_then_creates_a_push(owner, template):
    data = {
        f"data.{k}": v
        for k, v in owner.get(reverse("template-detail", args=[template.pk]))
        .context["curl_body"]["data"]
        .items()
    }
    url = reverse("template-test-send", args=[template.pk])
    preview = owner.post(url, {"to": "oUser1", "dry_run": "1", **data})
    assert preview.status_code == 200
    assert preview.json()["recipients"] == 1
    assert not Push.objects.exists()
    response = owner.post(url, {"to": "oUser1", **data})
    push = Push.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/dashboard/pushes/{push.pk}/"
    assert push.template == template


def _sample_data(owner, template) -> dict:
    body = owner.get(reverse("template-detail", args=[template.pk])).context["curl_body"]
    return {f"data.{k}": v for k, v in body["data"].items()}


@pytest.mark.django_db
def test_a_test_send_can_target_a_tag(owner, sandbox_app, template):
    from formids.models import MiniUser, UserTag

    users = [MiniUser.objects.create(app=sandbox_app, openid=f"oTagged{n}") for n in range(3)]
    UserTag.objects.bulk_create(
        [UserTag(app=sandbox_app, user=u, tag="vip") for u in users[:2]]
        + [
            UserTag(app=sandbox_app, user=users[2], tag="city:sh"),
            UserTag(app=sandbox_app, user=users[0], tag="a"),
        ]
    )
    page = owner.get(reverse("template-detail", args=[template.pk]))
    assert [t["value"] for t in page.context["tags"]] == ["@tag:a", "@tag:city:sh", "@tag:vip"]
    assert '<option value="@tag:vip">the users tagged vip</option>' in page.content.decode()

    url = reverse("template-test-send", args=[template.pk])
    data = _sample_data(owner, template)
    preview = owner.post(url, {"to": "@tag:vip", "dry_run": "1", **data})
    assert preview.json() == {"recipients": 2, "reachable": 0, "no_credit": 2, "opted_out": 0}
    response = owner.post(url, {"to": "@tag:vip", **data})
    assert response.status_code == 302
    push = Push.objects.get()
    assert (push.audience, push.to) == ("tags", {"tags": {"any": ["vip"]}})
    bad = owner.post(url, {"to": "@tag:not a tag", **data})
    assert bad.status_code == 400 and bad.context["send_error"]
    assert bad.context["to"] == "@tag:not a tag"  # the form keeps what was typed


@pytest.mark.django_db
def test_the_tag_choices_stop_at_the_limit(sandbox_app):
    from formids.models import MiniUser, UserTag
    from templates_app.dashboard_views import app_tags

    user = MiniUser.objects.create(app=sandbox_app, openid="oMany")
    UserTag.objects.bulk_create(UserTag(app=sandbox_app, user=user, tag=f"t{n:02d}") for n in range(60))
    assert app_tags(sandbox_app) == [f"t{n:02d}" for n in range(50)]
    assert app_tags(sandbox_app, limit=3) == ["t00", "t01", "t02"]


@pytest.mark.django_db
def test_a_bad_test_send_shows_the_error(owner, template):
    response = owner.post(reverse("template-test-send", args=[template.pk]), {"to": "oUser1"})
    assert response.status_code == 400
    assert response.context["send_error"]
    assert not Push.objects.exists()


@pytest.mark.django_db
def test_a_viewer_sees_the_pages_but_every_post_is_403(viewer_client, sandbox_app, template):
    appid = sandbox_app.appid
    for url in (
        reverse("templates", args=[appid]),
        reverse("template-detail", args=[template.pk]),
        reverse("sandbox-phone", args=[appid]),
        reverse("sandbox-phone-inbox", args=[appid]),
    ):
        assert viewer_client.get(url).status_code == 200, url
    posts = [
        reverse("templates", args=[appid]),
        reverse("templates-sync", args=[appid]),
        reverse("template-rotate", args=[template.pk]),
        reverse("template-status", args=[template.pk]),
        reverse("template-track-opens", args=[template.pk]),
        reverse("template-delete", args=[template.pk]),
        reverse("template-test-send", args=[template.pk]),
        reverse("sandbox-phone-new-user", args=[appid]),
        reverse("sandbox-phone-form", args=[appid]),
        reverse("sandbox-phone-accept", args=[appid]),
    ]
    for url in posts:
        assert (
            viewer_client.post(url, {"status": "disabled", "to": "o1", "track_opens": "0"}).status_code == 403
        ), url
    template.refresh_from_db()
    assert template.status == "active" and template.track_opens is True
    assert not Push.objects.exists()


@pytest.mark.django_db
def test_another_tenant_gets_404_on_templates_and_phone(outsider, sandbox_app, template):
    appid = sandbox_app.appid
    for url in (
        reverse("templates", args=[appid]),
        reverse("template-detail", args=[template.pk]),
        reverse("sandbox-phone", args=[appid]),
        reverse("sandbox-phone-inbox", args=[appid]),
    ):
        assert outsider.get(url).status_code == 404, url
    for url in (
        reverse("templates-sync", args=[appid]),
        reverse("template-rotate", args=[template.pk]),
        reverse("template-track-opens", args=[template.pk]),
        reverse("template-test-send", args=[template.pk]),
        reverse("sandbox-phone-form", args=[appid]),
    ):
        assert outsider.post(url, {"track_opens": "0"}).status_code == 404, url
    template.refresh_from_db()
    assert template.track_opens is True


@pytest.mark.django_db
def test_the_phone_is_for_sandbox_apps_only(owner, sandbox_app):
    sandbox_app.sandbox = False
    sandbox_app.save(update_fields=["sandbox"])
    assert owner.get(reverse("sandbox-phone", args=[sandbox_app.appid])).status_code == 404


@pytest.mark.django_db
def test_a_chinese_request_shows_chinese(owner, template):
    html = owner.get(
        reverse("template-detail", args=[template.pk]), HTTP_ACCEPT_LANGUAGE="zh-hans"
    ).content.decode()
    assert "触发 URL" in html
    assert "发送测试" in html
    assert "预览触达" in html
    assert "@tag:标签名" in html
    assert "打开统计" in html and "停止统计打开" in html


# --- over the sandbox's real HTTP ------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_the_sync_button_pulls_templates_from_the_sandbox(sandbox_base, owner, sandbox_app):
    wechat = sandbox.add_template(
        sandbox_app.appid, kind="subscribe", title="发货通知", content="商品:{{thing1.DATA}}\n"
    )
    response = owner.post(reverse("templates-sync", args=[sandbox_app.appid]))
    assert response.status_code == 302
    template = Template.objects.get(app=sandbox_app, template_id=wechat.template_id)
    assert template.source == "synced"
    assert wechat.template_id in owner.get(reverse("templates", args=[sandbox_app.appid])).content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_phone_collects_credits_and_shows_delivered_messages(
    sandbox_base, owner, sandbox_app, monkeypatch
):
    appid = sandbox_app.appid
    wechat = sandbox.add_template(
        appid,
        kind="subscribe",
        title="发货通知",
        content="商品名称:{{thing1.DATA}}\n发货时间:{{time2.DATA}}\n",
    )
    catalogue.sync_templates(sandbox_app, actor="test")
    template = Template.objects.get(app=sandbox_app, template_id=wechat.template_id)
    phone = reverse("sandbox-phone", args=[appid])

    created = owner.post(reverse("sandbox-phone-new-user", args=[appid]))
    openid = sandbox.list_users(appid)[0].openid
    assert created["Location"].endswith(f"?openid={openid}")
    assert owner.get(phone, {"openid": openid}).status_code == 200

    owner.post(reverse("sandbox-phone-form", args=[appid]), {"openid": openid})
    quota = app_quota(sandbox_app)
    assert quota["credits"]["formid"] == 1 and quota["users_reachable"] == 1

    owner.post(
        reverse("sandbox-phone-accept", args=[appid]), {"openid": openid, "template_id": template.template_id}
    )
    assert app_quota(sandbox_app)["credits"]["subscribe"] == {template.template_id: 1}

    ran: list = []
    monkeypatch.setattr(queue, "enqueue", lambda task, *args, countdown=None: ran.append((task, args)))
    status, answer = endpoint.send(
        template,
        {"to": openid, "data": {"thing1": "机械键盘", "time2": "15:01"}},
        dry_run=False,
        idempotency_key="",
        created_by="test",
        status_url=lambda push: f"/api/v1/pushes/{push.pk}",
    )
    assert status == 202
    tasks.deliver_push(answer["push_id"])
    while ran:
        task, args = ran.pop(0)
        getattr(tasks, task)(*args)
    assert Push.objects.get(pk=answer["push_id"]).sent == 1

    cards = owner.get(reverse("sandbox-phone-inbox", args=[appid]), {"openid": openid}).json()["messages"]
    assert cards[0]["title"] == "发货通知"
    assert {"key": "thing1", "name": "商品名称", "value": "机械键盘"} in cards[0]["fields"]
    html = owner.get(phone, {"openid": openid}).content.decode()
    assert "机械键盘" in html and "商品名称" in html

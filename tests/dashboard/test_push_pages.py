"""Push list, push page with live progress, cancel, and the admin console for pushes and mini-programs."""

from __future__ import annotations

import uuid

import pytest
from django.urls import reverse

from formids import services as credits
from formids.models import Credit
from templates_app import catalogue
from templates_app.models import Delivery, Push
from templates_app.pushes.addressing import parse_to
from templates_app.pushes.request import SendRequest
from templates_app.pushes.start import start_push
from tenants import services
from tests.dashboard.conftest import PASSWORD


@pytest.fixture
def template(sandbox_app):
    return catalogue.create_template(
        sandbox_app,
        kind="subscribe",
        template_id="TPL-ORDER",
        title="Order shipped",
        fields=[{"key": "thing1", "name": "item"}],
        actor="test",
    )


@pytest.fixture
def push(sandbox_app, template):
    """Three recipients: two with a subscribe credit (claimed, pending), one without."""
    for openid in ("o-1", "o-2"):
        user = credits.touch_user(sandbox_app, openid)
        credits.add_subscribe_credits(sandbox_app, user, [template.template_id], source=Credit.Source.SDK)
    credits.touch_user(sandbox_app, "o-3")
    request = SendRequest(
        to=parse_to(["o-1", "o-2", "o-3"]),
        data={"thing1": {"value": "socks"}},
        page="",
        emphasis_keyword="",
        miniprogram_state="",
        lang="",
        send_at=None,
        force=False,
    )
    return start_push(template, request, created_by="test", status_url=lambda p: f"/x/{p.pk}").push


@pytest.mark.django_db
def test_push_list_shows_the_tenants_pushes(owner_client, push):
    page = owner_client.get(reverse("push-list-page"))
    assert page.status_code == 200
    assert reverse("push-page", args=[push.pk]) in page.content.decode()
    assert (
        list(owner_client.get(reverse("push-list-page"), {"status": "done"}).context["page"].object_list)
        == []
    )
    filtered = owner_client.get(reverse("push-list-page"), {"status": "queued", "app": push.app.appid})
    assert list(filtered.context["page"].object_list) == [push]


@pytest.mark.django_db
def test_outsider_does_not_see_the_push(outsider_client, push):
    assert list(outsider_client.get(reverse("push-list-page")).context["page"].object_list) == []
    assert outsider_client.get(reverse("push-page", args=[push.pk])).status_code == 404
    assert outsider_client.get(reverse("push-progress", args=[push.pk])).status_code == 404
    assert outsider_client.post(reverse("push-cancel", args=[push.pk])).status_code == 404
    push.refresh_from_db()
    assert push.status == Push.Status.QUEUED


@pytest.mark.django_db
def test_push_page_renders_progress_and_deliveries(owner_client, push):
    response = owner_client.get(reverse("push-page", args=[push.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    assert 'data-segment="pending"' in page and "o-3" in page
    assert reverse("push-progress", args=[push.pk]) in page
    assert reverse("push-cancel", args=[push.pk]) in page
    segments = {s["name"]: s for s in response.context["segments"]}
    assert segments["pending"]["count"] == 2 and segments["no_credit"]["count"] == 1
    no_credit = owner_client.get(reverse("push-page", args=[push.pk]), {"status": "no_credit"})
    assert [r["delivery"].openid for r in no_credit.context["rows"]] == ["o-3"]


@pytest.mark.django_db
def test_push_page_shows_opens_and_the_open_rate(owner_client, push):
    from formids.models import MiniUser
    from templates_app import opens
    from templates_app.opens_ref import make_ref

    Delivery.objects.filter(push=push, status="pending").update(status="sent")
    Push.objects.filter(pk=push.pk).update(sent=2, pending=0, status="done")
    before = owner_client.get(reverse("push-page", args=[push.pk]))
    assert before.context["open_rate"] == "0.0%"

    o1 = Delivery.objects.get(push=push, openid="o-1")
    assert opens.record_open(push.app, MiniUser.objects.get(app=push.app, openid="o-1"), make_ref(o1.pk))
    response = owner_client.get(reverse("push-page", args=[push.pk]))
    page = response.content.decode()
    assert response.context["open_rate"] == "50.0%"
    assert '<strong data-count="opened">1</strong>' in page and "50.0%" in page
    o1.refresh_from_db()
    assert o1.opened_at.strftime("%Y-%m-%d %H:%M:%S") in page  # the deliveries table's "Opened at"
    progress = owner_client.get(reverse("push-progress", args=[push.pk])).json()
    assert progress["counts"]["opened"] == 1
    zh = owner_client.get(
        reverse("push-page", args=[push.pk]), HTTP_ACCEPT_LANGUAGE="zh-hans"
    ).content.decode()
    assert "打开率" in zh and "打开时间" in zh


@pytest.mark.django_db
def test_push_page_open_rate_before_anything_is_sent(owner_client, push):
    assert owner_client.get(reverse("push-page", args=[push.pk])).context["open_rate"] == "—"


@pytest.mark.django_db
def test_progress_json_returns_the_counts(owner_client, push):
    data = owner_client.get(reverse("push-progress", args=[push.pk])).json()
    assert data["id"] == str(push.pk)
    assert data["status"] == "queued"
    assert data["counts"] == {
        "recipients": 3,
        "sent": 0,
        "failed": 0,
        "no_credit": 1,
        "opted_out": 0,
        "pending": 2,
        "held": 0,
        "opened": 0,
    }


@pytest.mark.django_db
@pytest.mark.parametrize("bad", ["not-a-uuid", "1234", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"])
def test_malformed_ids_are_404(owner_client, bad):
    # Spelled out: reverse() refuses them, as the <uuid:push_id> routes do.
    for path in (f"/dashboard/pushes/{bad}/", f"/dashboard/pushes/{bad}/progress.json"):
        assert owner_client.get(path).status_code == 404
    assert owner_client.post(f"/dashboard/pushes/{bad}/cancel").status_code == 404
    assert owner_client.get(reverse("push-page", args=[uuid.uuid4()])).status_code == 404


@pytest.mark.django_db
def test_viewer_cannot_cancel(viewer_client, push):
    page = viewer_client.get(reverse("push-page", args=[push.pk])).content.decode()
    assert reverse("push-cancel", args=[push.pk]) not in page
    assert viewer_client.post(reverse("push-cancel", args=[push.pk])).status_code == 403
    push.refresh_from_db()
    assert push.status == Push.Status.QUEUED


@pytest.mark.django_db
def test_owner_cancels_and_credits_go_back(owner_client, push):
    claimed = Credit.objects.filter(app=push.app, state=Credit.State.CLAIMED)
    assert claimed.count() == 2
    response = owner_client.post(reverse("push-cancel", args=[push.pk]))
    assert response.status_code == 302
    push.refresh_from_db()
    assert push.status == Push.Status.CANCELED
    assert (push.failed, push.pending) == (2, 0)
    assert claimed.count() == 0
    assert Credit.objects.filter(app=push.app, state=Credit.State.AVAILABLE).count() == 2
    page = owner_client.get(response["Location"]).content.decode()
    assert "The push was canceled before this message was sent" in page
    assert reverse("push-cancel", args=[push.pk]) not in page


@pytest.mark.django_db
def test_cancel_needs_post(owner_client, push):
    assert owner_client.get(reverse("push-cancel", args=[push.pk])).status_code == 405


@pytest.mark.django_db
def test_errcodes_are_explained(owner_client, push):
    Delivery.objects.filter(push=push, openid="o-1").update(status="failed", errcode="43101")
    Delivery.objects.filter(push=push, openid="o-2").update(status="failed", errcode="timeout_ambiguous")
    page = owner_client.get(reverse("push-page", args=[push.pk]), {"status": "failed"}).content.decode()
    assert "user has not accepted this subscription (no credit)" in page
    assert "WeChat may or may not have delivered it: not retried, to avoid a duplicate" in page


@pytest.mark.django_db
def test_push_pages_in_chinese(owner_client, push):
    owner_client.cookies["django_language"] = "zh-hans"
    Delivery.objects.filter(push=push, openid="o-2").update(status="failed", errcode="timeout_ambiguous")
    page = owner_client.get(reverse("push-page", args=[push.pk])).content.decode()
    assert "取消推送" in page
    assert "为避免重复" in page
    assert "全部小程序" in owner_client.get(reverse("push-list-page")).content.decode()


# --- admin -------------------------------------------------------------------------------------------
@pytest.fixture
def admin_client(client, django_user_model):
    django_user_model.objects.create_superuser("root", "root@pushhub.test", PASSWORD)
    client.login(username="root", password=PASSWORD)
    return client


@pytest.mark.django_db
def test_admin_miniprogram_changelist_has_quota_columns_and_no_secret(admin_client, push, tenant):
    app = push.app
    response = admin_client.get(reverse("admin:tenants_miniprogram_changelist"))
    assert response.status_code == 200
    page = response.content.decode()
    for column in ("available credits", "expiring in 24 h", "used credits"):
        assert column in page.lower()
    assert app.secret_ciphertext not in page
    assert app.events_aes_key_ciphertext not in page
    assert app.events_token not in page
    assert app.get_secret() not in page
    row = response.context["cl"].result_list[0]
    assert (row.n_available, row.n_used) == (0, 0)  # two credits are claimed by the push


@pytest.mark.django_db
def test_admin_push_and_delivery_changelists(admin_client, push):
    pushes = admin_client.get(reverse("admin:templates_app_push_changelist"), {"q": str(push.pk)[:8]})
    assert pushes.status_code == 200
    assert list(pushes.context["cl"].result_list) == [push]
    assert (
        admin_client.get(reverse("admin:templates_app_push_changelist"), {"status": "queued"}).status_code
        == 200
    )
    assert admin_client.get(reverse("admin:templates_app_push_change", args=[push.pk])).status_code == 200
    deliveries_url = reverse("admin:templates_app_delivery_changelist")
    deliveries = admin_client.get(deliveries_url, {"push__id__exact": str(push.pk)})
    assert deliveries.status_code == 200
    assert len(deliveries.context["cl"].result_list) == 3
    assert admin_client.get(deliveries_url, {"status": "no_credit", "q": "o-3"}).status_code == 200
    for response in (pushes, deliveries):
        assert push.template.trigger_token_ciphertext not in response.content.decode()
        assert push.template.get_trigger_token() not in response.content.decode()
    assert services  # the tenants services module builds the fixtures


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("to", "english", "chinese"),
    [
        (["o-1", "o-2", "o-3"], "3 recipients", "3 位接收人"),
        ({"aliases": ["u1"]}, "1 alias", "1 个别名"),
        (
            {"tags": {"all": ["vip", "city:sh"], "none": ["churned"]}},
            "tagged all: vip, city:sh · none: churned",
            None,
        ),
        ("@all", "@all", None),
    ],
)
def test_the_push_page_says_who_the_push_addresses(owner_client, template, to, english, chinese):
    request = SendRequest(
        to=parse_to(to),
        data={"thing1": {"value": "socks"}},
        page="",
        emphasis_keyword="",
        miniprogram_state="",
        lang="",
        send_at=None,
        force=False,
    )
    push = start_push(template, request, created_by="test", status_url=lambda p: "").push
    assert owner_client.get(reverse("push-page", args=[push.pk])).context["audience"] == english
    if chinese:
        page = owner_client.get(reverse("push-page", args=[push.pk]), HTTP_ACCEPT_LANGUAGE="zh-hans")
        assert page.context["audience"] == chinese
    if push.audience == "tags":  # the list marks segment pushes, as it marks @all ones
        assert "segment …" in owner_client.get(reverse("push-list-page")).content.decode()


@pytest.mark.django_db
def test_push_page_shows_who_is_held_and_until_when(owner_client, sandbox_app, template):
    credits.touch_user(sandbox_app, "o-waiting")
    request = SendRequest(
        to=parse_to(["o-waiting"]),
        data={"thing1": {"value": "socks"}},
        page="",
        emphasis_keyword="",
        miniprogram_state="",
        lang="",
        send_at=None,
        force=False,
        hold=3600,
    )
    push = start_push(template, request, created_by="test", status_url=lambda p: f"/x/{p.pk}").push

    response = owner_client.get(reverse("push-page", args=[push.pk]), HTTP_ACCEPT_LANGUAGE="zh-hans")

    page = response.content.decode()
    assert 'data-count="held">1<' in page and "等待额度" in page
    assert push.hold_until.strftime("%Y-%m-%d %H:%M") in page
    held = owner_client.get(reverse("push-page", args=[push.pk]), {"status": "held"})
    assert [r["delivery"].openid for r in held.context["rows"]] == ["o-waiting"]

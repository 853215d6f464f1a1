"""Mini-program pages: the list, registration, one app's settings; viewers read only, outsiders get 404."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tenants.models import MiniProgram
from tests.conftest import random_appid, random_secret


@pytest.fixture
def real_app(tenant, settings):
    """A non-sandbox app, registered with the WeChat check stubbed (no network in unit tests)."""
    from tenants import services

    app = services.register_app(
        tenant, appid=random_appid(), secret=random_secret(), name="Real shop", sandbox_app=True
    )
    app.sandbox = False
    app.save(update_fields=["sandbox"])
    return app


@pytest.mark.django_db
def test_the_list_shows_the_tenants_apps_with_reach(owner, sandbox_app):
    page = owner.get(reverse("dashboard"))
    assert page.status_code == 200
    html = page.content.decode()
    assert sandbox_app.appid in html
    assert reverse("app-detail", args=[sandbox_app.appid]) in html


@pytest.mark.django_db
def test_the_list_costs_a_fixed_number_of_queries_per_app(owner, tenant, django_assert_max_num_queries):
    from tenants import services

    for _ in range(3):
        services.register_app(
            tenant, appid=random_appid(), secret=random_secret(), name="x", sandbox_app=True
        )
    with django_assert_max_num_queries(8 + 3 * 6):
        assert owner.get(reverse("dashboard")).status_code == 200


@pytest.mark.django_db
def test_the_app_page_shows_the_message_push_settings(owner, sandbox_app):
    page = owner.get(reverse("app-detail", args=[sandbox_app.appid]))
    assert page.status_code == 200
    html = page.content.decode()
    assert sandbox_app.events_path in html
    assert sandbox_app.events_token in html
    assert sandbox_app.get_events_aes_key() in html
    assert 'data-copy="#events-token"' in html
    assert "45103" not in html  # sandbox apps may still send formId templates


@pytest.mark.django_db
def test_a_real_app_warns_that_formid_templates_are_retired(owner, real_app):
    html = owner.get(reverse("app-detail", args=[real_app.appid])).content.decode()
    assert "45103" in html


@pytest.mark.django_db
def test_register_creates_a_sandbox_app(owner, tenant):
    appid = random_appid()
    response = owner.post(
        reverse("app-new"), {"appid": appid, "secret": random_secret(), "name": "New shop", "sandbox": "on"}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("app-detail", args=[appid])
    assert MiniProgram.objects.live().get(appid=appid).tenant == tenant


@pytest.mark.django_db
def test_register_shows_invalid_appid_on_the_field_and_creates_nothing(owner):
    assert owner.get(reverse("app-new")).status_code == 200
    response = owner.post(
        reverse("app-new"), {"appid": "nope", "secret": random_secret(), "name": "Bad", "sandbox": "on"}
    )
    assert response.status_code == 200
    assert "appid" in response.context["errors"]
    assert 'id="error-appid"' in response.content.decode()
    assert not MiniProgram.objects.exists()


@pytest.mark.django_db
def test_the_owner_changes_credit_source_secret_rotates_and_deletes(owner, sandbox_app):
    detail = reverse("app-detail", args=[sandbox_app.appid])
    response = owner.post(reverse("app-update", args=[sandbox_app.appid]), {"credit_source": "events"})
    assert response.status_code == 302
    sandbox_app.refresh_from_db()
    assert sandbox_app.credit_source == "events"

    bad = owner.post(reverse("app-update", args=[sandbox_app.appid]), {"secret": "short"})
    assert bad.status_code == 400 and "secret" in bad.context["errors"]
    new_secret = random_secret()
    assert (
        owner.post(reverse("app-update", args=[sandbox_app.appid]), {"secret": new_secret}).status_code == 302
    )
    sandbox_app.refresh_from_db()
    assert sandbox_app.get_secret() == new_secret

    old_token = sandbox_app.events_token
    assert owner.post(reverse("app-rotate-events", args=[sandbox_app.appid])).status_code == 302
    sandbox_app.refresh_from_db()
    assert sandbox_app.events_token != old_token

    assert owner.post(reverse("app-delete", args=[sandbox_app.appid])).status_code == 302
    assert owner.get(detail).status_code == 404


@pytest.mark.django_db
def test_the_owner_turns_the_in_app_inbox_off_and_on(owner, sandbox_app):
    update = reverse("app-update", args=[sandbox_app.appid])
    page = owner.get(reverse("app-detail", args=[sandbox_app.appid])).content.decode()
    assert 'name="inbox_enabled"' in page and '<option value="on" selected>' in page
    assert owner.post(update, {"inbox_enabled": "off"}).status_code == 302
    sandbox_app.refresh_from_db()
    assert sandbox_app.inbox_enabled is False
    page = owner.get(reverse("app-detail", args=[sandbox_app.appid])).content.decode()
    assert '<option value="off" selected>' in page
    bad = owner.post(update, {"inbox_enabled": "maybe"})
    assert bad.status_code == 400 and "inbox_enabled" in bad.context["errors"]
    assert owner.post(update, {"inbox_enabled": "on"}).status_code == 302
    sandbox_app.refresh_from_db()
    assert sandbox_app.inbox_enabled is True


@pytest.mark.django_db
def test_the_inbox_setting_is_shown_in_chinese(owner, sandbox_app):
    owner.cookies["django_language"] = "zh-hans"
    page = owner.get(reverse("app-detail", args=[sandbox_app.appid])).content.decode()
    assert "小程序内消息中心" in page


@pytest.mark.django_db
def test_a_viewer_sees_the_pages_but_cannot_change_anything(viewer_client, sandbox_app):
    appid = sandbox_app.appid
    assert viewer_client.get(reverse("dashboard")).status_code == 200
    assert viewer_client.get(reverse("app-detail", args=[appid])).status_code == 200
    posts = [
        (
            reverse("app-new"),
            {"appid": random_appid(), "secret": random_secret(), "name": "x", "sandbox": "on"},
        ),
        (reverse("app-update", args=[appid]), {"credit_source": "events"}),
        (reverse("app-update", args=[appid]), {"inbox_enabled": "off"}),
        (reverse("app-rotate-events", args=[appid]), {}),
        (reverse("app-delete", args=[appid]), {}),
    ]
    for url, data in posts:
        assert viewer_client.post(url, data).status_code == 403, url
    sandbox_app.refresh_from_db()
    assert sandbox_app.credit_source == "sdk" and sandbox_app.deleted_at is None
    assert sandbox_app.inbox_enabled is True
    assert MiniProgram.objects.count() == 1


@pytest.mark.django_db
def test_another_tenant_gets_404_on_the_app(outsider, sandbox_app):
    appid = sandbox_app.appid
    assert sandbox_app.appid not in outsider.get(reverse("dashboard")).content.decode()
    assert outsider.get(reverse("app-detail", args=[appid])).status_code == 404
    for name in ("app-update", "app-rotate-events", "app-delete"):
        assert outsider.post(reverse(name, args=[appid]), {"credit_source": "events"}).status_code == 404


@pytest.mark.django_db
def test_a_chinese_request_shows_chinese(owner, sandbox_app):
    page = owner.get(reverse("app-detail", args=[sandbox_app.appid]), HTTP_ACCEPT_LANGUAGE="zh-hans")
    html = page.content.decode()
    assert "小程序" in html
    assert "复制" in html
    assert "更换 Token 和 EncodingAESKey" in html
    assert "微信消息推送配置" in html

"""/api/v1 template catalogue: create, list, read, change, delete, rotate; validation, keys, isolation;
trigger tokens (strength, storage, lookup) and the subscribe catalogue hook formids asks."""

from __future__ import annotations

import hashlib
import json
import re
import uuid

import pytest
from django.db import connection

from formids.hooks import known_subscribe_template_ids
from pushhub.api import ApiError
from templates_app import catalogue
from templates_app.models import Template
from tenants import services
from tenants.models import AuditEvent
from tests.conftest import api_client, random_appid, random_secret

pytestmark = pytest.mark.django_db

FORMID_FIELDS = [{"key": "keyword1", "name": "订单号"}, {"key": "keyword2", "name": "金额"}]
SUBSCRIBE_FIELDS = [{"key": "character_string1", "name": "订单号"}, {"key": "amount2", "name": "金额"}]
TOKEN_URL = re.compile(r"^http://testserver/t/([A-Za-z0-9_-]+)$")


def formid_body(**overrides):
    return {
        "kind": "formid",
        "template_id": "TPL_FORM_1",
        "title": "支付成功通知",
        "fields": FORMID_FIELDS,
        **overrides,
    }


def subscribe_body(**overrides):
    return {
        "kind": "subscribe",
        "template_id": "9Aw5ZV1j9xdWTFEkqCpZ7mIBbSC34khK55OtzUPl0rU",
        "title": "订单支付成功",
        "fields": SUBSCRIBE_FIELDS,
        **overrides,
    }


def create(api, app, body=None, **overrides):
    return api.post(f"/api/v1/apps/{app.appid}/templates", body or formid_body(**overrides), format="json")


def error(response):
    return response.json()["error"]


def token_of(url: str) -> str:
    match = TOKEN_URL.match(url)
    assert match, url
    return match.group(1)


@pytest.fixture
def app(sandbox_app):
    return sandbox_app


@pytest.fixture
def template(app):
    return catalogue.create_template(
        app,
        kind="formid",
        template_id="TPL_FORM_1",
        title="支付成功通知",
        fields=FORMID_FIELDS,
        page="pages/order?id=1",
        emphasis_keyword="keyword1.DATA",
        actor="test",
    )


# --- create ----------------------------------------------------------------------------------------
def test_it_creates_a_formid_template_with_a_trigger_url(api, app):
    response = create(api, app, page="/pages/order?id=1", emphasis_keyword="keyword2.DATA")
    assert response.status_code == 201, response.content
    body = response.json()
    template = Template.objects.get()
    assert body == {
        "id": str(template.pk),
        "app": app.appid,
        "kind": "formid",
        "template_id": "TPL_FORM_1",
        "title": "支付成功通知",
        "fields": FORMID_FIELDS,
        "page": "pages/order?id=1",  # one leading "/" dropped: WeChat refuses it
        "emphasis_keyword": "keyword2.DATA",
        "subscription": None,  # formId templates have none
        "status": "active",
        "source": "manual",
        "trigger_url": f"http://testserver/t/{template.get_trigger_token()}",
        "trigger_enabled": True,
        "track_opens": True,
        "created_at": body["created_at"],
    }
    assert body["created_at"].endswith("Z")
    assert AuditEvent.objects.filter(action="template.create", object_id=str(template.pk)).exists()


def test_it_creates_a_subscribe_template_and_names_are_optional(api, app):
    body = subscribe_body(fields=[{"key": "thing1"}, {"key": "time2", "name": " 时间 "}])
    response = create(api, app, body)
    assert response.status_code == 201, response.content
    assert response.json()["fields"] == [{"key": "thing1", "name": ""}, {"key": "time2", "name": "时间"}]
    assert response.json()["emphasis_keyword"] == "" and response.json()["page"] == ""


MANY = [{"key": f"keyword{i}"} for i in range(1, 22)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (formid_body(kind="sms"), "kind"),
        (formid_body(kind=None), "kind"),
        ({k: v for k, v in formid_body().items() if k != "kind"}, "kind"),
        (formid_body(template_id=""), "template_id"),
        (formid_body(template_id="has space"), "template_id"),
        (formid_body(template_id=123), "template_id"),
        (formid_body(template_id="x" * 129), "template_id"),
        (formid_body(title=""), "title"),
        (formid_body(title="   "), "title"),
        (formid_body(title="x" * 101), "title"),
        (formid_body(title=["a"]), "title"),
        ({k: v for k, v in formid_body().items() if k != "title"}, "title"),
        ({k: v for k, v in formid_body().items() if k != "fields"}, "fields"),
        (formid_body(fields=[]), "fields"),
        (formid_body(fields="keyword1"), "fields"),
        (formid_body(fields={"key": "keyword1"}), "fields"),
        (formid_body(fields=MANY), "fields"),
        (formid_body(fields=["keyword1"]), "fields[0]"),
        (formid_body(fields=[{"name": "订单号"}]), "fields[0].key"),
        (formid_body(fields=[{"key": "thing1"}]), "fields[0].key"),
        (formid_body(fields=[{"key": "keyword"}]), "fields[0].key"),
        (formid_body(fields=[{"key": "keyword123"}]), "fields[0].key"),
        (formid_body(fields=[{"key": 1}]), "fields[0].key"),
        (formid_body(fields=[{"key": "keyword1"}, {"key": "keyword1"}]), "fields[1].key"),
        (formid_body(fields=[{"key": "keyword1", "name": "x" * 21}]), "fields[0].name"),
        (formid_body(fields=[{"key": "keyword1", "name": 5}]), "fields[0].name"),
        (formid_body(fields=[{"key": "keyword1", "label": "x"}]), "fields[0].label"),
        (subscribe_body(fields=[{"key": "Thing1"}]), "fields[0].key"),
        (subscribe_body(fields=[{"key": "thing"}]), "fields[0].key"),
        (subscribe_body(fields=[{"key": "thing1", "name": "a"}, {"key": "thing-2"}]), "fields[1].key"),
        (formid_body(page="pages/a b"), "page"),
        (formid_body(page="//pages/a"), "page"),
        (formid_body(page="p" * 1025), "page"),
        (formid_body(page=5), "page"),
        (formid_body(emphasis_keyword="keyword9.DATA"), "emphasis_keyword"),
        (formid_body(emphasis_keyword="keyword1"), "emphasis_keyword"),
        (formid_body(emphasis_keyword=True), "emphasis_keyword"),
        (subscribe_body(emphasis_keyword="thing1.DATA"), "emphasis_keyword"),
        (formid_body(status="active"), "status"),
        (formid_body(colour="red"), "colour"),
    ],
)
def test_it_rejects_bad_input_naming_the_field(api, app, body, field):
    response = create(api, app, body)
    assert response.status_code == 400, response.content
    assert error(response)["code"] == "validation_error"
    assert error(response)["field"] == field
    assert error(response)["message"]
    assert not Template.objects.exists()


def test_it_rejects_malformed_json_and_a_non_object(api, app):
    url = f"/api/v1/apps/{app.appid}/templates"
    bad = api.post(url, data="{nope", content_type="application/json")
    assert bad.status_code == 400 and error(bad)["code"] == "invalid_json"
    array = api.post(url, data="[1]", content_type="application/json")
    assert array.status_code == 400 and error(array)["code"] == "validation_error"


def test_a_duplicate_template_id_is_a_conflict_until_the_first_is_deleted(api, app, template):
    response = create(api, app)
    assert response.status_code == 409
    assert error(response) == {
        "code": "conflict",
        "message": error(response)["message"],
        "field": "template_id",
    }
    # the same WeChat id as the other kind is another template
    assert create(api, app, subscribe_body(template_id="TPL_FORM_1")).status_code == 201
    catalogue.update_template(template, actor="test", status="disabled")
    assert create(api, app).status_code == 409  # disabled still holds the id
    catalogue.delete_template(template, actor="test")
    again = create(api, app)
    assert again.status_code == 201
    assert again.json()["id"] != str(template.pk)


def test_a_read_key_cannot_write(read_api, app, template):
    calls = [
        ("post", f"/api/v1/apps/{app.appid}/templates", formid_body(template_id="OTHER")),
        ("post", f"/api/v1/apps/{app.appid}/templates/sync", None),
        ("patch", f"/api/v1/templates/{template.pk}", {"title": "x"}),
        ("delete", f"/api/v1/templates/{template.pk}", None),
        ("post", f"/api/v1/templates/{template.pk}/rotate", None),
    ]
    token = template.get_trigger_token()
    for method, url, body in calls:
        response = getattr(read_api, method)(url, body, format="json")
        assert response.status_code == 403, (method, url)
        assert error(response)["code"] == "permission_denied"
    template.refresh_from_db()
    assert template.title == "支付成功通知" and template.status == "active"
    assert template.get_trigger_token() == token
    assert Template.objects.count() == 1
    # ...but it reads
    assert read_api.get(f"/api/v1/apps/{app.appid}/templates").status_code == 200
    assert read_api.get(f"/api/v1/templates/{template.pk}").status_code == 200


def test_an_outsider_gets_404_on_every_route(outsider_api, app, template):
    calls = [
        ("get", f"/api/v1/apps/{app.appid}/templates", None),
        ("post", f"/api/v1/apps/{app.appid}/templates", formid_body(template_id="OTHER")),
        ("post", f"/api/v1/apps/{app.appid}/templates/sync", None),
        ("get", f"/api/v1/templates/{template.pk}", None),
        ("patch", f"/api/v1/templates/{template.pk}", {"title": "hijacked"}),
        ("delete", f"/api/v1/templates/{template.pk}", None),
        ("post", f"/api/v1/templates/{template.pk}/rotate", None),
    ]
    token = template.get_trigger_token()
    for method, url, body in calls:
        response = getattr(outsider_api, method)(url, body, format="json")
        assert response.status_code == 404, (method, url, response.content)
        assert error(response) == {"code": "not_found", "message": error(response)["message"]}
    template.refresh_from_db()
    assert (template.title, template.status, template.get_trigger_token()) == (
        "支付成功通知",
        "active",
        token,
    )
    assert Template.objects.count() == 1


def test_without_a_key_it_is_401(app, template):
    anonymous = api_client(None)
    assert anonymous.get(f"/api/v1/apps/{app.appid}/templates").status_code == 401
    response = anonymous.get(f"/api/v1/templates/{template.pk}")
    assert response.status_code == 401 and error(response)["code"] == "not_authenticated"


@pytest.mark.parametrize("path", ["not-a-uuid", "123", str(uuid.uuid4()), "%20"])
def test_an_unknown_or_malformed_id_is_404(api, path):
    for method in ("get", "patch", "delete"):
        response = getattr(api, method)(f"/api/v1/templates/{path}", {}, format="json")
        assert response.status_code == 404, (method, response.content)
        assert error(response)["code"] == "not_found"
    assert api.post(f"/api/v1/templates/{path}/rotate").status_code == 404


def test_an_unknown_or_deleted_app_is_404(api, app, template):
    assert api.get(f"/api/v1/apps/{random_appid()}/templates").status_code == 404
    services.delete_app(app, actor="test")
    assert api.get(f"/api/v1/apps/{app.appid}/templates").status_code == 404
    assert create(api, app, formid_body(template_id="NEW")).status_code == 404
    assert api.get(f"/api/v1/templates/{template.pk}").status_code == 404


# --- list ------------------------------------------------------------------------------------------
def test_the_list_filters_by_kind_and_status_and_hides_deleted_ones(api, app, template):
    sub = catalogue.create_template(
        app, kind="subscribe", template_id="SUB1", title="发货", fields=SUBSCRIBE_FIELDS, actor="t"
    )
    gone = catalogue.create_template(
        app, kind="subscribe", template_id="SUB2", title="退款", fields=SUBSCRIBE_FIELDS, actor="t"
    )
    catalogue.delete_template(gone, actor="t")
    url = f"/api/v1/apps/{app.appid}/templates"

    def ids(query=""):
        response = api.get(url + query)
        assert response.status_code == 200, response.content
        assert response.json()["next"] is None
        return {item["id"] for item in response.json()["results"]}

    assert ids() == {str(template.pk), str(sub.pk)}
    assert ids("?kind=subscribe") == {str(sub.pk)}
    assert ids("?kind=formid") == {str(template.pk)}
    assert ids("?status=deleted") == {str(gone.pk)}
    assert ids("?status=active&kind=subscribe") == {str(sub.pk)}
    assert ids("?status=disabled") == set()
    for query, field in (("?kind=sms", "kind"), ("?status=gone", "status")):
        response = api.get(url + query)
        assert response.status_code == 400 and error(response)["field"] == field


def test_the_list_shows_only_this_apps_templates(api, tenant, app, template):
    other = services.register_app(
        tenant, appid=random_appid(), secret=random_secret(), name="Other", sandbox_app=True
    )
    catalogue.create_template(
        other, kind="formid", template_id="TPL_FORM_1", title="x", fields=FORMID_FIELDS, actor="t"
    )
    results = api.get(f"/api/v1/apps/{app.appid}/templates").json()["results"]
    assert [item["id"] for item in results] == [str(template.pk)]
    assert results[0]["app"] == app.appid


def test_the_list_is_cursor_paginated(api, app, django_assert_max_num_queries):
    created = {
        str(
            catalogue.create_template(
                app, kind="formid", template_id=f"TPL{i}", title=f"t{i}", fields=FORMID_FIELDS, actor="t"
            ).pk
        )
        for i in range(7)
    }
    seen: list[str] = []
    url = f"/api/v1/apps/{app.appid}/templates?limit=3"
    pages = 0
    while url:
        with django_assert_max_num_queries(6):
            response = api.get(url)
        assert response.status_code == 200
        body = response.json()
        assert len(body["results"]) <= 3
        seen += [item["id"] for item in body["results"]]
        url = body["next"]
        pages += 1
    assert pages == 3
    assert len(seen) == len(set(seen)) and set(seen) == created


# --- read, change, delete --------------------------------------------------------------------------
def test_it_reads_a_template(api, template):
    response = api.get(f"/api/v1/templates/{template.pk}")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(template.pk)
    assert body["page"] == "pages/order?id=1" and body["emphasis_keyword"] == "keyword1.DATA"
    assert token_of(body["trigger_url"]) == template.get_trigger_token()


def test_it_changes_a_template(api, template):
    changes = {
        "title": "支付成功",
        "fields": [
            {"key": "keyword1", "name": "单号"},
            {"key": "keyword2"},
            {"key": "keyword3", "name": "时间"},
        ],
        "page": "/pages/paid",
        "emphasis_keyword": "keyword3.DATA",
        "status": "disabled",
        "trigger_enabled": False,
        "track_opens": False,
    }
    response = api.patch(f"/api/v1/templates/{template.pk}", changes, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["title"] == "支付成功"
    assert body["fields"] == [
        {"key": "keyword1", "name": "单号"},
        {"key": "keyword2", "name": ""},
        {"key": "keyword3", "name": "时间"},
    ]
    assert (body["page"], body["emphasis_keyword"]) == ("pages/paid", "keyword3.DATA")
    assert (body["status"], body["trigger_enabled"], body["track_opens"]) == ("disabled", False, False)
    template.refresh_from_db()
    assert template.status == "disabled" and template.trigger_enabled is False
    assert template.track_opens is False
    event = AuditEvent.objects.get(action="template.update")
    assert set(event.data["fields"]) == set(changes)
    # back on; clearing page and emphasis
    response = api.patch(
        f"/api/v1/templates/{template.pk}",
        {"status": "active", "trigger_enabled": True, "page": "", "emphasis_keyword": ""},
        format="json",
    )
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["page"], response.json()["emphasis_keyword"]) == (
        "active",
        "",
        "",
    )


def test_an_empty_patch_changes_nothing(api, template):
    response = api.patch(f"/api/v1/templates/{template.pk}", {}, format="json")
    assert response.status_code == 200
    assert not AuditEvent.objects.filter(action="template.update").exists()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"status": "deleted"}, "status"),
        ({"status": "paused"}, "status"),
        ({"trigger_enabled": "yes"}, "trigger_enabled"),
        ({"track_opens": "false"}, "track_opens"),
        ({"track_opens": None}, "track_opens"),
        ({"track_opens": 0}, "track_opens"),
        ({"title": ""}, "title"),
        ({"fields": []}, "fields"),
        ({"fields": [{"key": "thing1"}]}, "fields[0].key"),
        # dropping keyword1 while it is the emphasis keyword
        ({"fields": [{"key": "keyword2"}]}, "emphasis_keyword"),
        ({"emphasis_keyword": "keyword7.DATA"}, "emphasis_keyword"),
        ({"page": "pages/a\nb"}, "page"),
        ({"kind": "subscribe"}, "kind"),
        ({"template_id": "OTHER"}, "template_id"),
        ({"trigger_url": "http://x"}, "trigger_url"),
    ],
)
def test_a_bad_change_is_refused_naming_the_field(api, template, changes, field):
    response = api.patch(f"/api/v1/templates/{template.pk}", changes, format="json")
    assert response.status_code == 400, response.content
    assert error(response)["code"] == "validation_error" and error(response)["field"] == field
    template.refresh_from_db()
    assert template.title == "支付成功通知" and template.fields == FORMID_FIELDS
    assert template.status == "active" and template.emphasis_keyword == "keyword1.DATA"


def test_deleting_hides_the_template_and_its_trigger_url_stops_sending(api, template):
    token = template.get_trigger_token()
    response = api.delete(f"/api/v1/templates/{template.pk}")
    assert response.status_code == 204 and response.content == b""
    assert api.get(f"/api/v1/templates/{template.pk}").status_code == 404
    assert api.patch(f"/api/v1/templates/{template.pk}", {"title": "x"}, format="json").status_code == 404
    assert api.delete(f"/api/v1/templates/{template.pk}").status_code == 404
    assert api.post(f"/api/v1/templates/{template.pk}/rotate").status_code == 404
    template.refresh_from_db()
    assert template.status == "deleted"
    # The token still resolves (so the trigger endpoint can answer 410 template_gone), to a deleted template.
    assert catalogue.template_for_trigger_token(token).status == "deleted"
    assert AuditEvent.objects.filter(action="template.delete", object_id=str(template.pk)).count() == 1


def test_a_deleted_template_cannot_be_changed_or_rotated_by_the_services(template):
    catalogue.delete_template(template, actor="t")
    catalogue.delete_template(template, actor="t")  # idempotent
    assert AuditEvent.objects.filter(action="template.delete").count() == 1
    for call in (
        lambda: catalogue.update_template(template, actor="t", title="x"),
        lambda: catalogue.rotate_trigger_url(template, actor="t"),
    ):
        with pytest.raises(ApiError) as raised:
            call()
        assert raised.value.status_code == 404


# --- trigger tokens --------------------------------------------------------------------------------
def test_rotating_gives_a_new_url_and_the_old_token_stops_resolving_at_once(api, template):
    old = template.get_trigger_token()
    response = api.post(f"/api/v1/templates/{template.pk}/rotate")
    assert response.status_code == 200, response.content
    assert list(response.json()) == ["trigger_url"]
    new = token_of(response.json()["trigger_url"])
    assert new != old
    assert catalogue.template_for_trigger_token(old) is None
    assert catalogue.template_for_trigger_token(new).pk == template.pk
    assert token_of(api.get(f"/api/v1/templates/{template.pk}").json()["trigger_url"]) == new
    assert AuditEvent.objects.filter(action="template.rotate_trigger_url").count() == 1


def test_a_trigger_token_has_at_least_128_bits_and_is_stored_only_hashed_and_encrypted(template):
    token = template.get_trigger_token()
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert len(token) * 6 >= 128  # base64url: 6 bits a character
    assert len({catalogue.new_trigger_token() for _ in range(100)}) == 100
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM templates_app_template WHERE id = %s", [template.pk.hex])
        row = cursor.fetchone()
        if row is None:  # PostgreSQL stores the uuid natively
            cursor.execute("SELECT * FROM templates_app_template WHERE id = %s", [template.pk])
            row = cursor.fetchone()
    assert row is not None
    assert not any(token in str(value) for value in row)
    assert template.trigger_token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert template.trigger_token_hash in row


def test_a_token_lookup_is_one_indexed_query(template, django_assert_num_queries):
    token = template.get_trigger_token()
    with django_assert_num_queries(1):
        found = catalogue.template_for_trigger_token(token)
        assert found.app.appid and found.app.tenant_id  # the app comes with it (a trigger needs only
        # the tenant's id, which is on the app)
    for bad in ("", "short", token + "x", token[:-1], "a" * 129, "../../etc", "é" * 43):
        with django_assert_num_queries(0 if not catalogue.TOKEN_SHAPE.match(bad) else 1):
            assert catalogue.template_for_trigger_token(bad) is None


def test_set_trigger_token_stores_hash_and_ciphertext(template):
    catalogue.set_trigger_token(template, "A" * 43)
    assert template.trigger_token_hash == catalogue.hash_trigger_token("A" * 43)
    assert template.get_trigger_token() == "A" * 43
    assert "A" * 43 not in template.trigger_token_ciphertext


# --- the subscribe catalogue formids asks --------------------------------------------------------------
def test_the_catalogue_hook_lists_only_active_subscribe_templates(
    tenant, app, template, django_assert_num_queries
):
    def make(template_id, kind="subscribe", target=app):
        return catalogue.create_template(
            target,
            kind=kind,
            template_id=template_id,
            title="t",
            fields=FORMID_FIELDS if kind == "formid" else SUBSCRIBE_FIELDS,
            actor="t",
        )

    make("SUB_ACTIVE")
    catalogue.update_template(make("SUB_TRIGGER_OFF"), actor="t", trigger_enabled=False)
    catalogue.update_template(make("SUB_DISABLED"), actor="t", status="disabled")
    catalogue.delete_template(make("SUB_DELETED"), actor="t")
    other = services.register_app(
        tenant, appid=random_appid(), secret=random_secret(), name="Other", sandbox_app=True
    )
    make("SUB_OTHER_APP", target=other)
    with django_assert_num_queries(1):
        ids = known_subscribe_template_ids(app)
    assert ids == {"SUB_ACTIVE", "SUB_TRIGGER_OFF"}


def test_the_admin_never_shows_a_trigger_token(client, django_user_model, template):
    admin = django_user_model.objects.create_superuser("root", "root@pushhub.test", "pw")
    client.force_login(admin)
    token = template.get_trigger_token()
    listing = client.get("/admin/templates_app/template/")
    change = client.get(f"/admin/templates_app/template/{template.pk}/change/")
    assert listing.status_code == 200 and change.status_code == 200
    for page in (listing, change):
        html = page.content.decode()
        assert token not in html and template.trigger_token_ciphertext not in html
        assert template.trigger_token_hash[:12] in html and template.trigger_token_hash not in html
    search = client.get("/admin/templates_app/template/", {"q": app_appid(template)})
    assert str(template.pk) in search.content.decode()


def test_the_admin_changes_status_through_the_catalogue(client, django_user_model, template):
    admin = django_user_model.objects.create_superuser("root", "root@pushhub.test", "pw")
    client.force_login(admin)
    response = client.post(
        f"/admin/templates_app/template/{template.pk}/change/",
        {"status": "disabled", "trigger_enabled": "on", "track_opens": "on"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    template.refresh_from_db()
    assert template.status == "disabled" and template.trigger_enabled is True and template.track_opens
    assert AuditEvent.objects.get(action="template.update").actor == "user:root"
    token = template.get_trigger_token()
    response = client.post(
        "/admin/templates_app/template/",
        {"action": "rotate_trigger_urls", "_selected_action": [str(template.pk)]},
    )
    assert response.status_code == 302
    assert catalogue.template_for_trigger_token(token) is None


def test_the_admin_turns_open_tracking_off_through_the_catalogue(client, django_user_model, template):
    admin = django_user_model.objects.create_superuser("root", "root@pushhub.test", "pw")
    client.force_login(admin)
    response = client.post(
        f"/admin/templates_app/template/{template.pk}/change/", {"status": "active", "trigger_enabled": "on"}
    )
    assert response.status_code == 302
    template.refresh_from_db()
    assert template.track_opens is False
    event = AuditEvent.objects.get(action="template.update")
    assert (event.data["fields"], event.data["track_opens"]) == (["track_opens"], False)


def test_a_template_created_without_open_tracking(api, app):
    response = create(api, app, subscribe_body(track_opens=False))
    assert response.status_code == 201, response.content
    assert response.json()["track_opens"] is False
    assert Template.objects.get().track_opens is False
    assert create(api, app, subscribe_body(template_id="X2", track_opens="no")).status_code == 400


def app_appid(template):
    return template.app.appid


def test_the_schema_describes_the_catalogue(client):
    schema = client.get("/api/schema/?format=json").json()
    paths = schema["paths"]
    assert set(paths["/api/v1/apps/{appid}/templates"]) >= {"get", "post"}
    assert "post" in paths["/api/v1/apps/{appid}/templates/sync"]
    assert set(paths["/api/v1/templates/{id}"]) >= {"get", "patch", "delete"}
    assert "post" in paths["/api/v1/templates/{id}/rotate"]
    template = schema["components"]["schemas"]["Template"]["properties"]
    assert set(template) == {
        "id",
        "app",
        "kind",
        "template_id",
        "title",
        "fields",
        "page",
        "emphasis_keyword",
        "subscription",
        "status",
        "source",
        "trigger_url",
        "trigger_enabled",
        "track_opens",
        "created_at",
    }
    for request in ("TemplateCreateRequest", "PatchedTemplateUpdateRequest"):
        assert schema["components"]["schemas"][request]["properties"]["track_opens"]["type"] == "boolean"
    assert json.dumps(schema)  # serialisable

"""An app's identity secret (the key of the SDK identify's user_hash): made at registration, shown to write
keys only, encrypted at rest, rotated by POST /api/v1/apps/{appid}/identity-secret/rotate (audited)."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps as django_apps
from django.db import connection

from tenants import services
from tenants.models import AuditEvent, MiniProgram
from tests.conftest import random_appid, random_secret

pytestmark = pytest.mark.django_db


def rotate_url(app) -> str:
    return f"/api/v1/apps/{app.appid}/identity-secret/rotate"


def looks_like_a_secret(value) -> bool:
    return isinstance(value, str) and value.startswith("phid_") and len(value) == 45 and value[5:].isalnum()


def test_a_new_app_gets_a_secret_that_write_keys_see(api):
    body = {"appid": random_appid(), "secret": random_secret(), "name": "Shop", "sandbox": True}
    created = api.post("/api/v1/apps", body, format="json").json()
    assert looks_like_a_secret(created["identity_secret"])
    assert api.get(f"/api/v1/apps/{body['appid']}").json()["identity_secret"] == created["identity_secret"]
    [listed] = api.get("/api/v1/apps").json()["results"]
    assert listed["identity_secret"] == created["identity_secret"]


def test_a_read_key_sees_null(read_api, sandbox_app):
    assert read_api.get(f"/api/v1/apps/{sandbox_app.appid}").json()["identity_secret"] is None
    [listed] = read_api.get("/api/v1/apps").json()["results"]
    assert listed["identity_secret"] is None


def test_it_is_encrypted_at_rest(sandbox_app):
    secret = sandbox_app.get_identity_secret()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT identity_secret_ciphertext FROM tenants_miniprogram WHERE id = %s", [sandbox_app.pk]
        )
        [ciphertext] = cursor.fetchone()
    assert looks_like_a_secret(secret)
    assert secret not in ciphertext and secret[5:] not in ciphertext


def test_each_app_has_its_own(tenant, sandbox_app):
    other = services.register_app(
        tenant, appid=random_appid(), secret=random_secret(), name="Other", sandbox_app=True
    )
    assert other.get_identity_secret() != sandbox_app.get_identity_secret()


def test_rotation_answers_a_new_secret_that_replaces_the_old_one_at_once(api, sandbox_app):
    old = sandbox_app.get_identity_secret()
    response = api.post(rotate_url(sandbox_app))
    assert response.status_code == 200, response.content
    assert set(response.json()) == {"identity_secret"}
    new = response.json()["identity_secret"]
    assert looks_like_a_secret(new) and new != old
    assert MiniProgram.objects.get(pk=sandbox_app.pk).get_identity_secret() == new
    assert api.get(f"/api/v1/apps/{sandbox_app.appid}").json()["identity_secret"] == new


def test_rotation_is_audited_without_the_secret(api, write_key, sandbox_app):
    new = api.post(rotate_url(sandbox_app)).json()["identity_secret"]
    event = AuditEvent.objects.get(action="app.identity_secret_rotate")
    assert (event.tenant_id, event.object_type, event.object_id) == (
        sandbox_app.tenant_id,
        "app",
        sandbox_app.appid,
    )
    assert event.actor == f"key:phk_{write_key.split('_')[1]}"
    assert new not in str(event.data) and new[5:] not in str(event.data)


def test_a_read_key_cannot_rotate(read_api, sandbox_app):
    old = sandbox_app.get_identity_secret()
    response = read_api.post(rotate_url(sandbox_app))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert MiniProgram.objects.get(pk=sandbox_app.pk).get_identity_secret() == old


def test_another_tenants_app_is_not_found(outsider_api, sandbox_app):
    old = sandbox_app.get_identity_secret()
    response = outsider_api.post(rotate_url(sandbox_app))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert outsider_api.get(f"/api/v1/apps/{sandbox_app.appid}").status_code == 404
    assert MiniProgram.objects.get(pk=sandbox_app.pk).get_identity_secret() == old


def test_a_deleted_app_keeps_no_secret(api, sandbox_app):
    assert api.delete(f"/api/v1/apps/{sandbox_app.appid}").status_code == 204
    assert MiniProgram.objects.get(pk=sandbox_app.pk).identity_secret_ciphertext == ""
    assert api.post(rotate_url(sandbox_app)).status_code == 404


def test_apps_registered_before_the_secret_existed_get_one_from_the_migration(tenant, sandbox_app):
    """tenants/0002 gives every live app without a secret one (deleted apps stay without)."""
    gone = services.register_app(
        tenant, appid=random_appid(), secret=random_secret(), name="Gone", sandbox_app=True
    )
    services.delete_app(gone)
    MiniProgram.objects.filter(pk=sandbox_app.pk).update(identity_secret_ciphertext="")
    migration = importlib.import_module("tenants.migrations.0002_identity_secret")
    migration.give_every_live_app_a_secret(django_apps, None)
    assert looks_like_a_secret(MiniProgram.objects.get(pk=sandbox_app.pk).get_identity_secret())
    assert MiniProgram.objects.get(pk=gone.pk).identity_secret_ciphertext == ""

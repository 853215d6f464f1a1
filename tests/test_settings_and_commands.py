"""Settings refuse unsafe production configs; operator commands; docs and admin never leak secrets."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from tenants.models import ApiKey, Membership, Tenant
from tests.conftest import api_client

ROOT = Path(__file__).resolve().parent.parent


def _django_setup(**env_overrides) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SECRET_KEY", "FIELD_ENCRYPTION_KEY", "API_KEY_HMAC_SECRET"}
    }
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "pushhub.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_refuses_the_default_secret_key():
    result = _django_setup(PUSHHUB_ENV="production")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_refuses_the_dev_encryption_key():
    result = _django_setup(PUSHHUB_ENV="production", SECRET_KEY="x" * 50)
    assert result.returncode != 0
    assert "FIELD_ENCRYPTION_KEY" in result.stderr


def test_production_starts_with_real_secrets():
    from cryptography.fernet import Fernet

    result = _django_setup(
        PUSHHUB_ENV="production",
        SECRET_KEY="s" * 50,
        FIELD_ENCRYPTION_KEY=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="push.example.com",
    )
    assert result.returncode == 0, result.stderr
    assert "started" in result.stdout


def test_production_settings_pass_djangos_deployment_checks():
    import secrets

    from cryptography.fernet import Fernet

    # As a deployment's environment: not the test run's (the browser test sets DJANGO_ALLOW_ASYNC_UNSAFE).
    unset = {"SECRET_KEY", "FIELD_ENCRYPTION_KEY", "DEBUG", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(
        PUSHHUB_ENV="production",
        SECRET_KEY=secrets.token_urlsafe(60),
        FIELD_ENCRYPTION_KEY=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="push.example.com",
        DJANGO_SETTINGS_MODULE="pushhub.settings",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_a_malformed_encryption_key_fails_loudly(db, settings):
    from django.core.exceptions import ImproperlyConfigured

    from pushhub import crypto

    settings.FIELD_ENCRYPTION_KEYS = ["not-a-fernet-key"]
    with pytest.raises(ImproperlyConfigured):
        crypto.encrypt("x")


def test_encryption_keys_rotate(settings):
    from cryptography.fernet import Fernet

    from pushhub import crypto

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old]
    token = crypto.encrypt("s3cret")
    settings.FIELD_ENCRYPTION_KEYS = [new, old]
    assert crypto.decrypt(token) == "s3cret"
    rotated = crypto.rotate(token)
    settings.FIELD_ENCRYPTION_KEYS = [new]
    assert crypto.decrypt(rotated) == "s3cret"
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(token)


@pytest.mark.django_db
def test_create_tenant_prints_a_generated_password():
    out = StringIO()
    call_command("create_tenant", "Initech", "--owner", "boss@initech.test", stdout=out)
    text = out.getvalue()
    assert "tenant: initech" in text
    password = re.search(r"password: (\S+)", text).group(1)
    membership = Membership.objects.get(tenant__slug="initech")
    assert membership.role == "owner" and membership.user.check_password(password)


@pytest.mark.django_db
def test_create_api_key_prints_only_a_working_key(tenant):
    out = StringIO()
    call_command("create_api_key", "--tenant", tenant.slug, "--scope", "write", "--name", "ci", stdout=out)
    raw = out.getvalue().strip()
    assert re.fullmatch(r"phk_[A-Za-z0-9]{8}_[A-Za-z0-9]{40}", raw)
    key = ApiKey.objects.get(tenant=tenant, name="ci")
    assert key.scope == "write" and raw not in key.digest
    assert api_client(raw).get("/api/v1/apps").status_code == 200


@pytest.mark.django_db
def test_load_demo_is_repeatable_and_prints_a_key():
    out = StringIO()
    call_command("load_demo", stdout=out)
    call_command("load_demo", stdout=out)
    assert Tenant.objects.filter(slug="demo").count() == 1
    keys = re.findall(r"phk_[A-Za-z0-9]{8}_[A-Za-z0-9]{40}", out.getvalue())
    assert len(set(keys)) == 2
    response = api_client(keys[-1]).get("/api/v1/apps")
    assert [a["appid"] for a in response.json()["results"]] == ["wxdeadbeef00000001"]
    quota = api_client(keys[-1]).get("/api/v1/apps/wxdeadbeef00000001/quota").json()
    assert quota["users_reachable"] == 3
    assert quota["credits"] == {
        "formid": 9,
        "subscribe": {"demo-order-shipped-subscribe-tmpl01": 3},
        "long_term": {"demo-appointment-reminder-longterm-01": 1},  # the first demo user, once
    }


@pytest.mark.django_db
def test_the_schema_describes_the_apps_api(client):
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {
        "/api/v1/apps",
        "/api/v1/apps/{appid}",
        "/api/v1/apps/{appid}/access-token",
        "/api/v1/apps/{appid}/events-credentials/rotate",
    } <= set(paths)


@pytest.mark.django_db
def test_the_schema_says_what_the_api_enforces(client):
    """What tests/fuzz found the schema did not say: request bodies reject unknown fields, an empty query
    parameter counts as absent, a bad query parameter is a 400, and ?limit= starts at 1."""
    schema = client.get("/api/schema/?format=json").json()
    requests = {n: c for n, c in schema["components"]["schemas"].items() if n.endswith("Request")}
    assert {"AppCreateRequest", "SendRequest", "SdkFormidsRequest", "TemplateFieldRequest"} <= set(requests)
    assert all(c["additionalProperties"] is False for c in requests.values())
    listing = schema["paths"]["/api/v1/pushes"]["get"]
    assert "400" in listing["responses"]
    parameters = {p["name"]: p for p in listing["parameters"]}
    assert all(parameters[name]["allowEmptyValue"] for name in ("app", "template", "status", "limit"))
    assert parameters["limit"]["schema"] == {"type": "integer", "minimum": 1}
    assert "400" not in schema["paths"]["/api/v1/apps/{appid}"]["get"]["responses"]  # no query parameters


@pytest.mark.django_db
def test_swagger_ui_is_served_without_a_cdn(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    assert "cdn." not in html and "unpkg" not in html
    asset = re.search(r'src="(/static/[^"]*swagger-ui-bundle\.js)"', html).group(1)
    assert client.get(asset).status_code == 200


@pytest.mark.django_db
def test_the_admin_never_shows_a_secret(client, django_user_model, sandbox_app):
    admin = django_user_model.objects.create_superuser("root", "root@x.test", "correct horse battery")
    client.force_login(admin)
    secret = sandbox_app.get_secret()
    for url in ["/admin/tenants/miniprogram/", f"/admin/tenants/miniprogram/{sandbox_app.pk}/change/"]:
        response = client.get(url)
        assert response.status_code == 200
        html = response.content.decode()
        assert secret not in html and sandbox_app.secret_ciphertext not in html
        assert sandbox_app.get_events_aes_key() not in html
        assert sandbox_app.secret_hint in html


@pytest.mark.django_db
def test_the_home_page_takes_a_signed_in_user_to_their_apps(client, sandbox_app):
    from django.contrib.auth import get_user_model

    owner = get_user_model().objects.get(email="owner@acme.test")
    client.force_login(owner)
    response = client.get("/", follow=True)
    assert response.redirect_chain[-1][0] == "/dashboard/"
    html = response.content.decode()
    assert sandbox_app.appid in html and "Sandbox shop" in html


def test_the_schema_generates_without_warnings(tmp_path):
    # --fail-on-warn: an undocumented view, serializer or authenticator fails the build.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    assert "ApiKey" in (tmp_path / "schema.yaml").read_text()


@pytest.mark.django_db
def test_the_pages_speak_chinese_when_asked(client):
    english = client.get("/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    chinese = client.get("/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "the push channel for WeChat mini-programs" in english
    assert "微信小程序的消息推送通道" in chinese and 'lang="zh-hans"' in chinese


def test_the_procfile_workers_run_without_mingle_gossip_and_heartbeat():
    """With them on, a worker whose Redis broker restarts can stay connected and consume nothing again
    (celery/celery#8030, #8091); CI's fault suite saw the webhook worker do exactly that. The fault suite and the
    benchmarks read the switches from the Procfile, so this is what they run too."""
    from bench.common import WORKER_FLAGS, procfile_worker_flags

    for process in ("worker", "sends", "maintenance", "webhooks"):
        assert procfile_worker_flags(process) == list(WORKER_FLAGS), process
    assert procfile_worker_flags("web") == []

"""Web security basics a tenant would check: security headers on every kind of answer, CSRF on the dashboard's
forms, secure cookies and HSTS in production, and no secret in the logs of a trigger's failures."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from pushhub import crypto
from templates_app import catalogue
from tenants.models import ApiKey

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/dashboard/", "/accounts/login/", "/api/v1/apps", "/healthz", "/t/nope"])
def test_every_answer_carries_the_security_headers(client, tenant, path):
    client.login(username="owner@acme.test", password="correct horse battery")
    response = client.get(path)
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


@pytest.mark.django_db
def test_dashboard_forms_refuse_a_post_without_the_csrf_token(tenant):
    browser = Client(enforce_csrf_checks=True)
    assert browser.login(username="owner@acme.test", password="correct horse battery")
    keys_before = ApiKey.objects.filter(tenant=tenant).count()

    forged = browser.post("/dashboard/keys/", {"name": "from another site", "scope": "write"})
    assert forged.status_code == 403
    assert ApiKey.objects.filter(tenant=tenant).count() == keys_before

    page = browser.get("/dashboard/keys/")
    token = page.cookies["csrftoken"].value
    honest = browser.post(
        "/dashboard/keys/", {"name": "mine", "scope": "write", "csrfmiddlewaretoken": token}
    )
    assert honest.status_code in (200, 302)
    assert ApiKey.objects.filter(tenant=tenant).count() == keys_before + 1


def test_production_cookies_are_secure_and_https_is_enforced():
    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "FIELD_ENCRYPTION_KEY", "DEBUG"}}
    env.update(
        PUSHHUB_ENV="production",
        SECRET_KEY="x" * 50,
        FIELD_ENCRYPTION_KEY=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="push.example.com",
        DJANGO_SETTINGS_MODULE="pushhub.settings",
    )
    names = [
        "DEBUG", "SESSION_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY", "CSRF_COOKIE_SECURE", "SECURE_SSL_REDIRECT",
        "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "X_FRAME_OPTIONS",
    ]  # fmt: skip
    script = (
        "import django, json; django.setup(); from django.conf import settings; "
        f"print(json.dumps({{n: getattr(settings, n) for n in {names!r}}}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "DEBUG": False,
        "SESSION_COOKIE_SECURE": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "X_FRAME_OPTIONS": "DENY",
    }


@pytest.mark.django_db
def test_a_failing_trigger_never_writes_its_token_to_the_logs(client, sandbox_app, caplog):
    """The trigger URL is the credential: Django logs every 4xx with its path ("Bad Request: /t/…")."""
    template = catalogue.create_template(
        sandbox_app, kind="formid", template_id="T-logs", title="订单通知",
        fields=[{"key": "keyword1", "name": "订单号"}], actor="tests",
    )  # fmt: skip
    token = crypto.decrypt(template.trigger_token_ciphertext)
    caplog.set_level(logging.DEBUG)

    answers = [
        client.post(f"/t/{token}", "{not json", content_type="application/json"),
        client.post(f"/t/{token}", {"to": "oAlice", "data": {"nope": "x"}}, content_type="application/json"),
        client.get(f"/t/{token}/pushes/00000000-0000-0000-0000-000000000000"),
        client.put(f"/t/{token}", {}, content_type="application/json"),
    ]

    assert [a.status_code for a in answers] == [400, 400, 404, 405]
    assert caplog.records, "Django logs these answers"
    assert token not in caplog.text


def test_gunicorns_access_log_never_shows_a_trigger_token():
    import datetime
    import types

    from gunicorn.config import Config

    from pushhub.logs import GunicornLogger

    token = "aiYW6r9Rgx-gcICumfwX1Dlym2CMJ97T0nZnAphopk8"
    path = f"/t/{token}/pushes/1"
    request = types.SimpleNamespace(method="GET", path=path, query="", version=(1, 1), headers=[], uri=path)
    answer = types.SimpleNamespace(status="404 Not Found", headers=[], sent=0, response_length=0)
    environ = {
        "REMOTE_ADDR": "127.0.0.1",
        "REQUEST_METHOD": "GET",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "RAW_URI": path,
        "PATH_INFO": path,
        "HTTP_REFERER": f"https://x{path}",
    }
    atoms = GunicornLogger(Config()).atoms(answer, request, environ, datetime.timedelta(milliseconds=3))

    assert atoms["r"] == "GET /t/[token]/pushes/1 HTTP/1.1" and atoms["U"] == "/t/[token]/pushes/1"
    assert not [key for key, value in atoms.items() if token in str(value)]

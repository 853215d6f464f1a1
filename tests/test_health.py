"""/healthz and /readyz: unauthenticated, JSON, cheap, and no secret in the answer."""

from __future__ import annotations

import pytest

from pushhub import health
from pushhub.celery import app as celery_app

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_touching_anything(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_readyz_checks_the_database_the_cache_the_broker_and_the_schema(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "cache", "broker", "migrations"}
    assert all(check["status"] == "ok" and check["ms"] >= 0 for check in body["checks"].values())
    assert "no-cache" in response["Cache-Control"]


def test_readyz_is_503_naming_an_unreachable_broker_without_its_address(client, monkeypatch):
    # A broker nobody listens on, with a password in its URL: the answer must not carry either.
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)  # Celery prefers it to conf.broker_url
    monkeypatch.setattr(celery_app.conf, "broker_url", "redis://:s3cret-pass@127.0.0.1:1/0")
    monkeypatch.setattr(health, "BROKER_TIMEOUT", 0.5)

    response = client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["broker"]["status"].startswith("error: ")
    assert body["checks"]["database"]["status"] == "ok"
    text = response.content.decode()
    assert "s3cret" not in text and "127.0.0.1" not in text


def test_readyz_is_503_when_the_cache_is_unreachable(client, settings):
    settings.CACHES = {
        **settings.CACHES,
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        },
    }
    response = client.get("/readyz")  # (Django's test signals reset the cache handler on the change)
    assert response.status_code == 503
    assert response.json()["checks"]["cache"]["status"].startswith("error: ")


def test_readyz_reports_migrations_not_applied(client, monkeypatch):
    monkeypatch.setattr(health, "_migrations_applied", False)
    monkeypatch.setattr(
        "django.db.migrations.executor.MigrationExecutor.migration_plan",
        lambda self, targets: [("app", False)],
    )
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["migrations"]["status"] == "error: RuntimeError"

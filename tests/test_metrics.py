"""/metrics: who may scrape it, that Prometheus can parse it, credits counted as the SDK uploads them, the
queue lengths read from the broker (Redis, RabbitMQ) at scrape time, and every process of a multiprocess
directory summed by one scrape."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from kombu import Connection
from prometheus_client.parser import text_string_to_metric_families

from formids.models import Credit
from pushhub import metrics
from pushhub.celery import app as celery_app
from tests.metrics_helpers import delta, parse, scrape, value
from tests.sdk_helpers import sdk_client, url

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
TOKEN = "metrics-token-0123456789abcdef"
ROOT = Path(__file__).resolve().parent.parent  # the subprocesses import this checkout's code


@pytest.fixture(autouse=True)
def _metrics_access(settings):
    """Loopback allowed (the test client's address), no token: each access test sets its own."""
    settings.METRICS_ALLOWED_NETWORKS = LOOPBACK
    settings.METRICS_TOKEN = ""


# --- access -----------------------------------------------------------------------------------------------
def _refused(response) -> None:
    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "forbidden"
    assert b"pushhub_" not in response.content


@pytest.mark.django_db
def test_closed_when_neither_a_token_nor_a_network_is_configured(client, settings):
    settings.METRICS_ALLOWED_NETWORKS = []
    _refused(client.get("/metrics"))
    _refused(client.get("/metrics", HTTP_AUTHORIZATION="Bearer "))  # an empty token never matches ""


@pytest.mark.django_db
def test_the_token_opens_it_from_anywhere(client, settings):
    settings.METRICS_ALLOWED_NETWORKS = []
    settings.METRICS_TOKEN = TOKEN
    outside = {"REMOTE_ADDR": "203.0.113.7"}
    _refused(client.get("/metrics", **outside))  # no token
    _refused(client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x", **outside))  # wrong token
    _refused(client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}", **outside))  # not a Bearer token
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **outside)
    assert response.status_code == 200
    assert "no-cache" in response["Cache-Control"]
    assert ("pushhub_held_deliveries", frozenset()) in parse(response.content.decode())


@pytest.mark.django_db
def test_an_allowed_network_opens_it_without_a_token(client, settings):
    settings.METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network("10.20.0.0/16")]
    settings.METRICS_TOKEN = TOKEN
    assert client.get("/metrics", REMOTE_ADDR="10.20.3.4").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::ffff:10.20.3.4").status_code == 200  # dual-stack socket
    _refused(client.get("/metrics", REMOTE_ADDR="10.21.3.4"))
    _refused(client.get("/metrics", REMOTE_ADDR="127.0.0.1"))  # loopback is not in the list
    _refused(client.get("/metrics", REMOTE_ADDR="not-an-address"))
    # A wrong token from an allowed network: the network lets it in, the token is not needed.
    assert (
        client.get("/metrics", REMOTE_ADDR="10.20.3.4", HTTP_AUTHORIZATION="Bearer nope").status_code == 200
    )


def test_production_opens_no_network_by_default_and_development_loopback():
    """The defaults as pushhub/settings.py computes them, in a fresh interpreter per profile."""
    code = (
        "from django.conf import settings; print(sorted(str(n) for n in settings.METRICS_ALLOWED_NETWORKS))"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("METRICS_")}
    base["DJANGO_SETTINGS_MODULE"] = "pushhub.settings"
    production = {
        **base,
        "PUSHHUB_ENV": "production",
        "SECRET_KEY": "s" * 40,
        "FIELD_ENCRYPTION_KEY": "cHJvZHVjdGlvbi1maWVsZC1rZXktMzItYnl0ZXMhIT0=",
        "API_KEY_HMAC_SECRET": "h" * 40,
    }
    run = [sys.executable, "-c", f"import django; django.setup(); {code}"]
    out = subprocess.run(run, env=production, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"
    out = subprocess.run(
        run, env={**base, "PUSHHUB_ENV": "dev"}, capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "['127.0.0.0/8', '::1/128']"


def test_a_bad_network_refuses_to_start():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "pushhub.settings",
        "METRICS_ALLOWED_NETWORKS": "10.0.0.0/33",
    }
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode != 0 and "METRICS_ALLOWED_NETWORKS" in done.stderr


# --- the exposition ---------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_every_series_is_described_and_parses(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    families = {family.name: family.type for family in text_string_to_metric_families(text)}
    assert {
        "pushhub_pushes_started": "counter",
        "pushhub_pushes_finished": "counter",
        "pushhub_deliveries": "counter",
        "pushhub_wechat_request_duration_seconds": "histogram",
        "pushhub_wechat_token_refreshes": "counter",
        "pushhub_credits_ingested": "counter",
        "pushhub_webhook_attempts": "counter",
        "pushhub_held_deliveries": "gauge",
        "pushhub_queue_length": "gauge",
        "pushhub_queue_length_known": "gauge",
    }.items() <= families.items()
    # The README's table names every series we export (counters with their _total).
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Operations: metrics") : readme.index("## Operations: backups")]
    for name, kind in families.items():
        if name.startswith("pushhub_"):
            assert f"`{name}_total`" in section if kind == "counter" else f"`{name}`" in section, name


def test_labels_are_bounded():
    assert metrics.errcode_label("40003") == "40003"
    assert metrics.errcode_label("987654") == "other"  # an errcode WeChat may invent tomorrow
    assert metrics.endpoint_label("cgi-bin/message/subscribe/send") == "subscribe_send"
    assert metrics.endpoint_label("cgi-bin/something/new") == "other"


# --- credits from the SDK ---------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)  # counted when the upload commits
def test_sdk_uploads_count_credits_by_kind_and_source(client, sandbox_app, monkeypatch):
    from formids import hooks

    monkeypatch.setattr(hooks, "_provider", hooks._provider)
    one_time = hooks.SubscribeTemplate(hooks.ONE_TIME, active=True)
    hooks.register_subscribe_template_provider(lambda app: {"TID_ORDER": one_time})
    phone = sdk_client(sandbox_app)
    before = scrape(client)

    response = phone.post(
        url(sandbox_app, "formids"),
        {"formids": [f"formid{n:026d}" for n in range(3)] + ["the formid is a mock one"]},
        format="json",
    )
    assert response.status_code == 200, response.content
    again = phone.post(url(sandbox_app, "formids"), {"formids": ["formid" + "0" * 26]}, format="json")
    assert again.json()["duplicates"] == 1  # stored once, counted once
    response = phone.post(
        url(sandbox_app, "subscriptions"), {"results": {"TID_ORDER": "accept"}}, format="json"
    )
    assert response.status_code == 200, response.content

    after = scrape(client)
    assert Credit.objects.filter(app=sandbox_app, kind="formid").count() == 3
    assert delta(before, after, "pushhub_credits_ingested_total", kind="formid", source="sdk") == 3
    assert delta(before, after, "pushhub_credits_ingested_total", kind="subscribe", source="sdk") == 1
    assert delta(before, after, "pushhub_credits_ingested_total", kind="prepay", source="sdk") == 0


# --- queue lengths ----------------------------------------------------------------------------------------
def _queue_length_test(client, monkeypatch, broker_url: str) -> None:
    queue = f"pushhub-metrics-{uuid.uuid4().hex[:10]}"
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)  # Celery prefers it to conf.broker_url
    monkeypatch.setitem(celery_app.conf, "broker_url", broker_url)
    monkeypatch.setitem(celery_app.conf, "task_default_queue", queue)
    try:
        with Connection(broker_url) as conn:
            waiting = conn.SimpleQueue(queue)
            for n in range(3):
                waiting.put({"n": n})
            waiting.close()
        samples = scrape(client)
        assert value(samples, "pushhub_queue_length", queue=queue) == 3
        assert value(samples, "pushhub_queue_length_known", queue=queue) == 1
        # A worker takes one (its connection closed after: RabbitMQ counts only messages no consumer holds).
        with Connection(broker_url) as conn:
            taking = conn.SimpleQueue(queue)
            taking.get(timeout=5).ack()
            taking.close()
        assert value(scrape(client), "pushhub_queue_length", queue=queue) == 2
    finally:
        with Connection(broker_url) as conn:
            conn.default_channel.queue_delete(queue)


@pytest.mark.django_db
def test_queue_length_with_the_redis_broker(client, monkeypatch):
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        pytest.skip("REDIS_URL is not set (the Redis broker's test runs with PostgreSQL + Redis)")
    _queue_length_test(client, monkeypatch, redis_url)


@pytest.mark.django_db
def test_queue_length_with_rabbitmq(client, monkeypatch):
    broker = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
    try:
        with Connection(broker, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception:
        pytest.skip(f"no RabbitMQ at {broker}")
    _queue_length_test(client, monkeypatch, broker)


@pytest.mark.django_db
def test_queue_length_is_unknown_without_a_broker_that_answers(client, monkeypatch):
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)  # Celery prefers it to conf.broker_url
    monkeypatch.setitem(celery_app.conf, "broker_url", "redis://:s3cret@127.0.0.1:1/0")
    monkeypatch.setattr(metrics, "BROKER_TIMEOUT", 0.5)
    response = client.get("/metrics")
    samples = parse(response.content.decode())
    for queue in metrics.queue_names():
        assert value(samples, "pushhub_queue_length_known", queue=queue) == 0
        assert ("pushhub_queue_length", frozenset({("queue", queue)})) not in samples
    assert "s3cret" not in response.content.decode()


# --- multiprocess mode ------------------------------------------------------------------------------------
WRITER = textwrap.dedent(
    """
    import sys
    from pushhub import metrics
    n = int(sys.argv[1])
    metrics.deliveries({("sent", ""): n, ("failed", "40003"): 1})
    metrics.wechat_call("cgi-bin/message/subscribe/send", 0.02 * n)
    metrics.push_started("all")
    """
)
READER = textwrap.dedent(
    """
    import django
    django.setup()
    from pushhub import metrics
    sys_out = metrics.exposition().decode()
    print(sys_out)
    """
)


def test_two_processes_writing_one_directory_are_summed_by_a_scrape(tmp_path: Path):
    """What gunicorn's workers and Celery's processes do: each writes its own files in
    PROMETHEUS_MULTIPROC_DIR, and a scrape of any process adds them up (a dead process's counts included)."""
    directory = tmp_path / "metrics"  # made by pushhub.metrics itself
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "DJANGO_SETTINGS_MODULE": "pushhub.settings",
    }
    for n in (5, 7):
        subprocess.run([sys.executable, "-c", WRITER, str(n)], env=env, check=True, cwd=ROOT)
    assert len(list(directory.glob("counter_*.db"))) == 2  # one file per process
    assert len(list(directory.glob("histogram_*.db"))) == 2
    out = subprocess.run(
        [sys.executable, "-c", READER],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    samples = parse(out)
    assert value(samples, "pushhub_deliveries_total", outcome="sent", errcode="") == 12
    assert value(samples, "pushhub_deliveries_total", outcome="failed", errcode="40003") == 2
    assert value(samples, "pushhub_pushes_started_total", audience="all") == 2
    assert value(samples, "pushhub_wechat_request_duration_seconds_count", endpoint="subscribe_send") == 2
    assert value(
        samples, "pushhub_wechat_request_duration_seconds_sum", endpoint="subscribe_send"
    ) == pytest.approx(0.24)
    # 0.1 s and 0.14 s: both above the 0.1 bucket's... 0.1 is in it (le is inclusive), 0.14 is not
    assert (
        value(samples, "pushhub_wechat_request_duration_seconds_bucket", endpoint="subscribe_send", le="0.1")
        == 1
    )
    assert (
        value(samples, "pushhub_wechat_request_duration_seconds_bucket", endpoint="subscribe_send", le="0.25")
        == 2
    )
    # Only the series of the processes' files (and the scrape-time gauges): no per-process collectors.
    assert not any(name.startswith("process_") for name, _ in samples)


def test_an_empty_multiprocess_directory_counts_in_memory(tmp_path):
    """PROMETHEUS_MULTIPROC_DIR set but empty (the Procfile's line run with it empty, as the benches do) must not
    make prometheus-client write its files into the working directory."""
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'pushhub.settings'; django.setup();"
        "from pushhub import metrics; metrics.PUSHES_FINISHED.labels(status='done').inc()"
    )
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": "",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []

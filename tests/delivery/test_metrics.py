"""The Prometheus series move as a real push goes through the pipeline to the sandbox over HTTP: pushes
started and finished, deliveries by outcome and errcode, WeChat's latency by endpoint, the token fetch; a
cancel; the held-deliveries gauge read from the database at scrape time."""

from __future__ import annotations

import ipaddress
import signal

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from pushhub.wechat.sandbox import services as sandbox
from templates_app import tasks
from templates_app.models import Push
from tests.metrics_helpers import delta, parse, scrape, value

from .helpers import make_push, seed_users
from .test_worker import broker, start_worker, wait_for  # noqa: F401 — fixtures

pytestmark = pytest.mark.django_db(transaction=True)

DATA = {"keyword1": "A123", "keyword2": "¥99.00"}


@pytest.fixture(autouse=True)
def _metrics_open_to_the_test_client(settings):
    settings.METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network("127.0.0.0/8")]


def send(api, template, body):
    response = api.post(f"/api/v1/templates/{template.pk}/pushes", body, format="json")
    assert response.status_code == 202, response.content
    return response.json()


def test_a_push_through_the_sandbox_moves_the_counters_and_the_latency_histogram(
    client, api, app, formid_template, task_queue
):
    delivered = seed_users(app, 3, formids=1)
    (unknown_to_wechat,) = seed_users(app, 1, formids=1, in_wechat=False)  # WeChat answers 40003
    without_credit = "oNoCreditAtAll0000000000000001"
    before = scrape(client)

    send(api, formid_template, {"to": [*delivered, unknown_to_wechat, without_credit], "data": DATA})
    task_queue.run()

    after = scrape(client)
    assert Push.objects.get().status == "done"
    assert delta(before, after, "pushhub_pushes_started_total", audience="openids") == 1
    assert delta(before, after, "pushhub_pushes_finished_total", status="done") == 1
    assert delta(before, after, "pushhub_deliveries_total", outcome="sent", errcode="") == 3
    assert delta(before, after, "pushhub_deliveries_total", outcome="failed", errcode="40003") == 1
    assert delta(before, after, "pushhub_deliveries_total", outcome="no_credit", errcode="") == 1
    # Four sends over HTTP, and the token they needed fetched once.
    sends = "pushhub_wechat_request_duration_seconds_count"
    assert delta(before, after, sends, endpoint="template_send") == 4
    assert delta(before, after, sends, endpoint="stable_token") == 1
    assert delta(before, after, "pushhub_wechat_token_refreshes_total", result="ok") == 1
    assert delta(before, after, "pushhub_wechat_request_duration_seconds_sum", endpoint="template_send") > 0
    infinite = "pushhub_wechat_request_duration_seconds_bucket"
    assert delta(before, after, infinite, endpoint="template_send", le="+Inf") == 4


def test_a_wechat_that_is_busy_counts_token_failures_retries_then_the_final_outcome(
    client, api, app, formid_template, task_queue, settings
):
    settings.DELIVERY_MAX_ATTEMPTS = 3
    (alice,) = seed_users(app, 1, formids=1)
    sandbox.set_knobs(app.appid, error_rate=1.0)  # -1 "busy" to every call, the token fetch included
    before = scrape(client)

    send(api, formid_template, {"to": [alice], "data": DATA})
    task_queue.run()

    after = scrape(client)
    assert delta(before, after, "pushhub_deliveries_total", outcome="retry", errcode="-1") == 2
    assert delta(before, after, "pushhub_deliveries_total", outcome="failed", errcode="-1") == 1
    failures = delta(before, after, "pushhub_wechat_token_refreshes_total", result="error")
    assert failures >= 3  # at least one per attempt: no token, so no send left for WeChat
    assert delta(before, after, "pushhub_wechat_token_refreshes_total", result="ok") == 0
    calls = "pushhub_wechat_request_duration_seconds_count"
    assert delta(before, after, calls, endpoint="stable_token") == failures
    assert delta(before, after, calls, endpoint="template_send") == 0


def test_a_cancel_counts_the_push_and_its_unsent_deliveries(client, api, app, formid_template, task_queue):
    users = seed_users(app, 2, formids=1)
    before = scrape(client)

    push_id = send(api, formid_template, {"to": users, "data": DATA})["push_id"]
    assert api.post(f"/api/v1/pushes/{push_id}/cancel").status_code == 200
    task_queue.run()

    after = scrape(client)
    assert delta(before, after, "pushhub_pushes_finished_total", status="canceled") == 1
    assert delta(before, after, "pushhub_pushes_finished_total", status="done") == 0
    assert delta(before, after, "pushhub_deliveries_total", outcome="failed", errcode="canceled") == 2


def test_held_deliveries_are_counted_from_the_database_when_scraped(
    client, api, app, formid_template, task_queue
):
    waiting = ["oHeldUser000000000000000000001", "oHeldUser000000000000000000002"]
    before = value(scrape(client), "pushhub_held_deliveries")

    push_id = send(api, formid_template, {"to": waiting, "data": DATA, "hold": 600})["push_id"]
    task_queue.run()

    assert value(scrape(client), "pushhub_held_deliveries") == before + 2
    assert api.post(f"/api/v1/pushes/{push_id}/cancel").status_code == 200
    assert value(scrape(client), "pushhub_held_deliveries") == before


@pytest.mark.parametrize(
    "pool", ["prefork", "threads"]
)  # Celery's default pool, and the threads pool every Procfile worker runs
def test_a_real_workers_processes_are_all_counted_in_the_multiprocess_directory(
    app,
    formid_template,
    broker,  # noqa: F811 — the fixtures of test_worker.py
    start_worker,  # noqa: F811
    tmp_path,
    pool,
):
    """What a scrape of the web process sees of a Celery worker started as the Procfile starts it: every pool
    process writes its own files in PROMETHEUS_MULTIPROC_DIR, summed; stopping the worker loses nothing."""
    directory = tmp_path / "metrics"
    users = seed_users(app, 200, formids=1)
    worker = start_worker(pool, PROMETHEUS_MULTIPROC_DIR=str(directory), PUSH_CHUNK_SIZE="25")
    push = make_push(formid_template)

    broker.send(tasks.deliver_push, str(push.pk))
    wait_for(lambda: Push.objects.get(pk=push.pk).status == "done", 45, "the broadcast to finish")
    worker.send_signal(signal.SIGTERM)  # a warm shutdown: the pool's processes exit (worker_process_shutdown)
    worker.wait(timeout=20)

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    samples = parse(generate_latest(registry).decode())
    assert value(samples, "pushhub_deliveries_total", outcome="sent", errcode="") == len(users)
    assert value(samples, "pushhub_pushes_finished_total", status="done") == 1
    sends = value(samples, "pushhub_wechat_request_duration_seconds_count", endpoint="template_send")
    assert sends == len(users)
    if pool == "prefork":  # the children counted, not the parent (which sends nothing)
        assert {path.name for path in directory.glob("counter_*.db")} - {f"counter_{worker.pid}.db"}

"""LOG_FORMAT=json: one JSON object per line with the request id, tenant, app and push where known."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from celery.signals import task_prerun

from pushhub import logs
from templates_app import tasks
from templates_app.catalogue import create_template

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def json_lines():
    """What the console handler would print in JSON, as parsed lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.ContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)


@pytest.mark.django_db
def test_an_api_request_logs_its_request_id_and_tenant(api, tenant, json_lines):
    response = api.get("/api/v1/apps/wx0000000000000000", HTTP_X_REQUEST_ID="req-from-the-balancer-1")

    assert response.status_code == 404
    assert response["X-Request-ID"] == "req-from-the-balancer-1"  # the caller's id, sent back
    (line,) = [line for line in json_lines() if line["logger"] == "django.request"]
    assert line["level"] == "WARNING" and "Not Found: /api/v1/apps/wx0000000000000000" in line["message"]
    assert line["request_id"] == "req-from-the-balancer-1"
    assert line["tenant"] == str(tenant.pk)
    assert line["time"].endswith("Z")


@pytest.mark.django_db
def test_a_trigger_request_logs_its_app_without_the_token(client, sandbox_app, json_lines):
    template = create_template(
        sandbox_app,
        kind="formid",
        template_id="TPL_LOG",
        title="t",
        fields=[{"key": "keyword1", "name": "k"}],
        actor="test",
    )
    token = template.get_trigger_token()

    response = client.post(
        f"/t/{token}", "not json", content_type="application/json", HTTP_X_REQUEST_ID="x\n"
    )

    assert response.status_code == 400
    generated = response["X-Request-ID"]
    assert generated != "x\n" and len(generated) == 32  # an unfit id is replaced by a new one
    (line,) = [line for line in json_lines() if line["logger"] == "django.request"]
    assert line["request_id"] == generated
    assert (line["tenant"], line["app"]) == (str(sandbox_app.tenant_id), sandbox_app.appid)
    assert token not in json.dumps(line) and "/t/[token]" in line["message"]


def test_a_tasks_log_lines_carry_its_id_and_push():
    task_prerun.send(
        sender=tasks.deliver_chunk, task_id="task-123", task=tasks.deliver_chunk, args=("p-9", [1])
    )
    assert logs.context() == {"request_id": "task-123", "push": "p-9"}

    task_prerun.send(sender=tasks.sweep_holds, task_id="task-124", task=tasks.sweep_holds, args=())
    assert logs.context() == {"request_id": "task-124"}  # a new task starts clean


def test_log_format_json_makes_the_console_print_json():
    code = (
        "import django, logging; django.setup(); from pushhub import logs; logs.bind(request_id='r1', app='wx1');"
        "logging.getLogger('pushhub.test').warning('hello %s', 'world')"
    )
    env = {**os.environ, "LOG_FORMAT": "json", "DJANGO_SETTINGS_MODULE": "pushhub.settings"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["message"] == "hello world" and line["logger"] == "pushhub.test"
    assert (line["request_id"], line["app"]) == ("r1", "wx1") and "push" not in line

"""The README's webhook receivers (Python and Node), run as written against events PushHub signs: a genuine
event is accepted once (a retry is acknowledged, not processed twice), a tampered or stale one is refused."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from webhooks import dispatch, services
from webhooks.models import WebhookEvent

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / "tests" / "js" / "node_modules"


def snippet(language: str) -> str:
    readme = (ROOT / "README.md").read_text()
    found = re.search(rf"<!-- receiver:{language} -->\n```\w+\n(.*?)```", readme, re.S)
    assert found, f"README.md has no {language} receiver"
    return found.group(1)


EVENTS = {
    "deliveries.failed": {
        "push_id": "p1",
        "deliveries": [{"openid": "o1", "alias": "u-1", "errcode": 43101}],
    },
    "push.finished": {"push_id": "p1", "status": "done", "counts": {"sent": 43101}},
}


def signed(secret: str, *, at: datetime | None = None, kind: str = "deliveries.failed") -> tuple[bytes, dict]:
    event = WebhookEvent(type=kind, data=EVENTS[kind], created_at=datetime.now(UTC))
    body = dispatch.body_of(event)
    return body, dispatch.signed_headers(secret, event.pk, body, at or datetime.now(UTC))


def cases(secret: str, kind: str = "deliveries.failed") -> list[tuple[str, bytes, dict, int]]:
    body, headers = signed(secret, kind=kind)
    old_body, old_headers = signed(secret, at=datetime.now(UTC) - timedelta(minutes=10), kind=kind)
    return [
        ("genuine", body, headers, 200),
        ("the same event again", body, headers, 200),
        ("tampered body", body.replace(b"43101", b"0"), headers, 400),
        ("another secret", *signed(services.new_secret()), 400),
        ("ten minutes old", old_body, old_headers, 400),
        ("no signature", body, {k: v for k, v in headers.items() if k != "webhook-signature"}, 400),
    ]


def test_the_python_receiver(monkeypatch, capsys):
    secret = services.new_secret()
    monkeypatch.setenv("PUSHHUB_WEBHOOK_SECRET", secret)
    scope: dict = {}
    exec(compile(snippet("python"), "README.md", "exec"), scope)  # noqa: S102 - our own README
    for name, body, headers, expected in cases(secret):
        assert scope["handle"](body, headers) == expected, name
    assert capsys.readouterr().out.count("not delivered: u-1 43101") == 1, "the retry is not processed twice"


def test_the_node_receiver():
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "standardwebhooks").is_dir():
        pytest.skip("needs node and tests/js's tooling (make test installs both)")
    secret = services.new_secret()
    runs = [
        {"name": name, "body": body.decode(), "headers": headers, "expected": expected}
        for name, body, headers, expected in cases(secret, "push.finished")
    ]
    program = snippet("node") + (
        "\nconst runs = JSON.parse(require('fs').readFileSync(0, 'utf8'));\n"
        "for (const run of runs) { const got = handle(run.body, run.headers);\n"
        "  if (got !== run.expected) { console.error(run.name, got); process.exit(1); } }\n"
        "console.log('ok', runs.length);\n"
    )
    result = subprocess.run(
        [node, "-e", program],
        input=json.dumps(runs),
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PUSHHUB_WEBHOOK_SECRET": secret, "NODE_PATH": str(NODE_MODULES)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"ok {len(runs)}" in result.stdout
    assert result.stdout.count("push p1") == 1, "processed once, the retry only acknowledged"

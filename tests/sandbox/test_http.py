"""The sandbox over real HTTP: mounted in PushHub (live_server) and standalone (a subprocess)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from pushhub.wechat.sandbox import services, wechat_endpoints

from .helpers import APPID, FORMID_CONTENT, SECRET, SUBSCRIBE_CONTENT, subscribe_body
from .http import call

REPO = Path(settings.BASE_DIR)


def exercise(base: str) -> None:
    """One full journey through the control API and the WeChat endpoints of a sandbox at ``base``."""
    assert call("PUT", f"{base}_control/apps/{APPID}", {"secret": SECRET})[0] in (200, 201)
    status, user = call("POST", f"{base}_control/apps/{APPID}/users", {})
    assert status == 201
    openid = user["openid"]
    _, code = call("POST", f"{base}_control/apps/{APPID}/users/{openid}/login-code")
    query = f"appid={APPID}&secret={SECRET}&js_code={code['code']}&grant_type=authorization_code"
    assert call("GET", f"{base}sns/jscode2session?{query}")[1]["openid"] == openid

    body = {"kind": "subscribe", "title": "订单发货通知", "content": SUBSCRIBE_CONTENT}
    _, template = call("POST", f"{base}_control/apps/{APPID}/templates", body)
    tid = template["template_id"]
    call("POST", f"{base}_control/apps/{APPID}/users/{openid}/subscriptions", {"results": {tid: "accept"}})
    _, token = call(
        "POST",
        f"{base}cgi-bin/stable_token",
        {"grant_type": "client_credential", "appid": APPID, "secret": SECRET},
    )
    send_url = f"{base}cgi-bin/message/subscribe/send?access_token={token['access_token']}"
    message = subscribe_body(type("User", (), {"openid": openid}), type("T", (), {"template_id": tid}))
    status, sent = call("POST", send_url, message)
    assert status == 200 and sent["errcode"] == 0
    assert call("POST", send_url, message)[1]["errcode"] == 43101

    formid_body = {
        "kind": "formid",
        "title": "购买成功通知",
        "content": FORMID_CONTENT,
        "template_id": "legacy-1",
    }
    call("POST", f"{base}_control/apps/{APPID}/templates", formid_body)
    _, formids = call("POST", f"{base}_control/apps/{APPID}/users/{openid}/formids", {"count": 1})
    legacy = {"touser": openid, "template_id": "legacy-1", "form_id": formids["formids"][0], "data": {}}
    legacy_url = f"{base}cgi-bin/message/wxopen/template/send?access_token={token['access_token']}"
    assert call("POST", legacy_url, legacy)[1] == {"errcode": 0, "errmsg": "ok"}
    assert call("POST", legacy_url, legacy)[1]["errcode"] == 41029

    _, inbox = call("GET", f"{base}_control/apps/{APPID}/inbox?openid={openid}")
    assert [m["kind"] for m in inbox["messages"]] == ["subscribe", "formid"]
    assert inbox["messages"][0]["msgid"] == sent["msgid"]
    _, stats = call("GET", f"{base}_control/apps/{APPID}/stats")
    assert stats["sends_ok"] == 2 and stats["sends_by_errcode"] == {"0": 2, "43101": 1, "41029": 1}


def test_the_mounted_sandbox_over_http(live_server):
    exercise(f"{live_server.url}/sandbox/wechat/")


def test_a_timeout_still_delivers_the_message(live_server, user, subscribe_template):
    """The ambiguous case: the client gives up, but WeChat did the work."""
    services.accept_subscriptions(APPID, user.openid, {subscribe_template.template_id: "accept"})
    token = wechat_endpoints.issue_stable_token(APPID, SECRET, "client_credential")["access_token"]
    services.set_knobs(APPID, timeout_rate=1.0, timeout_seconds=0.5)
    url = f"{live_server.url}/sandbox/wechat/cgi-bin/message/subscribe/send?access_token={token}"
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        call("POST", url, subscribe_body(user, subscribe_template), timeout=0.2)
    assert len(services.inbox(APPID, user.openid)) == 1
    time.sleep(max(0.0, started + 0.6 - time.monotonic()))  # let the server thread finish its late answer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(base: str, process: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"sandbox exited early:\n{process.stdout.read()}")
        try:
            status, body = call("GET", f"{base}cgi-bin/token", timeout=1)
            if status == 200 and body["errcode"] == 40002:
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the standalone sandbox did not start in time")


def test_the_standalone_sandbox_over_http(tmp_path):
    """``python -m pushhub.wechat.sandbox`` on a fresh SQLite file: migrates itself and serves at the root."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'sandbox.sqlite3'}",
        "PUSHHUB_VAR_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "pushhub.settings",
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "-m", "pushhub.wechat.sandbox", "--port", str(port), "--threads", "4"]
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    base = f"http://127.0.0.1:{port}/"
    try:
        wait_until_ready(base, process, time.monotonic() + 30)
        exercise(base)
        status, body = call("GET", f"{base}no/such/endpoint")
        assert status == 404 and body["error"]["code"] == "not_found"
    finally:
        process.terminate()
        try:
            output, _ = process.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert f"WeChat sandbox at http://127.0.0.1:{port}/" in output

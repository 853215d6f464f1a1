"""The benchmarks' fake WeChat (bench/fake_wechat.py) answers like the sandbox and counts what it accepted:
the benchmarks' exactly-once checks rely on it. Run as its own process over real HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

BASE_DIR = Path(__file__).resolve().parent.parent
APPID, SECRET = "wxbenchfake0000001", "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def fake():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.fake_wechat", "--port", str(port), "--latency-ms", "5"], cwd=BASE_DIR
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("the fake WeChat did not start")
            time.sleep(0.05)
    yield base
    process.kill()
    process.wait()


def control(base: str, path: str, body: dict) -> dict:
    response = requests.post(f"{base}/_control/{path}", json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def test_it_sends_a_formid_message_once_and_counts_it(fake):
    control(fake, "apps", {"appid": APPID, "secret": SECRET})
    control(fake, "templates", {"appid": APPID, "kind": "formid", "template_id": "T1",
                                "content": "订单号:{{keyword1.DATA}}\n"})  # fmt: skip
    control(fake, "formids", {"appid": APPID, "items": [["o-alice", "form-1", 1]]})

    wrong = requests.post(f"{fake}/cgi-bin/stable_token", json={"grant_type": "client_credential",
                          "appid": APPID, "secret": "wrong"}, timeout=10).json()  # fmt: skip
    assert wrong["errcode"] == 40125
    grant = requests.post(f"{fake}/cgi-bin/stable_token", json={"grant_type": "client_credential",
                          "appid": APPID, "secret": SECRET}, timeout=10).json()  # fmt: skip
    assert grant["expires_in"] == 7200
    url = f"{fake}/cgi-bin/message/wxopen/template/send?access_token={grant['access_token']}"
    message = {"touser": "o-alice", "template_id": "T1", "form_id": "form-1",
               "data": {"keyword1": {"value": "A123"}}}  # fmt: skip

    assert requests.post(url, json=message, timeout=10).json()["errcode"] == 0
    assert requests.post(url, json=message, timeout=10).json()["errcode"] == 41029  # a formId is used once
    bad_token = url.replace(grant["access_token"], "not-a-token")
    assert requests.post(bad_token, json=message, timeout=10).json()["errcode"] == 40014  # invalid token
    unknown = {**message, "template_id": "nope", "form_id": "form-2"}
    assert requests.post(url, json=unknown, timeout=10).json()["errcode"] == 40037

    stats = requests.get(f"{fake}/_control/stats", params={"appid": APPID}, timeout=10).json()
    assert (stats["users"], stats["delivered"], stats["users_with_duplicates"]) == (1, 1, 0)
    assert stats["answers"]["0"] == 1 and stats["answers"]["41029"] == 1
    assert control(fake, "inbox", {"appid": APPID, "openids": ["o-alice", "o-bob"]}) == {
        "o-alice": 1,
        "o-bob": 0,
    }
    received = control(fake, "received", {"appid": APPID, "openids": ["o-alice", "o-bob"]})
    assert received["o-bob"] is None and abs(received["o-alice"] - time.time()) < 60


def test_a_subscribe_message_spends_one_accept_and_validates_values(fake):
    control(fake, "apps", {"appid": APPID, "secret": SECRET})
    control(fake, "templates", {"appid": APPID, "kind": "subscribe", "template_id": "S1",
                                "content": "商品:{{thing1.DATA}}\n"})  # fmt: skip
    control(fake, "subscriptions", {"appid": APPID, "template_id": "S1", "items": [["o-carol", 1]]})
    token = requests.post(f"{fake}/cgi-bin/stable_token", json={"grant_type": "client_credential",
                          "appid": APPID, "secret": SECRET}, timeout=10).json()["access_token"]  # fmt: skip
    url = f"{fake}/cgi-bin/message/subscribe/send?access_token={token}"
    too_long = {"touser": "o-carol", "template_id": "S1", "data": {"thing1": {"value": "x" * 21}}}
    assert requests.post(url, json=too_long, timeout=10).json()["errcode"] == 47003  # thing: ≤ 20 chars
    good = {"touser": "o-carol", "template_id": "S1", "data": {"thing1": {"value": "机械键盘"}}}
    first = requests.post(url, json=good, timeout=10).json()
    assert first["errcode"] == 0 and isinstance(first["msgid"], int)
    assert requests.post(url, json=good, timeout=10).json()["errcode"] == 43101  # no accept left


def test_injected_timeouts_answer_too_late_and_say_whether_the_message_went_out(fake):
    """The fault suite's "1 % read timeouts": an answer held past the caller's timeout, after the message was
    handled (the answer is lost) or before anything happened (the request is lost); the stats tell which."""
    control(fake, "apps", {"appid": APPID, "secret": SECRET})
    control(fake, "templates", {"appid": APPID, "kind": "formid", "template_id": "T9",
                                "content": "订单号:{{keyword1.DATA}}\n"})  # fmt: skip
    items = [[f"o-user{n}", f"form-t{n}", 1] for n in range(24)]
    control(fake, "formids", {"appid": APPID, "items": items})
    token = requests.post(f"{fake}/cgi-bin/stable_token", json={"grant_type": "client_credential",
                          "appid": APPID, "secret": SECRET}, timeout=10).json()["access_token"]  # fmt: skip
    url = f"{fake}/cgi-bin/message/wxopen/template/send?access_token={token}"
    knobs = control(fake, "knobs", {"timeout_rate": 1.0, "timeout_hold_ms": 300})
    assert (knobs["timeout_rate"], knobs["timeout_hold_ms"]) == (1.0, 300)
    try:
        for openid, form_id, _ in items:
            with pytest.raises(requests.ReadTimeout):
                requests.post(url, json={"touser": openid, "template_id": "T9", "form_id": form_id,
                                         "data": {"keyword1": {"value": "A1"}}}, timeout=0.1)  # fmt: skip
    finally:
        control(fake, "knobs", {"timeout_rate": 0})
    time.sleep(0.4)  # the held answers finish
    stats = requests.get(f"{fake}/_control/stats", params={"appid": APPID}, timeout=10).json()
    handled, lost = stats["timeouts"].get("answer_lost", 0), stats["timeouts"].get("request_lost", 0)
    assert handled + lost == 24 and handled and lost  # each is a coin toss: both kinds, but for 1 run in 8M
    inbox = control(fake, "inbox", {"appid": APPID, "openids": [openid for openid, _, _ in items]})
    assert sum(inbox.values()) == handled  # a lost answer's message did go out; a lost request's did not

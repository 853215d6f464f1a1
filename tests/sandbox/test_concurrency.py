"""Concurrent sends never double-spend: 8 simultaneous requests over HTTP, one formId or one credit."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from pushhub.wechat.sandbox import services, wechat_endpoints

from .helpers import APPID, SECRET, formid_body, subscribe_body
from .http import call

THREADS = 8


@pytest.fixture(autouse=True)
def separate_connections():
    """Server threads need connections of their own: PostgreSQL, or SQLite on a file (not shared memory)."""
    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        pytest.skip("the SQLite test database is in memory: live-server threads share one connection")


def send_all_at_once(url: str, body: dict) -> list[int]:
    """POST the same body from THREADS threads released together; their errcodes."""
    barrier = threading.Barrier(THREADS)

    def send(_: int) -> int:
        barrier.wait()
        return call("POST", url, body, timeout=30)[1]["errcode"]

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(send, range(THREADS)))


@pytest.fixture
def token(live_server, app) -> str:
    return wechat_endpoints.issue_stable_token(APPID, SECRET, "client_credential")["access_token"]


def test_one_formid_sent_by_eight_threads_is_spent_once(live_server, token, user, formid_template):
    [formid] = services.issue_formids(APPID, user.openid)
    url = f"{live_server.url}/sandbox/wechat/cgi-bin/message/wxopen/template/send?access_token={token}"
    errcodes = send_all_at_once(url, formid_body(user, formid_template, formid))
    assert sorted(errcodes) == [0] + [41029] * (THREADS - 1)
    assert len(services.inbox(APPID, user.openid)) == 1


def test_a_prepay_id_sent_by_eight_threads_is_spent_three_times(live_server, token, user, formid_template):
    [prepay_id] = services.issue_formids(APPID, user.openid, kind="prepay")
    url = f"{live_server.url}/sandbox/wechat/cgi-bin/message/wxopen/template/send?access_token={token}"
    errcodes = send_all_at_once(url, formid_body(user, formid_template, prepay_id))
    assert sorted(errcodes) == [0] * 3 + [41029] * (THREADS - 3)


def test_one_subscribe_credit_sent_by_eight_threads_is_spent_once(
    live_server, token, user, subscribe_template
):
    services.accept_subscriptions(APPID, user.openid, {subscribe_template.template_id: "accept"})
    url = f"{live_server.url}/sandbox/wechat/cgi-bin/message/subscribe/send?access_token={token}"
    errcodes = send_all_at_once(url, subscribe_body(user, subscribe_template))
    assert sorted(errcodes) == [0] + [43101] * (THREADS - 1)
    assert services.stats(APPID)["sends_by_errcode"] == {"0": 1, "43101": THREADS - 1}


def test_concurrent_stable_token_calls_agree_on_one_token(live_server, app):
    url = f"{live_server.url}/sandbox/wechat/cgi-bin/stable_token"
    body = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
    barrier = threading.Barrier(THREADS)

    def fetch(_: int) -> str:
        barrier.wait()
        return call("POST", url, body, timeout=30)[1]["access_token"]

    with ThreadPoolExecutor(THREADS) as pool:
        assert len(set(pool.map(fetch, range(THREADS)))) == 1

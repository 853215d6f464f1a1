"""Access-token cache and the WeChat client against the sandbox over HTTP (real cache: Redis in CI)."""

from __future__ import annotations

import threading
import time

import pytest
from django.core.cache import cache

from pushhub.wechat import tokens
from pushhub.wechat.client import WeChatClient
from pushhub.wechat.errors import WeChatError, WeChatTimeout, WeChatUnavailable
from pushhub.wechat.sandbox import services as sandbox
from tests.conftest import random_appid, random_secret

pytestmark = pytest.mark.django_db(transaction=True)


class CountingClient(WeChatClient):
    """Counts token fetches (instrumentation; every call still goes to the sandbox over HTTP)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fetches: list[bool] = []
        self._lock = threading.Lock()

    def fetch_stable_token(self, force_refresh: bool = False):
        with self._lock:
            self.fetches.append(force_refresh)
        return super().fetch_stable_token(force_refresh)


@pytest.fixture
def wechat_app(sandbox_base):
    appid, secret = random_appid(), random_secret()
    sandbox.register_app(appid, secret)
    sandbox.set_knobs(appid, enforce_force_refresh_limits=False)
    return appid, secret


@pytest.fixture
def client(wechat_app, sandbox_base):
    return CountingClient(*wechat_app, sandbox_base)


def run_in_threads(n: int, fn):
    barrier = threading.Barrier(n)
    results, errors = [], []

    def worker():
        barrier.wait()
        try:
            results.append(fn())
        except Exception as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results, errors


def test_it_fetches_a_token_once_and_caches_it(client):
    first = tokens.get_access_token(client)
    assert tokens.get_access_token(client) == first
    assert client.fetches == [False]
    assert tokens.cached_token(client).seconds_left() > 7000


def test_concurrent_callers_share_one_refresh(client):
    results, errors = run_in_threads(8, lambda: tokens.get_access_token(client))
    assert errors == []
    assert len(set(results)) == 1
    assert client.fetches == [False]


def test_a_token_error_refreshes_once_and_retries(client, wechat_app):
    appid, _ = wechat_app
    openid = sandbox.create_user(appid).openid
    template = sandbox.add_template(appid, kind="subscribe", title="通知", content="内容:{{thing1.DATA}}")
    sandbox.accept_subscriptions(appid, openid, {template.template_id: "accept"})
    old = tokens.get_access_token(client)
    sandbox.reset_tokens(appid)  # someone else invalidated every token: the next call gets 40001
    result = client.send_subscribe_message(
        touser=openid, template_id=template.template_id, data={"thing1": {"value": "hi"}}
    )
    assert result["msgid"]
    assert tokens.get_access_token(client) != old
    assert len(client.fetches) == 2
    assert len(sandbox.inbox(appid, openid)) == 1


def test_many_callers_failing_on_the_same_token_cause_one_refresh(client, wechat_app):
    old = tokens.get_access_token(client)
    sandbox.reset_tokens(wechat_app[0])
    results, errors = run_in_threads(6, lambda: tokens.refresh_after_failure(client, failing_token=old))
    assert errors == []
    assert len(set(results)) == 1 and old not in results
    assert len(client.fetches) == 2  # the first fetch, then exactly one refresh


def test_a_failing_token_already_replaced_is_not_refreshed_again(client):
    old = tokens.get_access_token(client)
    cache_key = tokens._keys(client)[0]
    cache.set(
        cache_key, {"access_token": "newer-token-from-another-worker", "expires_at": time.time() + 7000}
    )
    # No clear_memo() here: the failure path must read the shared cache, not this process's memo.
    assert tokens.refresh_after_failure(client, failing_token=old) == "newer-token-from-another-worker"
    assert len(client.fetches) == 1


def test_a_token_due_for_refresh_is_refreshed_ahead_of_expiry(client, settings):
    tokens.get_access_token(client)
    key = tokens._keys(client)[0]
    entry = cache.get(key)
    cache.set(key, {**entry, "expires_at": time.time() + settings.WECHAT_TOKEN_REFRESH_AHEAD - 10})
    tokens.clear_memo()  # as in another process, or after WECHAT_TOKEN_MEMO_SECONDS
    tokens.get_access_token(client)
    assert len(client.fetches) == 2
    assert tokens.cached_token(client).seconds_left() > settings.WECHAT_TOKEN_REFRESH_AHEAD


def test_while_another_process_refreshes_a_valid_token_is_used_without_waiting(client, settings):
    token = tokens.get_access_token(client)
    key, lock_key = tokens._keys(client)
    cache.set(key, {"access_token": token, "expires_at": time.time() + 60})
    cache.add(lock_key, "another-process", timeout=30)
    tokens.clear_memo()
    started = time.monotonic()
    assert tokens.get_access_token(client) == token
    assert time.monotonic() - started < 0.5
    assert len(client.fetches) == 1


def test_a_process_reuses_the_token_it_read_for_a_few_seconds_then_reads_the_cache_again(client, settings):
    settings.WECHAT_TOKEN_MEMO_SECONDS = 0.3
    token = tokens.get_access_token(client)
    key = tokens._keys(client)[0]
    cache.set(key, {"access_token": "replaced-by-another-worker", "expires_at": time.time() + 7000})
    assert tokens.get_access_token(client) == token  # remembered: no cache read per message
    time.sleep(0.35)
    assert tokens.get_access_token(client) == "replaced-by-another-worker"
    assert len(client.fetches) == 1


def test_a_refresh_after_failure_replaces_the_remembered_token_at_once(client):
    old = tokens.get_access_token(client)
    new = tokens.refresh_after_failure(client, failing_token=old)
    assert new != old and tokens.get_access_token(client) == new


def test_forget_token_also_forgets_the_remembered_one(client):
    old = tokens.get_access_token(client)
    tokens.forget_token(client.appid, client.base_url)
    assert tokens.cached_token(client) is None
    assert tokens.get_access_token(client) == old  # fetched again (stable_token: same token while valid)
    assert len(client.fetches) == 2


def test_when_stable_token_returns_the_rejected_token_it_forces_a_new_one(client):
    old = tokens.get_access_token(client)
    # WeChat says "not the latest" but stable_token still hands back the same one: force a refresh.
    new = tokens.refresh_after_failure(client, failing_token=old)
    assert new != old
    assert client.fetches == [False, False, True]


def test_wrong_secret_raises_a_typed_error(wechat_app, sandbox_base):
    client = WeChatClient(wechat_app[0], random_secret(), sandbox_base)
    with pytest.raises(WeChatError) as caught:
        tokens.get_access_token(client)
    assert caught.value.errcode == 40125
    assert caught.value.is_credential_error


def test_connection_refused_is_unavailable_and_provably_not_delivered(wechat_app):
    client = WeChatClient(wechat_app[0], wechat_app[1], "http://127.0.0.1:9")
    with pytest.raises(WeChatUnavailable) as caught:
        client.fetch_stable_token()
    assert caught.value.maybe_delivered is False


def test_a_read_timeout_is_ambiguous(client, wechat_app, settings):
    appid, _ = wechat_app
    tokens.get_access_token(client)
    sandbox.set_knobs(appid, timeout_rate=1.0, timeout_seconds=1.0)
    settings.WECHAT_READ_TIMEOUT = 0.3
    with pytest.raises(WeChatTimeout) as caught:
        client.get_subscribe_templates()
    assert caught.value.maybe_delivered is True


def test_the_client_never_shows_the_secret(wechat_app, sandbox_base):
    client = WeChatClient(wechat_app[0], wechat_app[1], sandbox_base)
    assert wechat_app[1] not in repr(client)


def test_it_lists_both_kinds_of_templates(client, wechat_app):
    appid, _ = wechat_app
    sandbox.add_template(appid, kind="subscribe", title="发货", content="单号:{{character_string1.DATA}}")
    for n in range(23):  # more than one page of 20
        sandbox.add_template(appid, kind="formid", title=f"模板{n}", content="订单{{keyword1.DATA}}")
    assert [t["title"] for t in client.get_subscribe_templates()] == ["发货"]
    assert len(client.list_formid_templates()) == 23


# --- the broadcast's send path (pushhub.wechat.sending: its keep-alive pool on one event loop) ---------------
def send_async(client):
    """A POST through the send path (the formId template list: a POST any sandbox app answers)."""
    from pushhub.wechat import sending

    body = {"offset": 0, "count": 20}
    return sending.submit(sending.call_with_token(client, "cgi-bin/wxopen/template/list", body)).result(30)


def test_the_async_send_path_maps_refused_connections_like_the_blocking_one(wechat_app, sandbox_base):
    client = WeChatClient(wechat_app[0], wechat_app[1], sandbox_base)
    tokens.get_access_token(client)  # a token for this app, then WeChat "goes away"
    unreachable = WeChatClient(wechat_app[0], wechat_app[1], "http://127.0.0.1:9")
    cache.set(tokens._keys(unreachable)[0], {"access_token": "t", "expires_at": time.time() + 7000})
    with pytest.raises(WeChatUnavailable) as caught:
        send_async(unreachable)
    assert caught.value.maybe_delivered is False


def test_the_async_send_path_reports_a_read_timeout_as_ambiguous(client, wechat_app, settings):
    appid, _ = wechat_app
    tokens.get_access_token(client)
    sandbox.set_knobs(appid, timeout_rate=1.0, timeout_seconds=1.0)
    settings.WECHAT_READ_TIMEOUT = 0.3
    with pytest.raises(WeChatTimeout) as caught:
        send_async(client)
    assert caught.value.maybe_delivered is True


def test_the_async_send_path_refreshes_a_rejected_token_once_and_retries(client, wechat_app):
    old = tokens.get_access_token(client)
    key = tokens._keys(client)[0]
    cache.set(key, {"access_token": "not-a-token", "expires_at": time.time() + 7000})
    tokens.clear_memo()
    answer = send_async(client)  # 40001/40014 on "not-a-token": one refresh, one retry
    assert "list" in answer  # the template list: the retry went through
    assert tokens.get_access_token(client) == old  # stable_token hands back the still-valid token
    assert len(client.fetches) == 2


@pytest.mark.django_db(transaction=False)
def test_the_remembered_query_string_is_urlencode_for_every_token_and_value():
    from urllib.parse import urlencode

    from pushhub.wechat.client import query_string

    for params in (
        {"access_token": "82_a+b/c=d&e"},
        {"access_token": "82_a+b/c=d&f"},  # another token: its own string, never the one before
        {"access_token": "82_a+b/c=d&e", "type": "中文 x"},
        {"ids": ["a", "b"]},  # not hashable: quoted each time, the same way
    ):
        assert query_string(params) == urlencode(params)
    assert query_string({"access_token": "t1"}) != query_string({"access_token": "t2"})

"""Access tokens, shared by every process through the Django cache (Redis in production).

- Cached per AppID *and* API base, so a sandbox token is never sent to WeChat or the other way round.
- Refreshed ahead of expiry (WECHAT_TOKEN_REFRESH_AHEAD) by one process at a time: a cache lock
  (``cache.add`` = Redis ``SET NX``). While one process refreshes a still-valid token, the others keep
  using the old one instead of waiting; only when there is no valid token do they wait for the refresher.
- On 40001/40014/42001 the failing token is replaced only if the cache still holds it (compare-and-swap),
  so N workers that fail together cause one refresh, not N.
- ``stable_token`` without force_refresh is idempotent (WeChat answers the same token while valid), so a
  rare lost lock costs one extra harmless call, never an invalidated token. ``force_refresh`` (which does
  invalidate, 20/day) is used only when WeChat keeps handing back the token it just rejected.
- Each process also keeps the token it last read in memory for WECHAT_TOKEN_MEMO_SECONDS (5 s), so a
  broadcast does not read the cache once per message (that was 16% of a worker's time). A token replaced
  elsewhere is noticed within those seconds or at the first 40001, whichever comes first: the failure path
  always reads the shared cache.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.core.cache import cache

from pushhub import metrics
from pushhub.wechat.client import WeChatClient
from pushhub.wechat.errors import WeChatUnavailable

log = logging.getLogger(__name__)

LOCK_SECONDS = 15  # longer than one token fetch can take (connect + read timeouts)
WAIT_POLL_SECONDS = 0.02


@dataclass(frozen=True)
class CachedToken:
    access_token: str
    expires_at: float  # epoch seconds

    @property
    def expires_at_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.expires_at, tz=UTC)

    def seconds_left(self, now: float | None = None) -> float:
        return self.expires_at - (now if now is not None else time.time())


def _keys(client: WeChatClient) -> tuple[str, str]:
    return _keys_for(client.appid, client.base_url)


@functools.lru_cache(maxsize=4096)
def _keys_for(appid: str, base_url: str) -> tuple[str, str]:
    base = hashlib.sha256(base_url.encode()).hexdigest()[:12]
    return f"wechat:token:{appid}:{base}", f"wechat:token-lock:{appid}:{base}"


# cache key → (token, time.monotonic() when it was read from or written to the shared cache)
_memo: dict[str, tuple[CachedToken, float]] = {}


def clear_memo() -> None:
    """Forget every token this process remembers (tests; the shared cache is left alone)."""
    _memo.clear()


def _remember(key: str, token: CachedToken | None) -> CachedToken | None:
    if token is None:
        _memo.pop(key, None)
    else:
        _memo[key] = (token, time.monotonic())
    return token


def _read(key: str) -> CachedToken | None:
    value = cache.get(key)
    if isinstance(value, dict) and "access_token" in value:
        return _remember(key, CachedToken(value["access_token"], float(value["expires_at"])))
    return _remember(key, None)


def cached_token(client: WeChatClient) -> CachedToken | None:
    return _read(_keys(client)[0])


def forget_token(appid: str, base_url: str) -> None:
    """Drop the cached token (secret changed, app deleted, switched between sandbox and WeChat)."""
    key = _keys_for(appid, base_url)[0]
    _memo.pop(key, None)
    cache.delete(key)


def get_access_token(client: WeChatClient) -> str:
    return get_token_info(client).access_token


def get_token_info(client: WeChatClient) -> CachedToken:
    """A valid token for the client's app, fetching one only when needed (single-flight)."""
    key, lock_key = _keys(client)
    now = time.time()
    remembered = _memo.get(key)
    if remembered and time.monotonic() - remembered[1] < settings.WECHAT_TOKEN_MEMO_SECONDS:
        if remembered[0].seconds_left(now) > settings.WECHAT_TOKEN_REFRESH_AHEAD:
            return remembered[0]
    current = _read(key)
    if current and current.seconds_left(now) > settings.WECHAT_TOKEN_REFRESH_AHEAD:
        return current
    if current and current.seconds_left(now) > 1:
        # Due for refresh but still valid: refresh if nobody else is, otherwise keep using it.
        owner = _try_lock(lock_key)
        if owner is None:
            return current
        try:
            return _fetch_and_store(client, key, stale=None)
        except WeChatUnavailable:
            log.warning(
                "token refresh ahead of expiry failed for %s; the current token is still valid", client.appid
            )
            return current
        finally:
            _unlock(lock_key, owner)
    return _refresh_locked(client, key, lock_key, failing_token=None)


def refresh_after_failure(client: WeChatClient, failing_token: str) -> str:
    """WeChat rejected ``failing_token``: replace it unless another process already has."""
    key, lock_key = _keys(client)
    return _refresh_locked(client, key, lock_key, failing_token=failing_token).access_token


def _refresh_locked(client: WeChatClient, key: str, lock_key: str, failing_token: str | None) -> CachedToken:
    deadline = time.monotonic() + LOCK_SECONDS + 5
    while True:
        current = _read(key)
        if _usable(current, failing_token):
            return current
        owner = _try_lock(lock_key)
        if owner is not None:
            try:
                current = _read(key)  # someone may have finished between our read and the lock
                if _usable(current, failing_token):
                    return current
                return _fetch_and_store(client, key, stale=failing_token)
            finally:
                _unlock(lock_key, owner)
        if time.monotonic() > deadline:
            raise WeChatUnavailable(
                "timed out waiting for another process to refresh the token", maybe_delivered=False
            )
        time.sleep(WAIT_POLL_SECONDS)


def _usable(token: CachedToken | None, failing_token: str | None) -> bool:
    return bool(token and token.seconds_left() > 1 and token.access_token != failing_token)


def _fetch_and_store(client: WeChatClient, key: str, stale: str | None) -> CachedToken:
    try:
        grant = client.fetch_stable_token(force_refresh=False)
        if stale is not None and grant.access_token == stale:
            # WeChat still hands out the token it just rejected (someone reset it elsewhere): force a new one.
            log.warning("stable_token returned the rejected token for %s; forcing a refresh", client.appid)
            grant = client.fetch_stable_token(force_refresh=True)
    except Exception:
        metrics.token_refresh(ok=False)
        raise
    metrics.token_refresh(ok=True)
    token = CachedToken(grant.access_token, time.time() + grant.expires_in)
    cache.set(
        key, {"access_token": token.access_token, "expires_at": token.expires_at}, timeout=grant.expires_in
    )
    _remember(key, token)
    log.info("access token refreshed for %s (expires in %ss)", client.appid, grant.expires_in)
    return token


def _try_lock(lock_key: str) -> str | None:
    owner = secrets.token_hex(8)
    return owner if cache.add(lock_key, owner, timeout=LOCK_SECONDS) else None


def _unlock(lock_key: str, owner: str) -> None:
    if cache.get(lock_key) == owner:
        cache.delete(lock_key)

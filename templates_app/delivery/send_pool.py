"""Sending a push's messages: the per-app send-rate limiter, the WeChat message of a push, and the pool of
sends in flight on the process's sending loop (``pushhub.wechat.sending``)."""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from pushhub import ratelimit
from pushhub.wechat import sending, tokens
from pushhub.wechat.client import WeChatClient, subscribe_message, template_message
from pushhub.wechat.errors import WeChatError, WeChatUnavailable
from templates_app import opens_ref
from templates_app.catalogue import MAX_PAGE
from templates_app.delivery.job import Job
from templates_app.models import Push, Template

log = logging.getLogger(__name__)


class SendRateLimiter:
    """SEND_RATE_PER_APP sends per second per app, shared by every worker through the Django cache (Redis
    INCR in production). Windows of 100 ms; permits are taken a batch at a time (one cache call per batch)."""

    WINDOW = 0.1

    def __init__(self, appid: str, rate: int):
        self.appid = appid
        self.window = self.WINDOW if rate >= 10 else 1.0
        self.per_window = max(1, int(rate * self.window))

    def acquire(self, wanted: int) -> int:
        """Block until at least one send is allowed; returns how many of ``wanted`` may go now."""
        while True:
            now = time.time()
            slot = int(now / self.window)
            count = ratelimit.count(f"sendrate:{self.appid}:{slot}", wanted, ttl=5)
            granted = min(wanted, self.per_window - (count - wanted))
            if granted > 0:
                return granted
            time.sleep(max((slot + 1) * self.window - now, 0.001))


def _wechat_data(push: Push) -> dict:
    if push.template.kind == Template.Kind.SUBSCRIBE:  # subscribe messages have no colours
        return {key: {"value": item["value"]} for key, item in push.data.items()}
    return push.data


def page_for(push: Push) -> Callable[[Job], str | None]:
    """The page each delivery of ``push`` is sent with: the push's page carrying the delivery's open ref
    (``ph=<ref>``, templates_app.opens_ref) unless the template doesn't track opens. The flag is read once
    per push, not per delivery."""
    page = push.page or None
    if page is None or not push.template.track_opens:
        return lambda job: page
    return lambda job: opens_ref.page_with_ref(page, opens_ref.make_ref(job.delivery.pk), MAX_PAGE)


def sender(push: Push, client: WeChatClient) -> Callable[[Job, str | None], Coroutine[Any, Any, dict]]:
    """The push's send, as a coroutine for the process's sending loop (pushhub.wechat.sending)."""
    template, data, page = push.template, _wechat_data(push), page_for(push)
    if template.kind == Template.Kind.FORMID:

        def message(job: Job) -> tuple[str, dict]:
            return template_message(
                touser=job.delivery.openid,
                template_id=template.template_id,
                form_id=job.credit_value,
                data=data,
                page=page(job),
                emphasis_keyword=push.emphasis_keyword or None,
            )

    else:

        def message(job: Job) -> tuple[str, dict]:
            return subscribe_message(
                touser=job.delivery.openid,
                template_id=template.template_id,
                data=data,
                page=page(job),
                miniprogram_state=push.miniprogram_state or None,
                lang=push.lang or None,
            )

    async def send(job: Job, token: str | None) -> dict:
        path, body = message(job)
        return await sending.call_with_token(client, path, body, token)

    return send


class SendPool:
    """At most ``size`` sends of one round in flight, on the process's sending loop (one event loop thread,
    pushhub.wechat.sending): a thread per send cost more CPU than the sends themselves."""

    def __init__(self, size: int, send: Callable[[Job, str | None], Coroutine[Any, Any, dict]]):
        self._send = send
        self._size = max(size, 1)
        self._done = threading.Condition()
        self._outstanding = 0  # submitted and not answered yet
        self._sending = 0  # of which on the loop (at most size)
        self._waiting: collections.deque[tuple[Job, str | None]] = collections.deque()
        self._wake_below = 0  # the waiter's limit (wait_below): an answer wakes it only once it is met
        self.results: list[tuple[Job, dict | None, BaseException | None]] = []

    def submit(self, job: Job, token: str | None = None) -> None:
        """Send ``job`` with the app's current ``token`` (read by the caller: the loop must not touch the
        cache or the database)."""
        self.submit_all([job], token)

    def submit_all(self, jobs: list[Job], token: str | None = None) -> None:
        """``submit`` each of ``jobs``, handed to the loop in one go: a hand-off per send (a future and a
        wake-up of the loop's thread each) cost 36–40 µs of CPU a send, against 21–22 this way."""
        starting = []
        with self._done:
            for job in jobs:
                self._outstanding += 1
                if self._sending >= self._size:
                    self._waiting.append((job, token))
                else:
                    self._sending += 1
                    starting.append(job)
        if starting:
            sending.submit(self._run_all(starting, token))

    def wait_below(self, limit: int) -> None:
        with self._done:
            self._wake_below = limit
            try:
                self._done.wait_for(lambda: self._outstanding < limit)
            finally:
                self._wake_below = 0

    def answered(self) -> int:
        with self._done:
            return len(self.results)

    def take_results(self) -> list[tuple[Job, dict | None, BaseException | None]]:
        """The answers so far (each handed out once)."""
        with self._done:
            results, self.results = self.results, []
        return results

    async def _run_all(self, jobs: list[Job], token: str | None) -> None:
        await asyncio.gather(*(self._run(job, token) for job in jobs))

    async def _run(self, job: Job, token: str | None) -> None:
        while job is not None:
            answer, error = None, None
            try:
                answer = await self._send(job, token)
            except (WeChatError, WeChatUnavailable) as exc:
                error = exc
            except BaseException as exc:  # recorded as a transient error of this delivery (a round waits
                log.exception("unexpected error sending %r", job)  # for every answer: never drop one)
                error = exc
            with self._done:
                self.results.append((job, answer, error))
                self._outstanding -= 1
                job, token = self._waiting.popleft() if self._waiting else (None, None)
                if job is None:
                    self._sending -= 1
                if self._outstanding < self._wake_below:  # else the waiter would only look and sleep again
                    self._done.notify_all()

    def close(self) -> None:
        """Wait for every send of the round to be answered."""
        self.wait_below(1)


def current_token(client: WeChatClient) -> str | None:
    """The app's token for the next window of sends (the process's memo, a fetch only when due), or None
    when it cannot be had now: each send then tries again and records what it gets."""
    try:
        return tokens.get_access_token(client)
    except (WeChatError, WeChatUnavailable):
        return None

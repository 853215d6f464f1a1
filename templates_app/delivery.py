"""The delivery pipeline: a queued push becomes chunk tasks, each chunk sends through WeChat.

``deliver_push`` enumerates the recipients (``@all``: the app's users holding a usable credit, in id order)
and fans them out as ``deliver_chunk`` tasks, so every worker shares a broadcast. ``deliver_chunk`` sends
with bounded concurrency under a per-app rate limit, then writes outcomes, counters and credit settlements in
one transaction. ``run_scheduled_pushes`` (beat) starts due scheduled pushes and resumes stalled ones.

Everything here runs under at-least-once delivery (``acks_late``, redelivered chunks, duplicate chunks from
the stall sweep). What keeps it exactly-once towards WeChat:

- A delivery is sent only by the run whose guarded mark took it (``attempts`` n → n+1 while still
  ``pending`` with n attempts, errcode cleared), committed before the request leaves. Another run that read
  the same row finds its mark refused and leaves it alone.
- ``pending`` + ``attempts > 0`` + empty ``errcode`` means "an attempt started and its outcome is not
  recorded": in flight (touched less than DELIVERY_IN_FLIGHT_LEASE ago: wait for it), or its worker died.
  A dead attempt with a formId is sent again (WeChat answers 41029 if the first one went through, which we
  count as sent); with a subscribe credit or a prepay_id (several uses) it is never repeated blindly: failed
  ``timeout_ambiguous``, the credit spent. A transient answer (-1, 45011, connect error) records its errcode,
  so a retry is never mistaken for a lost attempt.
- Outcomes are written only for rows still ``pending`` with the attempts this run committed, together with the
  counters and the credits' consume/release, so a counter never moves twice for one delivery.

What an answer does (``classify``):

=================================================  ===========================  ==========================
answer                                             delivery                     credit
=================================================  ===========================  ==========================
ok                                                 sent (+ msgid for subscribe) consumed (prepay: 1 use)
41029, formId used by an earlier attempt of ours   sent                         consumed (exhausted)
41028, or 41029 on a fresh formId                  next credit (≤ 3), else      consumed (exhausted)
                                                   failed with that errcode
43101                                              failed                       consumed (exhausted)
45103 (formId API retired)                         failed, errmsg api_retired   released
-1, 45009, 45011, token errors left after the      retry with backoff + jitter  kept (lease renewed);
client's own refresh, connect errors, formId       (DELIVERY_MAX_ATTEMPTS),     released when it fails
timeouts / HTTP 5xx                                then failed
subscribe or prepay_id: timeout, HTTP 5xx, reset   failed ``timeout_ambiguous`` consumed
any other errcode (40003, 40037, 41030, 47003 …)   failed                       released
push canceled                                      failed ``canceled``          released
=================================================  ===========================  ==========================
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Count, Exists, F, OuterRef, Q
from django.db.models.functions import Coalesce
from django.utils import timezone
from redis.exceptions import RedisError

from formids import services as credits
from formids.models import Credit, MiniUser
from pushhub import ratelimit
from pushhub.sql import ids_in, texts_in
from pushhub.wechat import sending, tokens
from pushhub.wechat.client import WeChatClient, subscribe_message, template_message
from pushhub.wechat.errors import (
    API_RETIRED_ERRCODE,
    ERRCODE_TEXT,
    WeChatError,
    WeChatTimeout,
    WeChatUnavailable,
)
from templates_app.models import Delivery, Push, Template
from templates_app.pushes import prepare_recipients

log = logging.getLogger(__name__)

MAX_CREDITS_PER_DELIVERY = 3  # 41028/41029: try the user's next formId, at most this many in all
# A round's answers are written at least every FLUSH_SECONDS (and every FLUSH_ANSWERS): what a dead worker
# takes with it is a second of answers, not a whole chunk's (for subscribe credits: reported ambiguous).
# Measured on the broadcast bench: writing every 128 answers tripled PostgreSQL's CPU per delivery.
FLUSH_ANSWERS = 500
FLUSH_SECONDS = 1.0
# A write of known answers that loses its database connection is tried again on a new one after these
# pauses (seconds): the answers exist nowhere else.
WRITE_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0)
# What a send loop survives by stopping early (the rest is queued again, or found by the stall sweep).
INFRASTRUCTURE_ERRORS = (DatabaseError, RedisError, OSError)
SWEEP_BATCH = 100  # scheduled pushes started per beat
PROGRESS_TTL = 2 * 86_400
ACTIVE = (Push.Status.QUEUED, Push.Status.RUNNING)


def _setting(name: str, default: float) -> float:
    return float(getattr(settings, name, default))


def in_flight_lease() -> float:
    """Seconds a started attempt may go unrecorded before its worker is presumed dead: longer than a
    chunk's sending budget plus WeChat's read timeout."""
    return _setting("DELIVERY_IN_FLIGHT_LEASE", 120.0)


def stall_after() -> float:
    """A push with pending work and no progress for this long is resumed by the sweep (its chunk tasks were
    lost with a worker, e.g. on a broker without redelivery)."""
    return _setting("DELIVERY_STALL_AFTER", 300.0)


def enumeration_lease() -> float:
    """How long the enumeration lock outlives its last heartbeat (one page of recipients)."""
    return _setting("DELIVERY_ENUMERATION_LEASE", 60.0)


def chunk_budget() -> float:
    """A chunk stops starting new sends after this many seconds and re-queues the rest."""
    return _setting("DELIVERY_CHUNK_BUDGET", 60.0)


# --- queueing ------------------------------------------------------------------------------------
def enqueue(task: str, *args: Any, countdown: float | None = None) -> None:
    """Queue ``templates_app.tasks.<task>`` (the tests swap this for an in-process queue)."""
    from templates_app import tasks

    options = {"countdown": countdown} if countdown and countdown > 0 else {}
    getattr(tasks, task).apply_async(args=args, **options)


def _enqueue_chunk(push_id: Any, ids: Sequence[int], countdown: float | None = None) -> None:
    if ids:
        enqueue("deliver_chunk", str(push_id), list(ids), countdown=countdown)


def retry_countdown(attempts: int) -> float:
    """Exponential backoff with jitter: half the capped delay fixed, half random."""
    delay = min(
        _setting("DELIVERY_RETRY_MAX", 60.0), _setting("DELIVERY_RETRY_BASE", 2.0) * 2 ** max(attempts - 1, 0)
    )
    return delay / 2 + random.uniform(0, delay / 2)


# --- progress and locks in the shared cache -------------------------------------------------------
_last_touch: dict[str, float] = {}


def _progress_key(push_id: Any) -> str:
    return f"delivery:progress:{push_id}"


def touch_progress(push_id: Any, force: bool = False) -> None:
    """Heartbeat of a push (at most once a second per process): the stall sweep leaves it alone."""
    key = str(push_id)
    now = time.monotonic()
    if not force and now - _last_touch.get(key, 0.0) < 1.0:
        return
    if len(_last_touch) > 10_000:  # a long-lived worker sees many pushes
        _last_touch.clear()
    _last_touch[key] = now
    try:
        cache.set(_progress_key(key), time.time(), timeout=PROGRESS_TTL)
    except Exception:  # a heartbeat: without Redis the sweep may queue a duplicate chunk, which is harmless
        log.warning("push %s: progress mark not stored", key, exc_info=True)


def _cursor_key(push_id: Any) -> str:
    return f"delivery:cursor:{push_id}"


def _lock_key(push_id: Any) -> str:
    return f"delivery:enumerating:{push_id}"


def _take_lock(push_id: Any) -> str | None:
    owner = f"{time.time()}:{random.random()}"
    return owner if cache.add(_lock_key(push_id), owner, timeout=enumeration_lease()) else None


def _renew_lock(push_id: Any, owner: str) -> None:
    if cache.get(_lock_key(push_id)) == owner:
        cache.set(_lock_key(push_id), owner, timeout=enumeration_lease())


def _drop_lock(push_id: Any, owner: str) -> None:
    if cache.get(_lock_key(push_id)) == owner:
        cache.delete(_lock_key(push_id))


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


# --- starting a push -------------------------------------------------------------------------------
def _load_push(push_id: Any) -> Push | None:
    return Push.objects.select_related("template", "app").filter(pk=push_id).first()


def deliver_push(push_id: Any) -> str:
    """Start (or resume) a push: enumerate and fan out its chunks. Safe to run again for the same push:
    a cursor in the cache skips what was already queued, ``prepare_recipients`` skips existing rows."""
    push = _load_push(push_id)
    if push is None:
        return "missing"
    now = timezone.now()
    if push.status == Push.Status.DONE:
        return "skipped"
    if push.status == Push.Status.SCHEDULED:
        if push.send_at and push.send_at > now:
            return "not_due"
        if not _start_scheduled(push):
            return "skipped"
        push = _load_push(push_id)
    if push.status in ACTIVE:
        Push.objects.filter(pk=push.pk, status=Push.Status.QUEUED).update(
            status=Push.Status.RUNNING, started_at=Coalesce(F("started_at"), now)
        )
    owner = _take_lock(push.pk)
    if owner is None:
        return "busy"  # another worker is enumerating this push right now
    try:
        touch_progress(push.pk, force=True)
        if push.status == Push.Status.CANCELED:
            _fan_out_pending(push, owner)  # prepared after the cancel: the chunks give the credits back
            return "canceled"
        if push.to_all and not push.enumerated:
            if not _enumerate_all(push, owner):  # queues each page as it goes
                return "canceled"
        elif not push.to_all:
            if not push.enumerated:  # a scheduled push whose start was interrupted
                _prepare_explicit(push)
            _fan_out_pending(push, owner)
    finally:
        _drop_lock(push.pk, owner)
    _mark_enumerated(push)
    _maybe_finish(push.pk)
    return "started"


def _start_scheduled(push: Push) -> bool:
    """scheduled → queued, once (two beats, or a beat and a redelivery, never both start it)."""
    if not Push.objects.filter(pk=push.pk, status=Push.Status.SCHEDULED).update(status=Push.Status.QUEUED):
        return False
    if not push.to_all:
        push.status = Push.Status.QUEUED
        _prepare_explicit(push)
    return True


def _prepare_explicit(push: Push) -> None:
    prepare_recipients(push, push.to)
    _mark_enumerated(push)


def _mark_enumerated(push: Push) -> None:
    Push.objects.filter(pk=push.pk, enumerated=False).update(
        enumerated=True,
        recipients=Coalesce(F("recipients"), 0),
        no_credit=Coalesce(F("no_credit"), 0),
        opted_out=Coalesce(F("opted_out"), 0),
    )


def users_with_credit(push: Push, now: datetime | None = None, extra: Q | Exists | None = None):
    """The app's users holding a usable credit for the push's template (formId templates: formIds and
    prepay_ids; subscribe templates: credits of that template id), or matching ``extra``."""
    usable = Credit.objects.filter(
        credits.usable_q(now or timezone.now()), app_id=push.app_id, user_id=OuterRef("pk")
    )
    if push.template.kind == Template.Kind.FORMID:
        usable = usable.filter(kind__in=credits.FORMID_KINDS)
    else:
        usable = usable.filter(kind=Credit.Kind.SUBSCRIBE, template_id=push.template.template_id)
    condition = Exists(usable) if extra is None else Exists(usable) | extra
    return MiniUser.objects.filter(app_id=push.app_id).filter(condition)


def _enumerate_all(push: Push, owner: str) -> bool:
    """``@all``: claim and queue PUSH_CHUNK_SIZE users at a time, resuming after the last page queued.
    False if the push was canceled meanwhile."""
    size = settings.PUSH_CHUNK_SIZE
    cursor_key = f"{_cursor_key(push.pk)}:users"
    cursor = cache.get(cursor_key) or 0
    # Users a run already prepared hold claimed (no longer usable) credits: they stay in the enumeration,
    # so a page prepared by a run that died before queueing it is queued by the next one.
    prepared = Delivery.objects.filter(push_id=push.pk, openid=OuterRef("openid"))
    recipients = users_with_credit(push, extra=Exists(prepared))
    users = MiniUser.objects.filter(app_id=push.app_id)
    while True:
        # The next block of the app's users by id, then those of them with a credit: the credit tests run
        # per user of the block (index probes). One query "next 500 users with a credit" made PostgreSQL
        # hash every credit of the app for every page: quadratic, 31 s of its CPU for 100k users.
        block = list(users.filter(pk__gt=cursor).order_by("pk").values_list("pk", flat=True)[:size])
        if not block:
            return True
        cursor = block[-1]
        page = list(recipients.filter(pk__in=ids_in(block)).order_by("pk").values_list("pk", "openid"))
        if not page:  # a block of users without credits: still progress
            cache.set(cursor_key, cursor, timeout=PROGRESS_TTL)
            _renew_lock(push.pk, owner)
            continue
        openids = [openid for _, openid in page]
        prepare_recipients(push, openids)
        # This page's pending rows: the new ones, and any an interrupted run prepared but maybe never queued.
        ids = list(
            Delivery.objects.filter(push=push, openid__in=texts_in(openids), status=Delivery.Status.PENDING)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        _enqueue_chunk(push.pk, ids)
        cache.set(cursor_key, cursor, timeout=PROGRESS_TTL)
        _renew_lock(push.pk, owner)
        touch_progress(push.pk)
        if Push.objects.filter(pk=push.pk, status=Push.Status.CANCELED).exists():
            return False


def _fan_out_pending(push: Push, owner: str) -> int:
    """Queue the pending deliveries not queued yet (explicit recipients), in chunks; returns how many."""
    size = settings.PUSH_CHUNK_SIZE
    cursor_key = f"{_cursor_key(push.pk)}:deliveries"
    cursor = cache.get(cursor_key) or 0
    queued = 0
    while True:
        ids = list(
            Delivery.objects.filter(push=push, status=Delivery.Status.PENDING, pk__gt=cursor)
            .order_by("pk")
            .values_list("pk", flat=True)[:size]
        )
        if not ids:
            return queued
        _enqueue_chunk(push.pk, ids)
        queued += len(ids)
        cursor = ids[-1]
        cache.set(cursor_key, cursor, timeout=PROGRESS_TTL)
        _renew_lock(push.pk, owner)


def _maybe_finish(push_id: Any) -> bool:
    """running → done once every recipient is enumerated and nothing is pending (a conditional UPDATE:
    whichever of the last chunk and the enumerator comes second does it)."""
    pending = Delivery.objects.filter(push_id=OuterRef("pk"), status=Delivery.Status.PENDING)
    return bool(
        Push.objects.filter(pk=push_id, status__in=ACTIVE, enumerated=True)
        .filter(~Exists(pending))
        .update(status=Push.Status.DONE, finished_at=timezone.now())
    )


# --- outcomes ----------------------------------------------------------------------------------------
SENT, FAILED, NO_CREDIT, RETRY, NEXT_CREDIT = "sent", "failed", "no_credit", "retry", "next_credit"
CONSUME, EXHAUST, RELEASE, KEEP, NOTHING = "consume", "exhaust", "release", "keep", "nothing"


@dataclass(frozen=True)
class Outcome:
    action: str  # sent | failed | no_credit | retry (stays pending) | next_credit (stays pending)
    settle: str  # what happens to the claimed credit: consume | exhaust | release | keep | nothing
    errcode: str = ""
    errmsg: str = ""


CANCELED = Outcome(FAILED, RELEASE, "canceled", "push canceled")
LOST_ATTEMPT = Outcome(
    FAILED,
    CONSUME,
    "timeout_ambiguous",
    "an earlier attempt may have reached WeChat (its worker stopped before the answer was recorded)",
)


def classify(error: BaseException | None, *, credit_kind: str, earlier_attempt: bool) -> Outcome:
    """What a send's answer means for the delivery and its credit (the table in the module docstring).

    ``credit_kind``: formid (one use: a repeat is answered 41029, so repeating is safe), prepay (3 uses) or
    subscribe (neither may be repeated blindly). ``earlier_attempt``: this credit was used by an earlier
    attempt of this delivery whose answer may have been lost.
    """
    if error is None:
        return Outcome(SENT, CONSUME)
    formid = credit_kind in credits.FORMID_KINDS
    if isinstance(error, WeChatError):
        code, text = error.errcode, (error.errmsg or ERRCODE_TEXT.get(error.errcode, ""))[:255]
        if code == 41029 and credit_kind == Credit.Kind.FORMID and earlier_attempt:
            return Outcome(SENT, EXHAUST, "", "41029: delivered by an earlier attempt whose answer was lost")
        if formid and code in (41028, 41029):
            return Outcome(NEXT_CREDIT, EXHAUST, str(code), text)
        if code == 43101:
            return Outcome(FAILED, EXHAUST, str(code), text)
        if code == API_RETIRED_ERRCODE:
            return Outcome(FAILED, RELEASE, str(code), "api_retired")
        if error.is_transient or error.is_token_error:
            return Outcome(RETRY, KEEP, str(code), text)
        return Outcome(FAILED, RELEASE, str(code), text)
    if isinstance(error, WeChatUnavailable):
        if error.maybe_delivered and credit_kind != Credit.Kind.FORMID:
            return Outcome(FAILED, CONSUME, "timeout_ambiguous", error.reason[:255])
        code = "timeout" if isinstance(error, WeChatTimeout) else "unavailable"
        return Outcome(RETRY, KEEP, code, error.reason[:255])
    # A bug or an infrastructure error before the request left (e.g. the cache): try again later.
    return Outcome(RETRY, KEEP, "error", f"{type(error).__name__}: {error}"[:255])


# --- a chunk -----------------------------------------------------------------------------------------
@dataclass
class _Job:
    delivery: Delivery
    attempts: int  # as committed: compared by the guarded mark and the guarded write
    credit_id: int | None = None
    credit_kind: str = ""
    credit_value: str = ""
    fresh_credit: bool = False  # claimed by this run: no earlier attempt used it
    credits_used: int = 1
    earlier_attempt: bool = False  # set when marked: an earlier attempt used this credit

    @classmethod
    def of(cls, delivery: Delivery) -> _Job:
        credit = delivery.credit
        return cls(
            delivery=delivery,
            attempts=delivery.attempts,
            credit_id=credit.pk if credit else None,
            credit_kind=credit.kind if credit else "",
            credit_value=credit.value if credit else "",
        )


@dataclass
class ChunkReport:
    sent: int = 0
    failed: int = 0
    no_credit: int = 0
    retrying: int = 0
    deferred: int = 0
    requeued: int = 0
    skipped: int = 0

    def add(self, other: ChunkReport) -> None:
        for name in ("sent", "failed", "no_credit"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def deliver_chunk(push_id: Any, delivery_ids: Iterable[int]) -> dict[str, int]:
    """Send the chunk's pending deliveries. Idempotent: finished deliveries are skipped, those another run
    is sending are left to it (and looked at again after the in-flight lease)."""
    report = ChunkReport()
    push = _load_push(push_id)
    if push is None:
        return vars(report)
    rows = list(
        Delivery.objects.filter(push=push, pk__in=ids_in(list(delivery_ids)), status=Delivery.Status.PENDING)
        .select_related("credit")
        .order_by("pk")
    )
    if not rows:
        _maybe_finish(push.pk)
        return vars(report)
    touch_progress(push.pk)
    now = timezone.now()
    if push.status == Push.Status.QUEUED:  # queued straight to its one chunk (start_push): it starts here
        Push.objects.filter(pk=push.pk, status=Push.Status.QUEUED).update(
            status=Push.Status.RUNNING, started_at=Coalesce(F("started_at"), now)
        )
    lease = in_flight_lease()
    jobs, decided, in_flight = [], [], []
    for row in rows:
        job = _Job.of(row)
        if row.attempts > 0 and not row.errcode:  # an attempt started and its outcome was never recorded
            age = (now - row.updated_at).total_seconds()
            if age < lease:
                in_flight.append((row.pk, lease - age))
                continue
            if job.credit_kind != Credit.Kind.FORMID and job.credit_id:
                decided.append((job, LOST_ATTEMPT))  # subscribe / prepay_id: never repeated blindly
                continue
        jobs.append(job)
    if in_flight:
        report.deferred = len(in_flight)
        _enqueue_chunk(push.pk, [pk for pk, _ in in_flight], countdown=max(w for _, w in in_flight) + 1)
    if push.status not in ACTIVE:
        if push.status == Push.Status.CANCELED:
            report.add(_write(push, decided + [(job, CANCELED) for job in jobs]))
        else:
            report.skipped = len(jobs)
        return vars(report)
    jobs, no_credit = _ensure_credits(push, jobs)
    report.add(_write(push, decided + no_credit))
    _send_chunk(push, jobs, report)
    _maybe_finish(push.pk)
    return vars(report)


def pending_delivery_holds_credit() -> Exists:
    """For formids' stale-claim sweep: the credit (OuterRef "pk") is held by a pending delivery."""
    return Exists(Delivery.objects.filter(credit_id=OuterRef("pk"), status=Delivery.Status.PENDING))


def _ensure_credits(push: Push, jobs: list[_Job]) -> tuple[list[_Job], list[tuple[_Job, Outcome]]]:
    """Renew the chunk's claims (a chunk may have waited in the queue); a claim lost to the stale sweep, or
    a delivery left without a credit, gets the user's next usable credit, or ends as no_credit."""
    holder = push.claim_holder
    held = [job.credit_id for job in jobs if job.credit_id]
    # Claims younger than a third of the lease are left as they are (no write): the stale sweep cannot take
    # them while this chunk is sent.
    fresh_enough = timedelta(seconds=settings.CREDIT_CLAIM_LEASE / 3)
    if held and credits.refresh_claims(held, holder, unless_younger_than=fresh_enough) < len(held):
        still = set(
            Credit.objects.filter(pk__in=held, state=Credit.State.CLAIMED, claimed_by=holder).values_list(
                "pk", flat=True
            )
        )
        for job in jobs:
            if job.credit_id and job.credit_id not in still:
                log.warning("push %s: claim on credit %s was lost; claiming another", push.pk, job.credit_id)
                job.credit_id = None
    missing = [job for job in jobs if not job.credit_id]
    if not missing:
        return jobs, []
    claimed = credits.claim_credits(
        push.app,
        template_kind=push.template.kind,
        template_id=push.template.template_id,
        openids=[job.delivery.openid for job in missing],
        claimed_by=holder,
    )
    without = []
    for job in missing:
        credit = claimed.get(job.delivery.openid)
        if credit:
            job.credit_id, job.credit_kind, job.credit_value = credit.id, credit.kind, credit.value
            # The same credit again (its claim had lapsed): an earlier attempt may have used it.
            job.fresh_credit = credit.id != job.delivery.credit_id
        else:
            without.append((job, Outcome(NO_CREDIT, NOTHING, "", "no usable credit left")))
    return [job for job in jobs if job.credit_id], without


def _send_chunk(push: Push, jobs: list[_Job], report: ChunkReport) -> None:
    """Send, settle, and for 41028/41029 try the user's next credit (up to 3 in all); transient failures
    are written as such and re-queued with backoff. Answers are written as they arrive, at least every
    FLUSH_SECONDS, so a worker that dies mid-chunk leaves at most a second of attempts unrecorded; if Redis or
    the database fails under the chunk, it stops starting sends, writes what was answered and queues the rest."""
    deadline = time.monotonic() + chunk_budget()
    limit = int(settings.DELIVERY_MAX_ATTEMPTS)
    retry: list[_Job] = []
    next_credit: list[_Job] = []  # this round's 41028/41029: the user's next credit

    def settle(answered: list[tuple[_Job, dict | None, BaseException | None]]) -> None:
        outcomes: list[tuple[_Job, Outcome]] = []
        for job, answer, error in answered:
            outcome = classify(error, credit_kind=job.credit_kind, earlier_attempt=job.earlier_attempt)
            if outcome.action == SENT and answer and answer.get("msgid") is not None:
                job.delivery.msgid = int(answer["msgid"])
            if outcome.action == NEXT_CREDIT:
                if job.credits_used < MAX_CREDITS_PER_DELIVERY:
                    next_credit.append(job)
                    outcomes.append((job, outcome))
                else:
                    outcomes.append((job, Outcome(FAILED, EXHAUST, outcome.errcode, outcome.errmsg)))
            elif outcome.action == RETRY and job.attempts >= limit:
                outcomes.append((job, Outcome(FAILED, RELEASE, outcome.errcode, outcome.errmsg)))
            elif outcome.action == RETRY:
                retry.append(job)
                outcomes.append((job, outcome))
            else:
                outcomes.append((job, outcome))
        report.add(_write_retrying(push, outcomes))

    while jobs:
        next_credit.clear()
        leftover, canceled, interrupted = _send_round(push, jobs, deadline, settle)
        if canceled:
            report.add(_write(push, [(job, CANCELED) for job in leftover]))
        elif interrupted:  # Redis or the database failed: the rest (and next credits) later
            _requeue(push, leftover + next_credit, report, countdown=2.0)
            break
        elif leftover:  # out of time: the rest goes back to the queue, untouched
            _requeue(push, leftover, report)
        jobs = _next_credits(push, list(next_credit), report)
    _schedule_retries(push, retry, report)


def _requeue(push: Push, jobs: list[_Job], report: ChunkReport, countdown: float | None = None) -> None:
    """Queue ``jobs`` as a new chunk. If the broker is down too, the stall sweep finds them later: they are
    pending deliveries with no attempt in flight."""
    if not jobs:
        return
    try:
        _enqueue_chunk(push.pk, [job.delivery.pk for job in jobs], countdown=countdown)
    except Exception:
        log.warning("push %s: %d deliveries left for the stall sweep", push.pk, len(jobs), exc_info=True)
        return
    report.requeued += len(jobs)


def _write_retrying(push: Push, outcomes: list[tuple[_Job, Outcome]]) -> ChunkReport:
    """``_write``, again on a new connection if the database connection broke (PostgreSQL restarted, or
    the connection was dropped): these answers are known here and nowhere else, and a lost write turns sent
    messages into unrecorded attempts (sent again for a formId; reported ambiguous for a subscribe credit).
    Writing twice is harmless: a row is only written while it is pending with this run's attempt."""
    for delay in (*WRITE_RETRY_DELAYS, None):
        try:
            return _write(push, outcomes)
        except (OperationalError, InterfaceError):
            # Inside a caller's transaction the connection is not ours to replace.
            if delay is None or connection.in_atomic_block:
                raise
            log.warning("push %s: writing %d outcomes failed; again in %.1f s", push.pk, len(outcomes), delay)
            connection.close()
            time.sleep(delay)
    raise AssertionError("unreachable")


def _next_credits(push: Push, jobs: list[_Job], report: ChunkReport) -> list[_Job]:
    """After 41028/41029 (the old credit is spent and detached): claim the user's next credit."""
    live = [job for job in jobs if job.credit_id is None]  # _write detaches only what it applied
    if not live:
        return []
    claimed = credits.claim_credits(
        push.app,
        template_kind=push.template.kind,
        template_id=push.template.template_id,
        openids=[job.delivery.openid for job in live],
        claimed_by=push.claim_holder,
    )
    ready, exhausted = [], []
    for job in live:
        credit = claimed.get(job.delivery.openid)
        if credit:
            job.credit_id, job.credit_kind, job.credit_value = credit.id, credit.kind, credit.value
            job.fresh_credit, job.credits_used = True, job.credits_used + 1
            ready.append(job)
        else:
            code, text = job.delivery.errcode, job.delivery.errmsg
            exhausted.append((job, Outcome(FAILED, NOTHING, code, text)))
    report.add(_write(push, exhausted))
    return ready


def _schedule_retries(push: Push, retry: list[_Job], report: ChunkReport) -> None:
    """Queue the deliveries answered with a transient error (already written as such) with backoff."""
    ids = [job.delivery.pk for job in retry if job.delivery.status == Delivery.Status.PENDING]
    if not ids:
        return
    try:
        _enqueue_chunk(push.pk, ids, countdown=retry_countdown(max(job.attempts for job in retry)))
    except Exception:  # the broker is down: the stall sweep queues them (pending, with their errcode)
        log.warning("push %s: %d retries left for the stall sweep", push.pk, len(ids), exc_info=True)
        return
    report.retrying = len(ids)


# --- sending ------------------------------------------------------------------------------------------
def _wechat_data(push: Push) -> dict:
    if push.template.kind == Template.Kind.SUBSCRIBE:  # subscribe messages have no colours
        return {key: {"value": item["value"]} for key, item in push.data.items()}
    return push.data


def _sender(push: Push, client: WeChatClient) -> Callable[[_Job, str | None], Coroutine[Any, Any, dict]]:
    """The push's send, as a coroutine for the process's sending loop (pushhub.wechat.sending)."""
    template, data = push.template, _wechat_data(push)
    if template.kind == Template.Kind.FORMID:

        def message(job: _Job) -> tuple[str, dict]:
            return template_message(
                touser=job.delivery.openid,
                template_id=template.template_id,
                form_id=job.credit_value,
                data=data,
                page=push.page or None,
                emphasis_keyword=push.emphasis_keyword or None,
            )

    else:

        def message(job: _Job) -> tuple[str, dict]:
            return subscribe_message(
                touser=job.delivery.openid,
                template_id=template.template_id,
                data=data,
                page=push.page or None,
                miniprogram_state=push.miniprogram_state or None,
                lang=push.lang or None,
            )

    async def send(job: _Job, token: str | None) -> dict:
        path, body = message(job)
        return await sending.call_with_token(client, path, body, token)

    return send


class _SendPool:
    """At most ``size`` sends of one round in flight, on the process's sending loop (one event loop thread,
    pushhub.wechat.sending): a thread per send cost more CPU than the sends themselves."""

    def __init__(self, size: int, send: Callable[[_Job, str | None], Coroutine[Any, Any, dict]]):
        self._send = send
        self._size = max(size, 1)
        self._done = threading.Condition()
        self._outstanding = 0  # submitted and not answered yet
        self._sending = 0  # of which on the loop (at most size)
        self._waiting: collections.deque[tuple[_Job, str | None]] = collections.deque()
        self.results: list[tuple[_Job, dict | None, BaseException | None]] = []

    def submit(self, job: _Job, token: str | None = None) -> None:
        """Send ``job`` with the app's current ``token`` (read by the caller: the loop must not touch the
        cache or the database)."""
        with self._done:
            self._outstanding += 1
            if self._sending >= self._size:
                self._waiting.append((job, token))
                return
            self._sending += 1
        sending.submit(self._run(job, token))

    def wait_below(self, limit: int) -> None:
        with self._done:
            self._done.wait_for(lambda: self._outstanding < limit)

    def answered(self) -> int:
        with self._done:
            return len(self.results)

    def take_results(self) -> list[tuple[_Job, dict | None, BaseException | None]]:
        """The answers so far (each handed out once)."""
        with self._done:
            results, self.results = self.results, []
        return results

    async def _run(self, job: _Job, token: str | None) -> None:
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
                self._done.notify_all()

    def close(self) -> None:
        """Wait for every send of the round to be answered."""
        self.wait_below(1)


def _send_round(
    push: Push,
    jobs: list[_Job],
    deadline: float,
    settle: Callable[[list[tuple[_Job, dict | None, BaseException | None]]], None],
) -> tuple[list[_Job], bool, bool]:
    """Mark and send ``jobs`` SEND_CONCURRENCY at a time under the app's rate limit, handing the answers to
    ``settle`` a batch at a time. Returns (jobs not started, whether the push was canceled meanwhile,
    whether Redis or the database failed under the round)."""
    concurrency = max(int(settings.SEND_CONCURRENCY), 1)
    limiter = SendRateLimiter(push.app.appid, int(settings.SEND_RATE_PER_APP))
    client = WeChatClient.for_app(push.app)
    pool = _SendPool(min(concurrency, len(jobs)), _sender(push, client))
    leftover: list[_Job] = []
    canceled = interrupted = False
    next_status_check = 0.0
    last_flush = time.monotonic()
    try:
        index = 0
        while index < len(jobs):
            now = time.monotonic()
            try:
                if now >= next_status_check:
                    next_status_check = now + 0.5
                    canceled = Push.objects.filter(pk=push.pk, status=Push.Status.CANCELED).exists()
                if canceled or now > deadline:
                    leftover = jobs[index:]
                    break
                window = jobs[index : index + concurrency]
                window = window[: limiter.acquire(len(window))]
                token = _current_token(client)
                marked = _mark_attempts(window)
            except INFRASTRUCTURE_ERRORS:
                log.warning(
                    "push %s: Redis or the database failed; sending stops here", push.pk, exc_info=True
                )
                leftover, interrupted = jobs[index:], True
                break
            index += len(window)
            for job in marked:
                pool.submit(job, token)
            touch_progress(push.pk)
            pool.wait_below(concurrency)  # at most one window marked ahead of the sends
            if pool.answered() >= FLUSH_ANSWERS or time.monotonic() - last_flush >= FLUSH_SECONDS:
                settle(pool.take_results())
                last_flush = time.monotonic()
    finally:
        pool.close()
    settle(pool.take_results())
    return leftover, canceled, interrupted


def _current_token(client: WeChatClient) -> str | None:
    """The app's token for the next window of sends (the process's memo, a fetch only when due), or None
    when it cannot be had now: each send then tries again and records what it gets."""
    try:
        return tokens.get_access_token(client)
    except (WeChatError, WeChatUnavailable):
        return None


def _mark_attempts(jobs: list[_Job]) -> list[_Job]:
    """Take the jobs for this run: attempts n → n+1 where the row is still pending with n attempts (and
    attach a newly claimed credit). Committed before any of them is sent."""
    now = timezone.now()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            marked = _mark_attempts_sql(jobs, now)
            won = [job for job in jobs if job.delivery.pk in marked]
        else:
            current = dict(
                Delivery.objects.select_for_update()
                .filter(pk__in=[job.delivery.pk for job in jobs], status=Delivery.Status.PENDING)
                .order_by("pk")
                .values_list("pk", "attempts")
            )
            won = [job for job in jobs if current.get(job.delivery.pk) == job.attempts]
            if won:
                Delivery.objects.filter(pk__in=[job.delivery.pk for job in won]).update(
                    attempts=F("attempts") + 1, errcode="", errmsg="", updated_at=now
                )
            # A newly claimed credit goes on the row with the attempt that uses it.
            switched = [job for job in won if job.delivery.credit_id != job.credit_id]
            for job in switched:
                job.delivery.credit_id = job.credit_id
            if switched:
                Delivery.objects.bulk_update([job.delivery for job in switched], ["credit"])
        for job in won:
            row = job.delivery
            row.attempts, row.errcode, row.errmsg = job.attempts + 1, "", ""
            row.credit_id, row.updated_at = job.credit_id, now
    for job in won:
        job.earlier_attempt = job.attempts > 0 and not job.fresh_credit
        job.fresh_credit = False  # from now on an attempt has used it
        job.attempts += 1
    lost = len(jobs) - len(won)
    if lost:
        log.info("%s deliveries are being sent by another run; skipped", lost)
    return won


def _mark_attempts_sql(jobs: list[_Job], now) -> set[int]:
    """PostgreSQL: the same in one statement (lock the pending rows in id order, as every writer does, then
    bump the attempts of those still at the attempt this run saw, with the credit it uses); the ids won.
    Three ORM queries per window of sends were a tenth of a broadcast worker's CPU."""
    table = Delivery._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH locked AS (
                SELECT id FROM {table} WHERE id = ANY(%s) AND status = 'pending' ORDER BY id FOR UPDATE
            )
            UPDATE {table} AS d
            SET attempts = d.attempts + 1, errcode = '', errmsg = '', updated_at = %s, credit_id = v.credit_id
            FROM locked JOIN unnest(%s::bigint[], %s::int[], %s::bigint[]) AS v(id, attempts, credit_id)
                ON v.id = locked.id
            WHERE d.id = locked.id AND d.attempts = v.attempts
            RETURNING d.id
            """,
            [
                [job.delivery.pk for job in jobs],
                now,
                [job.delivery.pk for job in jobs],
                [job.attempts for job in jobs],
                [job.credit_id for job in jobs],
            ],
        )
        return {pk for (pk,) in cursor.fetchall()}


# --- writing outcomes --------------------------------------------------------------------------------
def _write(push: Push, outcomes: list[tuple[_Job, Outcome]]) -> ChunkReport:
    """Apply outcomes to rows still pending with the attempts this run saw, with their credits and the
    push counters, in one transaction."""
    report = ChunkReport()
    if not outcomes:
        return report
    holder = push.claim_holder
    now = timezone.now()
    settle: dict[str, list[int]] = {CONSUME: [], EXHAUST: [], RELEASE: [], KEEP: []}
    rows = []
    # Outcomes fall into a few groups (sent; failed 40003 …): one UPDATE … WHERE pk IN per group is far
    # cheaper than bulk_update's CASE per row and field. Only msgids differ row by row.
    groups: dict[tuple, list[int]] = {}
    with transaction.atomic():
        Push.objects.select_for_update().filter(pk=push.pk).values_list("pk", flat=True).first()  # lock order
        current = dict(
            Delivery.objects.select_for_update()
            .filter(pk__in=ids_in(job.delivery.pk for job, _ in outcomes), status=Delivery.Status.PENDING)
            .order_by("pk")
            .values_list("pk", "attempts")
        )
        attempted_failures = 0
        for job, outcome in outcomes:
            row = job.delivery
            if current.get(row.pk) != job.attempts:
                continue  # settled or taken over by another run meanwhile
            if job.credit_id and outcome.settle in settle:
                settle[outcome.settle].append(job.credit_id)
            row.errcode, row.errmsg, row.updated_at = outcome.errcode, outcome.errmsg[:255], now
            if outcome.action == NEXT_CREDIT:
                job.credit_id = None  # the spent credit is detached; the next one is claimed
            detach = row.credit_id is not None and job.credit_id is None
            row.credit_id = job.credit_id
            if outcome.action == SENT:
                row.status, row.sent_at = Delivery.Status.SENT, now
                report.sent += 1
            elif outcome.action == FAILED:
                row.status = Delivery.Status.FAILED
                report.failed += 1
                attempted_failures += outcome.errcode != "canceled"
            elif outcome.action == NO_CREDIT:
                row.status = Delivery.Status.NO_CREDIT
                report.no_credit += 1
            rows.append(row)
            groups.setdefault((row.status, row.errcode, row.errmsg, row.sent_at == now, detach), []).append(
                row.pk
            )
        if not rows:
            return report
        for (status, errcode, errmsg, sent, detach), ids in groups.items():
            extra = {"sent_at": now} if sent else {}
            if detach:
                extra["credit"] = None
            Delivery.objects.filter(pk__in=ids_in(ids)).update(
                status=status, errcode=errcode, errmsg=errmsg, updated_at=now, **extra
            )
        with_msgid = [row for row in rows if row.status == Delivery.Status.SENT and row.msgid is not None]
        if with_msgid:
            Delivery.objects.bulk_update(with_msgid, ["msgid"])
        if settle[CONSUME]:
            credits.consume(settle[CONSUME], holder)
        if settle[EXHAUST]:
            credits.consume(settle[EXHAUST], holder, exhausted=True)
        if settle[RELEASE]:
            credits.release(settle[RELEASE], holder)
        if settle[KEEP]:
            credits.refresh_claims(settle[KEEP], holder)
        finished = report.sent + report.failed + report.no_credit
        if finished:
            Push.objects.filter(pk=push.pk).update(
                sent=F("sent") + report.sent,
                failed=F("failed") + report.failed,
                no_credit=Coalesce(F("no_credit"), 0) + report.no_credit,
                pending=F("pending") - finished,
            )
            credits.record_send_outcomes(push.app, sent=report.sent, failed=attempted_failures)
    if report.sent and push.template.kind == Template.Kind.SUBSCRIBE:
        try:
            _apply_early_events(
                push, [row for row in rows if row.status == Delivery.Status.SENT and row.msgid]
            )
        except RedisError:  # the early events were in Redis: gone with it (the status stays "sent")
            log.warning("push %s: early sent-events not read", push.pk, exc_info=True)
    return report


# --- WeChat's subscribe_msg_sent_event ------------------------------------------------------------------
def _early_event_key(appid: str, msgid: int) -> str:
    return f"delivery:sent-event:{appid}:{msgid}"


def record_sent_event(app, msgid: int | None, errcode: int | None, errstatus: str = "") -> str:
    """WeChat's final word on a subscribe send: a failure turns the delivery from sent to failed. An event
    that arrives before the send's answer was recorded (WeChat can be that fast) is parked in the cache
    for the chunk that records the answer."""
    if msgid is None or not errcode:
        return "ok"
    row = (
        Delivery.objects.filter(msgid=msgid, push__app=app, status=Delivery.Status.SENT)
        .values_list("pk", "push_id")
        .first()
    )
    if row is None:
        if not Delivery.objects.filter(msgid=msgid, push__app=app).exists():
            cache.set(_early_event_key(app.appid, msgid), [errcode, errstatus or ""], timeout=86_400)
            return "early"
        return "unchanged"
    with transaction.atomic():
        Push.objects.select_for_update().filter(pk=row[1]).values_list("pk", flat=True).first()  # lock order
        updated = Delivery.objects.filter(pk=row[0], status=Delivery.Status.SENT).update(
            status=Delivery.Status.FAILED,
            errcode=str(errcode),
            errmsg=(errstatus or "")[:255],
            updated_at=timezone.now(),
        )
        if updated:
            Push.objects.filter(pk=row[1]).update(sent=F("sent") - 1, failed=F("failed") + 1)
    return "failed" if updated else "unchanged"


def _apply_early_events(push: Push, rows: list[Delivery]) -> None:
    keys = {_early_event_key(push.app.appid, row.msgid): row.msgid for row in rows}
    early = cache.get_many(list(keys)) if keys else {}
    for key, (errcode, errstatus) in early.items():
        if record_sent_event(push.app, keys[key], errcode, errstatus) == "failed":
            cache.delete(key)


# --- beat: scheduled and stalled pushes ------------------------------------------------------------------
def start_due_pushes(now: datetime | None = None) -> int:
    """Scheduled pushes whose send_at has come: queued (once), explicit recipients claimed, delivery queued."""
    now = now or timezone.now()
    due = list(
        Push.objects.filter(status=Push.Status.SCHEDULED, send_at__lte=now)
        .order_by("send_at")
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    started = 0
    for push_id in due:
        push = _load_push(push_id)
        if push and _start_scheduled(push):
            touch_progress(push_id, force=True)
            enqueue("deliver_push", str(push_id))
            started += 1
    return started


def resume_stalled_pushes(stall_seconds: float | None = None) -> int:
    """Pushes with work left and no progress for DELIVERY_STALL_AFTER: their tasks died with a worker (or
    were never queued). Re-queue the enumeration and the pending deliveries; duplicates are harmless.
    A push whose rows are all settled but whose status was never moved on is finished here."""
    stall = stall_after() if stall_seconds is None else stall_seconds
    now, wall = timezone.now(), time.time()
    threshold = now - timedelta(seconds=stall)
    candidates = Push.objects.filter(
        Q(status__in=ACTIVE) | Q(status=Push.Status.CANCELED, pending__gt=0)
    ).values_list("pk", "status", "enumerated", "created_at")
    resumed = 0
    for push_id, status, enumerated, created_at in candidates:
        last = cache.get(_progress_key(push_id))
        if (last is not None and last > wall - stall) or (last is None and created_at > threshold):
            continue
        touch_progress(push_id, force=True)
        if status == Push.Status.QUEUED or (status == Push.Status.RUNNING and not enumerated):
            if cache.get(_lock_key(push_id)) is None:
                enqueue("deliver_push", str(push_id))
                resumed += 1
        pending = Delivery.objects.filter(push_id=push_id, status=Delivery.Status.PENDING)
        cursor, size, any_pending = 0, settings.PUSH_CHUNK_SIZE, False
        while ids := list(pending.filter(pk__gt=cursor).order_by("pk").values_list("pk", flat=True)[:size]):
            _enqueue_chunk(push_id, ids)
            cursor, any_pending = ids[-1], True
        if any_pending:
            resumed += 1
        elif status in ACTIVE and enumerated:
            reconcile_counters(push_id)
            _maybe_finish(push_id)
        elif status == Push.Status.CANCELED:
            reconcile_counters(push_id)
    return resumed


def reconcile_counters(push_id: Any) -> bool:
    """Recount a push's counters from its rows (a repair for the sweep; the pipeline keeps them exact)."""
    counts = dict.fromkeys(Delivery.Status.values, 0)
    for status, n in Delivery.objects.filter(push_id=push_id).values_list("status").annotate(n=Count("pk")):
        counts[status] = n
    push = Push.objects.filter(pk=push_id).first()
    if push is None:
        return False
    wanted = {
        "sent": counts["sent"],
        "failed": counts["failed"],
        "no_credit": counts["no_credit"],
        "pending": counts["pending"],
        "recipients": sum(counts.values()) + (push.opted_out or 0),
    }
    if all(getattr(push, name) == value for name, value in wanted.items()):
        return False
    log.warning("push %s: counters %s repaired from its deliveries", push_id, wanted)
    Push.objects.filter(pk=push_id).update(**wanted)
    return True

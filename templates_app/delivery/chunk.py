"""``deliver_chunk``: send one chunk of a push's deliveries, settle each answer, retry what is transient.

A chunk renews its credit claims, marks each window of sends as this run's (``ledger.mark_attempts``),
sends them on the process's sending loop (``send_pool``) under the app's rate limit, and writes the answers
as they arrive. After 41028/41029 it tries the user's next credit; transient failures go back to the queue
with backoff; what it has no time for goes back untouched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone
from redis.exceptions import RedisError

from formids import services as credits
from formids.models import Credit
from pushhub.sql import any_of, pg_array, prepared_cursor
from pushhub.wechat.client import WeChatClient
from templates_app.delivery import lanes, ledger, queue
from templates_app.delivery.job import ChunkReport, Job, Row
from templates_app.delivery.outcomes import (
    CANCELED,
    EXHAUST,
    FAILED,
    LOST_ATTEMPT,
    MAX_CREDITS_PER_DELIVERY,
    NEXT_CREDIT,
    NO_CREDIT,
    NOTHING,
    RELEASE,
    RETRY,
    SENT,
    Outcome,
    classify,
)
from templates_app.delivery.progress import touch_progress
from templates_app.delivery.send_pool import SendPool, SendRateLimiter, current_token, sender
from templates_app.delivery.timing import chunk_budget, in_flight_lease, retry_countdown
from templates_app.models import Delivery, Push
from templates_app.pushes.recipients import claim_for_push
from webhooks import outbox

log = logging.getLogger(__name__)

# A round's answers are written at least every FLUSH_SECONDS (and every FLUSH_ANSWERS): what a dead worker
# takes with it is a second of answers, not a whole chunk's (for subscribe credits: reported ambiguous).
# Measured on the broadcast bench: writing every 128 answers tripled PostgreSQL's CPU per delivery.
FLUSH_ANSWERS = 500
FLUSH_SECONDS = 1.0
# What a send loop survives by stopping early (the rest is queued again, or found by the stall sweep).
INFRASTRUCTURE_ERRORS = (DatabaseError, RedisError, OSError)


def deliver_chunk(push_id: Any, delivery_ids: Iterable[int]) -> dict[str, int]:
    """Send the chunk's pending deliveries. Idempotent: finished deliveries are skipped, those another run
    is sending are left to it (and looked at again after the in-flight lease)."""
    report = ChunkReport()
    outbox.forget_interest()  # its finish may reuse only what this chunk's own write read
    push = ledger.load_push(push_id)
    if push is None:
        return vars(report)
    lanes.remember(push)  # its requeues and the share's bookkeeping then need no look-up of its lane
    now = timezone.now()
    loaded, claims_current = _load_jobs(push, delivery_ids, now)
    if not loaded:
        ledger.maybe_finish(push.pk, push.tenant_id)
        return vars(report)
    touch_progress(push.pk)
    if push.status == Push.Status.QUEUED:  # queued straight to its one chunk (start_push): it starts here
        ledger.mark_running(push.pk, now)
    lease = in_flight_lease()
    jobs, decided, in_flight = [], [], []
    for job in loaded:
        row = job.delivery
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
        queue.enqueue_chunk(push.pk, [pk for pk, _ in in_flight], countdown=max(w for _, w in in_flight) + 1)
    if push.status not in ledger.ACTIVE:
        if push.status == Push.Status.CANCELED:
            report.add(ledger.write(push, decided + [(job, CANCELED) for job in jobs]))
        else:
            report.skipped = len(jobs)
        return vars(report)
    jobs, no_credit = _ensure_credits(push, jobs, renew=not claims_current)
    report.add(ledger.write(push, decided + no_credit))
    _send_chunk(push, jobs, report)
    ledger.maybe_finish(push.pk, push.tenant_id)
    return vars(report)


# Claims younger than a third of the lease are left as they are (no write): the stale sweep cannot take them
# while this chunk is sent.
def _fresh_enough() -> timedelta:
    return timedelta(seconds=settings.CREDIT_CLAIM_LEASE / 3)


def _load_jobs(push: Push, delivery_ids: Iterable[int], now) -> tuple[list[Job], bool]:
    """The chunk's pending deliveries by id with their credits, and whether every credit is still the push's
    to send with and was claimed less than a third of the lease ago (then ``_ensure_credits`` has nothing
    to renew and asks nothing). One query of tuples: model instances (a Delivery and a Credit per row) were
    a tenth of a broadcast worker's CPU."""
    holder, young = push.claim_holder, now - _fresh_enough()
    rows = (
        _job_rows_postgresql(push, delivery_ids)
        if connection.vendor == "postgresql"
        # = ANY(array), a primary-key probe per id: IN (SELECT unnest(…)) was planned as a merge join over
        # every row of the push with that status (the push's statistics are stale while it is written).
        else (
            Delivery.objects.filter(
                any_of(Delivery, "id", [int(pk) for pk in delivery_ids], "bigint"),
                push=push,
                status=Delivery.Status.PENDING,
            )
            .order_by("pk")
            .values_list(
                "pk",
                "openid",
                "attempts",
                "credit_id",
                "updated_at",
                "errcode",
                "errmsg",
                "credit__kind",
                "credit__value",
                "credit__state",
                "credit__claimed_by",
                "credit__claimed_at",
            )  # fmt: skip
        )
    )
    jobs, current = [], True
    for pk, openid, attempts, credit_id, updated_at, errcode, errmsg, kind, value, state, by, at in rows:
        row = Row(pk, openid, attempts, credit_id, updated_at, errcode, errmsg)
        jobs.append(Job(row, attempts, credit_id, kind or "", value or ""))
        if credit_id is None:
            continue
        if state == Credit.State.CLAIMED:
            current = current and by == holder and (at is None or at >= young)
        else:  # only a standing long-term subscription is sent with unclaimed (credits._held_by)
            current = current and kind == Credit.Kind.LONG_TERM and state == Credit.State.AVAILABLE
    return jobs, current


def _job_rows_postgresql(push: Push, delivery_ids: Iterable[int]) -> list[tuple]:
    """``_load_jobs``' query as fixed SQL (its ORM compile, a join and twelve columns, was a tenth of a
    one-user push's worker CPU), the same columns in the same order."""
    delivery, credit = Delivery._meta.db_table, Credit._meta.db_table
    ids = [int(pk) for pk in delivery_ids]
    with prepared_cursor(len(ids)) as cursor:
        cursor.execute(
            f"SELECT d.id, d.openid, d.attempts, d.credit_id, d.updated_at, d.errcode, d.errmsg,"
            f" c.kind, c.value, c.state, c.claimed_by, c.claimed_at"
            f" FROM {delivery} AS d LEFT JOIN {credit} AS c ON c.id = d.credit_id"
            f" WHERE d.id = ANY(%s::bigint[]) AND d.push_id = %s AND d.status = %s ORDER BY d.id",
            [
                pg_array(ids, "bigint"),
                ledger.push_pk(push.pk),
                Delivery.Status.PENDING.value,
            ],
        )
        return cursor.fetchall()


def _ensure_credits(
    push: Push, jobs: list[Job], *, renew: bool = True
) -> tuple[list[Job], list[tuple[Job, Outcome]]]:
    """Renew the chunk's claims (a chunk may have waited in the queue; ``renew=False``: the caller saw them
    all current); a claim lost to the stale sweep, or a delivery left without a credit, gets the user's next
    usable credit, or ends as no_credit."""
    holder = push.claim_holder
    held = [job.credit_id for job in jobs if job.credit_id]
    if (
        renew
        and held
        and credits.refresh_claims(held, holder, unless_younger_than=_fresh_enough()) < len(held)
    ):
        still = credits.still_held(held, holder)
        for job in jobs:
            if job.credit_id and job.credit_id not in still:
                log.warning("push %s: claim on credit %s was lost; claiming another", push.pk, job.credit_id)
                job.credit_id = None
    missing = [job for job in jobs if not job.credit_id]
    if not missing:
        return jobs, []
    claimed = claim_for_push(push, [job.delivery.openid for job in missing])
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


def _send_chunk(push: Push, jobs: list[Job], report: ChunkReport) -> None:
    """Send, settle, and for 41028/41029 try the user's next credit (up to 3 in all); transient failures
    are written as such and re-queued with backoff. Answers are written as they arrive, at least every
    FLUSH_SECONDS, so a worker that dies mid-chunk leaves at most a second of attempts unrecorded; if Redis or
    the database fails under the chunk, it stops starting sends, writes what was answered and queues the rest."""
    deadline = time.monotonic() + chunk_budget()
    limit = int(settings.DELIVERY_MAX_ATTEMPTS)
    retry: list[Job] = []
    next_credit: list[Job] = []  # this round's 41028/41029: the user's next credit

    def settle(answered: list[tuple[Job, dict | None, BaseException | None]]) -> None:
        outcomes: list[tuple[Job, Outcome]] = []
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
        report.add(ledger.write_retrying(push, outcomes))

    while jobs:
        next_credit.clear()
        leftover, canceled, interrupted = _send_round(push, jobs, deadline, settle)
        if canceled:
            report.add(ledger.write(push, [(job, CANCELED) for job in leftover]))
        elif interrupted:  # Redis or the database failed: the rest (and next credits) later
            _requeue(push, leftover + next_credit, report, countdown=2.0)
            break
        elif leftover:  # out of time: the rest goes back to the queue, untouched
            _requeue(push, leftover, report)
        jobs = _next_credits(push, list(next_credit), report)
    _schedule_retries(push, retry, report)


def _requeue(push: Push, jobs: list[Job], report: ChunkReport, countdown: float | None = None) -> None:
    """Queue ``jobs`` as a new chunk. If the broker is down too, the stall sweep finds them later: they are
    pending deliveries with no attempt in flight."""
    if not jobs:
        return
    try:
        queue.enqueue_chunk(push.pk, [job.delivery.pk for job in jobs], countdown=countdown)
    except Exception:
        log.warning("push %s: %d deliveries left for the stall sweep", push.pk, len(jobs), exc_info=True)
        return
    report.requeued += len(jobs)


def _next_credits(push: Push, jobs: list[Job], report: ChunkReport) -> list[Job]:
    """After 41028/41029 (the old credit is spent and detached): claim the user's next credit."""
    live = [job for job in jobs if job.credit_id is None]  # _write detaches only what it applied
    if not live:
        return []
    claimed = claim_for_push(push, [job.delivery.openid for job in live])
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
    report.add(ledger.write(push, exhausted))
    return ready


def _schedule_retries(push: Push, retry: list[Job], report: ChunkReport) -> None:
    """Queue the deliveries answered with a transient error (already written as such) with backoff."""
    ids = [job.delivery.pk for job in retry if job.delivery.status == Delivery.Status.PENDING]
    if not ids:
        return
    try:
        queue.enqueue_chunk(push.pk, ids, countdown=retry_countdown(max(job.attempts for job in retry)))
    except Exception:  # the broker is down: the stall sweep queues them (pending, with their errcode)
        log.warning("push %s: %d retries left for the stall sweep", push.pk, len(ids), exc_info=True)
        return
    report.retrying = len(ids)


def _send_round(
    push: Push,
    jobs: list[Job],
    deadline: float,
    settle: Callable[[list[tuple[Job, dict | None, BaseException | None]]], None],
) -> tuple[list[Job], bool, bool]:
    """Mark and send ``jobs`` SEND_CONCURRENCY at a time under the app's rate limit, handing the answers to
    ``settle`` a batch at a time. Returns (jobs not started, whether the push was canceled meanwhile,
    whether Redis or the database failed under the round)."""
    concurrency = max(int(settings.SEND_CONCURRENCY), 1)
    limiter = SendRateLimiter(push.app.appid, int(settings.SEND_RATE_PER_APP))
    client = WeChatClient.for_app(push.app)
    pool = SendPool(min(concurrency, len(jobs)), sender(push, client))
    leftover: list[Job] = []
    canceled = interrupted = False
    # The push's status was read when the chunk started, and a cancel fails the unsent rows, which
    # mark_attempts then leaves alone: the first look is due after a while, not before the first window.
    next_status_check = time.monotonic() + 0.5
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
                token = current_token(client)
                marked = ledger.mark_attempts(window)
            except INFRASTRUCTURE_ERRORS:
                log.warning(
                    "push %s: Redis or the database failed; sending stops here", push.pk, exc_info=True
                )
                leftover, interrupted = jobs[index:], True
                break
            index += len(window)
            pool.submit_all(marked, token)
            touch_progress(push.pk)
            pool.wait_below(concurrency)  # at most one window marked ahead of the sends
            if pool.answered() >= FLUSH_ANSWERS or time.monotonic() - last_flush >= FLUSH_SECONDS:
                settle(pool.take_results())
                last_flush = time.monotonic()
    finally:
        pool.close()
    settle(pool.take_results())
    return leftover, canceled, interrupted

"""Every write of the delivery pipeline to pushes, deliveries and credits.

- ``mark_attempts``: the guarded mark that makes a run the only sender of a delivery (committed before the
  request leaves).
- ``write`` (and ``write_retrying``): outcomes onto rows still pending with this run's attempt, with the
  push counters and the credits' consume/release, in one transaction.
- ``maybe_finish``: running → done once nothing is pending; ``reconcile_counters`` repairs counters.
- ``record_sent_event``: WeChat's subscribe_msg_sent_event, which can turn a sent delivery into a failed one.
- ``pending_delivery_holds_credit``: the claim-owner hook for formids' stale-claim sweep.

Lock order, everywhere: the push row, then the delivery rows in id order.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from django.core.cache import cache
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Count, Exists, F, OuterRef
from django.db.models.functions import Coalesce
from django.utils import timezone
from redis.exceptions import RedisError

from formids import funnel
from formids import services as credits
from formids.models import Credit
from pushhub import metrics
from pushhub.sql import CompiledSelect, execute_together, pg_array, prepared_cursor
from templates_app import inbox, webhook_events
from templates_app.delivery.job import ChunkReport, Job
from templates_app.delivery.outcomes import (
    CONSUME,
    EXHAUST,
    FAILED,
    KEEP,
    NEXT_CREDIT,
    NO_CREDIT,
    RELEASE,
    SENT,
    Outcome,
)
from templates_app.models import Delivery, Push, Template
from webhooks import outbox

log = logging.getLogger(__name__)

ACTIVE = (Push.Status.QUEUED, Push.Status.RUNNING)
# A write of known answers that loses its database connection is tried again on a new one after these
# pauses (seconds): the answers exist nowhere else.
WRITE_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0)


# [:1], not first() and its ORDER BY; compiled once per connection (the ORM building it was most of a one-user
# push's look-up).
_PUSH_BY_PK = CompiledSelect(lambda pk: Push.objects.select_related("template", "app").filter(pk=pk)[:1])


def load_push(push_id: Any) -> Push | None:
    found = _PUSH_BY_PK.fetch(push_pk(push_id))
    return found[0] if found else None


def mark_running(push_id: Any, now: datetime) -> None:
    """queued → running (once: whichever of deliver_push and a first chunk comes first)."""
    if connection.vendor == "postgresql":  # fixed SQL: a one-user push's chunk runs it, the ORM compiled it
        with prepared_cursor() as cursor:
            cursor.execute(
                f"UPDATE {Push._meta.db_table} SET status = %s, started_at = COALESCE(started_at, %s)"
                " WHERE id = %s AND status = %s",
                [Push.Status.RUNNING.value, now, push_pk(push_id), Push.Status.QUEUED.value],
            )
        return
    Push.objects.filter(pk=push_id, status=Push.Status.QUEUED).update(
        status=Push.Status.RUNNING, started_at=Coalesce(F("started_at"), now)
    )


# How old an answer of outbox.interest the push's finish may take from the chunk's own last write (seconds).
INTEREST_REUSE_SECONDS = 1.0


def maybe_finish(push_id: Any, tenant_id: int | None = None) -> bool:
    """running → done once every recipient is enumerated and nothing is pending or held (a conditional UPDATE:
    whichever of the last chunk and the enumerator comes second does it). ``tenant_id``, the push's, when
    the caller has it: the finished push is then read only if a webhook endpoint wants it, and when none
    wants ``push.finished`` the UPDATE runs alone, autocommitted: a transaction has nothing to hold with it
    (its BEGIN, COMMIT and a second read of the interest were three of a one-user push's worker round
    trips)."""
    if tenant_id is not None and connection.vendor == "postgresql" and not connection.in_atomic_block:
        known = outbox.interest(tenant_id, reuse_within=INTEREST_REUSE_SECONDS)
        if not known.wants(outbox.PUSH_FINISHED):
            finished = _finish_postgresql(push_id)
            if finished:
                metrics.after_commit(metrics.push_finished, Push.Status.DONE)  # now: autocommitted
            return finished
    with transaction.atomic():
        if connection.vendor == "postgresql":
            finished = _finish_postgresql(push_id)
        else:
            # Held deliveries are unfinished too: they wait for a credit until the push's hold ends.
            pending = Delivery.objects.filter(
                push_id=OuterRef("pk"), status__in=[Delivery.Status.PENDING, Delivery.Status.HELD]
            )
            finished = bool(
                Push.objects.filter(pk=push_id, status__in=ACTIVE, enumerated=True)
                .filter(~Exists(pending))
                .update(status=Push.Status.DONE, finished_at=timezone.now())
            )
        if finished:
            webhook_events.push_finished(push_id, tenant_id)  # the outbox: committed with the status
            metrics.after_commit(metrics.push_finished, Push.Status.DONE)
    return finished


def _finish_postgresql(push_id: Any) -> bool:
    """``maybe_finish``'s UPDATE as fixed SQL: every chunk's end runs it, and the ORM's compile of it (the
    NOT EXISTS of pending or held rows: held ones wait for a credit until the push's hold ends) was a sixth of
    a one-user push's worker CPU."""
    push, delivery = Push._meta.db_table, Delivery._meta.db_table
    with prepared_cursor() as cursor:
        cursor.execute(
            f"UPDATE {push} AS p SET status = %s, finished_at = %s"
            " WHERE p.id = %s AND p.status = ANY(%s::text[]) AND p.enumerated"
            f" AND NOT EXISTS (SELECT 1 FROM {delivery} AS d WHERE d.push_id = p.id AND d.status = ANY(%s::text[]))",
            [
                Push.Status.DONE.value,
                timezone.now(),
                push_pk(push_id),
                pg_array([status.value for status in ACTIVE], "text"),
                pg_array([Delivery.Status.PENDING.value, Delivery.Status.HELD.value], "text"),
            ],
        )
        return cursor.rowcount > 0


def push_pk(push_id: Any):
    """A push id (a UUID or its text) as the database takes it, for the fixed SQL here and in chunk.py."""
    return Push._meta.pk.get_db_prep_value(Push._meta.pk.to_python(push_id), connection)


def mark_attempts(jobs: list[Job]) -> list[Job]:
    """Take the jobs for this run: attempts n → n+1 where the row is still pending with n attempts (and
    attach a newly claimed credit). Committed before any of them is sent."""
    now = timezone.now()
    if connection.vendor == "postgresql":
        # One statement, atomic and committed on its own: no transaction around it (its BEGIN and COMMIT
        # were two more round trips per window of sends).
        marked = _mark_attempts_sql(jobs, now)
        won = [job for job in jobs if job.delivery.pk in marked]
    else:
        with transaction.atomic():
            won = _mark_attempts_orm(jobs, now)
    for job in won:
        row = job.delivery
        row.attempts, row.errcode, row.errmsg = job.attempts + 1, "", ""
        row.credit_id, row.updated_at = job.credit_id, now
        job.earlier_attempt = job.attempts > 0 and not job.fresh_credit
        job.fresh_credit = False  # from now on an attempt has used it
        job.attempts += 1
    lost = len(jobs) - len(won)
    if lost:
        log.info("%s deliveries are being sent by another run; skipped", lost)
    return won


def _mark_attempts_orm(jobs: list[Job], now) -> list[Job]:
    """Other databases (SQLite in development): lock, compare, update; the jobs won."""
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
    for job in won:
        if job.delivery.credit_id != job.credit_id:
            Delivery.objects.filter(pk=job.delivery.pk).update(credit_id=job.credit_id)
    return won


def _mark_attempts_sql(jobs: list[Job], now) -> set[int]:
    """PostgreSQL: the same in one statement (lock the pending rows in id order, as every writer does, then
    bump the attempts of those still at the attempt this run saw, with the credit it uses); the ids won.
    Three ORM queries per window of sends were a tenth of a broadcast worker's CPU."""
    table = Delivery._meta.db_table
    ids = pg_array([job.delivery.pk for job in jobs], "bigint")
    with prepared_cursor(len(jobs)) as cursor:
        cursor.execute(
            f"""
            WITH locked AS (
                SELECT id FROM {table} WHERE id = ANY(%s::bigint[]) AND status = 'pending' ORDER BY id FOR UPDATE
            )
            UPDATE {table} AS d
            SET attempts = d.attempts + 1, errcode = '', errmsg = '', updated_at = %s, credit_id = v.credit_id
            FROM locked JOIN unnest(%s::bigint[], %s::int[], %s::bigint[]) AS v(id, attempts, credit_id)
                ON v.id = locked.id
            WHERE d.id = locked.id AND d.attempts = v.attempts
            RETURNING d.id
            """,
            [
                ids,
                now,
                ids,
                pg_array([job.attempts for job in jobs], "int"),
                pg_array([job.credit_id for job in jobs], "bigint"),
            ],
        )
        return {pk for (pk,) in cursor.fetchall()}


def write(push: Push, outcomes: list[tuple[Job, Outcome]]) -> ChunkReport:
    """Apply outcomes to rows still pending with the attempts this run saw, with their credits and the
    push counters, in one transaction."""
    report = ChunkReport()
    if not outcomes:
        return report
    holder = push.claim_holder
    now = timezone.now()
    settle: dict[str, list[int]] = {CONSUME: [], EXHAUST: [], RELEASE: [], KEEP: []}
    # What each row becomes: (job, outcome, status, credit it keeps, whether its credit is detached).
    plans = []
    for job, outcome in outcomes:
        row = job.delivery
        credit_id = None if outcome.action == NEXT_CREDIT else job.credit_id  # the spent one is detached
        status = _STATUS_OF.get(outcome.action, row.status)
        plans.append((job, outcome, status, credit_id, row.credit_id is not None and credit_id is None))
    rows = []
    with transaction.atomic():
        _lock_push(push.pk)  # lock order: the push row, then its delivery rows
        written = _write_rows(plans, now)  # only rows still pending with this run's attempt
        attempted_failures = 0
        spent: list[str] = []  # users whose credit this write consumed (maybe their last: user.unreachable)
        tally: dict[tuple[str, str], int] = {}
        for job, outcome, status, credit_id, _detach in plans:
            row = job.delivery
            if row.pk not in written:
                continue  # settled or taken over by another run meanwhile
            if job.credit_id and outcome.settle in settle:
                settle[outcome.settle].append(job.credit_id)
                # A long-term send leaves its subscription standing: only its end (43101) may be the last.
                standing = job.credit_kind == Credit.Kind.LONG_TERM and outcome.settle == CONSUME
                if outcome.settle in (CONSUME, EXHAUST) and not standing:
                    spent.append(row.openid)
            row.status, row.errcode, row.errmsg, row.updated_at = (
                status,
                outcome.errcode,
                outcome.errmsg[:255],
                now,
            )
            job.credit_id = row.credit_id = credit_id
            if status == Delivery.Status.SENT:
                row.sent_at = now
                report.sent += 1
            elif status == Delivery.Status.FAILED:
                report.failed += 1
                attempted_failures += outcome.errcode != "canceled"
            elif status == Delivery.Status.NO_CREDIT:
                report.no_credit += 1
            rows.append(row)
            # Metrics: a row still pending was answered with a transient error or a spent formId: "retry".
            key = ("retry" if status == Delivery.Status.PENDING else status, row.errcode)
            tally[key] = tally.get(key, 0) + 1
        if not rows:
            return report
        sent_rows = [row for row in rows if row.status == Delivery.Status.SENT]
        if sent_rows and push.app.inbox_enabled:
            inbox.add_sent(push, sent_rows, now)  # one INSERT, committed with the statuses
        if settle[CONSUME]:
            credits.consume(settle[CONSUME], holder)
        if settle[EXHAUST]:
            credits.consume(settle[EXHAUST], holder, exhausted=True)
            credits.end_subscriptions(settle[EXHAUST])  # 43101 on a long-term subscription: it ends
        if settle[RELEASE]:
            credits.release(settle[RELEASE], holder)
        if settle[KEEP]:
            credits.refresh_claims(settle[KEEP], holder)
        finished = report.sent + report.failed + report.no_credit
        if finished:
            # The push's counters and the day's rows (app and template) in one round trip.
            table = Push._meta.db_table
            counters = (
                f"UPDATE {table} SET sent = sent + %s, failed = failed + %s, "
                "no_credit = COALESCE(no_credit, 0) + %s, pending = pending - %s WHERE id = %s",
                [
                    report.sent,
                    report.failed,
                    report.no_credit,
                    finished,
                    push_pk(push.pk),
                ],  # fmt: skip
            )
            day_rows = credits.send_outcome_statements(
                push.app, template_id=push.template.template_id, sent=report.sent, failed=attempted_failures
            )
            execute_together([*day_rows, counters])
        # deliveries.failed and user.unreachable, in this transaction (the outbox).
        webhook_events.after_outcomes(
            push, [row for row in rows if row.status == Delivery.Status.FAILED], spent
        )
        # Metrics: one inc(n) per (outcome, errcode) once committed, never one per delivery.
        metrics.after_commit(metrics.deliveries, tally)
    if report.sent and push.template.kind == Template.Kind.SUBSCRIBE:
        try:
            _apply_early_events(
                push, [row for row in rows if row.status == Delivery.Status.SENT and row.msgid]
            )
        except RedisError:  # the early events were in Redis: gone with it (the status stays "sent")
            log.warning("push %s: early sent-events not read", push.pk, exc_info=True)
    return report


def _lock_push(push_id: Any) -> None:
    if connection.vendor == "postgresql":  # fixed SQL: the ORM compiled this look-up on every flush
        with prepared_cursor() as cursor:
            cursor.execute(
                f"SELECT id FROM {Push._meta.db_table} WHERE id = %s FOR UPDATE", [push_pk(push_id)]
            )
        return
    Push.objects.select_for_update().filter(pk=push_id).values_list("pk", flat=True).first()


_STATUS_OF = {
    SENT: Delivery.Status.SENT,
    FAILED: Delivery.Status.FAILED,
    NO_CREDIT: Delivery.Status.NO_CREDIT,
}


def _write_rows(plans: list[tuple], now: datetime) -> set[int]:
    """Write each planned row that is still pending with the attempts its job saw (locked in id order, as
    every writer does); the ids written. A spent credit is detached (set to NULL); a subscribe send's msgid
    goes on with its status.

    On PostgreSQL one statement with the rows' values as arrays: a locking SELECT, then an UPDATE per group
    of equal outcomes and a bulk_update of the msgids cost three to four round trips and the ORM's work for
    each. Elsewhere (SQLite in development) the ORM."""
    if connection.vendor == "postgresql":
        table = Delivery._meta.db_table
        ids = pg_array([job.delivery.pk for job, *_ in plans], "bigint")
        with prepared_cursor(len(plans)) as cursor:
            cursor.execute(
                f"""
                WITH locked AS (
                    SELECT id FROM {table} WHERE id = ANY(%s::bigint[]) AND status = 'pending' ORDER BY id FOR UPDATE
                )
                UPDATE {table} AS d
                SET status = v.status, errcode = v.errcode, errmsg = v.errmsg, updated_at = %s,
                    sent_at = CASE WHEN v.status = 'sent' THEN %s ELSE d.sent_at END,
                    credit_id = CASE WHEN v.detach THEN NULL ELSE d.credit_id END,
                    msgid = COALESCE(v.msgid, d.msgid)
                FROM locked JOIN unnest(%s::bigint[], %s::int[], %s::text[], %s::text[], %s::text[], %s::bool[],
                                        %s::bigint[]) AS v(id, attempts, status, errcode, errmsg, detach, msgid)
                    ON v.id = locked.id
                WHERE d.id = locked.id AND d.attempts = v.attempts
                RETURNING d.id
                """,
                [
                    ids,
                    now,
                    now,
                    ids,
                    pg_array([job.attempts for job, *_ in plans], "int"),
                    pg_array([status for _, _, status, _, _ in plans], "text"),
                    pg_array([outcome.errcode for _, outcome, *_ in plans], "text"),
                    pg_array([outcome.errmsg[:255] for _, outcome, *_ in plans], "text"),
                    pg_array([detach for *_, detach in plans], "bool"),
                    pg_array(
                        [
                            job.delivery.msgid if status == Delivery.Status.SENT else None
                            for job, _, status, _, _ in plans
                        ],
                        "bigint",
                    ),
                ],
            )
            return {pk for (pk,) in cursor.fetchall()}
    current = dict(
        Delivery.objects.select_for_update()
        .filter(pk__in=[job.delivery.pk for job, *_ in plans], status=Delivery.Status.PENDING)
        .order_by("pk")
        .values_list("pk", "attempts")
    )
    written = set()
    for job, outcome, status, _credit_id, detach in plans:
        if current.get(job.delivery.pk) != job.attempts:
            continue
        values = {
            "status": status,
            "errcode": outcome.errcode,
            "errmsg": outcome.errmsg[:255],
            "updated_at": now,
        }
        if status == Delivery.Status.SENT:
            values["sent_at"] = now
            if job.delivery.msgid is not None:
                values["msgid"] = job.delivery.msgid
        if detach:
            values["credit"] = None
        Delivery.objects.filter(pk=job.delivery.pk).update(**values)
        written.add(job.delivery.pk)
    return written


def write_retrying(push: Push, outcomes: list[tuple[Job, Outcome]]) -> ChunkReport:
    """``write``, again on a new connection if the database connection broke (PostgreSQL restarted, or
    the connection was dropped): these answers are known here and nowhere else, and a lost write turns sent
    messages into unrecorded attempts (sent again for a formId; reported ambiguous for a subscribe credit).
    Writing twice is harmless: a row is only written while it is pending with this run's attempt."""
    for delay in (*WRITE_RETRY_DELAYS, None):
        try:
            return write(push, outcomes)
        except (OperationalError, InterfaceError):
            # Inside a caller's transaction the connection is not ours to replace.
            if delay is None or connection.in_atomic_block:
                raise
            log.warning("push %s: writing %d outcomes failed; again in %.1f s", push.pk, len(outcomes), delay)
            connection.close()
            time.sleep(delay)
    raise AssertionError("unreachable")


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
            inbox.remove_failed(row[0])  # the user never got it: not in their inbox either
            failed = Delivery.objects.select_related("push__app", "push__template").get(pk=row[0])
            # The day's counters too (sent → failed on the day it was counted as sent).
            funnel.sent_turned_failed(
                app.pk, failed.push.template.template_id, (failed.sent_at or timezone.now()).date()
            )
            webhook_events.after_outcomes(failed.push, [failed], [])
            metrics.after_commit(metrics.deliveries, {("failed_by_event", str(errcode)): 1})
    return "failed" if updated else "unchanged"


def _apply_early_events(push: Push, rows: list[Delivery]) -> None:
    keys = {_early_event_key(push.app.appid, row.msgid): row.msgid for row in rows}
    early = cache.get_many(list(keys)) if keys else {}
    for key, (errcode, errstatus) in early.items():
        if record_sent_event(push.app, keys[key], errcode, errstatus) == "failed":
            cache.delete(key)


def pending_delivery_holds_credit() -> Exists:
    """For formids' stale-claim sweep: the credit (OuterRef "pk") is held by a pending delivery."""
    return Exists(Delivery.objects.filter(credit_id=OuterRef("pk"), status=Delivery.Status.PENDING))


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
        "held": counts["held"],
        "recipients": sum(counts.values()) + (push.opted_out or 0),
    }
    if all(getattr(push, name) == value for name, value in wanted.items()):
        return False
    log.warning("push %s: counters %s repaired from its deliveries", push_id, wanted)
    Push.objects.filter(pk=push_id).update(**wanted)
    return True

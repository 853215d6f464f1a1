"""Held deliveries (../shared/API.md "Hold until a credit arrives"): a push sent with ``hold`` keeps the
recipients who have no credit ``held`` until its ``hold_until``; they are sent to once they gain one.

- ``credits_arrived`` (formids' credit-arrival hook, called in the transaction that stored the credits): after
  the commit, one UPDATE over the (held) openid index marks the users' held deliveries, and only if it marked
  some, a release of the app is queued. An SDK upload asks first, in the statement that stores the credits,
  whether the user has a held delivery at all (``waiting_for_credit_sql``, formids' arrival probe: a probe of
  the same index), and marks only then: an upload of a user with no hold makes no second round trip.
- ``release_app`` (the ``release_holds`` task, and beat's ``sweep_holds``): for each of the app's pushes with
  marked deliveries, oldest push first, claim one credit per user for the push's template and turn those rows
  pending (their chunk is queued after the commit). A user with several holds gains them oldest first, one
  credit each: the pushes are claimed for one after another. Rows whose user still has no credit for the
  push's template lose the mark.
- ``expire_due`` (beat): holds past their end become ``no_credit``; a credit arriving later sends nothing.
- ``recheck`` (beat, every HOLD_RECHECK_SECONDS): marks the held deliveries whose user has a usable credit,
  for credits that came back by another way (a canceled push gave its claims back, a lost release task).

Lock order, as in the ledger: the push row, then its delivery rows; several held rows are always locked in
primary-key order (``update_in_pk_order``, and the release's ``FOR UPDATE … ORDER BY pk``), so a recheck,
an arrival, a release and an expiry running at once never deadlock (the holds benchmark saw a recheck and a
release do so before).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Case, Exists, F, Min, OuterRef, QuerySet, Value, When
from django.db.models.expressions import RawSQL
from django.utils import timezone

from formids.models import Credit
from formids.services import usable_q
from pushhub import metrics
from pushhub.sql import any_of, pg_array, texts_in
from templates_app.delivery import ledger, progress, queue
from templates_app.models import Delivery, Push
from templates_app.pushes.recipients import claim_for_push

log = logging.getLogger(__name__)

HELD = Delivery.Status.HELD
BATCH = 500  # held deliveries claimed for in one statement (a chunk's worth)


# --- a credit arrived ----------------------------------------------------------------------------------
def credits_arrived(app_id: int, openids: Iterable[str]) -> None:
    """formids stored usable credits for these users of the app: once that commits, mark their held
    deliveries and queue a release if there were any."""
    wanted = list(dict.fromkeys(o for o in openids if o))
    if wanted:
        transaction.on_commit(lambda: mark_arrivals(app_id, wanted))


def waiting_for_credit_sql() -> str:
    """The credit-arrival probe (formids.hooks): does the user {openid} have a held delivery? A probe of the
    ``delivery_held_openid`` index, in the statement of an SDK upload.

    By openid alone: WeChat gives each app its own openids, so the app's own check (a join to the push) would
    only ever change the answer where two apps share an openid (the sandbox can), and then the mark that
    follows, which is by app, finds nothing. Joined, the plan the upload's prepared statement kept from a
    moment when nothing was held walked the app's pushes for each probe. OFFSET 0 keeps it a subplan run
    for each uploader (one index probe), never a join of every held row."""
    delivery = Delivery._meta.db_table
    return f"EXISTS (SELECT 1 FROM {delivery} WHERE openid = {{openid}} AND status = '{HELD.value}' OFFSET 0)"


def mark_arrivals(app_id: int, openids: list[str], now: datetime | None = None) -> int:
    """Mark the users' held deliveries (the ``delivery_held_openid`` index) and queue the app's release;
    how many were marked. Never raises: the credit is stored whatever happens here, and the recheck finds
    what a failure here missed."""
    try:
        now = now or timezone.now()
        if connection.vendor == "postgresql":
            marked = _mark_postgresql(app_id, openids, now)
        else:
            marked = update_in_pk_order(
                Delivery.objects.filter(
                    status=HELD, openid__in=texts_in(openids), push__app_id=app_id, push__held__gt=0
                ),
                credit_arrived_at=now,
            )
        if marked:
            release_soon(app_id)
        return marked
    except Exception:
        log.exception("could not mark the held deliveries of app %s; the hold recheck will", app_id)
        return 0


def _mark_postgresql(app_id: int, openids: list[str], now: datetime) -> int:
    """``mark_arrivals``'s UPDATE as the fixed SQL ``update_in_pk_order`` makes of its query (the same plan:
    the ``delivery_held_openid`` partial index, rows locked in primary-key order), written out because every
    SDK upload runs it and building it through the ORM was a quarter of an upload's CPU.

    Not prepared: planned at each run, for the held rows there are then. The plan a prepared statement kept was
    made at its first runs, often while an app held nothing, and walked the app's held pushes and every held
    row of each (20 ms and more a call with 10,000 held; ``bench.holds`` stored 292–298 credits a second for
    held users that way, 837 planned each time). It runs only for a user the upload's probe found waiting."""
    delivery, push = Delivery._meta.db_table, Push._meta.db_table
    sql = (
        f"UPDATE {delivery} SET credit_arrived_at = %s WHERE {delivery}.id IN ("
        f"SELECT {delivery}.id FROM {delivery} INNER JOIN {push} ON ({delivery}.push_id = {push}.id) "
        f"WHERE {delivery}.openid IN (SELECT unnest(%s::text[])) AND {push}.app_id = %s "
        f"AND {push}.held > 0 AND {delivery}.status = '{HELD.value}' "
        f"ORDER BY 1 ASC FOR UPDATE OF {delivery})"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [now, pg_array(openids, "text"), app_id])
        return cursor.rowcount


def update_in_pk_order(rows: QuerySet, **values: Any) -> int:
    """``rows.update(**values)`` with the rows locked in primary-key order first, in the same statement
    (``UPDATE … WHERE id IN (SELECT id … ORDER BY id FOR UPDATE OF delivery)``): two statements writing
    overlapping sets of held rows then wait for each other instead of deadlocking. SQLite has no row locks."""
    if connection.vendor != "postgresql":
        return rows.update(**values)
    sql, params = rows.order_by("pk").values("pk").query.sql_with_params()
    table = connection.ops.quote_name(Delivery._meta.db_table)
    return Delivery.objects.filter(pk__in=RawSQL(f"{sql} FOR UPDATE OF {table}", params)).update(**values)


def _queued_key(app_id: Any) -> str:
    return f"holds:release:{app_id}"


def release_soon(app_id: int) -> None:
    """Queue ``release_holds`` for the app unless one is queued and has not started yet: a release takes
    every row marked before it starts (it drops the mark first), so arrivals in a burst share one, and an
    arrival marked after a release started queues the next. The key's timeout covers a lost task (the
    sweep releases meanwhile)."""
    if cache.add(_queued_key(app_id), 1, timeout=30):
        queue.enqueue("release_holds", app_id)


# --- releasing -----------------------------------------------------------------------------------------
RELEASE_LEASE = 60  # seconds: how long a dead worker's release keeps the app's others waiting
RELEASE_ROUNDS = 20  # rounds of one release task at most (arrivals keep coming): the sweep goes on from there


def _running_key(app_id: Any) -> str:
    return f"holds:releasing:{app_id}"


def release_app(app_id: Any, now: datetime | None = None) -> int:
    """Send to the app's held users who gained a credit (marked rows), oldest push first; how many
    deliveries became pending.

    One release of an app at a time: concurrent ones only queued behind each other's locks on the push row
    and on the same marked rows, and took the worker threads the released chunks needed (the holds benchmark
    saw releases of 50 rows take seconds, and messages wait 5 s). A release that finds another running
    leaves the rows to it: the running one looks for marked rows once more after letting go, and goes on if
    there are some (what arrived while it ran)."""
    cache.delete(_queued_key(app_id))  # from here on, a new arrival queues another release
    released = 0
    for _ in range(RELEASE_ROUNDS):
        if not cache.add(_running_key(app_id), 1, timeout=RELEASE_LEASE):
            break
        try:
            released += _release_marked(app_id, now)
        finally:
            cache.delete(_running_key(app_id))
        now = None
        if not _marked(app_id).exists():
            break
    return released


def _marked(app_id: Any) -> QuerySet:
    """The app's held rows that a credit arrival marked, in pushes still holding (an ended hold's rows wait
    for ``expire_due``)."""
    return Delivery.objects.filter(
        status=HELD,
        credit_arrived_at__isnull=False,
        push__app_id=app_id,
        push__held__gt=0,
        push__hold_until__gt=timezone.now(),
    )


def _release_marked(app_id: Any, now: datetime | None) -> int:
    started = now or timezone.now()
    pushes = _marked(app_id).values("push_id").annotate(first=Min("pk")).order_by("first")
    return sum(release_push(row["push_id"], started) for row in list(pushes))


def release_push(push_id: Any, started: datetime) -> int:
    """Claim for the push's marked held deliveries, BATCH at a time; how many became pending."""
    released = 0
    cursor = 0
    while True:
        with transaction.atomic():
            # The push row only: locking the app's row too (select_related's default) made every credit
            # insert of the app wait at its commit (the foreign key's check) until the release was done.
            push = (
                Push.objects.select_for_update(of=("self",))
                .select_related("app", "template")
                .filter(pk=push_id, status__in=ledger.ACTIVE)
                .first()
            )
            if push is None:
                return released
            # Locked here, in pk order: the updates below write only these rows.
            rows = list(
                Delivery.objects.filter(
                    push_id=push_id, status=HELD, credit_arrived_at__isnull=False, pk__gt=cursor
                )
                .order_by("pk")
                .select_for_update(of=("self",))
                .values_list("pk", "openid", "credit_arrived_at")[:BATCH]
            )
            if not rows:
                return released
            cursor = rows[-1][0]
            if push.hold_until is not None and push.hold_until <= timezone.now():
                return released  # ended: expire_due makes them no_credit
            claimed = claim_for_push(push, [openid for _, openid, _ in rows])
            ids = _turn_pending(rows, claimed)
            # Rows marked before this release began and still without a credit lose the mark; a row
            # marked since keeps it for the next release. (Held: locked above. By key alone, as _turn_pending.)
            unmarked = [pk for pk, openid, at in rows if openid not in claimed and at <= started]
            if unmarked:
                Delivery.objects.filter(any_of(Delivery, "id", unmarked, "bigint")).update(
                    credit_arrived_at=None
                )
            if ids:
                Push.objects.filter(pk=push_id).update(
                    held=F("held") - len(ids), pending=F("pending") + len(ids)
                )
                ledger.mark_running(push_id, timezone.now())
                transaction.on_commit(lambda ids=ids: _queue_chunk(push_id, ids))
            released += len(ids)


def _turn_pending(rows: list[tuple], claimed: dict) -> list[int]:
    """held → pending with its claimed credit, for the rows whose user got one (one UPDATE); their ids.

    ``rows`` are held rows ``release_push`` locked in this transaction, so they are written by primary key
    alone (``any_of``). With ``status = 'held'`` as well, statistics from before the rows were held let the
    planner read every held row of every push through the held index and hash them against the ids: 45–60 ms
    for 500 rows with 10,000 held (auto_explain, bench.holds)."""
    credit_of = {pk: claimed[openid].id for pk, openid, _ in rows if openid in claimed}
    if not credit_of:
        return []
    Delivery.objects.filter(any_of(Delivery, "id", list(credit_of), "bigint")).update(
        status=Delivery.Status.PENDING,
        credit_id=Case(*(When(pk=pk, then=Value(cid)) for pk, cid in credit_of.items())),
        credit_arrived_at=None,
    )
    return sorted(credit_of)


def _queue_chunk(push_id: Any, ids: list[int]) -> None:
    progress.touch_progress(push_id, force=True)
    try:
        queue.enqueue_chunk(push_id, ids)
    except Exception:  # a broker outage: the rows are pending, the stall sweep queues them
        log.exception("could not queue released holds of push %s; the stall sweep will", push_id)


# --- the end of a hold, and the beat -------------------------------------------------------------------
def expire_due(now: datetime | None = None) -> int:
    """Pushes whose hold has ended: their held deliveries become no_credit, and the push may finish."""
    now = now or timezone.now()
    expired = 0
    for push_id in list(
        Push.objects.filter(held__gt=0, hold_until__lte=now).values_list("pk", flat=True)[:1000]
    ):
        with transaction.atomic():
            push = Push.objects.select_for_update().filter(pk=push_id, held__gt=0).first()
            if push is None:
                continue
            n = update_in_pk_order(
                Delivery.objects.filter(push_id=push_id, status=HELD),
                status=Delivery.Status.NO_CREDIT,
                credit_arrived_at=None,
            )
            Push.objects.filter(pk=push_id).update(held=0, no_credit=F("no_credit") + n)
            expired += n
            metrics.after_commit(metrics.deliveries, {(Delivery.Status.NO_CREDIT, ""): n})
        ledger.maybe_finish(push_id)
    return expired


def recheck(now: datetime | None = None) -> int:
    """Mark the held deliveries of pushes still holding whose user has a usable credit, so the next release
    tries them: the catch-all for credits no arrival reported. At most once per HOLD_RECHECK_SECONDS (a
    cache mark). Only users with a credit: marking every held row had each recheck claim for all of them
    (10,000 in the holds benchmark), the p99's worst seconds."""
    if not cache.add("holds:recheck", 1, timeout=max(1, int(settings.HOLD_RECHECK_SECONDS))):
        return 0
    now = now or timezone.now()
    # The user by (app, openid), the miniuser_unique_openid index's two columns: with the app taken from the
    # credit instead, PostgreSQL walked the whole index for each held row (a 30 s recheck in the benchmark).
    with_credit = Exists(
        Credit.objects.filter(
            usable_q(now), user__app_id=OuterRef("push__app_id"), user__openid=OuterRef("openid")
        )
    )
    return update_in_pk_order(
        Delivery.objects.filter(
            with_credit,
            status=HELD,
            credit_arrived_at__isnull=True,
            push__held__gt=0,
            push__hold_until__gt=now,
        ),
        credit_arrived_at=now,
    )


def sweep(now: datetime | None = None) -> dict[str, int]:
    """Beat (every HOLD_SWEEP_SECONDS): end the holds that are due, recheck now and then, release what is
    marked in every app (what a lost ``release_holds`` task left)."""
    now = now or timezone.now()
    expired = expire_due(now)
    rechecked = recheck(now)
    apps = list(
        Delivery.objects.filter(status=HELD, credit_arrived_at__isnull=False, push__held__gt=0)
        .values_list("push__app_id", flat=True)
        .distinct()
    )
    released = sum(release_app(app_id) for app_id in apps)
    return {"expired": expired, "rechecked": rechecked, "released": released}

"""Credit pools: take credits in, hand them out (claim), and settle them (consume / release / expire).

Claims pick, per recipient, the usable credit that expires soonest, atomically: on PostgreSQL one
statement per chunk (a LATERAL pick per user with ``FOR UPDATE SKIP LOCKED``, so concurrent claimers
skip each other's rows instead of waiting), elsewhere a guarded ``UPDATE … WHERE state='available'`` per
user. Both use the partial indexes in formids.models: the cost depends on the number of recipients, not on
the size of the pool.

Long-term subscriptions (kind ``long_term``) are standing rows, one per user and template: an accept
starts one (a second accept adds nothing), a claim hands it out without changing it (so concurrent pushes
to the same subscriber each send), consume / release / refresh leave it standing, and it ends (→ expired)
on a reject / ban / change event (``end_long_term``) or WeChat's 43101 (``end_subscriptions``).
"""

from __future__ import annotations

import functools
import re
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from formids import funnel
from formids.funnel import add_to_counters, counter_rows_sql
from formids.hooks import (
    claim_owners,
    credit_arrival_probe_sql,
    credits_arrived,
    long_term_ids,
    subscribe_templates,
)
from formids.models import STAT_SHARDS, Credit, DailyStat, InboundEvent, MiniUser, TemplateDailyStat
from formids.webhook_events import subscriptions_changed
from pushhub import metrics
from pushhub.group_commit import RUN_ALONE, Group
from pushhub.sql import any_of, execute_together, pg_array, prepared_cursor, texts_in
from tenants.models import MiniProgram

FORMID_LIFETIME = timedelta(days=7)  # WeChat: a formId / prepay_id is valid 7 days
PREPAY_USES = 3  # WeChat: a prepay_id allows 3 template messages
MOCK_FORMID = "the formId is a mock one"  # what WeChat's developer tools hand out
# formIds are opaque to us; this only rejects what cannot be one (spaces, control characters, …).
FORMID_RE = re.compile(r"^[A-Za-z0-9_\-=+/.:]{6,128}$")
FORMID_KINDS = (Credit.Kind.FORMID, Credit.Kind.PREPAY)
SUBSCRIBE_KINDS = (Credit.Kind.SUBSCRIBE, Credit.Kind.LONG_TERM)  # the credits of one subscribe template
# SDK answers that turn a long-term template off in WeChat: its standing subscription ends.
ENDING_ANSWERS = ("reject", "ban")


def expiry_margin() -> timedelta:
    """How long before its expiry a formId stops being handed out (FORMID_EXPIRY_MARGIN seconds).

    Between a claim and WeChat's answer there are the queue, retries with backoff and clock skew
    between us and WeChat, and the SDK may upload a formId a while after the tap (it buffers, and keeps
    unsent ones across app restarts). The default hour covers all of these with room to spare and
    costs 0.6% of a formId's 7-day life.
    """
    return timedelta(seconds=settings.FORMID_EXPIRY_MARGIN)


def usable_q(now: datetime, prefix: str = "") -> Q:
    """Available credits not within the expiry margin (subscribe credits never expire)."""
    return Q(**{f"{prefix}state": Credit.State.AVAILABLE}) & (
        Q(**{f"{prefix}expires_at__isnull": True}) | Q(**{f"{prefix}expires_at__gt": now + expiry_margin()})
    )


# --- users ---------------------------------------------------------------------------------------
def touch_user(app: MiniProgram, openid: str, unionid: str = "", now: datetime | None = None) -> MiniUser:
    """The app's user with this openid, created on first sight. One read when nothing changed: last_seen is
    written only once the stored one is older than SDK_LAST_SEEN_RESOLUTION (5 minutes), the unionid only
    when WeChat gives a new one."""
    now = now or timezone.now()
    user = _find_user(app, openid)
    if user is None:
        try:
            with transaction.atomic():
                return MiniUser.objects.create(app=app, openid=openid, unionid=unionid, last_seen=now)
        except IntegrityError:  # created concurrently
            user = MiniUser.objects.get(app=app, openid=openid)
    changes = {}
    if now - user.last_seen > timedelta(seconds=settings.SDK_LAST_SEEN_RESOLUTION):
        changes["last_seen"] = now
    if unionid and user.unionid != unionid:
        changes["unionid"] = unionid
    if changes:
        MiniUser.objects.filter(pk=user.pk).update(**changes)
        for name, value in changes.items():
            setattr(user, name, value)
    return user


_USER_FIELDS = MiniUser._meta.concrete_fields


def _find_user(app: MiniProgram, openid: str) -> MiniUser | None:
    """The app's user with this openid, by the (app, openid) unique index. On PostgreSQL fixed SQL and
    ``Model.from_db`` (the ORM's own constructor of loaded rows; psycopg gives the column types as the fields
    hold them): every SDK call reads its user, and building the query through the ORM was a tenth of an
    upload's CPU."""
    if connection.vendor != "postgresql":
        return MiniUser.objects.filter(app=app, openid=openid).first()
    table = MiniUser._meta.db_table
    columns = ", ".join(f'"{field.column}"' for field in _USER_FIELDS)
    with prepared_cursor() as cursor:
        cursor.execute(
            f'SELECT {columns} FROM "{table}" WHERE "app_id" = %s AND "openid" = %s', [app.pk, openid]
        )
        row = cursor.fetchone()
    if row is None:
        return None
    return MiniUser.from_db(connection.alias, [field.attname for field in _USER_FIELDS], row)


def set_push_enabled(user: MiniUser, enabled: bool) -> MiniUser:
    if user.push_enabled != enabled:
        user.push_enabled = enabled
        user.save(update_fields=["push_enabled"])
    return user


# --- intake --------------------------------------------------------------------------------------
@dataclass
class Intake:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict] = field(default_factory=list)


def _screen(values, result: Intake, seen: set[str]) -> list[str]:
    """The well-formed values not seen before (in this upload, across its lists), in order; the others are
    counted on ``result`` as rejected (with the reason) or duplicates."""
    fresh: list[str] = []
    for value in values:
        reason = formid_rejection(value)
        if reason:
            result.rejected.append(
                {"formid": value if isinstance(value, str) else repr(value)[:128], "reason": reason}
            )
        elif value in seen:
            result.duplicates += 1
        else:
            seen.add(value)
            fresh.append(value)
    return fresh


def formid_rejection(value) -> str | None:
    """Why ``value`` cannot be a formId/prepay_id, or None."""
    if not isinstance(value, str):
        return "not_a_string"
    if value == MOCK_FORMID:
        return "mock_formid"
    if not FORMID_RE.match(value):
        return "malformed"
    return None


def add_formids(
    app: MiniProgram,
    user: MiniUser,
    values: Iterable,
    kind: str = Credit.Kind.FORMID,
    source: str = Credit.Source.SDK,
    now: datetime | None = None,
    count_in_stats: bool = True,
) -> Intake:
    """Store formIds (or prepay_ids) for ``user``: 7 days from now, 1 use (prepay: 3). Duplicates — in the
    batch or already stored, for anyone — are counted, not stored twice. ``count_in_stats=False``: the
    caller adds the accepted ones to the daily statistics itself (after its transaction)."""
    now = now or timezone.now()
    result = Intake()
    fresh = _screen(values, result, set())
    if not fresh:
        return result
    uses = PREPAY_USES if kind == Credit.Kind.PREPAY else 1
    if connection.vendor == "postgresql":
        stored = _insert_formids_postgresql(app, user, fresh, kind, uses, now + FORMID_LIFETIME, source)
        result.accepted, result.duplicates = stored, result.duplicates + len(fresh) - stored
        if stored:
            credits_arrived(app.pk, [user.openid])
            metrics.after_commit(metrics.credits_ingested, kind, source, stored)
        if count_in_stats:
            count_collected(app, now, formids=stored)
        return result
    known = set(Credit.objects.filter(app=app, value__in=fresh).values_list("value", flat=True))
    new = [v for v in fresh if v not in known]
    result.duplicates += len(known)
    Credit.objects.bulk_create(
        [
            Credit(
                app=app,
                user=user,
                kind=kind,
                value=v,
                uses_left=uses,
                expires_at=now + FORMID_LIFETIME,
                source=source,
            )
            for v in new
        ],
        ignore_conflicts=True,  # a concurrent upload of the same value: stored once
    )
    result.accepted = len(new)
    if new:
        credits_arrived(app.pk, [user.openid])
        metrics.after_commit(metrics.credits_ingested, kind, source, len(new))
    if count_in_stats:
        count_collected(app, now, formids=len(new))
    return result


# The one unique index a formId or prepay_id can collide with (credit_unique_formid_value), named as the
# insert's arbiter. A bare ``ON CONFLICT DO NOTHING`` makes every unique index an arbiter, so each row was first
# looked up in the primary key too (a fresh sequence value: never there): one index descent more per row.
FORMID_CONFLICT = "ON CONFLICT (app_id, value) WHERE kind IN ('formid', 'prepay') DO NOTHING"


def _insert_formids_postgresql(
    app: MiniProgram,
    user: MiniUser,
    values: list[str],
    kind: str,
    uses: int,
    expires_at: datetime,
    source: str,
) -> int:
    """One ``INSERT … ON CONFLICT DO NOTHING RETURNING``: how many were stored is exact even when two
    requests upload the same formId at once (a look-up first, then an insert, counted the loser of such a
    race as accepted), and it is one round trip instead of two plus the ORM's objects."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {Credit._meta.db_table} (app_id, user_id, kind, value, template_id, uses_left, expires_at,
                                                 state, source, claimed_by, created_at)
            SELECT %s, %s, %s, v, '', %s, %s, %s, %s, '', now() FROM unnest(%s::text[]) AS v
            {FORMID_CONFLICT}
            RETURNING 1
            """,
            [
                app.pk,
                user.pk,
                kind,
                uses,
                expires_at,
                Credit.State.AVAILABLE,
                source,
                pg_array(values, "text"),
            ],
        )
        return len(cursor.fetchall())


def add_subscribe_credits(
    app: MiniProgram, user: MiniUser, template_ids: Iterable[str], source: str, now: datetime | None = None
) -> dict[str, int]:
    """One send credit per accepted template id (an id listed twice is two accepts)."""
    now = now or timezone.now()
    counts = Counter(template_ids)
    Credit.objects.bulk_create(
        [
            Credit(app=app, user=user, kind=Credit.Kind.SUBSCRIBE, template_id=tid, source=source)
            for tid, n in counts.items()
            for _ in range(n)
        ]
    )
    count_collected(app, now, subscribe=counts, openid=user.openid)
    if counts:
        credits_arrived(app.pk, [user.openid])
        metrics.after_commit(metrics.credits_ingested, Credit.Kind.SUBSCRIBE, source, sum(counts.values()))
    return dict(counts)


def drop_subscribe_credits(app: MiniProgram, user: MiniUser, template_id: str) -> int:
    """The user turned the template off in WeChat: its unused credits, or its standing long-term
    subscription, are gone (kept as expired)."""
    return Credit.objects.filter(
        app=app, user=user, kind__in=SUBSCRIBE_KINDS, template_id=template_id, state=Credit.State.AVAILABLE
    ).update(state=Credit.State.EXPIRED, finished_at=timezone.now())


def start_long_term(
    app: MiniProgram, user: MiniUser, template_ids: Iterable[str], source: str, now: datetime | None = None
) -> dict[str, int]:
    """The user accepted long-term templates: a standing subscription to each, {template id: 1}.

    Idempotent: the partial unique index (user, template_id) of standing rows makes an accept of a template
    the user already stands on insert nothing (a race of two accepts too). Only new subscriptions count in
    the day's collected statistics. Held deliveries are told either way (formids.hooks.credits_arrived)."""
    now = now or timezone.now()
    wanted = list(dict.fromkeys(template_ids))
    if not wanted:
        return {}
    standing = set(
        Credit.objects.filter(
            user=user, kind=Credit.Kind.LONG_TERM, state=Credit.State.AVAILABLE, template_id__in=wanted
        ).values_list("template_id", flat=True)
    )
    new = [tid for tid in wanted if tid not in standing]
    if new:
        Credit.objects.bulk_create(
            [
                Credit(app=app, user=user, kind=Credit.Kind.LONG_TERM, template_id=tid, source=source)
                for tid in new
            ],
            ignore_conflicts=True,  # started concurrently: one row
        )
        count_collected(app, now, subscribe=dict.fromkeys(new, 1), openid=user.openid)
        metrics.after_commit(metrics.credits_ingested, Credit.Kind.LONG_TERM, source, len(new))
    credits_arrived(app.pk, [user.openid])
    return dict.fromkeys(wanted, 1)


def end_long_term(app: MiniProgram, user: MiniUser | None, template_ids: Iterable[str]) -> dict[str, int]:
    """The user turned long-term templates off (a reject or ban answer): their standing subscriptions end
    (kept as expired). {template id: 1 if one ended, else 0}."""
    wanted = list(dict.fromkeys(template_ids))
    if user is None or not wanted:
        return dict.fromkeys(wanted, 0)
    standing = Credit.objects.filter(
        app=app, user=user, kind=Credit.Kind.LONG_TERM, state=Credit.State.AVAILABLE, template_id__in=wanted
    )
    ended = set(standing.values_list("template_id", flat=True))
    if ended:
        standing.filter(template_id__in=ended).update(state=Credit.State.EXPIRED, finished_at=timezone.now())
    return {tid: int(tid in ended) for tid in wanted}


def end_subscriptions(credit_ids: Iterable[int]) -> int:
    """WeChat answered 43101 to a send that stood on these long-term subscriptions: the user has turned
    them off, so they end. By id, not by (user, template): a subscription started again since the send
    (a new row) stands."""
    return Credit.objects.filter(
        _ids(credit_ids), kind=Credit.Kind.LONG_TERM, state=Credit.State.AVAILABLE
    ).update(state=Credit.State.EXPIRED, finished_at=timezone.now())


def reclassify_subscribe_credits(app: MiniProgram, template_id: str, *, long_term: bool) -> int:
    """A subscribe template changed between one-time and long-term (the sync read WeChat's type): the users'
    accepts follow it, so nobody who could be reached before is lost. To long-term: each user with a usable
    credit of the template becomes a standing subscriber (their credits end: they were accepts of a
    long-term template all along). To one-time: each standing subscription becomes one send. Credits
    claimed by a send in flight are left to it. Returns how many users were moved."""
    now = timezone.now()
    if not long_term:
        return Credit.objects.filter(
            app=app, kind=Credit.Kind.LONG_TERM, template_id=template_id, state=Credit.State.AVAILABLE
        ).update(kind=Credit.Kind.SUBSCRIBE)
    credits = Credit.objects.filter(
        app=app, kind=Credit.Kind.SUBSCRIBE, template_id=template_id, state=Credit.State.AVAILABLE
    )
    users = set(credits.values_list("user_id", flat=True).distinct())
    standing = set(
        Credit.objects.filter(
            app=app,
            kind=Credit.Kind.LONG_TERM,
            template_id=template_id,
            state=Credit.State.AVAILABLE,
            user_id__in=users,
        ).values_list("user_id", flat=True)
    )
    Credit.objects.bulk_create(
        [
            Credit(app=app, user_id=user_id, kind=Credit.Kind.LONG_TERM, template_id=template_id)
            for user_id in users - standing
        ],
        ignore_conflicts=True,
        batch_size=1000,
    )
    credits.update(state=Credit.State.EXPIRED, finished_at=now)
    return len(users - standing)


# --- what the SDK reports ---------------------------------------------------------------------------
def take_ids(
    app: MiniProgram, user: MiniUser, *, formids: Iterable = (), prepay_ids: Iterable = ()
) -> Intake:
    """Store an upload of formIds and prepay_ids for ``user``; counts summed over both lists."""
    if connection.vendor == "postgresql":
        return _take_ids_postgresql(app, user.openid, formids, prepay_ids, touch=False, grouped=False)
    total = Intake()
    now = timezone.now()
    with transaction.atomic():
        for values, kind in ((formids, Credit.Kind.FORMID), (prepay_ids, Credit.Kind.PREPAY)):
            if values:
                part = add_formids(
                    app, user, values, kind=kind, source=Credit.Source.SDK, now=now, count_in_stats=False
                )
                total.accepted += part.accepted
                total.duplicates += part.duplicates
                total.rejected += part.rejected
    # After the commit, as a statement of its own: the app's one statistics row of the day stays locked until
    # the end of the transaction that updates it, and every upload of the app updates it. Inside the upload's
    # transaction, concurrent uploads queued behind each other's commit (a fifth of their time was waiting).
    count_collected(app, now, formids=total.accepted)
    return total


def take_uploaded_ids(
    app: MiniProgram, openid: str, *, formids: Iterable = (), prepay_ids: Iterable = ()
) -> Intake:
    """The SDK's upload (``POST /sdk/v1/{appid}/formids``) from the session's ``openid``: ``touch_user`` and
    ``take_ids`` in one. On PostgreSQL the user is read, its ``last_seen`` kept fresh and the ids stored in
    the same statement, which concurrent uploads of the app in this process share (``UPLOAD_GROUP_SIZE``);
    a user not stored yet (a session outliving its row) is made first, as every SDK call does."""
    if connection.vendor != "postgresql":
        return take_ids(app, touch_user(app, openid), formids=formids, prepay_ids=prepay_ids)
    return _take_ids_postgresql(app, openid, formids, prepay_ids, touch=True, grouped=True)


# At most this many uploads share one statement (pushhub.group_commit): enough for every upload of a process's
# threads at once, and a statement of at most 100 × 2 × 32 formIds.
UPLOAD_GROUP_SIZE = 32
# By app id: each runs SDK_UPLOAD_STATEMENTS_IN_FLIGHT statements at once, in this process.
_upload_groups: dict[int, Group] = {}
_upload_groups_lock = threading.Lock()


@dataclass(frozen=True)
class _Upload:
    openid: str
    formids: tuple[str, ...]  # screened: well-formed, each value once across both lists
    prepay_ids: tuple[str, ...]
    touch: bool  # keep the uploader's last_seen fresh (the SDK's upload), as touch_user does


@dataclass
class _Stored:
    kinds: dict[str, int] = field(default_factory=dict)  # credits stored, by kind
    waiting: bool = False  # the uploader waits for a credit (hooks.credit_arrival_probe_sql)


def _take_ids_postgresql(
    app: MiniProgram, openid: str, formids: Iterable, prepay_ids: Iterable, *, touch: bool, grouped: bool
) -> Intake:
    """The upload as one autocommitted statement (``_store_uploads``), shared with the app's concurrent
    uploads when ``grouped`` (and not inside a transaction: a grouped statement runs on whichever caller's
    connection leads it). A user who has no row (erased meanwhile, or a session outliving it) is made, as
    ``touch_user`` does, and the upload stored alone."""
    result = Intake()
    seen: set[str] = set()
    upload = _Upload(
        openid,
        tuple(_screen(formids or (), result, seen)),
        tuple(_screen(prepay_ids or (), result, seen)),
        touch,
    )
    if not upload.formids and not upload.prepay_ids:
        return result
    stored = RUN_ALONE
    if grouped and not connection.in_atomic_block:
        stored = _upload_group(app.pk).submit(
            upload, keys=frozenset((openid, *upload.formids, *upload.prepay_ids))
        )
    if stored is RUN_ALONE:
        [stored] = _store_uploads(app.pk, [upload])
    if stored is None:
        touch_user(app, openid)
        [stored] = _store_uploads(app.pk, [upload])
    if stored is None:  # erased again in between: nothing stored, as for an upload the user never made
        return result
    result.accepted = sum(stored.kinds.values())
    result.duplicates += len(upload.formids) + len(upload.prepay_ids) - result.accepted
    if result.accepted and stored.waiting:
        # The user waits for a credit (held deliveries): tell the listeners now (autocommitted: the credits
        # are stored). An upload of a user who does not (nearly all) learns it from the same statement
        # (hooks.credit_arrival_probe_sql, a probe of the held rows' index) instead of the listener's own
        # round trip. A hold committed while this statement ran is not seen, as one committed just after a
        # separate mark was not: the hold recheck sends to both.
        credits_arrived(app.pk, [openid])
    for kind, n in stored.kinds.items():
        metrics.after_commit(metrics.credits_ingested, kind, Credit.Source.SDK, n)
    return result


def _upload_group(app_id: int) -> Group:
    group = _upload_groups.get(app_id)
    if group is None:
        with _upload_groups_lock:
            group = _upload_groups.setdefault(
                app_id,
                Group(
                    functools.partial(_store_uploads, app_id),
                    UPLOAD_GROUP_SIZE,
                    settings.SDK_UPLOAD_STATEMENTS_IN_FLIGHT,
                ),
            )
    return group


@functools.cache
def _store_uploads_sql(arrival_probe: str) -> str:
    """The statement of ``_store_uploads`` with this arrival probe (``hooks.credit_arrival_probe_sql`` of the
    uploader's openid): the same for every batch, so made once."""
    credit, user = Credit._meta.db_table, MiniUser._meta.db_table
    prepay = Credit.Kind.PREPAY.value
    day_stat = funnel.counter_upsert_sql(
        DailyStat, ("app", "day", "shard"), "formids_collected", "counted", "counted.n"
    )
    funnel_stat = funnel.counter_upsert_sql(
        TemplateDailyStat,
        ("app_id", "template_id", "day", "shard"),
        "credits_collected",
        "counted",
        "counted.n",
    )
    # The statistics rows of the first uploader's shard (DailyStat.shard): concurrent uploads of one app lock
    # different rows.
    shard = f"(SELECT mod(min(id), {STAT_SHARDS}) FROM uploader)"
    # The ids come as one text per column, separated by spaces (FORMID_RE has none): psycopg's client-side
    # binding spelled a text[] parameter out item by item in Python, a tenth of an upload's CPU. Each id
    # names its upload (%(owners)s: the upload's number in %(openids)s, from 1) and its kind.
    # The statement is prepared, and its one plan (generic: pushhub.postgresql) is made at a connection's first
    # upload, whatever the tables held then. So each table it reads is read by index from a key of one uploader,
    # never joined as a set: the user by (app, openid) in a LATERAL subquery and the held-delivery probe in a
    # subplan, each fenced by OFFSET 0 (the planner neither flattens it into a join nor hashes it). Joined,
    # the plan made while an app had few users (or held nothing) scanned all of them at every upload later.
    return f"""
        WITH member AS (
            SELECT openid, n::int AS n FROM unnest(%(openids)s::text[]) WITH ORDINALITY AS m(openid, n)
        ),
        uploader AS (
            SELECT member.n, member.openid, u.id, u.stale FROM member, LATERAL (
                SELECT id, coalesce(last_seen < %(stale)s, false) AS stale FROM {user}
                WHERE app_id = %(app)s AND openid = member.openid OFFSET 0
            ) AS u
        ),
        stored AS (
            INSERT INTO {credit} (app_id, user_id, kind, value, template_id, uses_left, expires_at,
                                  state, source, claimed_by, created_at)
            SELECT %(app)s, uploader.id, v.kind, v.value, '',
                   CASE WHEN v.kind = '{prepay}' THEN {PREPAY_USES} ELSE 1 END,
                   %(expires)s, '{Credit.State.AVAILABLE.value}', '{Credit.Source.SDK.value}', '', now()
            FROM unnest(
                string_to_array(%(values)s, ' '),
                string_to_array(%(owners)s, ' ')::int[],
                string_to_array(%(kinds)s, ' ')
            ) AS v(value, n, kind)
            JOIN uploader ON uploader.n = v.n
            {FORMID_CONFLICT}
            RETURNING user_id, kind
        ),
        counted AS (SELECT count(*) AS n FROM stored),
        day_stat AS ({day_stat % ("%(app)s", "%(day)s", shard)}),
        funnel_stat AS ({funnel_stat % ("%(app)s", "''", "%(day)s", shard)})
        SELECT uploader.n, stored.kind, count(*)::int FROM stored JOIN uploader ON uploader.id = stored.user_id
        GROUP BY 1, 2
        UNION ALL
        SELECT n, '#user', ({arrival_probe})::int | (stale::int << 1) FROM uploader
    """


def _store_uploads(app_id: int, uploads: list[_Upload]) -> list[_Stored | None]:
    """Uploads of one app (distinct users, no id in two of them) in one autocommitted statement: each
    uploader's row by (app, openid) (and, with ``touch``, whether its ``last_seen`` is stale: then
    ``_touch_stale``),
    ``INSERT … ON CONFLICT DO NOTHING RETURNING`` of every list, and from its count the app's day (DailyStat)
    and the funnel's formId row (TemplateDailyStat, template "") — what ``count_collected`` writes for
    formIds, with the same answers as ``add_formids``. None for an upload whose user has no row (nothing of
    it is stored).

    One round trip instead of seven per upload (the user's read, begin, two inserts, commit, two statistics
    upserts), and the statistics rows (every upload of the app bumps the same two) stay locked only for this
    statement, not until a later commit."""
    now = timezone.now()
    values, owners, kinds = [], [], []
    for n, upload in enumerate(uploads, 1):
        for kind, ids in (
            (Credit.Kind.FORMID.value, upload.formids),
            (Credit.Kind.PREPAY.value, upload.prepay_ids),
        ):
            values += ids
            owners += [str(n)] * len(ids)
            kinds += [kind] * len(ids)
    params = {
        "app": app_id,
        "openids": pg_array([upload.openid for upload in uploads], "text"),
        # Only the SDK's uploads touch: a statement mixes none (the group holds SDK uploads only).
        "stale": now - timedelta(seconds=settings.SDK_LAST_SEEN_RESOLUTION) if uploads[0].touch else None,
        "expires": now + FORMID_LIFETIME,
        "values": " ".join(values),
        "owners": " ".join(owners),
        "kinds": " ".join(kinds),
        "day": now.date(),
    }
    with prepared_cursor(array_length=len(uploads)) as cursor:
        cursor.execute(_store_uploads_sql(credit_arrival_probe_sql("uploader.openid")), params)
        rows = cursor.fetchall()
    metrics.sdk_upload_statement(len(uploads))
    found: dict[int, _Stored] = {}  # every uploader found has its '#user' row
    stale: list[str] = []
    for n, kind, count in rows:
        stored = found.setdefault(n, _Stored())
        if kind == "#user":  # bit 0: waits for a credit; bit 1: last_seen is older than the resolution
            stored.waiting = bool(count & 1)
            if count & 2:
                stale.append(uploads[n - 1].openid)
        else:
            stored.kinds[kind] = count
    if stale:
        _touch_stale(app_id, stale, now, params["stale"])
    return [found.get(n) for n in range(1, len(uploads) + 1)]


def _touch_stale(app_id: int, openids: list[str], now: datetime, stale: datetime) -> None:
    """``last_seen`` of the uploaders whose stored one was older than ``stale``, as ``touch_user`` keeps it: a
    statement of its own, planned for the users it has, and rare (a user's first call in
    SDK_LAST_SEEN_RESOLUTION, and login has usually just touched them). In the upload's prepared statement
    its plan was made for about ten uploaders: while the app had a few thousand users, a scan of all of
    them, kept by that connection as the table grew."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {MiniUser._meta.db_table} SET last_seen = %s "
            "WHERE app_id = %s AND openid = ANY(%s::text[]) AND last_seen < %s",
            [now, app_id, pg_array(openids, "text"), stale],
        )


def report_subscriptions(
    app: MiniProgram, user: MiniUser, results: dict[str, str], now: datetime | None = None
) -> dict:
    """The user's answers to wx.requestSubscribeMessage. Accepts of the app's subscribe templates become
    credits (one-time templates) or standing subscriptions (long-term templates) when the app counts SDK
    reports (credit_source "sdk"); with "events" WeChat's own subscribe_msg_popup_event does it and the
    report is only recorded. A reject or ban of a long-term template ends its subscription whatever the
    credit_source (it can only take away: nothing is counted twice). Ids the catalogue does not know are
    ignored. The report is stored as an InboundEvent either way."""
    templates = subscribe_templates(app)
    ignored = [
        tid for tid in results if templates is not None and not (tid in templates and templates[tid].active)
    ]
    long_term = long_term_ids(templates)  # a disabled one too: its subscriptions can still end
    accepted = [tid for tid, answer in results.items() if answer == "accept" and tid not in ignored]
    ending = [tid for tid, answer in results.items() if answer in ENDING_ANSWERS and tid in long_term]
    credited: dict[str, int] = {}
    ended: dict[str, int] = {}
    with transaction.atomic():
        if app.credit_source == MiniProgram.CreditSource.SDK:
            one_time = [tid for tid in accepted if tid not in long_term]
            if one_time:
                credited = add_subscribe_credits(app, user, one_time, source=Credit.Source.SDK, now=now)
            standing = [tid for tid in accepted if tid in long_term]
            if standing:
                credited.update(start_long_term(app, user, standing, source=Credit.Source.SDK, now=now))
            subscriptions_changed(
                app,
                user.openid,
                user.alias,
                {tid: answer for tid, answer in results.items() if tid not in ignored},
            )
        if ending:
            ended = end_long_term(app, user, ending)
        outcome = {"credited": credited, "ignored": ignored, "credit_source": app.credit_source}
        if ended:
            outcome["ended"] = ended
        InboundEvent.objects.create(
            app=app,
            source=InboundEvent.Source.SDK,
            event="subscribe_report",
            openid=user.openid,
            payload=results,
            outcome=outcome,
        )
    return {"credited": credited, "ignored": ignored}


# --- claims --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClaimedCredit:
    id: int
    openid: str
    kind: str
    value: str
    uses_left: int


def claim_credits(
    app: MiniProgram,
    *,
    template_kind: str,
    template_id: str,
    openids: Iterable[str],
    claimed_by: str,
    now: datetime | None = None,
) -> dict[str, ClaimedCredit]:
    """Claim one usable credit per recipient for a template of ``template_kind`` ("formid", "subscribe"
    or "long_term": ``Template.credit_kind``); returns {openid: credit} for those who had one. Atomic and
    safe under concurrency: a formId or one-time credit is never handed to two claimers. A long-term
    subscription is handed to every claimer as long as it stands (``_standing``)."""
    now = now or timezone.now()
    wanted = list(dict.fromkeys(o for o in openids if isinstance(o, str)))
    if not wanted:
        return {}
    if template_kind not in (Credit.Kind.FORMID, Credit.Kind.SUBSCRIBE, Credit.Kind.LONG_TERM):
        raise ValueError(f"unknown template kind {template_kind!r}")
    if template_kind == Credit.Kind.LONG_TERM:
        return _standing(app, template_id, wanted)
    if connection.vendor == "postgresql":
        return _claim_postgresql(app, template_kind, template_id, wanted, claimed_by, now)
    return _claim_guarded(app, template_kind, template_id, wanted, claimed_by, now)


def _claim_postgresql(app, template_kind, template_id, openids, claimed_by, now) -> dict[str, ClaimedCredit]:
    credit, user = Credit._meta.db_table, MiniUser._meta.db_table
    if template_kind == Credit.Kind.FORMID:
        pick = (
            f"SELECT c.id FROM {credit} c WHERE c.user_id = u.id AND c.state = 'available' "
            "AND c.kind IN ('formid', 'prepay') AND c.expires_at > %(usable_after)s "
            "ORDER BY c.expires_at, c.id LIMIT 1 FOR UPDATE SKIP LOCKED"
        )
    else:
        pick = (
            f"SELECT c.id FROM {credit} c WHERE c.user_id = u.id AND c.state = 'available' "
            "AND c.kind = 'subscribe' AND c.template_id = %(template_id)s "
            "AND (c.expires_at IS NULL OR c.expires_at > %(usable_after)s) "
            "ORDER BY c.id LIMIT 1 FOR UPDATE SKIP LOCKED"
        )
    # MATERIALIZED: the pick runs exactly once. Inlined into the UPDATE's join, the planner may rescan it,
    # and every rescan (SKIP LOCKED, own locks aside) can pick another of the same user's credits.
    # Rows are reached by key: each recipient's user by (app, openid), a probe each (OFFSET 0: never a scan of
    # the app's users), and the credits to update by primary key alone (``id = ANY(ARRAY(…))``). The UPDATE
    # had ``state = 'available'`` too, and with it the planner could read the credits through a partial index
    # of available ones and hash them against the chosen ids: with statistics from before a burst of uploads
    # (535 available estimated, 613,333 there) a release's claim of 500 took 1.3 s that way (auto_explain,
    # bench.holds). The pick's FOR UPDATE already holds each chosen credit, and took it only as available
    # (a row changed since the snapshot is checked again on its newest version, SKIP LOCKED passes those
    # another claimer holds): nothing else can change it before this statement's UPDATE.
    sql = (
        "WITH chosen AS MATERIALIZED (SELECT u.openid, picked.id "
        "     FROM unnest(%(openids)s::text[]) AS wanted(openid) "
        f"    CROSS JOIN LATERAL (SELECT id, openid FROM {user} "
        "         WHERE app_id = %(app_id)s AND openid = wanted.openid OFFSET 0) u "
        f"    CROSS JOIN LATERAL ({pick}) picked) "
        f"UPDATE {credit} AS claimed SET state = 'claimed', claimed_at = %(now)s, claimed_by = %(claimed_by)s "
        "FROM chosen WHERE claimed.id = ANY(ARRAY(SELECT id FROM chosen)) AND claimed.id = chosen.id "
        "RETURNING claimed.id, chosen.openid, claimed.kind, claimed.value, claimed.uses_left"
    )
    params = {
        "now": now,
        "claimed_by": claimed_by,
        "usable_after": now + expiry_margin(),
        "template_id": template_id,
        "app_id": app.pk,
        "openids": pg_array(openids, "text"),
    }
    # One statement is atomic on its own: no transaction.atomic() (it would only add a savepoint pair).
    with prepared_cursor(len(openids)) as cursor:
        cursor.execute(sql, params)
        return {row[1]: ClaimedCredit(*row) for row in cursor.fetchall()}


def _standing(app, template_id, openids) -> dict[str, ClaimedCredit]:
    """The recipients' standing long-term subscriptions to the template, unchanged: a send does not use
    one up, so there is nothing to take, and every push to a subscriber (concurrent ones too) sends. One
    query: the (app, openid) index of users, then the (user, template_id) index of standing rows."""
    rows = Credit.objects.filter(
        app=app,
        kind=Credit.Kind.LONG_TERM,
        state=Credit.State.AVAILABLE,
        template_id=template_id,
        user__app=app,
        user__openid__in=texts_in(openids),
    ).values_list("id", "user__openid", "kind", "value", "uses_left")
    return {row[1]: ClaimedCredit(*row) for row in rows}


def _claim_guarded(app, template_kind, template_id, openids, claimed_by, now) -> dict[str, ClaimedCredit]:
    """Portable path: pick the best candidate, then take it only if it is still available."""
    users = dict(MiniUser.objects.filter(app=app, openid__in=openids).values_list("id", "openid"))
    candidates = Credit.objects.filter(usable_q(now), user_id__in=users)
    if template_kind == Credit.Kind.FORMID:
        candidates = candidates.filter(kind__in=FORMID_KINDS).order_by("expires_at", "id")
    else:
        candidates = candidates.filter(kind=Credit.Kind.SUBSCRIBE, template_id=template_id).order_by("id")
    claimed: dict[str, ClaimedCredit] = {}
    for user_id, openid in users.items():
        for _ in range(5):  # lost a race for the best credit: try the next one
            row = candidates.filter(user_id=user_id).values_list("id", "kind", "value", "uses_left").first()
            if row is None:
                break
            taken = Credit.objects.filter(pk=row[0], state=Credit.State.AVAILABLE).update(
                state=Credit.State.CLAIMED, claimed_at=now, claimed_by=claimed_by
            )
            if taken:
                claimed[openid] = ClaimedCredit(row[0], openid, row[1], row[2], row[3])
                break
    return claimed


# --- settling claims ------------------------------------------------------------------------------
def _ids(credit_ids: Iterable[int]):
    """A filter on credits' ids for the settle and renew calls of a chunk (hundreds of ids): ``= ANY(array)``,
    a primary-key probe per id. ``IN (SELECT unnest(…))`` let the planner, with the partial index of claimed
    credits estimated at one row, walk every claimed credit of every push against the 500 ids (EXPLAIN on
    the broadcast bench): a cost that grew with the claims outstanding."""
    return any_of(Credit, "id", [int(pk) for pk in credit_ids], "bigint")


def consume(credit_ids: Iterable[int], claimed_by: str, *, exhausted: bool = False) -> int:
    """A send went through: one use is spent, and a prepay_id with uses left goes back to the pool.
    ``exhausted``: WeChat said the formId is invalid or used up (41028/41029): it is spent whatever we
    counted. Only the claim's holder can settle it. A long-term subscription is never claimed, so it is left
    standing (43101 ends it: ``end_subscriptions``)."""
    now = timezone.now()
    if connection.vendor == "postgresql":
        return _consume_postgresql([int(pk) for pk in credit_ids], claimed_by, exhausted, now)
    held = Credit.objects.filter(_ids(credit_ids), state=Credit.State.CLAIMED, claimed_by=claimed_by)
    if exhausted:
        return held.update(
            uses_left=0, state=Credit.State.CONSUMED, finished_at=now, claimed_at=None, claimed_by=""
        )
    last_use = Q(uses_left__lte=1)
    return held.update(
        uses_left=F("uses_left") - 1,
        state=Case(When(last_use, then=Value(Credit.State.CONSUMED)), default=Value(Credit.State.AVAILABLE)),
        finished_at=Case(When(last_use, then=Value(now)), default=Value(None)),
        claimed_at=None,
        claimed_by="",
    )


def _consume_postgresql(credit_ids: list[int], claimed_by: str, exhausted: bool, now: datetime) -> int:
    """``consume`` as fixed SQL (every flush of a chunk runs it; the ORM's compile of its CASE expressions
    was a tenth of a one-user push's worker CPU). A SET expression reads the row as it was, as F() does."""
    if exhausted:
        changes = "uses_left = 0, state = 'consumed', finished_at = %(now)s"
    else:
        changes = (
            "uses_left = uses_left - 1,"
            " state = CASE WHEN uses_left <= 1 THEN 'consumed' ELSE 'available' END,"
            " finished_at = CASE WHEN uses_left <= 1 THEN %(now)s::timestamptz END"
        )
    with prepared_cursor(len(credit_ids)) as cursor:
        cursor.execute(
            f"UPDATE {Credit._meta.db_table} SET {changes}, claimed_at = NULL, claimed_by = ''"
            " WHERE id = ANY(%(ids)s::bigint[]) AND state = 'claimed' AND claimed_by = %(holder)s",
            {"now": now, "ids": pg_array(credit_ids, "bigint"), "holder": claimed_by},
        )
        return cursor.rowcount


def _held_by(credit_ids: Iterable[int], claimed_by: str):
    """The credits among ``credit_ids`` the holder may still send with: its claims, and standing long-term
    subscriptions (never claimed: every push stands on them until they end)."""
    return Credit.objects.filter(_ids(credit_ids)).filter(
        Q(state=Credit.State.CLAIMED, claimed_by=claimed_by)
        | Q(kind=Credit.Kind.LONG_TERM, state=Credit.State.AVAILABLE)
    )


def still_held(credit_ids: Iterable[int], claimed_by: str) -> set[int]:
    """The ids among ``credit_ids`` that ``claimed_by`` may still send with (see ``_held_by``)."""
    return set(_held_by(credit_ids, claimed_by).values_list("pk", flat=True))


def refresh_claims(
    credit_ids: Iterable[int], claimed_by: str, *, unless_younger_than: timedelta | None = None
) -> int:
    """Renew the lease of claims still being worked on (a retry waiting for its backoff), so the stale
    sweep does not hand them to someone else meanwhile; returns how many are still held by ``claimed_by``
    (standing long-term subscriptions count as held: they have no lease to renew).
    ``unless_younger_than``: claims taken more recently keep their time (a chunk sent right after it was
    prepared writes nothing)."""
    now = timezone.now()
    held = list(_held_by(credit_ids, claimed_by).values_list("pk", "state", "claimed_at"))
    due = [
        pk
        for pk, state, claimed_at in held
        if state == Credit.State.CLAIMED
        and (unless_younger_than is None or claimed_at is None or claimed_at < now - unless_younger_than)
    ]
    if due:
        Credit.objects.filter(_ids(due), state=Credit.State.CLAIMED, claimed_by=claimed_by).update(
            claimed_at=now
        )
    return len(held)


def _release(queryset) -> int:
    """Back to the pool, or to expired if it can no longer be used in time."""
    now = timezone.now()
    too_late = Q(expires_at__lte=now + expiry_margin())
    return queryset.update(
        state=Case(When(too_late, then=Value(Credit.State.EXPIRED)), default=Value(Credit.State.AVAILABLE)),
        finished_at=Case(When(too_late, then=Value(now)), default=Value(None)),
        claimed_at=None,
        claimed_by="",
    )


def release(credit_ids: Iterable[int], claimed_by: str) -> int:
    """The send did not happen (transient error, cancel): the credits are usable again."""
    return _release(
        Credit.objects.filter(_ids(credit_ids), state=Credit.State.CLAIMED, claimed_by=claimed_by)
    )


def release_stale(lease: timedelta | None = None) -> int:
    """Claims older than the lease that no record owns (formids.hooks.claim_owners) belong to a worker that
    died: give them back.

    A claim owned by a pending delivery stays: that delivery's push is resumed by the stall sweep, whose
    chunk renews the claim. Released, the credit of a delivery whose last answer was lost (a timeout: the
    message may have gone out) would be free for the retry to replace with another credit: a second message.
    """
    lease = lease or timedelta(seconds=settings.CREDIT_CLAIM_LEASE)
    stale = Credit.objects.filter(state=Credit.State.CLAIMED, claimed_at__lt=timezone.now() - lease)
    for owner in claim_owners():
        stale = stale.filter(~owner())
    return _release(stale)


def expire_due(batch_size: int = 10_000) -> int:
    """Mark available credits past their expiry margin as expired, in batches (short transactions)."""
    total = 0
    while True:
        now = timezone.now()
        ids = list(
            Credit.objects.filter(
                state=Credit.State.AVAILABLE, expires_at__isnull=False, expires_at__lte=now + expiry_margin()
            ).values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            return total
        total += Credit.objects.filter(pk__in=ids, state=Credit.State.AVAILABLE).update(
            state=Credit.State.EXPIRED, finished_at=now
        )


# --- statistics ------------------------------------------------------------------------------------
def bump_daily_stat(app: MiniProgram, day: date, **increments: int) -> None:
    """Add to today's counters (formids_collected, subscribe_collected, sent, failed)."""
    add_to_counters(DailyStat, {"app": app, "day": day}, increments)


def count_collected(
    app: MiniProgram,
    now: datetime,
    *,
    formids: int = 0,
    subscribe: dict[str, int] | None = None,
    openid: str = "",
) -> None:
    """New credits stored (``formids`` formIds/prepay ids; ``subscribe`` {template id: n} from ``openid``):
    the app's day (DailyStat) and the funnel's per-template rows, whose re-subscription check runs only
    for subscribe credits (formids.funnel.credits_collected)."""
    subscribe = subscribe or {}
    bump_daily_stat(app, now.date(), formids_collected=formids, subscribe_collected=sum(subscribe.values()))
    funnel.credits_collected(app.pk, now.date(), formids=formids, subscribe=subscribe, openid=openid, now=now)


def record_send_outcomes(app: MiniProgram, *, template_id: str = "", sent: int = 0, failed: int = 0) -> None:
    """Called by the delivery pipeline after each chunk: the app's day and the push's template's day
    (``template_id``: WeChat's id of the push's template, a formId template's too)."""
    execute_together(send_outcome_statements(app, template_id=template_id, sent=sent, failed=failed))


def send_outcome_statements(
    app: MiniProgram, *, template_id: str = "", sent: int = 0, failed: int = 0
) -> list[tuple[str, list]]:
    """``record_send_outcomes`` as statements, for a caller that runs them with its own
    (``pushhub.sql.execute_together``: the delivery ledger writes them with the push's counters)."""
    today = timezone.now().date()
    statements = [
        counter_rows_sql(DailyStat, [({"app": app, "day": today}, {"sent": sent, "failed": failed})]),
        funnel.send_outcomes_sql(app.pk, template_id, today, sent=sent, failed=failed),
    ]
    return [statement for statement in statements if statement is not None]

"""Who a push reaches: the users holding a usable credit for its template (of a segment, for a segment push),
the dry-run preview, and ``prepare_recipients``, which claims one credit per recipient and writes their
Delivery rows.

Listed recipients (openids, or aliases resolved to openids) of an immediate push are prepared inside the send
request (``pushes.start``), so ``no_credit`` in its answer is exact; broadcasts (``@all``, segments) and
scheduled pushes are prepared by the workers, a page at a time (``delivery.start``), through the same
``prepare_recipients``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Count, Exists, F, OuterRef, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from formids import services as credits
from formids.models import Credit, MiniUser, UserTag
from pushhub import metrics
from pushhub.sql import pg_array, prepared_cursor, texts_in
from templates_app.models import Delivery, Push, Template
from templates_app.pushes.addressing import Addressing, Segment
from templates_app.pushes.request import SendRequest

Audience = Push.Audience


def has_usable_credit(template: Template, now: datetime | None = None) -> Exists:
    """A condition on MiniUser: the user holds a usable credit for ``template`` (formId templates: a formId
    or prepay_id; one-time subscribe templates: a subscribe credit of that template id; long-term ones: a
    standing subscription to it)."""
    usable = Credit.objects.filter(
        credits.usable_q(now or timezone.now()), app_id=template.app_id, user_id=OuterRef("pk")
    )
    kind = template.credit_kind
    if kind == Credit.Kind.FORMID:
        usable = usable.filter(kind__in=credits.FORMID_KINDS)
    else:
        usable = usable.filter(kind=kind, template_id=template.template_id)
    return Exists(usable)


def _tagged(tags: Sequence[str]) -> Exists:
    """A condition on MiniUser: the user has one of ``tags`` (an index probe on UserTag's (user, tag))."""
    return Exists(UserTag.objects.filter(user_id=OuterRef("pk"), tag__in=list(tags)))


def in_segment(segment: Segment) -> Q:
    """A condition on MiniUser: the user is in the segment — every tag of ``all`` (a probe each), one of
    ``any``, none of ``none``. Per-user EXISTS probes like the credit test, so a segment page costs what an
    ``@all`` page costs."""
    condition = Q()
    for tag in segment.all_of:
        condition &= _tagged([tag])
    if segment.any_of:
        condition &= _tagged(segment.any_of)
    if segment.none_of:
        condition &= ~_tagged(segment.none_of)
    return condition


def users_with_credit(
    template: Template,
    now: datetime | None = None,
    extra: Q | Exists | None = None,
    segment: Segment | None = None,
):
    """The app's users (of ``segment``, if given) holding a usable credit for ``template``, or matching
    ``extra``: who an ``@all`` or segment push reaches."""
    condition = has_usable_credit(template, now)
    if segment is not None:
        condition = in_segment(segment) & condition
    return MiniUser.objects.filter(app_id=template.app_id).filter(
        condition if extra is None else condition | extra
    )


def resolve_aliases(app_id: int, aliases: Sequence[str]) -> dict[str, str]:
    """{alias: openid} for the aliases the app's users hold now, in the order given (unknown ones left out)."""
    found = dict(
        MiniUser.objects.filter(app_id=app_id, alias__in=texts_in(aliases)).values_list("alias", "openid")
    )
    return {alias: found[alias] for alias in aliases if alias in found}


def dry_run(template: Template, request: SendRequest) -> dict:
    """What a send would reach, without claiming or sending: {recipients, reachable, no_credit, opted_out},
    and for aliases ``unknown_aliases``. One query over the addressed users (a segment: its members)."""
    to = request.to
    users = MiniUser.objects.filter(app_id=template.app_id)
    if to.audience == Audience.OPENIDS:
        users = users.filter(openid__in=texts_in(to.names))
    elif to.audience == Audience.ALIASES:
        users = users.filter(alias__in=texts_in(to.names))
    elif to.audience == Audience.TAGS:
        users = users.filter(in_segment(to.segment))
    eligible = Q() if request.force else Q(push_enabled=True)
    counts = users.aggregate(
        users=Count("pk"),
        opted_out=Count("pk", filter=Q(push_enabled=False)),
        reachable=Count("pk", filter=eligible & has_usable_credit(template)),
    )
    opted_out = 0 if request.force else counts["opted_out"]
    # Listed openids count whether or not we know them (an unknown openid has no credit); aliases no user
    # holds are not recipients: they are named in unknown_aliases.
    recipients = len(to.names) if to.audience == Audience.OPENIDS else counts["users"]
    answer = {
        "recipients": recipients,
        "reachable": counts["reachable"],
        "no_credit": recipients - counts["reachable"] - opted_out,
        "opted_out": opted_out,
    }
    if to.audience == Audience.ALIASES:
        known = resolve_aliases(template.app_id, to.names)
        answer["unknown_aliases"] = [alias for alias in to.names if alias not in known]
    return answer


@dataclass
class Prepared:
    pending: list[int] = field(default_factory=list)  # ids of the deliveries that claimed a credit, to send
    no_credit: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)  # a push with a hold: no credit yet, waiting for one
    opted_out: list[str] = field(default_factory=list)
    unknown_aliases: list[str] | None = None  # an alias push: the aliases no user holds (not attempted)
    existing: int = 0  # recipients skipped because an earlier run already wrote their row


def prepare_listed(push: Push, *, new_push: bool = False) -> Prepared:
    """``prepare_recipients`` for the push's listed recipients: its openids, or its aliases resolved to the
    openids that hold them now. The lists of the answer name recipients the way the request did.
    ``new_push``: see ``prepare_recipients``."""
    to = Addressing.of(push)
    if to.audience == Audience.OPENIDS:
        return prepare_recipients(push, to.names, new_push=new_push)
    openid_of = resolve_aliases(push.app_id, to.names)
    prepared = prepare_recipients(push, list(openid_of.values()), new_push=new_push)
    alias_of = {openid: alias for alias, openid in openid_of.items()}  # an alias is one user's, and back
    prepared.no_credit = [alias_of[openid] for openid in prepared.no_credit]
    prepared.held = [alias_of[openid] for openid in prepared.held]
    prepared.opted_out = [alias_of[openid] for openid in prepared.opted_out]
    prepared.unknown_aliases = [alias for alias in to.names if alias not in openid_of]
    return prepared


def prepare_recipients(push: Push, openids: Sequence[str], *, new_push: bool = False) -> Prepared:
    """Claim one credit per recipient for ``push`` and write their Delivery rows and the counters.

    Idempotent: recipients that already have a Delivery row for this push are skipped, so a chunk
    redelivered after a worker died claims nothing twice. Users who turned pushes off are skipped
    (counted as opted out, no row) unless the push is forced. Unknown openids have no credit. A push with
    a hold keeps the recipients without a credit ``held`` (they may log in and gain one) until its
    hold_until, set here at its first preparation.

    ``new_push``: ``push`` was created in the caller's transaction and ``openids`` are all its recipients
    (a trigger's list). Nobody else can see the row yet, so there is nothing to lock and no earlier row to
    skip; the counters are written as they are, with ``enumerated`` (and ``done`` when nobody is left to
    send to), in one UPDATE, and set on ``push`` too. Six of a one-user trigger's fourteen statements were
    these checks, a savepoint and a re-read of the row.
    """
    result = Prepared()
    with transaction.atomic(savepoint=not new_push):  # new_push: inside the transaction that made it
        if new_push:
            hold_seconds = push.hold_seconds
        else:
            # One preparation per push at a time: the row lock serialises redelivered chunks.
            locked = (
                Push.objects.select_for_update().filter(pk=push.pk).only("hold_seconds", "hold_until").first()
            )
            hold_seconds = locked.hold_seconds if locked is not None else None
            if hold_seconds and locked.hold_until is None:
                hold_until = timezone.now() + timedelta(seconds=hold_seconds)
                Push.objects.filter(pk=push.pk).update(hold_until=hold_until)
                push.hold_until = hold_until
        wanted = list(dict.fromkeys(openids))
        if not new_push:
            done = set(
                Delivery.objects.filter(push=push, openid__in=texts_in(wanted)).values_list(
                    "openid", flat=True
                )
            )
            wanted = [o for o in wanted if o not in done]
            result.existing = len(done)
            if not wanted:
                return result
        if wanted and not push.force:
            result.opted_out = _opted_out(push.app_id, wanted)
        eligible = [o for o in wanted if o not in set(result.opted_out)]
        claimed = claim_for_push(push, eligible) if eligible else {}
        without = [o for o in eligible if o not in claimed]
        holding = bool(hold_seconds)
        if holding:
            result.held = without
        else:
            result.no_credit = without
        result.pending = _insert_deliveries(push, eligible, claimed, holding=holding) if eligible else []
        if new_push:
            _write_new_push_counters(push, len(wanted), result)
        else:
            Push.objects.filter(pk=push.pk).update(
                recipients=_plus("recipients", len(wanted)),
                no_credit=_plus("no_credit", len(result.no_credit)),
                opted_out=_plus("opted_out", len(result.opted_out)),
                pending=F("pending") + len(result.pending),
                held=F("held") + len(result.held),
            )
        if result.no_credit:  # recipients without a credit end here (no_credit rows)
            metrics.after_commit(metrics.deliveries, {(Delivery.Status.NO_CREDIT, ""): len(result.no_credit)})
    return result


def _write_new_push_counters(push: Push, recipients: int, result: Prepared) -> None:
    """A new push's counters, ``enumerated``, its hold's end, and ``done`` if nobody is left to send to: one
    UPDATE, and the same values on ``push`` (the caller answers from it)."""
    now = timezone.now()
    fields = {
        "recipients": recipients,
        "no_credit": len(result.no_credit),
        "opted_out": len(result.opted_out),
        "pending": len(result.pending),
        "held": len(result.held),
        "enumerated": True,
    }
    if push.hold_seconds:
        fields["hold_until"] = now + timedelta(seconds=push.hold_seconds)
    if not result.pending and not result.held:
        fields |= {"status": Push.Status.DONE, "started_at": now, "finished_at": now}
    if connection.vendor == "postgresql":
        # Plain columns by primary key: fixed SQL (the ORM's compile of this UPDATE was 0.4 ms a trigger).
        columns = ", ".join(f"{Push._meta.get_field(name).column} = %s" for name in fields)
        with prepared_cursor() as cursor:
            cursor.execute(
                f"UPDATE {Push._meta.db_table} SET {columns} WHERE id = %s", [*fields.values(), push.pk]
            )
    else:
        Push.objects.filter(pk=push.pk).update(**fields)
    for name, value in fields.items():
        setattr(push, name, value)


def _opted_out(app_id: int, openids: list[str]) -> list[str]:
    """Which of the openids belong to users of the app who turned pushes off. Fixed SQL on PostgreSQL (the
    ORM's compile was 0.4 ms of a one-user trigger's CPU)."""
    if connection.vendor != "postgresql":
        return list(
            MiniUser.objects.filter(
                app_id=app_id, openid__in=texts_in(openids), push_enabled=False
            ).values_list("openid", flat=True)
        )
    with prepared_cursor(len(openids)) as cursor:
        cursor.execute(
            f"SELECT openid FROM {MiniUser._meta.db_table}"
            " WHERE app_id = %s AND openid = ANY(%s::text[]) AND NOT push_enabled",
            [app_id, pg_array(openids, "text")],
        )
        return [openid for (openid,) in cursor.fetchall()]


def claim_for_push(push: Push, openids: Sequence[str]) -> dict[str, Credit]:
    """One usable credit for the push's template per openid that has one, claimed for the push (soonest to
    expire first; a long-term template: the standing subscription, unchanged); the openids without one are
    missing from the answer."""
    return credits.claim_credits(
        push.app,
        template_kind=push.template.credit_kind,
        template_id=push.template.template_id,
        openids=list(openids),
        claimed_by=push.claim_holder,
    )


def _insert_deliveries(push: Push, openids: list[str], claimed: dict, *, holding: bool = False) -> list[int]:
    """One Delivery row per recipient (pending with its credit, else no_credit, or held for a push with a
    hold); returns the pending ids.

    On PostgreSQL one ``INSERT … SELECT FROM unnest(…)``: the ORM's bulk_create of 500 model instances was
    a tenth of a broadcast worker's CPU. Elsewhere (SQLite in development) bulk_create."""
    pending = Delivery.Status.PENDING
    no_credit = Delivery.Status.HELD if holding else Delivery.Status.NO_CREDIT
    statuses = [pending if o in claimed else no_credit for o in openids]
    credit_ids = [claimed[o].id if o in claimed else None for o in openids]
    if connection.vendor == "postgresql":
        with prepared_cursor(len(openids)) as cursor:
            cursor.execute(
                f"""
                INSERT INTO {Delivery._meta.db_table}
                    (push_id, openid, status, credit_id, errcode, errmsg, attempts, created_at, updated_at)
                SELECT %s, r.openid, r.status, r.credit_id, '', '', 0, now(), now()
                FROM unnest(%s::text[], %s::text[], %s::bigint[]) WITH ORDINALITY AS r(openid, status, credit_id, n)
                ORDER BY r.n
                RETURNING id, status
                """,
                [
                    push.pk,
                    pg_array(openids, "text"),
                    pg_array(statuses, "text"),
                    pg_array(credit_ids, "bigint"),
                ],
            )
            return sorted(pk for pk, status in cursor.fetchall() if status == pending)
    rows = [
        Delivery(push=push, openid=o, status=status, credit_id=credit_id)
        for o, status, credit_id in zip(openids, statuses, credit_ids, strict=True)
    ]
    return [d.pk for d in Delivery.objects.bulk_create(rows) if d.status == pending]


def _plus(counter: str, n: int):
    """F() + n for a counter that may still be null (unknown until the first chunk)."""
    return Coalesce(F(counter), 0) + n

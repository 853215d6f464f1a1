"""Pushes: validate a send request, create the Push, claim credits for its recipients, cancel it.

The delivery pipeline (templates_app.delivery) sends what is prepared here. Explicit recipients are
prepared inside the trigger request, so ``no_credit`` in the answer is exact; ``@all`` and scheduled pushes
are prepared by the workers, chunk by chunk, through the same ``prepare_recipients``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from formids import services as credits
from formids.models import Credit, MiniUser
from pushhub.api import ApiError, iso_utc
from pushhub.sql import texts_in
from pushhub.wechat import rules
from templates_app.models import Delivery, IdempotencyRecord, Push, Template

log = logging.getLogger(__name__)

MAX_RECIPIENTS = 1000
MAX_OPENID_LENGTH = 64
FORMID_VALUE_MAX = 200  # a keyword of a legacy template message
COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")
MINIPROGRAM_STATES = ("developer", "trial", "formal")
LANGS = ("zh_CN", "en_US", "zh_HK", "zh_TW")
SEND_AT_MAX_AHEAD = timedelta(days=90)
SEND_AT_SKEW = timedelta(seconds=5)  # "now" from a client with a slightly fast clock is not "the past"
IDEMPOTENCY_WINDOW = timedelta(hours=24)
REQUEST_FIELDS = ("to", "data", "page", "emphasis_keyword", "miniprogram_state", "lang", "send_at", "force")


# --- validation ------------------------------------------------------------------------------------
@dataclass
class SendRequest:
    to_all: bool
    openids: list[str]
    data: dict
    page: str
    emphasis_keyword: str
    miniprogram_state: str
    lang: str
    send_at: datetime | None
    force: bool


def _bad(code: str, message: str, field: str | None = None):
    raise ApiError(400, code, message, field=field)


def parse_send_request(template: Template, body, now: datetime | None = None) -> SendRequest:
    """Validate a send body against the template (../shared/API.md "Sending"); ApiError 400 on any fault."""
    now = now or timezone.now()
    if not isinstance(body, dict):
        _bad("validation_error", "The body must be a JSON object.")
    unknown = [k for k in body if k not in REQUEST_FIELDS]
    if unknown:
        _bad("validation_error", f"Unknown field {unknown[0]!r}.", unknown[0])
    to_all, openids = _parse_to(body.get("to"))
    subscribe = template.kind == Template.Kind.SUBSCRIBE
    return SendRequest(
        to_all=to_all,
        openids=openids,
        data=parse_data(template, body.get("data")),
        page=_parse_page(body.get("page", None), template.page),
        emphasis_keyword=_parse_emphasis(template, body.get("emphasis_keyword")),
        miniprogram_state=_parse_choice(body, "miniprogram_state", MINIPROGRAM_STATES, subscribe),
        lang=_parse_choice(body, "lang", LANGS, subscribe),
        send_at=_parse_send_at(body.get("send_at"), now),
        force=_parse_bool(body.get("force", False), "force"),
    )


def _parse_to(to) -> tuple[bool, list[str]]:
    if to is None:
        _bad("validation_error", 'Give "to": an openid, a list of openids, or "@all".', "to")
    if to == "@all":
        return True, []
    if isinstance(to, str):
        to = [to]
    if not isinstance(to, list) or not to:
        _bad("validation_error", '"to" must be an openid, a non-empty list of openids, or "@all".', "to")
    if len(to) > MAX_RECIPIENTS:
        _bad(
            "validation_error",
            f'At most {MAX_RECIPIENTS} recipients per push (use "@all" for everyone).',
            "to",
        )
    for index, openid in enumerate(to):
        if not isinstance(openid, str) or not 0 < len(openid) <= MAX_OPENID_LENGTH or openid == "@all":
            _bad("validation_error", f"Recipient {index} is not an openid.", f"to[{index}]")
    return False, list(dict.fromkeys(to))


def parse_data(template: Template, data) -> dict:
    """``data`` as an object of exactly the template's keys, or an array mapped onto them in order (what
    vPush users send). Returns ``{key: {"value": str, "color"?: str}}`` in the template's order."""
    keys = template.keys
    if data is None:
        data = {}
    if isinstance(data, list):
        if len(data) > len(keys):
            _bad(
                "unknown_field",
                f"The template has {len(keys)} fields; data has {len(data)} values.",
                f"data[{len(keys)}]",
            )
        data = dict(zip(keys, data, strict=False))
    if not isinstance(data, dict):
        _bad("validation_error", '"data" must be an object (or an array in field order).', "data")
    for key in data:
        if key not in keys:
            _bad(
                "unknown_field",
                f"The template has no field {key!r} (it has {', '.join(keys)}).",
                f"data.{key}",
            )
    for key in keys:
        if key not in data:
            _bad("missing_field", f"Give a value for {key!r}.", f"data.{key}")
    return {key: _parse_value(template, key, data[key]) for key in keys}


def _parse_value(template: Template, key: str, raw) -> dict:
    color = None
    if isinstance(raw, dict):
        extra = set(raw) - {"value", "color"}
        if "value" not in raw or extra:
            _bad("invalid_value", 'A field is a value or {"value": …, "color"?: "#rrggbb"}.', f"data.{key}")
        color, raw = raw.get("color"), raw["value"]
        if color is not None and (not isinstance(color, str) or not COLOR_RE.match(color)):
            _bad("invalid_value", "color must look like #173177.", f"data.{key}.color")
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        _bad("invalid_value", "A value must be a string or a number.", f"data.{key}")
    value = raw if isinstance(raw, str) else str(raw)
    if template.kind == Template.Kind.SUBSCRIBE:
        reason = rules.check_value(key, value)
        if reason:
            _bad("invalid_value", f"{key}: {reason}", f"data.{key}")
    elif len(value) > FORMID_VALUE_MAX:
        _bad("invalid_value", f"{key}: at most {FORMID_VALUE_MAX} characters.", f"data.{key}")
    return {"value": value, "color": color} if color else {"value": value}


def _parse_page(page, default: str) -> str:
    if page is None:
        return default
    if not isinstance(page, str) or len(page) > 1024 or any(c.isspace() for c in page):
        _bad("validation_error", "page must be a mini-program path like pages/order?id=1.", "page")
    return page[1:] if page.startswith("/") else page  # WeChat wants no leading slash


def _parse_emphasis(template: Template, value) -> str:
    if value is None:
        return template.emphasis_keyword
    if template.kind != Template.Kind.FORMID:
        _bad("validation_error", "emphasis_keyword is for formId templates only.", "emphasis_keyword")
    if value == "":
        return ""
    if not isinstance(value, str) or value not in {f"{k}.DATA" for k in template.keys}:
        _bad("invalid_value", 'emphasis_keyword must name a field, like "keyword1.DATA".', "emphasis_keyword")
    return value


def _parse_choice(body: dict, name: str, choices: tuple[str, ...], allowed: bool) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not allowed:
        _bad("validation_error", f"{name} is for subscribe templates only.", name)
    if value not in choices:
        _bad("validation_error", f"{name} must be one of {', '.join(choices)}.", name)
    return value


def _parse_send_at(value, now: datetime) -> datetime | None:
    if value is None:
        return None
    try:
        when = parse_datetime(value) if isinstance(value, str) else None
    except ValueError:  # well formed but not a time, e.g. 2026-02-30T01:00:00Z or an offset of +25:00
        when = None
    if when is None:
        _bad("validation_error", "send_at must be an ISO-8601 time, e.g. 2026-12-01T01:00:00Z.", "send_at")
    if when.tzinfo is None:
        _bad("validation_error", "send_at needs a timezone (end it with Z for UTC).", "send_at")
    if when < now - SEND_AT_SKEW:
        _bad("validation_error", "send_at is in the past.", "send_at")
    if when > now + SEND_AT_MAX_AHEAD:
        _bad("validation_error", "send_at is more than 90 days ahead.", "send_at")
    return when if when > now else None


def _parse_bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        _bad("validation_error", f"{name} must be true or false.", name)
    return value


def ensure_sendable(template: Template) -> None:
    """410 for a template that is disabled or deleted (or whose app is gone)."""
    if template.status != Template.Status.ACTIVE or template.app.deleted_at is not None:
        raise ApiError(410, "template_gone", f"This template is {template.status}: it sends nothing.")


# --- reach preview ---------------------------------------------------------------------------------
def _users_with_credit(template: Template, now: datetime):
    """The app's users holding a usable credit for this template (a subquery of user ids)."""
    usable = Credit.objects.filter(credits.usable_q(now), app_id=template.app_id)
    if template.kind == Template.Kind.FORMID:
        usable = usable.filter(kind__in=credits.FORMID_KINDS)
    else:
        usable = usable.filter(kind=Credit.Kind.SUBSCRIBE, template_id=template.template_id)
    return usable.values("user_id")


def dry_run(template: Template, request: SendRequest) -> dict:
    """What a send would reach, without claiming or sending: {recipients, reachable, no_credit, opted_out}."""
    now = timezone.now()
    users = MiniUser.objects.filter(app_id=template.app_id)
    if not request.to_all:
        users = users.filter(openid__in=request.openids)
        recipients = len(request.openids)
    else:
        recipients = users.count()
    opted_out = 0 if request.force else users.filter(push_enabled=False).count()
    eligible = users if request.force else users.filter(push_enabled=True)
    reachable = eligible.filter(pk__in=_users_with_credit(template, now)).count()
    return {
        "recipients": recipients,
        "reachable": reachable,
        "no_credit": recipients - reachable - opted_out,
        "opted_out": opted_out,
    }


# --- starting a push ---------------------------------------------------------------------------------
@dataclass
class Started:
    push: Push
    body: dict
    replay: bool  # an Idempotency-Key replay: nothing new was done


def start_push(
    template: Template,
    request: SendRequest,
    *,
    created_by: str,
    status_url: Callable[[Push], str],
    idempotency_key: str = "",
    fingerprint: str = "",
) -> Started:
    """Create the push; for explicit recipients claim their credits now (so ``no_credit`` is exact); queue
    the delivery after commit. ``status_url(push)`` builds the status link for the answer."""
    if idempotency_key:
        replay = _replay(template, idempotency_key, fingerprint)
        if replay:
            return replay
    try:
        with transaction.atomic():
            push = _new_push(template, request, created_by)
            record = None
            if idempotency_key:
                # Own the key before claiming anything: a concurrent request with the same key waits here
                # on the unique index and then replays this one. Claiming first would let it skip (SKIP
                # LOCKED) the credits this request holds, report them missing, and win the key with that.
                record = IdempotencyRecord.objects.create(
                    template=template, key=idempotency_key, fingerprint=fingerprint, push=push
                )
            prepared = _prepare_explicit(push, request)
            body = _accepted_body(push, request, prepared, status_url(push))
            if record is not None:
                record.response = body
                record.save(update_fields=["response"])
            if push.status == Push.Status.QUEUED:
                push_id = str(push.pk)
                if prepared is not None and 0 < len(prepared.pending) <= settings.PUSH_CHUNK_SIZE:
                    # Prepared already and one chunk: straight to deliver_chunk, one queue hop fewer than
                    # through deliver_push (a trigger for one user reaches WeChat ~10 ms sooner). A lost
                    # chunk is queued again by the stall sweep, as any other.
                    ids = list(prepared.pending)
                    transaction.on_commit(lambda: _enqueue(push_id, ids))
                else:
                    transaction.on_commit(lambda: _enqueue(push_id))
    except IntegrityError:
        # The same Idempotency-Key committed by a concurrent request: everything here was rolled back
        # (claims included); answer what that request answered.
        replay = _replay(template, idempotency_key, fingerprint) if idempotency_key else None
        if replay is None:
            raise
        return replay
    return Started(push, body, replay=False)


def _enqueue(push_id: str, chunk: list[int] | None = None) -> None:
    """Queue the delivery (``chunk``: its only chunk of prepared deliveries). The push is committed
    already: if the broker is down, the answer still stands and beat's stall sweep
    (run_scheduled_pushes) queues it again, so nothing is lost."""
    from templates_app.tasks import deliver_chunk, deliver_push

    try:
        if chunk:
            deliver_chunk.delay(push_id, chunk)
        else:
            deliver_push.delay(push_id)
    except Exception:  # kombu/redis connection errors vary by transport
        log.exception("could not queue push %s; the stuck-push sweep will queue it again", push_id)


def _replay(template: Template, key: str, fingerprint: str) -> Started | None:
    record = IdempotencyRecord.objects.filter(template=template, key=key).select_related("push").first()
    if record is None:
        return None
    if record.created_at < timezone.now() - IDEMPOTENCY_WINDOW:
        record.delete()  # the key may be used again after 24 h
        return None
    if record.fingerprint != fingerprint:
        raise ApiError(
            409,
            "idempotency_mismatch",
            "This Idempotency-Key was used with another body.",
            field="Idempotency-Key",
        )
    return Started(record.push, record.response, replay=True)


def _new_push(template: Template, request: SendRequest, created_by: str) -> Push:
    scheduled = request.send_at is not None
    return Push.objects.create(
        tenant=template.app.tenant,
        app=template.app,
        template=template,
        status=Push.Status.SCHEDULED if scheduled else Push.Status.QUEUED,
        to_all=request.to_all,
        to=request.openids,
        data=request.data,
        page=request.page,
        emphasis_keyword=request.emphasis_keyword,
        miniprogram_state=request.miniprogram_state,
        lang=request.lang,
        force=request.force,
        send_at=request.send_at,
        created_by=created_by,
        recipients=None if request.to_all or scheduled else 0,
        no_credit=None if request.to_all or scheduled else 0,
        opted_out=None if request.to_all or scheduled else 0,
    )


def _prepare_explicit(push: Push, request: SendRequest) -> Prepared | None:
    """Claim now for explicit recipients of an immediate push (@all and scheduled pushes: the workers)."""
    if request.to_all or push.status == Push.Status.SCHEDULED:
        return None
    prepared = prepare_recipients(push, request.openids)
    finished = not prepared.pending
    Push.objects.filter(pk=push.pk).update(
        enumerated=True,
        **(
            {"status": Push.Status.DONE, "started_at": timezone.now(), "finished_at": timezone.now()}
            if finished
            else {}
        ),
    )
    push.refresh_from_db()
    return prepared


def _accepted_body(push: Push, request: SendRequest, prepared: Prepared | None, status_url: str) -> dict:
    explicit_now = prepared is not None
    return {
        "push_id": str(push.pk),
        "status": "scheduled" if push.status == Push.Status.SCHEDULED else "queued",
        "recipients": len(request.openids) if not request.to_all else None,
        "no_credit": prepared.no_credit if explicit_now else None,
        "opted_out": prepared.opted_out if explicit_now else None,
        "send_at": iso_utc(push.send_at),
        "status_url": status_url,
    }


# --- reading -------------------------------------------------------------------------------------------
def push_payload(push: Push) -> dict:
    return {
        "id": str(push.pk),
        "template": str(push.template_id),
        "app": push.app.appid,
        "status": push.status,
        "to": "@all" if push.to_all else push.to,
        "counts": {
            "recipients": push.recipients,
            "sent": push.sent,
            "failed": push.failed,
            "no_credit": push.no_credit,
            "opted_out": push.opted_out,
            "pending": push.pending,
        },
        "send_at": iso_utc(push.send_at),
        "created_at": iso_utc(push.created_at),
        "started_at": iso_utc(push.started_at),
        "finished_at": iso_utc(push.finished_at),
    }


def delivery_payload(delivery: Delivery) -> dict:
    errcode = delivery.errcode
    return {
        "openid": delivery.openid,
        "status": delivery.status,
        "errcode": int(errcode) if errcode.lstrip("-").isdigit() else (errcode or None),
        "errmsg": delivery.errmsg or None,
        "attempts": delivery.attempts,
        "msgid": str(delivery.msgid) if delivery.msgid is not None else None,
        "sent_at": iso_utc(delivery.sent_at),
    }


@dataclass
class Prepared:
    pending: list[int] = field(default_factory=list)  # ids of the deliveries that claimed a credit, to send
    no_credit: list[str] = field(default_factory=list)
    opted_out: list[str] = field(default_factory=list)


def prepare_recipients(push: Push, openids: Sequence[str]) -> Prepared:
    """Claim one credit per recipient for ``push`` and write their Delivery rows and the counters.

    Idempotent: recipients that already have a Delivery row for this push are skipped, so a chunk
    redelivered after a worker died claims nothing twice. Users who turned pushes off are skipped
    (counted as opted out, no row) unless the push is forced. Unknown openids have no credit.
    """
    result = Prepared()
    with transaction.atomic():
        # One preparation per push at a time: the row lock serialises redelivered chunks.
        Push.objects.select_for_update().filter(pk=push.pk).first()
        wanted = list(dict.fromkeys(openids))
        done = set(
            Delivery.objects.filter(push=push, openid__in=texts_in(wanted)).values_list("openid", flat=True)
        )
        wanted = [o for o in wanted if o not in done]
        if not wanted:
            return result
        if not push.force:
            result.opted_out = list(
                MiniUser.objects.filter(
                    app_id=push.app_id, openid__in=texts_in(wanted), push_enabled=False
                ).values_list("openid", flat=True)
            )
        eligible = [o for o in wanted if o not in set(result.opted_out)]
        claimed = credits.claim_credits(
            push.app,
            template_kind=push.template.kind,
            template_id=push.template.template_id,
            openids=eligible,
            claimed_by=push.claim_holder,
        )
        result.no_credit = [o for o in eligible if o not in claimed]
        result.pending = _insert_deliveries(push, eligible, claimed)
        Push.objects.filter(pk=push.pk).update(
            recipients=_plus("recipients", len(wanted)),
            no_credit=_plus("no_credit", len(result.no_credit)),
            opted_out=_plus("opted_out", len(result.opted_out)),
            pending=F("pending") + len(result.pending),
        )
    return result


def _insert_deliveries(push: Push, openids: list[str], claimed: dict) -> list[int]:
    """One Delivery row per recipient (pending with its credit, or no_credit); returns the pending ids.

    On PostgreSQL one ``INSERT … SELECT FROM unnest(…)``: the ORM's bulk_create of 500 model instances was
    a tenth of a broadcast worker's CPU. Elsewhere (SQLite in development) bulk_create."""
    pending, no_credit = Delivery.Status.PENDING, Delivery.Status.NO_CREDIT
    statuses = [pending if o in claimed else no_credit for o in openids]
    credit_ids = [claimed[o].id if o in claimed else None for o in openids]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                INSERT INTO {Delivery._meta.db_table}
                    (push_id, openid, status, credit_id, errcode, errmsg, attempts, created_at, updated_at)
                SELECT %s, r.openid, r.status, r.credit_id, '', '', 0, now(), now()
                FROM unnest(%s::text[], %s::text[], %s::bigint[]) WITH ORDINALITY AS r(openid, status, credit_id, n)
                ORDER BY r.n
                RETURNING id, status
                """,
                [push.pk, openids, statuses, credit_ids],
            )
            return sorted(pk for pk, status in cursor.fetchall() if status == pending)
    rows = [
        Delivery(push=push, openid=o, status=status, credit_id=credit_id)
        for o, status, credit_id in zip(openids, statuses, credit_ids, strict=True)
    ]
    return [d.pk for d in Delivery.objects.bulk_create(rows) if d.status == pending]


def _plus(counter: str, n: int):
    """F() + n for a counter that may still be null (unknown until the first chunk)."""
    from django.db.models.functions import Coalesce

    return Coalesce(F(counter), 0) + n


def cancel_push(push: Push, actor: str = "system") -> Push:
    """Stop a scheduled, queued or running push: unsent deliveries fail as ``canceled`` and their credits
    go back to the pool. Deliveries a worker is sending right now finish; nothing new starts."""
    now = timezone.now()
    with transaction.atomic():
        locked = Push.objects.select_for_update().get(pk=push.pk)
        if locked.status in (Push.Status.DONE, Push.Status.CANCELED):
            return locked
        # Never attempted, or waiting for a retry after a recorded transient error. A row attempted with
        # no recorded answer may be in flight right now: its worker settles it (and sees the cancel).
        unsent = Delivery.objects.filter(push=locked, status=Delivery.Status.PENDING).filter(
            Q(attempts=0) | ~Q(errcode="")
        )
        credit_ids = [cid for cid in unsent.values_list("credit_id", flat=True) if cid]
        canceled = unsent.update(status=Delivery.Status.FAILED, errcode="canceled", errmsg="push canceled")
        credits.release(credit_ids, locked.claim_holder)
        Push.objects.filter(pk=locked.pk).update(
            status=Push.Status.CANCELED,
            finished_at=now,
            failed=F("failed") + canceled,
            pending=F("pending") - canceled,
        )
        from tenants.services import audit

        audit(locked.tenant, actor, "push.cancel", "push", locked.pk, canceled=canceled)
    locked.refresh_from_db()
    return locked

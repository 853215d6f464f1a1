"""Starting and stopping a push: ``start_push`` (create it, claim explicit recipients' credits, queue the
delivery after commit, Idempotency-Key replays) and ``cancel_push``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from formids import services as credits
from pushhub import idempotency, logs, metrics
from pushhub.api import iso_utc
from pushhub.sql import insert_new
from templates_app import webhook_events
from templates_app.delivery import holds, lanes, queue
from templates_app.models import Delivery, IdempotencyRecord, Push, Template
from templates_app.pushes.recipients import Prepared, prepare_listed
from templates_app.pushes.request import SendRequest
from tenants.services import audit


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
    """Create the push; for listed recipients (openids, aliases) claim their credits now (so ``no_credit`` is
    exact); queue the delivery after commit. ``status_url(push)`` builds the status link for the answer."""
    if idempotency_key:
        replay = _replay(template, idempotency_key, fingerprint)
        if replay:
            return replay
    try:
        with transaction.atomic():
            push = _new_push(template, request, created_by)
            logs.bind(push=push.pk)
            metrics.after_commit(metrics.push_started, push.audience)
            record = None
            if idempotency_key:
                # Own the key before claiming anything: a concurrent request with the same key waits here
                # on the unique index and then replays this one. Claiming first would let it skip (SKIP
                # LOCKED) the credits this request holds, report them missing, and win the key with that.
                record = IdempotencyRecord.objects.create(
                    template=template, key=idempotency_key, fingerprint=fingerprint, push=push
                )
            prepared = _prepare_now(push, request)
            body = _accepted_body(push, request, prepared, status_url(push))
            if record is not None:
                record.response = body
                record.save(update_fields=["response"])
            if push.status == Push.Status.QUEUED:
                lanes.remember(push)  # its tasks' queue, known here without a lookup
                if prepared is not None and 0 < len(prepared.pending) <= settings.PUSH_CHUNK_SIZE:
                    # Prepared already and one chunk: straight to deliver_chunk. A lost chunk is queued
                    # again by the stall sweep, as any other.
                    queue.start_after_commit(push.pk, chunk=prepared.pending)
                else:
                    queue.start_after_commit(push.pk)
    except IntegrityError:
        # The same Idempotency-Key committed by a concurrent request: everything here was rolled back
        # (claims included); answer what that request answered.
        replay = _replay(template, idempotency_key, fingerprint) if idempotency_key else None
        if replay is None:
            raise
        return replay
    return Started(push, body, replay=False)


def _replay(template: Template, key: str, fingerprint: str) -> Started | None:
    record = IdempotencyRecord.objects.filter(template=template, key=key).select_related("push").first()
    if record is None:
        return None
    if record.created_at < timezone.now() - timedelta(seconds=idempotency.IDEMPOTENCY_TTL):
        record.delete()  # the key may be used again after 24 h
        return None
    if record.fingerprint != fingerprint:
        raise idempotency.mismatch()
    return Started(record.push, record.response, replay=True)


def _new_push(template: Template, request: SendRequest, created_by: str) -> Push:
    scheduled = request.send_at is not None
    unknown = request.to.is_broadcast or scheduled  # counted by the workers
    push = Push(
        tenant_id=template.app.tenant_id,
        app=template.app,
        template=template,
        status=Push.Status.SCHEDULED if scheduled else Push.Status.QUEUED,
        audience=request.to.audience,
        to=request.to.as_json(),
        data=request.data,
        page=request.page,
        emphasis_keyword=request.emphasis_keyword,
        miniprogram_state=request.miniprogram_state,
        lang=request.lang,
        force=request.force,
        hold_seconds=request.hold,
        send_at=request.send_at,
        created_by=created_by,
        recipients=None if unknown else 0,
        no_credit=None if unknown else 0,
        opted_out=None if unknown else 0,
    )
    insert_new(push)  # one fixed INSERT: the ORM compiled this one on every trigger
    return push


def _prepare_now(push: Push, request: SendRequest) -> Prepared | None:
    """Claim now for listed recipients of an immediate push (broadcasts and scheduled pushes: the workers).
    The push is new (this transaction made it): ``prepare_listed`` writes its counters and status on it."""
    if request.to.is_broadcast or push.status == Push.Status.SCHEDULED:
        return None
    prepared = prepare_listed(push, new_push=True)
    if push.status == Push.Status.DONE:  # nobody to send to: finished here
        webhook_events.push_finished(push.pk, push.tenant_id)
        metrics.after_commit(metrics.push_finished, Push.Status.DONE)
    return prepared


def _accepted_body(push: Push, request: SendRequest, prepared: Prepared | None, status_url: str) -> dict:
    """The 202: recipients named the way the request named them. Broadcasts are counted by the workers
    (null here); a scheduled push's aliases are resolved when it runs (null too)."""
    to = request.to
    explicit_now = prepared is not None
    if to.audience == Push.Audience.OPENIDS:
        recipients = len(to.names)
    elif to.audience == Push.Audience.ALIASES and explicit_now:
        recipients = len(to.names) - len(prepared.unknown_aliases)
    else:
        recipients = None
    body = {
        "push_id": str(push.pk),
        "status": "scheduled" if push.status == Push.Status.SCHEDULED else "queued",
        "recipients": recipients,
        "no_credit": prepared.no_credit if explicit_now else None,
        "opted_out": prepared.opted_out if explicit_now else None,
    }
    if to.audience == Push.Audience.ALIASES:
        body["unknown_aliases"] = prepared.unknown_aliases if explicit_now else None
    if request.hold is not None:
        body["held"] = prepared.held if explicit_now else None
    return body | {"send_at": iso_utc(push.send_at), "status_url": status_url}


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
        # Held deliveries hold no credit: they are dropped, failed as canceled like the unsent ones.
        dropped = holds.update_in_pk_order(
            Delivery.objects.filter(push=locked, status=Delivery.Status.HELD),
            status=Delivery.Status.FAILED,
            errcode="canceled",
            errmsg="push canceled",
            credit_arrived_at=None,
        )
        Push.objects.filter(pk=locked.pk).update(
            status=Push.Status.CANCELED,
            finished_at=now,
            failed=F("failed") + canceled + dropped,
            pending=F("pending") - canceled,
            held=F("held") - dropped,
        )
        audit(locked.tenant, actor, "push.cancel", "push", locked.pk, canceled=canceled + dropped)
        webhook_events.push_finished(locked.pk, locked.tenant_id)
        metrics.after_commit(metrics.push_finished, Push.Status.CANCELED)
        metrics.after_commit(metrics.deliveries, {(Delivery.Status.FAILED, "canceled"): canceled + dropped})
    locked.refresh_from_db()
    return locked

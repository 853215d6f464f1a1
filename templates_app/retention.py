"""Retention: the rows that grow with every send or event are deleted once they are older than their
``*_RETENTION_DAYS`` (0 keeps them forever), in short batches, never touching a row still in use.

What goes (each kind below): deliveries of finished pushes, consumed/expired credits, WeChat's and the SDK's
inbound events, idempotency records past their 24 h, the funnel's opens past their 24 h, webhook events whose
dispatches are all finished (with their dispatches and attempts), the in-app inbox's messages and the sandbox's
inbox. What stays: pushes (their counts are stored on the
row, so the API, the dashboard and ``push.finished`` show the same numbers), DailyStat (the per-day charts and
``sent_today``), users, live credits and the audit log.

How: each batch is its own short transaction deleting at most ``RETENTION_BATCH_SIZE`` rows found by an
index: the primary key for the tables whose ids grow with time (a window ``lo <= id < lo + batch`` of the
oldest ids, the walk stops at the first id inserted after the cutoff), or an indexed timestamp otherwise
(keyset on (time, pk)). A writer only ever waits for the rows of one batch. A run stops at its time budget
and the next one resumes where it stopped; a cache lock lets one sweep run at a time.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Exists, Model, OuterRef, Q
from django.utils import timezone

from formids.funnel import RESUBSCRIBE_WINDOW
from formids.models import Credit, InboundEvent, RecentOpen
from pushhub import idempotency
from pushhub.wechat.sandbox.models import SandboxMessage
from templates_app.models import Delivery, IdempotencyRecord, InboxMessage, Push
from webhooks.models import EventDispatch, WebhookEvent

log = logging.getLogger(__name__)

LOCK_KEY = "retention:sweep"


@dataclass(frozen=True)
class Kind:
    name: str  # as the command prints it
    setting: str  # the *_RETENTION_DAYS setting
    model: type[Model]
    # The rows that may go, given the cutoff: old enough and not in use.
    deletable: Callable[[datetime], Q]
    # "id": the primary key grows with time and ``inserted`` is set on insert (the walk stops at the first
    # row inserted after the cutoff); "time": ``inserted`` is indexed and the walk goes by it.
    walk: str
    inserted: str
    floor: timedelta = timedelta(0)  # kept at least this long whatever the setting


FINISHED_PUSH = [Push.Status.DONE, Push.Status.CANCELED]
FINAL_DELIVERY = [Delivery.Status.SENT, Delivery.Status.FAILED, Delivery.Status.NO_CREDIT]

KINDS = [
    # A delivery goes with its push's age: only once the push is done or canceled (so never a pending or held
    # delivery, nor a late subscribe_msg_sent_event's target of a recent push) and finished before the cutoff.
    Kind(
        "deliveries",
        "DELIVERY_RETENTION_DAYS",
        Delivery,
        lambda cutoff: Q(
            status__in=FINAL_DELIVERY, push__status__in=FINISHED_PUSH, push__finished_at__lt=cutoff
        ),
        walk="id",
        inserted="created_at",
    ),
    # Consumed or expired credits only (available and claimed ones are the pools), from when they ended.
    # A deleted credit's old deliveries keep their row with credit = null.
    Kind(
        "credits",
        "CREDIT_RETENTION_DAYS",
        Credit,
        lambda cutoff: Q(state__in=[Credit.State.CONSUMED, Credit.State.EXPIRED], finished_at__lt=cutoff),
        walk="id",
        inserted="created_at",
    ),
    Kind(
        "inbound_events",
        "INBOUND_EVENT_RETENTION_DAYS",
        InboundEvent,
        lambda cutoff: Q(received_at__lt=cutoff),
        walk="time",
        inserted="received_at",
    ),
    # An Idempotency-Key is honoured 24 h (API.md): never deleted before, whatever the setting.
    Kind(
        "idempotency_records",
        "IDEMPOTENCY_RETENTION_DAYS",
        IdempotencyRecord,
        lambda cutoff: Q(created_at__lt=cutoff),
        walk="time",
        inserted="created_at",
        floor=timedelta(seconds=idempotency.IDEMPOTENCY_TTL),
    ),
    # An event goes (with its dispatches and their attempts) once no dispatch of it is pending (still being
    # retried or leased by a worker).
    Kind(
        "webhook_events",
        "WEBHOOK_EVENT_RETENTION_DAYS",
        WebhookEvent,
        lambda cutoff: (
            Q(created_at__lt=cutoff)
            & ~Exists(EventDispatch.objects.filter(event=OuterRef("pk"), status=EventDispatch.Status.PENDING))
        ),
        walk="time",
        inserted="created_at",
    ),
    # The in-app inbox: a message goes this long after it was sent, read or not, whatever its delivery's own
    # retention (its push is kept; the row only points at it).
    Kind(
        "inbox_messages",
        "INBOX_RETENTION_DAYS",
        InboxMessage,
        lambda cutoff: Q(sent_at__lt=cutoff),
        walk="id",
        inserted="sent_at",
    ),
    # The funnel's opens waiting for a re-subscription (formids.funnel): useless once their 24 h are over,
    # never deleted before. Ids grow with the opens' times, so the id walk reads one day's rows at most.
    Kind(
        "recent_opens",
        "RECENT_OPEN_RETENTION_DAYS",
        RecentOpen,
        lambda cutoff: Q(opened_at__lt=cutoff),
        walk="id",
        inserted="opened_at",
        floor=RESUBSCRIBE_WINDOW,
    ),
    Kind(
        "sandbox_messages",
        "SANDBOX_MESSAGE_RETENTION_DAYS",
        SandboxMessage,
        lambda cutoff: Q(created_at__lt=cutoff),
        walk="id",
        inserted="created_at",
    ),
]


@dataclass
class Report:
    """What a run did (or, dry, would do) to one kind."""

    name: str
    days: int
    deleted: int = 0
    batches: int = 0
    longest_batch: float = 0.0  # seconds, the longest single batch transaction
    complete: bool = True  # False: the time budget ran out first (the next run resumes)
    cutoff: datetime | None = None

    def line(self, dry_run: bool = False) -> str:
        if not self.days:
            return f"{self.name}: kept forever ({KIND_BY_NAME[self.name].setting}=0)"
        verb = "would delete" if dry_run else "deleted"
        text = (
            f"{self.name}: {verb} {self.deleted} older than {self.days} days"
            f" (before {self.cutoff:%Y-%m-%dT%H:%M:%SZ}) in {self.batches} batches,"
            f" longest {self.longest_batch * 1000:.0f} ms"
        )
        return text if self.complete else text + "; time budget spent, the next run goes on"


KIND_BY_NAME = {kind.name: kind for kind in KINDS}


class SweepRunning(Exception):
    """Another sweep holds the lock."""


def cutoff_of(kind: Kind, now: datetime) -> datetime | None:
    days = int(getattr(settings, kind.setting))
    if days <= 0:
        return None
    return min(now - timedelta(days=days), now - kind.floor)


def sweep(
    *,
    dry_run: bool = False,
    batch_size: int | None = None,
    budget: float | None = None,
    now: datetime | None = None,
    on_batch: Callable[[str, int, float], None] | None = None,
) -> list[Report]:
    """Delete (``dry_run``: count) every kind's rows past its retention; one sweep at a time (SweepRunning).
    ``on_batch(kind, rows, seconds)`` is called after each batch (the benchmark's probe)."""
    batch_size = batch_size or settings.RETENTION_BATCH_SIZE
    budget = settings.RETENTION_TIME_BUDGET if budget is None else budget
    owner = uuid.uuid4().hex
    # A dry run changes nothing: it needs no lock. The lock outlives a run that dies by the budget plus a
    # margin, so a killed worker cannot block the sweep for long.
    if not dry_run and not cache.add(LOCK_KEY, owner, timeout=int(budget) + 60):
        raise SweepRunning("another retention sweep is running")
    try:
        now = now or timezone.now()
        deadline = time.monotonic() + budget
        reports = []
        for kind in KINDS:
            report = Report(kind.name, int(getattr(settings, kind.setting)))
            report.cutoff = cutoff_of(kind, now)
            if report.cutoff is not None:
                walk = _walk_ids if kind.walk == "id" else _walk_time
                walk(kind, report, batch_size, deadline, dry_run, on_batch)
                if report.deleted and not dry_run:
                    log.info("retention: %s", report.line())
            reports.append(report)
        return reports
    finally:
        if not dry_run and cache.get(LOCK_KEY) == owner:
            cache.delete(LOCK_KEY)


def _cursor_key(kind: Kind) -> str:
    return f"retention:cursor:{kind.name}"


def _timed_batch(report: Report, delete: Callable[[], int], on_batch) -> None:
    started = time.monotonic()
    with transaction.atomic():
        rows = delete()
    took = time.monotonic() - started
    report.deleted += rows
    report.batches += 1
    report.longest_batch = max(report.longest_batch, took)
    if on_batch:
        on_batch(report.name, rows, took)


def _delete(queryset, model: type[Model], dry_run: bool) -> int:
    if dry_run:
        return queryset.count()
    return queryset.delete()[1].get(model._meta.label, 0)


def _walk_ids(kind: Kind, report: Report, batch_size: int, deadline: float, dry_run: bool, on_batch) -> None:
    """Windows of ``batch_size`` ids from the oldest: each a primary-key range scan of at most that many
    rows, rows in use inside it skipped. Stops at the first id inserted after the cutoff (ids grow with
    time), or at the deadline (the cursor is kept for the next run)."""
    model, cutoff = kind.model, report.cutoff
    low = (None if dry_run else cache.get(_cursor_key(kind))) or 0
    while True:
        if time.monotonic() >= deadline:
            report.complete = False
            if not dry_run:
                cache.set(_cursor_key(kind), low, timeout=7 * 86_400)
            return
        first = model.objects.filter(pk__gte=low).order_by("pk").values_list("pk", kind.inserted).first()
        if first is None or first[1] >= cutoff:
            if not dry_run:
                cache.delete(_cursor_key(kind))  # done: the next run starts from the oldest again
            return
        low = first[0]
        window = model.objects.filter(kind.deletable(cutoff), pk__gte=low, pk__lt=low + batch_size)
        _timed_batch(report, lambda window=window: _delete(window, model, dry_run), on_batch)
        low += batch_size


def _walk_time(kind: Kind, report: Report, batch_size: int, deadline: float, dry_run: bool, on_batch) -> None:
    """Keyset over the indexed ``inserted`` column (then the pk) below the cutoff: the oldest
    ``batch_size`` deletable rows a batch, the rows in use stepped over."""
    model, cutoff, column = kind.model, report.cutoff, kind.inserted
    after = None if dry_run else cache.get(_cursor_key(kind))
    while True:
        if time.monotonic() >= deadline:
            report.complete = False
            if not dry_run and after is not None:
                cache.set(_cursor_key(kind), after, timeout=7 * 86_400)
            return
        candidates = model.objects.filter(kind.deletable(cutoff), **{f"{column}__lt": cutoff})
        if after is not None:
            candidates = candidates.filter(**{f"{column}__gte": after[0]}).exclude(
                **{column: after[0], "pk__lte": after[1]}
            )
        found: list = []

        def batch(candidates=candidates, found=found) -> int:
            found.extend(candidates.order_by(column, "pk").values_list(column, "pk")[:batch_size])
            if not found:
                return 0
            # The condition again: a row that came into use since it was read stays.
            chosen = model.objects.filter(kind.deletable(cutoff), pk__in=[pk for _, pk in found])
            return _delete(chosen, model, dry_run)

        _timed_batch(report, batch, on_batch)
        if not found:
            report.batches -= 1  # the probe that found nothing deleted nothing
            if not dry_run:
                cache.delete(_cursor_key(kind))
            return
        after = found[-1]

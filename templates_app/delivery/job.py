"""A delivery being sent by this run (``Job``, with its row as ``Row``), and the tally of what a chunk did
(``ChunkReport``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from templates_app.models import Delivery


class Row:
    """The columns of a pending Delivery row a chunk reads and writes, as plain attributes.

    Not a model instance: building 500 Delivery and Credit instances per chunk (Model.__init__ and its
    pre/post_init signals) was a tenth of a broadcast worker's CPU. Every write goes through ``ledger``,
    which names the columns itself."""

    __slots__ = ("pk", "openid", "status", "attempts", "errcode", "errmsg", "credit_id", "msgid", "sent_at",
                 "updated_at")  # fmt: skip

    def __init__(
        self,
        pk: int,
        openid: str,
        attempts: int,
        credit_id: int | None,
        updated_at: datetime | None,
        errcode: str = "",
        errmsg: str = "",
        status: str = Delivery.Status.PENDING,
    ):
        self.pk, self.openid, self.status, self.attempts = pk, openid, status, attempts
        self.errcode, self.errmsg, self.credit_id = errcode, errmsg, credit_id
        self.msgid: int | None = None
        self.sent_at: datetime | None = None
        self.updated_at = updated_at

    @property
    def id(self) -> int:
        return self.pk

    def __repr__(self) -> str:
        return f"<Row {self.pk} {self.openid} {self.status}>"


@dataclass
class Job:
    """A pending delivery this run sends, with the credit it sends with (as claimed, maybe not yet on the
    row: ``ledger.mark_attempts`` puts it there with the attempt that uses it)."""

    delivery: Row
    attempts: int  # as committed: compared by the guarded mark and the guarded write
    credit_id: int | None = None
    credit_kind: str = ""
    credit_value: str = ""
    fresh_credit: bool = False  # claimed by this run: no earlier attempt used it
    credits_used: int = 1
    earlier_attempt: bool = False  # set when marked: an earlier attempt used this credit

    @classmethod
    def of(cls, delivery: Delivery) -> Job:
        """The job of a Delivery instance (its credit read through the relation); chunks build theirs from
        one query of tuples (``chunk._load_jobs``)."""
        credit = delivery.credit
        row = Row(
            delivery.pk, delivery.openid, delivery.attempts, delivery.credit_id, delivery.updated_at,
            delivery.errcode, delivery.errmsg, delivery.status,
        )  # fmt: skip
        row.msgid, row.sent_at = delivery.msgid, delivery.sent_at
        return cls(
            delivery=row,
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

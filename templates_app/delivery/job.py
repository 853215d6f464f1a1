"""A delivery being sent by this run (``Job``), and the tally of what a chunk did (``ChunkReport``)."""

from __future__ import annotations

from dataclasses import dataclass

from templates_app.models import Delivery


@dataclass
class Job:
    """A pending delivery this run sends, with the credit it sends with (as claimed, maybe not yet on the
    row: ``ledger.mark_attempts`` puts it there with the attempt that uses it)."""

    delivery: Delivery
    attempts: int  # as committed: compared by the guarded mark and the guarded write
    credit_id: int | None = None
    credit_kind: str = ""
    credit_value: str = ""
    fresh_credit: bool = False  # claimed by this run: no earlier attempt used it
    credits_used: int = 1
    earlier_attempt: bool = False  # set when marked: an earlier attempt used this credit

    @classmethod
    def of(cls, delivery: Delivery) -> Job:
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

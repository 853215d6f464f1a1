"""The in-app inbox's cost on the send path: ``ledger.write`` of a chunk of sent deliveries with the app's inbox on
(one more INSERT of the chunk's InboxMessage rows, in the write's transaction) against the same write with it off.

    python -m bench.inbox [--chunk 500] [--rounds 20]

Each round makes a push with ``--chunk`` pending deliveries and times the write that records them all sent; the
two settings alternate round by round, so both see the same machine. Afterwards every sent delivery of the "on"
pushes has exactly one inbox row and the "off" pushes none.
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench import common
from bench.common import Row


def _write_once(template, chunk: int, inbox_on: bool) -> tuple[float, object]:
    from django.utils import timezone

    from templates_app.delivery import ledger, outcomes
    from templates_app.delivery.job import Job
    from templates_app.models import Delivery, Push

    app = template.app
    if app.inbox_enabled != inbox_on:
        app.inbox_enabled = inbox_on
        app.save(update_fields=["inbox_enabled"])
    push = Push.objects.create(
        tenant=app.tenant,
        app=app,
        template=template,
        status=Push.Status.RUNNING,
        data=common.TEMPLATE_DATA["formid"],
        recipients=chunk,
        pending=chunk,
        enumerated=True,
        started_at=timezone.now(),
    )
    Delivery.objects.bulk_create(
        [Delivery(push=push, openid=f"oInbox{push.pk.hex[:8]}{i}") for i in range(chunk)]
    )
    rows = list(Delivery.objects.filter(push=push).order_by("pk"))
    push = ledger.load_push(push.pk)
    sent = outcomes.Outcome(outcomes.SENT, outcomes.CONSUME)
    work = [(Job.of(row), sent) for row in rows]
    started = time.perf_counter()
    report = ledger.write(push, work)
    took = time.perf_counter() - started
    assert report.sent == chunk, report
    return took, push


def run(full: bool = False, chunk: int = 500, rounds: int | None = None) -> list[str]:
    common.setup_django()
    from django.db import connection

    from templates_app.models import InboxMessage

    rounds = rounds or (40 if full else 20)
    app = common.make_app(None, label="inbox bench")
    template, _ = common.make_template(app, None)
    _write_once(template, chunk, True)  # warm: connections, caches, query plans
    _write_once(template, chunk, False)
    times: dict[bool, list[float]] = {True: [], False: []}
    pushes: dict[bool, list] = {True: [], False: []}
    for n in range(rounds * 2):
        on = n % 2 == 0
        took, push = _write_once(template, chunk, on)
        times[on].append(took)
        pushes[on].append(push.pk)
    failures: list[str] = []
    with_rows = InboxMessage.objects.filter(push_id__in=pushes[True]).count()
    without = InboxMessage.objects.filter(push_id__in=pushes[False]).count()
    common.check(
        with_rows == chunk * rounds, f"inbox on: {with_rows} rows for {chunk * rounds} sent", failures
    )
    common.check(without == 0, f"inbox off: {without} rows", failures)
    on_ms = statistics.median(times[True]) * 1000
    off_ms = statistics.median(times[False]) * 1000
    common.print_table(
        f"Inbox rows on the send path: ledger.write of {chunk} sent deliveries (median of {rounds} each)",
        [
            Row("write, inbox on (ms)", f"{on_ms:.1f}", f"{off_ms:.1f} (off)", common.ratio(on_ms, off_ms)),
            Row(
                "p90 (ms)",
                f"{common.percentile(times[True], 90) * 1000:.1f}",
                f"{common.percentile(times[False], 90) * 1000:.1f} (off)",
            ),
            Row("added per delivery (µs)", f"{(on_ms - off_ms) * 1000 / chunk:.0f}"),
        ],
        notes=[
            f"PostgreSQL {connection.pg_version // 10000}, one process, the write alone (no WeChat call)."
        ],
    )
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    raise SystemExit(1 if run(chunk=args.chunk, rounds=args.rounds) else 0)


if __name__ == "__main__":
    main()

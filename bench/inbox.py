"""The in-app inbox's cost on the send path: ``ledger.write`` of a chunk of sent deliveries with the app's inbox on
(one more INSERT of the chunk's InboxMessage rows, in the write's transaction) against the same write with it off.

    python -m bench.inbox [--chunk 500] [--rounds 20] [--messages 200000] [--mine 5000]

Each round makes a push with ``--chunk`` pending deliveries and times the write that records them all sent; the
two settings alternate round by round, so both see the same machine. Afterwards every sent delivery of the "on"
pushes has exactly one inbox row and the "off" pushes none.

Then the reading side: ``--messages`` inbox rows spread over 10,000 other users of the app (``INSERT … SELECT
generate_series``) and ``--mine`` of one user's; ``GET /sdk/v1/{appid}/inbox`` of that user (Django's test
client in this process: the view, its queries and the JSON, no HTTP), the first page and the page after walking
half way, and ``POST …/inbox/read {"all": true}``.
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


def _read_side(template, messages: int, mine: int, failures: list[str]) -> list[Row]:
    from django.conf import settings
    from django.db import connection
    from rest_framework.test import APIClient

    from formids.sdk_auth import issue_session
    from templates_app.models import Push

    app = template.app
    app.inbox_enabled = True
    app.save(update_fields=["inbox_enabled"])
    push = Push.objects.create(tenant=app.tenant, app=app, template=template, status=Push.Status.DONE,
                               data=common.TEMPLATE_DATA["formid"], page="pages/order?id=1")  # fmt: skip
    me = "oInboxReader"
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM templates_app_inboxmessage WHERE delivery_id < 0")  # an earlier run's
        # Others' messages: 10,000 users, one every 10 s back from now; the reader's: one a minute. Negative
        # delivery ids: no real delivery has one.
        cursor.execute(
            """
            INSERT INTO templates_app_inboxmessage (app_id, openid, push_id, delivery_id, sent_at, read_at)
            SELECT %s, 'oOther' || (g %% 10000), %s, -g, now() - g * interval '10 seconds', NULL
            FROM generate_series(1, %s) AS g
            """,
            [app.pk, push.pk, messages],
        )
        cursor.execute(
            """
            INSERT INTO templates_app_inboxmessage (app_id, openid, push_id, delivery_id, sent_at, read_at)
            SELECT %s, %s, %s, -%s - g, now() - g * interval '1 minute', NULL
            FROM generate_series(1, %s) AS g
            """,
            [app.pk, me, push.pk, messages, mine],
        )
        cursor.execute("ANALYZE templates_app_inboxmessage")
    print(f"inbox: {messages + mine:,} rows generated in {time.monotonic() - started:.1f} s", flush=True)
    # One user calling hundreds of times a minute: the SDK's rate limits are not what is measured here.
    settings.SDK_RATE_PER_OPENID = settings.SDK_RATE_PER_IP = 10**9
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Session {issue_session(app, me)[0]}")
    url = f"/sdk/v1/{app.appid}/inbox"

    def timed(call, n: int = 50) -> tuple[list[float], object]:
        samples, answer = [], None
        for _ in range(n):
            t = time.perf_counter()
            answer = call()
            samples.append(time.perf_counter() - t)
        return samples, answer

    first, answer = timed(lambda: client.get(url))
    body = answer.json()
    common.check(
        answer.status_code == 200 and len(body["results"]) == 20, "inbox: a first page of 20", failures
    )
    common.check(body["unread"] == mine, f"inbox: unread {body['unread']} of {mine}", failures)
    link, walked = body["next"], 20
    while walked < mine // 2:
        link = client.get(link).json()["next"]
        walked += 20
    deep, answer = timed(lambda: client.get(link))
    common.check(len(answer.json()["results"]) == 20, f"inbox: a page after {walked} messages", failures)
    read, answer = timed(lambda: client.post(url + "/read", {"all": True}, format="json"), n=1)
    common.check(answer.json() == {"unread": 0}, "inbox: all read", failures)

    def ms(samples: list[float], pct: float) -> str:
        return f"{common.percentile(samples, pct) * 1000:.1f}"

    return [
        Row(f"GET inbox, first page (of {mine:,}), p50 / p99 ms", f"{ms(first, 50)} / {ms(first, 99)}"),
        Row(f"GET inbox, the page after {walked:,}, p50 / p99 ms", f"{ms(deep, 50)} / {ms(deep, 99)}"),
        Row(f"POST inbox/read all ({mine:,} unread), ms", ms(read, 50)),
    ]


def run(
    full: bool = False,
    chunk: int = 500,
    rounds: int | None = None,
    messages: int | None = None,
    mine: int = 5000,
) -> list[str]:
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
    messages = messages or (1_000_000 if full else 200_000)
    reading = _read_side(template, messages, mine, failures)
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
            *reading,
        ],
        notes=[
            f"PostgreSQL {connection.pg_version // 10000}, one process; the write alone (no WeChat call)",
            f"reads: {messages + mine:,} inbox rows in the table (10,000 other users), in-process test client",
        ],
    )
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--messages", type=int, default=200_000, help="inbox rows of other users")
    parser.add_argument("--mine", type=int, default=5000, help="the reading user's messages")
    args = parser.parse_args()
    failures = run(chunk=args.chunk, rounds=args.rounds, messages=args.messages, mine=args.mine)
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()

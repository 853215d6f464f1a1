"""Webhooks: events per second ONE webhook worker (the Procfile's: threads pool, its default concurrency)
delivers to a local receiver answering 2xx.

    python -m bench.webhooks [--events 20000] [--endpoints 1] [--batch 500] [--no-verify] [--fail-rate 0]

``--events`` events (``webhook.test``, recorded through ``webhooks.outbox.record`` as the product records
them, ``--batch`` to a transaction, each transaction queueing its drain after commit) are split over
``--endpoints`` endpoints of one tenant, all at the receiver (bench/webhook_receiver.py, its own asyncio
process, verifying every signature with ``standardwebhooks`` unless ``--no-verify``). The clock runs from
the first commit to the last dispatch succeeded. The bench's own loop runs ``dispatch.sweep`` every
WEBHOOK_SWEEP_SECONDS, as beat would.

Checked afterwards: every recorded event reached the receiver with a 2xx, no event was sent twice (the
receiver answers every request 2xx, so a second request is a duplicate), every body of an id is the same
bytes, every signature verified, no dispatch left pending or failed.

``--fail-rate 0.5`` makes the receiver answer 500 to that share of requests and the worker run the retry
schedule 1,000 times faster (WEBHOOK_RETRY_SCALE=0.001): then an event may take several requests, and one
refused on all 8 attempts (0.5^8 of them) ends failed, as the schedule says; the checks allow both.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench import common
from bench.common import Row
from bench.webhook_receiver import Client as Receiver


def run_webhooks(
    events: int = 20_000,
    *,
    endpoints: int = 1,
    batch: int = 500,
    verify: bool = True,
    concurrency: int | None = None,
    fail_rate: float = 0.0,
    timeout: float = 1800.0,
) -> list[str]:
    common.setup_django()
    from django.conf import settings
    from django.db import transaction
    from django.db.models import Count

    from webhooks import dispatch, outbox, services
    from webhooks.models import EventDispatch

    failures: list[str] = []
    scratch = Path(tempfile.mkdtemp(prefix="pushhub-bench-webhooks-"))
    threads = concurrency or common.procfile_webhook_concurrency()
    with common.Processes() as processes:
        receiver = Receiver(processes, fail_rate=fail_rate, verify=verify, log=scratch / "receiver.log")
        env = common.bench_env(**({"WEBHOOK_RETRY_SCALE": "0.001"} if fail_rate else {}))
        app = common.make_app(None, "webhooks bench")
        tenant = app.tenant
        made = []
        for n in range(endpoints):
            endpoint, secret = services.create_endpoint(
                tenant, url=receiver.url(f"e{n}"), events=["*"], actor="bench"
            )
            receiver.set_secret(f"e{n}", secret)
            made.append(endpoint)
        worker = common.start_webhook_worker(processes, env, scratch / "webhook-worker.log", threads)
        cpu_before = worker_cpu = common.tree_cpu_seconds(worker.pid)
        receiver_cpu = receiver.cpu_seconds()
        began = time.monotonic()
        recorded: list[str] = []
        for start in range(0, events, batch):
            size = min(batch, events - start)
            endpoint = made[(start // batch) % endpoints]
            payloads = [{"n": start + i, "message": "PushHub bench event"} for i in range(size)]
            with transaction.atomic():
                recorded += [
                    e.pk
                    for e in outbox.record(
                        tenant.pk, outbox.WEBHOOK_TEST, payloads, endpoint_ids=[endpoint.pk]
                    )
                ]
        recording = time.monotonic() - began
        print(f"webhooks: {len(recorded):,} events recorded in {recording:.1f} s", flush=True)
        pending = EventDispatch.objects.filter(endpoint__in=made, status=EventDispatch.Status.PENDING)
        last_sweep = last_report = 0.0
        while True:
            elapsed = time.monotonic() - began
            left = pending.count()
            if not left:
                break
            if elapsed - last_sweep >= settings.WEBHOOK_SWEEP_SECONDS:
                last_sweep = elapsed
                dispatch.sweep()
            if elapsed - last_report >= 5:
                last_report = elapsed
                print(f"  {elapsed:5.1f} s: {left:,} pending", flush=True)
            if elapsed > timeout:
                failures.append(f"{left} events still pending after {timeout:.0f} s")
                break
            time.sleep(0.05)
        wall = time.monotonic() - began
        worker_cpu = common.tree_cpu_seconds(worker.pid) - cpu_before
        receiver_cpu = receiver.cpu_seconds() - receiver_cpu
        rss = common.peak_rss_mb(worker.pid)
        stats = receiver.stats()
        seen = receiver.ids(recorded)

    by_status = dict(
        EventDispatch.objects.filter(endpoint__in=made).values_list("status").annotate(n=Count("pk"))
    )
    succeeded = by_status.get("succeeded", 0)
    failed_ids = set(
        EventDispatch.objects.filter(endpoint__in=made, status=EventDispatch.Status.FAILED).values_list(
            "event_id", flat=True
        )
    )
    rate = succeeded / wall
    rows = [
        Row("events/s (first commit → last succeeded)", f"{rate:,.0f}"),
        Row(f"time for {events:,} events", f"{wall:.1f} s (recording {recording:.1f} s of it)"),
        Row("receiver: requests / 2xx / 500 / distinct ids",
            f"{stats['requests']:,} / {stats['ok']:,} / {stats['refused']:,} / {stats['ids']:,}"),
        Row("requests/s (first → last request)", f"{stats['requests'] / max(stats['seconds'], 1e-9):,.0f}"),
        Row("webhook worker CPU per event / per request",
            f"{1000 * worker_cpu / max(succeeded, 1):.2f} / {1000 * worker_cpu / max(stats['requests'], 1):.2f} ms"),
        Row("CPU: webhook worker / receiver", f"{worker_cpu:.1f} s / {receiver_cpu:.1f} s"),
        Row("webhook worker peak RSS", f"{rss:.0f} MiB"),
    ]  # fmt: skip
    common.print_table(
        f"Webhooks: {events:,} events to {endpoints} endpoint{'s' if endpoints > 1 else ''} at a local "
        f"receiver, one webhook worker (threads pool × {threads})",
        rows,
        [
            f"events recorded with `webhooks.outbox.record`, {batch} to a transaction; the worker drains each "
            f"endpoint with at most WEBHOOK_ENDPOINT_CONCURRENCY = {settings.WEBHOOK_ENDPOINT_CONCURRENCY} "
            "drains at a time",
            "the receiver (aiohttp, its own process) answers 204"
            + (
                " after verifying every signature with `standardwebhooks`" if verify else " without verifying"
            ),
            "CPU is for the whole run on shared cores (PostgreSQL and Redis not counted)",
        ],
    )
    missing = [i for i in recorded if not seen.get(i, {}).get("ok") and i not in failed_ids]
    twice = [i for i in recorded if seen.get(i, {}).get("ok", 0) > 1]
    differ = [i for i in recorded if len(seen.get(i, {}).get("bodies", [])) > 1]
    failed_early = [i for i in failed_ids if seen.get(i, {}).get("refused", 0) < 8]
    common.check(succeeded + len(failed_ids) == len(recorded) == events, f"{succeeded:,} of {events:,} dispatches "
                 f"succeeded, {len(failed_ids)} failed after 8 refused attempts ({by_status})", failures)  # fmt: skip
    common.check(not failed_early, f"{len(failed_early)} failed without 8 refusals", failures)
    common.check(not missing, f"{len(missing)} recorded events never answered 2xx by the receiver", failures)
    common.check(not twice, f"{len(twice)} events answered 2xx more than once", failures)
    common.check(not differ, f"{len(differ)} events whose retries sent other bytes", failures)
    common.check(stats["unverified"] == 0, f"{stats['unverified']} requests failed verification", failures)
    common.check(
        stats["ids"] == len(recorded), f"the receiver saw {stats['ids']:,} ids, none unknown", failures
    )
    return failures


def run(full: bool = False) -> list[str]:
    failures = run_webhooks(20_000 if full else 5_000)
    if full:  # the same worker with its threads busy on as many endpoints
        failures += run_webhooks(20_000, endpoints=common.procfile_webhook_concurrency())
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument(
        "--endpoints", type=int, default=1, help="endpoints (of one tenant) sharing the events"
    )
    parser.add_argument("--batch", type=int, default=500, help="events recorded per transaction")
    parser.add_argument("--concurrency", type=int, help="webhook worker threads (default: the Procfile's)")
    parser.add_argument("--no-verify", action="store_true", help="the receiver does not verify signatures")
    parser.add_argument(
        "--fail-rate", type=float, default=0.0, help="share of requests the receiver answers 500"
    )
    args = parser.parse_args()
    failures = run_webhooks(
        args.events,
        endpoints=args.endpoints,
        batch=args.batch,
        verify=not args.no_verify,
        concurrency=args.concurrency,
        fail_rate=args.fail_rate,
    )
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()

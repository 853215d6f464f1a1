"""Broadcast: an ``@all`` push to N users through real Celery workers and the fast fake WeChat, against a
sequential ``requests`` loop (what a tenant writes by hand) calling the same fake.

    python -m bench.broadcast [--users 10000] [--segment] [--webhooks] [--workers 2] [--concurrency 2]
                              [--latency-ms 20]

The push starts as the trigger endpoint starts it (``start_push``, queued after commit); the workers
enumerate the users, claim their credits, send, and settle. Afterwards: the fake's counts prove every user
got exactly one message and no formId was spent twice, and the database proves no credit is left claimed
and the push's counters equal its delivery rows. The deliveries/s over time go to a PNG (``--plot``).

``--segment`` tags every other user (half of them, each block of users half members) and sends to that tag
(``{"tags": {"any": [...]}}``) instead of ``@all``: every user holds a credit, the tagged ones must get exactly
one message each and the others none. Its per-delivery figures compare with an ``@all`` run's.

``--webhooks`` registers an endpoint wanting every event (``["*"]``) for the app's tenant at a local receiver
(bench/webhook_receiver.py, verifying signatures, answering 204) and starts the webhook worker as the
Procfile does: the push records its events (``user.unreachable`` per user, ``push.finished``) in its own
transactions, so its figures compare with a run without. After the push, every recorded event must reach the
receiver (the bench's loop runs the webhooks' sweep every WEBHOOK_SWEEP_SECONDS, as beat would).
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
import time
from pathlib import Path

from bench import common
from bench.common import Row

BASELINE_SECONDS = 8.0  # the sequential loop runs this long; its rate is extrapolated to N users
# SEND_RATE_PER_APP (default 2,000 sends/s per app, shared by all workers) is raised so the run measures what
# the workers can do; the table says so. A tenant whose WeChat quota allows more raises it the same way.
SEND_RATE = "1000000"
SEGMENT_TAG = "bench-half"
# What an order system usually subscribes to: everything but the per-user user.unreachable.
TYPICAL_WEBHOOK_EVENTS = ("push.finished", "deliveries.failed", "subscription.changed")


def postgres_cpu_seconds() -> float:
    """CPU of every PostgreSQL process on this machine (backends come and go; a delta is approximate)."""
    total = 0.0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() in ("postgres", "postmaster"):
                total += common.cpu_seconds(int(comm.parent.name))
        except OSError:
            continue
    return total


class DatabaseBackends:
    """CPU of the PostgreSQL backends serving one database (``postgres: [cluster:] user DB host state``): the push's
    own statements, apart from other databases' work on a shared machine. Sampled while the push runs, so a
    backend that exits meanwhile keeps what it was last seen using (its last second is lost)."""

    def __init__(self, database: str):
        self.database = database
        self.start = self._sample()
        self.seen: dict[int, float] = {}

    def _sample(self) -> dict[int, float]:
        found = {}
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                words = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
                if words[:1] != ["postgres:"]:
                    continue
                words = words[2:] if len(words) > 1 and words[1].endswith(":") else words[1:]  # "15/main:"
                if len(words) >= 2 and words[1] == self.database:
                    found[int(cmdline.parent.name)] = common.cpu_seconds(int(cmdline.parent.name))
            except (OSError, ValueError):
                continue
        return found

    def sample(self) -> None:
        self.seen.update(self._sample())

    def seconds(self) -> float:
        self.sample()
        return sum(cpu - self.start.get(pid, 0.0) for pid, cpu in self.seen.items())


def redis_cpu_seconds() -> float:
    total = 0.0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "redis-server":
                total += common.cpu_seconds(int(comm.parent.name))
        except OSError:
            continue
    return total


def sequential_baseline(fake: common.FakeWeChat, seconds: float) -> dict:
    """One message at a time with ``requests.post`` (no pooled session: a hand-written script), token
    fetched once: messages per second over ``seconds``."""
    import requests

    sends = common.direct_sends(fake, "baseline", 2000)
    sent, started = 0, time.monotonic()
    for url, body in sends:
        answer = requests.post(url, json=body, timeout=10).json()
        sent += answer.get("errcode") == 0
        if time.monotonic() - started >= seconds:
            break
    elapsed = time.monotonic() - started
    return {"sent": sent, "seconds": elapsed, "rate": sent / elapsed}


def tag_every_other_user(app, tag: str) -> list[str]:
    """Tag the 2nd, 4th, … of the app's users by id (INSERT … SELECT); returns their openids."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO formids_usertag (app_id, user_id, tag, created_at)
            SELECT %s, u.id, %s, now()
            FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM formids_miniuser WHERE app_id = %s) u
            WHERE u.n %% 2 = 0
            """,
            [app.pk, tag, app.pk],
        )
        cursor.execute("ANALYZE formids_usertag")
        cursor.execute(
            """
            SELECT u.openid FROM formids_miniuser u JOIN formids_usertag t ON t.user_id = u.id
            WHERE u.app_id = %s AND t.tag = %s
            """,
            [app.pk, tag],
        )
        return [openid for (openid,) in cursor.fetchall()]


def inbox_counts(
    fake: common.FakeWeChat, appid: str, openids: list[str], batch: int = 50_000
) -> dict[str, int]:
    """Messages the fake holds per openid (0 for none)."""
    counts: dict[str, int] = {}
    for start in range(0, len(openids), batch):
        counts.update(fake.control("inbox", {"appid": appid, "openids": openids[start : start + batch]}))
    return counts


def run_broadcast(
    users: int,
    *,
    segment: bool = False,
    workers: int = 2,
    concurrency: int = 2,
    latency_ms: float = 20.0,
    kind: str = "formid",
    baseline_seconds: float = BASELINE_SECONDS,
    plot: Path | None = None,
    profile: Path | None = None,
    webhooks: bool = False,
    webhook_events: tuple[str, ...] = ("*",),
    timeout: float = 1800.0,
    inbox_enabled: bool = True,
) -> list[str]:
    common.setup_django()
    from django.conf import settings
    from django.db.models import Count

    from formids.models import Credit, MiniUser
    from templates_app.models import Delivery, InboxMessage, Push
    from templates_app.pushes.request import parse_send_request
    from templates_app.pushes.start import start_push

    failures: list[str] = []
    scratch = Path(tempfile.mkdtemp(prefix="pushhub-bench-"))
    with common.Processes() as processes:
        fake = common.FakeWeChat(processes, latency_ms=latency_ms)
        env = common.bench_env(SEND_RATE_PER_APP=SEND_RATE)
        app = common.make_app(fake)
        if not inbox_enabled:  # the in-app inbox's cost: the same broadcast without its rows
            app.inbox_enabled = False
            app.save(update_fields=["inbox_enabled"])
        template, _ = common.make_template(app, fake, kind)
        started = time.monotonic()
        subscribe_id = template.template_id if kind == "subscribe" else ""
        common.generate_users(
            app, users, formids=1 if kind == "formid" else 0, subscribe_template_id=subscribe_id
        )
        common.teach_fake(fake, app, subscribe_id)
        targeted = tag_every_other_user(app, SEGMENT_TAG) if segment else None
        expected = len(targeted) if segment else users
        print(
            f"broadcast: {users} users with credits generated in {time.monotonic() - started:.1f} s"
            + (f", {expected} of them tagged {SEGMENT_TAG}" if segment else ""),
            flush=True,
        )

        baseline = sequential_baseline(fake, baseline_seconds)
        print(f"  baseline: {baseline['sent']} sequential sends in {baseline['seconds']:.1f} s", flush=True)

        if webhooks:
            from bench.webhook_receiver import Client as Receiver
            from webhooks import services as webhook_services

            receiver = Receiver(processes, log=scratch / "receiver.log")
            endpoint, secret = webhook_services.create_endpoint(
                app.tenant, url=receiver.url("broadcast"), events=list(webhook_events), actor="bench"
            )
            receiver.set_secret("broadcast", secret)
            webhook_worker = common.start_webhook_worker(processes, env, scratch / "webhook-worker.log")
            webhook_cpu_before = common.tree_cpu_seconds(webhook_worker.pid)
        worker_procs = common.start_workers(processes, env, workers, concurrency, scratch)
        if profile is not None:  # py-spy samples the first worker; collapsed stacks for flame graphs
            profile.mkdir(parents=True, exist_ok=True)
            spy = str(Path(common.PYTHON).parent / "py-spy")
            spy_proc = processes.start(
                [spy, "record", "--pid", str(worker_procs[0].pid), "--format", "raw", "--rate", "200", "--gil",
                 "-o", str(profile / "worker-0.txt")],
                env, profile / "py-spy.log",
            )  # fmt: skip
        cpu_before = {
            "workers": sum(common.tree_cpu_seconds(w.pid) for w in worker_procs),
            "fake": fake.cpu_seconds(),
            "postgres": postgres_cpu_seconds(),
            "redis": redis_cpu_seconds(),
        }
        backends = DatabaseBackends(settings.DATABASES["default"]["NAME"])
        to = {"tags": {"any": [SEGMENT_TAG]}} if segment else "@all"
        request = parse_send_request(template, {"to": to, "data": common.TEMPLATE_DATA[kind]})
        began = time.monotonic()
        push = start_push(template, request, created_by="bench", status_url=lambda p: "").push
        last_report = last_sample = 0.0
        while True:
            state = Push.objects.get(pk=push.pk)
            elapsed = time.monotonic() - began
            if state.status == Push.Status.DONE:
                break
            if elapsed - last_sample >= 1:  # backends that exit keep what they were last seen using
                last_sample = elapsed
                backends.sample()
            if elapsed - last_report >= 5:
                last_report = elapsed
                print(
                    f"  {elapsed:5.1f} s: sent {state.sent}, failed {state.failed}, pending {state.pending}"
                )
            if elapsed > timeout:
                failures.append(f"push not done after {timeout:.0f} s")
                return failures
            time.sleep(0.05)
        wall = time.monotonic() - began
        cpu = {
            "workers": sum(common.tree_cpu_seconds(w.pid) for w in worker_procs) - cpu_before["workers"],
            "fake": fake.cpu_seconds() - cpu_before["fake"],
            "postgres": postgres_cpu_seconds() - cpu_before["postgres"],
            "redis": redis_cpu_seconds() - cpu_before["redis"],
            "database": backends.seconds(),
        }
        rss = [common.peak_rss_mb(w.pid) for w in worker_procs]
        if webhooks:
            webhook_cpu_at_done = common.tree_cpu_seconds(webhook_worker.pid)
        stats = fake.stats(app.appid)
        if segment:
            members = set(targeted)
            everyone = list(MiniUser.objects.filter(app=app).values_list("openid", flat=True))
            inbox = inbox_counts(fake, app.appid, everyone)
        if profile is not None:
            processes.stop(spy_proc, signal.SIGINT, timeout=30)  # py-spy writes its file on SIGINT
        if webhooks:
            hooks = settle_webhooks(receiver, endpoint, began, timeout)
            hooks["cpu"] = common.tree_cpu_seconds(webhook_worker.pid) - webhook_cpu_before
            hooks["cpu_at_push_done"] = webhook_cpu_at_done - webhook_cpu_before

    # Seconds from the first message the fake accepted to the last: the sending phase. ``wall`` adds the
    # queueing, the first enumeration page and the final status update.
    sending = max(stats["last_send"] - stats["first_send"], 1e-9) if stats["delivered"] else 0
    rate = state.sent / wall
    # Each process's sends share its connection pool (WECHAT_POOL_SIZE), whatever its tasks ask for.
    in_flight = workers * min(concurrency * int(settings.SEND_CONCURRENCY), int(settings.WECHAT_POOL_SIZE))
    ceiling = in_flight / (latency_ms / 1000)
    base_rate = baseline["rate"]
    rows = [
        Row("deliveries/s (trigger → push done)", f"{rate:,.0f}", f"{base_rate:,.0f}", common.ratio(rate, base_rate)),
        Row("deliveries/s while sending (first → last message)", f"{state.sent / sending:,.0f}" if sending else "—"),
        Row(f"time for {expected:,} users", f"{wall:.1f} s", f"{expected / base_rate:,.0f} s (extrapolated)",
            common.ratio(wall, expected / base_rate, higher_is_better=False)),
        Row("ceiling: sends in flight ÷ latency", f"{in_flight} ÷ {latency_ms:g} ms = {ceiling:,.0f}/s"),
        Row("peak RSS per worker", " / ".join(f"{mb:.0f} MiB" for mb in rss)),
        Row("CPU: workers / fake WeChat / PostgreSQL / Redis",
            " / ".join(f"{cpu[k]:.1f} s" for k in ("workers", "fake", "postgres", "redis"))),
        Row("worker CPU per delivery", f"{1000 * cpu['workers'] / max(state.sent, 1):.2f} ms"),
        Row("PostgreSQL CPU per delivery: the bench database's backends / all PostgreSQL processes",
            f"{1000 * cpu['database'] / max(state.sent, 1):.2f} / {1000 * cpu['postgres'] / max(state.sent, 1):.2f} ms"),
        Row("access tokens fetched", str(stats["tokens_issued"])),
    ]  # fmt: skip
    if webhooks:
        rows += [
            Row("webhooks: events recorded (user.unreachable, push.finished …)", f"{hooks['events']:,}"),
            Row("webhooks: all delivered, seconds after the push was done", f"{hooks['after_push']:.1f} s"),
            Row("webhooks: worker CPU (during the push / in all) per event",
                f"{1000 * hooks['cpu_at_push_done'] / max(hooks['events'], 1):.2f} / "
                f"{1000 * hooks['cpu'] / max(hooks['events'], 1):.2f} ms"),
        ]  # fmt: skip
    scope = dict(users=users, segment=segment, kind=kind, webhooks=list(webhook_events) if webhooks else [],
                 workers=workers, concurrency=concurrency, latency_ms=latency_ms)  # fmt: skip
    sent = max(state.sent, 1)
    common.figure("broadcast.deliveries_per_s", rate, "deliveries/s", baseline=base_rate, goal=3000, **scope)
    common.figure(
        "broadcast.sending_deliveries_per_s",
        state.sent / sending if sending else None,
        "deliveries/s",
        **scope,
    )
    common.figure(
        "broadcast.worker_cpu_ms_per_delivery",
        1000 * cpu["workers"] / sent,
        "ms",
        goal=0.25,
        better="lower",
        **scope,
    )
    common.figure(
        "broadcast.postgres_cpu_ms_per_delivery",
        1000 * cpu["postgres"] / sent,
        "ms",
        goal=0.15,
        better="lower",
        **scope,
    )
    # The bench database's own backends only (the statements of this push; all processes above also count
    # the checkpointer, WAL writer and autovacuum, and anything else on the machine).
    common.figure(
        "broadcast.database_cpu_ms_per_delivery", 1000 * cpu["database"] / sent, "ms", better="lower", **scope
    )
    common.figure(
        "broadcast.redis_cpu_ms_per_delivery", 1000 * cpu["redis"] / sent, "ms", better="lower", **scope
    )
    common.figure(
        "broadcast.fake_wechat_cpu_ms_per_delivery", 1000 * cpu["fake"] / sent, "ms", better="lower", **scope
    )
    common.figure("broadcast.send_ceiling_per_s", ceiling, "deliveries/s", **scope)
    common.figure(
        "broadcast.peak_rss_mib_per_worker", max(rss) if rss else None, "MiB", better="lower", **scope
    )
    if segment:
        audience = f"a segment (every other user tagged) to {expected:,} of {users:,} users"
    else:
        audience = f"@all to {users:,} users"
    common.print_table(
        f"Broadcast: {audience} ({kind}){(', webhooks on: ' + ','.join(webhook_events)) if webhooks else ''}, {workers} workers × {concurrency} tasks × "
        f"{settings.SEND_CONCURRENCY} sends (at most {settings.WECHAT_POOL_SIZE} a worker), fake WeChat at "
        f"{latency_ms:g} ms",
        rows,
        [
            f"baseline: a sequential `requests.post` loop against the same fake ({baseline['sent']} messages "
            f"in {baseline['seconds']:.1f} s)",
            "CPU is for the whole run on 2 shared cores; PostgreSQL's is all its processes on the machine",
            f"SEND_RATE_PER_APP raised from its default (2,000/s per app) to {int(SEND_RATE):,}/s for the "
            "workers, so the figure is the engine's, not the limiter's",
        ],
    )

    # Correctness: the fake's counts and the database must agree with exactly-once.
    credits = Credit.objects.filter(app=app)
    rows_by_status = dict(Delivery.objects.filter(push=push).values_list("status").annotate(n=Count("pk")))
    common.check(state.sent == expected, f"push counted {state.sent} sent of {expected} users", failures)
    common.check(stats["users"] == expected, f"fake WeChat: {stats['users']} users got a message", failures)
    common.check(
        stats["delivered"] == expected, f"fake WeChat: {stats['delivered']} messages in all", failures
    )
    if segment:
        wrong = sum(1 for openid, n in inbox.items() if n != (1 if openid in members else 0))
        common.check(
            wrong == 0 and len(inbox) == users,
            f"each of the {expected} tagged users got exactly one message, none of the {users - expected} "
            f"others ({wrong} wrong)",
            failures,
        )
    common.check(
        stats["users_with_duplicates"] == 0, f"{stats['users_with_duplicates']} users got two", failures
    )
    refused = {code: n for code, n in stats["answers"].items() if code != "0"}
    common.check(
        not refused, f"no send refused by the fake (41029 = formId spent twice): {refused}", failures
    )
    common.check(not credits.filter(state=Credit.State.CLAIMED).exists(), "no credit left claimed", failures)
    in_inbox = InboxMessage.objects.filter(push=push).count()
    common.check(
        in_inbox == (state.sent if inbox_enabled else 0),
        f"in-app inbox: {in_inbox} messages ({'on' if inbox_enabled else 'off'})",
        failures,
    )
    common.check(
        credits.filter(state=Credit.State.CONSUMED).count() == expected,
        "one credit consumed per user reached",
        failures,
    )
    common.check(
        rows_by_status.get("sent", 0) == state.sent
        and state.pending == 0
        and state.failed == rows_by_status.get("failed", 0),
        f"counters equal the delivery rows {rows_by_status}",
        failures,
    )
    if webhooks:
        common.check(hooks["pending"] == 0, f"webhooks: {hooks['pending']} events not delivered", failures)
        per_user = "*" in webhook_events or "user.unreachable" in webhook_events
        common.check(
            hooks["events"] == (expected if per_user else 0) + 1,
            f"webhooks: {hooks['events']:,} events"
            + (", one user.unreachable per user sent" if per_user else "")
            + " and one push.finished",
            failures,
        )
        common.check(
            not hooks["missing"], f"webhooks: {len(hooks['missing'])} events the receiver never got", failures
        )
        common.check(hooks["twice"] == 0, f"webhooks: {hooks['twice']} events sent twice", failures)
        common.check(
            hooks["unverified"] == 0, f"webhooks: {hooks['unverified']} unverified requests", failures
        )
    if plot is not None and stats["timeline"]:
        draw_plot(stats, plot, f"{audience}, {workers} workers, {latency_ms:g} ms fake latency")
        (plot.with_suffix(".json")).write_text(json.dumps({"users": users, "timeline": stats["timeline"]}))
    return failures


def settle_webhooks(receiver, endpoint, began: float, timeout: float) -> dict:
    """Wait (running the sweep as beat would) until the endpoint has no pending event; what the receiver got."""
    from django.conf import settings

    from webhooks import dispatch
    from webhooks.models import EventDispatch

    done = time.monotonic()
    dispatches = EventDispatch.objects.filter(endpoint=endpoint)
    last_sweep = 0.0
    while (pending := dispatches.filter(status=EventDispatch.Status.PENDING).count()) and (
        time.monotonic() - done < timeout
    ):
        if time.monotonic() - last_sweep >= settings.WEBHOOK_SWEEP_SECONDS:
            last_sweep = time.monotonic()
            dispatch.sweep()
        time.sleep(0.05)
    after = time.monotonic() - done
    ids = list(dispatches.values_list("event_id", flat=True))
    seen = receiver.ids(ids)
    stats = receiver.stats()
    return {
        "events": len(ids),
        "pending": pending,
        "after_push": after,
        "missing": [i for i in ids if not seen.get(i, {}).get("ok")],
        "twice": sum(1 for i in ids if seen.get(i, {}).get("requests", 0) > 1),
        "unverified": stats["unverified"],
    }


def draw_plot(stats: dict, path: Path, title: str) -> None:
    """Deliveries per second over the broadcast (1 s moving sum of the fake's 0.1 s buckets)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step = stats["timeline_step"]
    times = [t for t, _ in stats["timeline"]]
    counts = [n for _, n in stats["timeline"]]
    window = max(1, round(1 / step))
    per_second = [
        sum(counts[max(0, i - window + 1) : i + 1]) / (min(i + 1, window) * step) for i in range(len(counts))
    ]
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=110)
    ax.plot(times, per_second, color="#07c160", linewidth=1.6)
    ax.set_xlabel("seconds since the first message")
    ax.set_ylabel("deliveries / s")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def run(full: bool = False) -> list[str]:
    # 10k and 100k users, the two sizes of the broadcast figures (the full run also draws the plot).
    failures = run_broadcast(10_000)
    failures += run_broadcast(
        100_000, plot=common.BASE_DIR / "docs" / "bench-broadcast.png" if full else None
    )
    if full:
        # The same number of deliveries to a segment: 100,000 tagged of 200,000 (its cost per delivery is
        # compared with the @all run above; issue 15 wants it within 10 %).
        failures += run_broadcast(200_000, segment=True)
        # The 100k broadcast again with a webhook endpoint wanting every event (100,001 events: one
        # user.unreachable per user), then one wanting what a tenant's order system typically wants.
        failures += run_broadcast(100_000, webhooks=True)
        failures += run_broadcast(100_000, webhooks=True, webhook_events=TYPICAL_WEBHOOK_EVENTS)
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument(
        "--segment", action="store_true", help="tag every other user and send to the tag instead of @all"
    )
    parser.add_argument("--kind", choices=("formid", "subscribe"), default="formid")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=2, help="chunk tasks at a time per worker")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--baseline-seconds", type=float, default=BASELINE_SECONDS)
    parser.add_argument("--plot", type=Path, help="write the deliveries/s plot to this PNG")
    parser.add_argument("--profile", type=Path, help="py-spy the first worker into DIR/worker-0.txt")
    parser.add_argument(
        "--webhooks", action="store_true", help="an endpoint wanting every event, and the webhook worker"
    )
    parser.add_argument(
        "--no-inbox", action="store_true", help="the app's in-app inbox off (no InboxMessage rows)"
    )
    parser.add_argument(
        "--webhook-events",
        default="*",
        help='with --webhooks: the event types the endpoint wants, comma-separated (default "*")',
    )
    args = parser.parse_args()
    failures = run_broadcast(
        args.users,
        segment=args.segment,
        workers=args.workers,
        concurrency=args.concurrency,
        latency_ms=args.latency_ms,
        kind=args.kind,
        baseline_seconds=args.baseline_seconds,
        plot=args.plot,
        profile=args.profile,
        webhooks=args.webhooks,
        webhook_events=tuple(args.webhook_events.split(",")),
        inbox_enabled=not args.no_inbox,
    )
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()

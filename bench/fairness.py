"""Fairness: one tenant's sends while another tenant broadcasts, with the lanes and the per-tenant share against
everything on one queue (as before lanes) — both in the same run, on the same stack.

    python -m bench.fairness [--users 20000] [--rate 5] [--second 2000]

The stack is the Procfile's, started from its lines: gunicorn (``web``), two ``worker`` processes (the broadcast
lane), the ``sends`` and ``maintenance`` workers — or, for the baseline, the ``worker`` processes alone with
every lane on one queue. WeChat is the fake (20 ms a call), which records when each openid's message arrived.

1. *A one-user trigger while another tenant broadcasts.* Tenant A triggers ``@all`` to N users (quick 20k,
   ``--users 100000`` full) through its trigger URL; a second later tenant B starts firing one-user triggers
   at ``--rate`` a second, until A's push is done. B's end to end: the trigger request's start → the fake has
   the message. Goal: p99 < 1 s.
2. *Two broadcasts.* A triggers ``@all`` to N users, and B ``@all`` to N/10 (``--second``) as soon as A's
   enumeration is done (all of A's chunks queued ahead of B's: the most B can wait), both with the lanes; B's
   completion (trigger → its push done) with the per-tenant share and without it (``BROADCAST_SHARE=0``).

Checked after every run (the bench exits 1 otherwise): every user of A and B got exactly one message (the
fake's per-openid counts), no formId was spent twice, every trigger answered 202, no credit is left claimed,
and each push's counters equal its delivery rows.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

from bench import common
from bench.broadcast import postgres_cpu_seconds
from bench.common import Row

SEND_RATE = "1000000"  # the engine, not the per-app limiter (as bench.broadcast)
WORKERS, CONCURRENCY = 2, 2  # the broadcast lane: the Procfile's worker line, one process per core


class Stack:
    """The Procfile's web and workers for one mode (lanes, or one queue), on the shared fake WeChat."""

    def __init__(self, processes: common.Processes, env: dict[str, str], scratch: Path, tag: str):
        self.processes, self.port = processes, common.free_port()
        self.web = common.procfile_process(
            processes, "web", env, scratch / f"{tag}web.log",
            WEB_PORT=str(self.port), BIND="127.0.0.1", WEB_CONCURRENCY="2", WEB_THREADS="8",
        )  # fmt: skip
        self.workers = common.start_workers(processes, env, WORKERS, CONCURRENCY, scratch, tag=tag)
        common.wait_until(lambda: common.port_open(self.port), 60, "gunicorn")
        self.base = f"http://127.0.0.1:{self.port}"

    def worker_cpu(self) -> float:
        return sum(common.tree_cpu_seconds(w.pid) for w in self.workers)

    def stop(self) -> None:
        for child in (*self.workers, self.web):
            self.processes.stop(child)


def trigger(session, base: str, token: str, to) -> tuple[int, dict]:
    response = session.post(
        f"{base}/t/{token}",
        data=json.dumps({"to": to, "data": common.TEMPLATE_DATA["formid"]}),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    return response.status_code, (response.json() if response.status_code < 500 else {})


def wait_done(push_ids: list[str], timeout: float) -> dict[str, float]:
    """Seconds (monotonic) at which each push was seen done; missing ones after ``timeout``."""
    from templates_app.models import Push

    done: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(push_ids) and time.monotonic() < deadline:
        for push_id in push_ids:
            if push_id not in done and Push.objects.filter(pk=push_id, status=Push.Status.DONE).exists():
                done[push_id] = time.monotonic()
        time.sleep(0.05)
    return done


def check_push(fake, app, push_id: str, openids: list[str], failures: list[str], label: str) -> None:
    """Each of ``openids`` got exactly one message of this app and nobody else did; the push's counters equal
    its rows; none of the app's credits is left claimed."""
    from django.db.models import Count

    from formids.models import Credit
    from templates_app.models import Delivery, Push

    stats = fake.stats(app.appid)
    push = Push.objects.get(pk=push_id)
    rows = dict(Delivery.objects.filter(push_id=push_id).values_list("status").annotate(n=Count("pk")))
    common.check(push.sent == len(openids), f"{label}: {push.sent} sent of {len(openids)}", failures)
    common.check(
        stats["users"] == len(openids) and stats["delivered"] == len(openids),
        f"{label}: fake WeChat has {stats['delivered']} messages for {stats['users']} users of {len(openids)}",
        failures,
    )
    common.check(
        stats["users_with_duplicates"] == 0, f"{label}: {stats['users_with_duplicates']} got two", failures
    )
    refused = {code: n for code, n in stats["answers"].items() if code != "0"}
    common.check(not refused, f"{label}: sends refused by the fake (41029: spent twice): {refused}", failures)
    common.check(
        not Credit.objects.filter(app=app, state=Credit.State.CLAIMED).exists(),
        f"{label}: credit left claimed",
        failures,
    )
    common.check(
        rows.get("sent", 0) == push.sent and push.pending == 0 and push.failed == rows.get("failed", 0),
        f"{label}: counters equal the delivery rows {rows}",
        failures,
    )


def openids_of(app) -> list[str]:
    from formids.models import MiniUser

    return list(MiniUser.objects.filter(app=app).order_by("pk").values_list("openid", flat=True))


def new_tenant(fake, label: str, users: int):
    app = common.make_app(fake, label)
    template, token = common.make_template(app, fake, "formid")
    common.generate_users(app, users, formids=1)
    common.teach_fake(fake, app)
    return app, token


# --- 1. a one-user trigger while another tenant broadcasts -------------------------------------------------
def triggers_during_broadcast(
    fake, processes, env, scratch, tenants, rate: float, tag: str, failures
) -> dict:
    import requests

    (a_app, a_token), (b_app, b_token) = tenants
    users = len(openids_of(a_app))
    stack = Stack(processes, env, scratch, tag)
    b_openids = openids_of(b_app)
    session = requests.Session()
    for openid in b_openids[:10]:  # warm-up: every process has loaded everything (not measured)
        trigger(session, stack.base, b_token, openid)
    b_openids = b_openids[10:]
    time.sleep(1.0)

    cpu_before = stack.worker_cpu()
    began = time.monotonic()
    status, body = trigger(session, stack.base, a_token, "@all")
    common.check(status == 202, f"{tag}A's @all trigger answered {status}", failures)
    a_done = threading.Event()
    a_push = body.get("push_id", "")
    sent_at: dict[str, float] = {}
    statuses: dict[int, int] = {}

    def fire() -> None:
        fire_session = requests.Session()
        time.sleep(1.0)  # A's enumeration is under way: its chunks are queued ahead of B's
        start = time.monotonic()
        for n, openid in enumerate(b_openids):
            if a_done.is_set():
                return
            time.sleep(max(0.0, start + n / rate - time.monotonic()))
            wall = time.time()
            code, _ = trigger(fire_session, stack.base, b_token, openid)
            statuses[code] = statuses.get(code, 0) + 1
            sent_at[openid] = wall

    firing = threading.Thread(target=fire)
    firing.start()
    done = wait_done([a_push], timeout=1800)
    a_done.set()
    firing.join()
    a_seconds = done.get(a_push, float("nan")) - began
    worker_cpu = stack.worker_cpu() - cpu_before
    fired = list(sent_at)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and fake.stats(b_app.appid)["delivered"] < len(fired) + 10:
        time.sleep(0.1)
    received = fake.control("received", {"appid": b_app.appid, "openids": fired})
    e2e = [(received[o] - sent_at[o]) * 1000 for o in fired if received.get(o)]
    stack.stop()

    common.check(a_push in done, f"{tag}A's broadcast done", failures)
    check_push(fake, a_app, a_push, openids_of(a_app), failures, f"{tag}A")
    common.check(statuses == {202: len(fired)}, f"{tag}B's triggers answered {statuses}", failures)
    b_stats = fake.stats(b_app.appid)
    common.check(
        len(e2e) == len(fired)
        and b_stats["users_with_duplicates"] == 0
        and b_stats["users"] == len(fired) + 10,
        f"{tag}B: {len(e2e)} of {len(fired)} triggered users got their message, "
        f"{b_stats['users_with_duplicates']} got two",
        failures,
    )
    return {
        "a_seconds": a_seconds,
        "a_rate": users / a_seconds if a_seconds else 0.0,
        "fired": len(fired),
        "p50": common.percentile(e2e, 50) if e2e else float("nan"),
        "p99": common.percentile(e2e, 99) if e2e else float("nan"),
        "max": max(e2e) if e2e else float("nan"),
        "cpu_per_delivery": 1000 * worker_cpu / max(users + len(fired), 1),
    }


# --- 2. two broadcasts --------------------------------------------------------------------------------
def two_broadcasts(fake, processes, env, scratch, tenants, tag: str, failures) -> dict:
    import requests

    from templates_app.models import Push

    (a_app, a_token), (b_app, b_token) = tenants
    users, second = len(openids_of(a_app)), len(openids_of(b_app))
    stack = Stack(processes, env, scratch, tag)
    session = requests.Session()
    cpu_before, pg_before = stack.worker_cpu(), postgres_cpu_seconds()
    began = time.monotonic()
    status_a, body_a = trigger(session, stack.base, a_token, "@all")
    # B starts once A's enumeration is done: every chunk of A is queued (or parked, with the share) ahead of it.
    common.wait_until(
        lambda: Push.objects.filter(pk=body_a.get("push_id"), enumerated=True).exists(),
        600,
        "A's enumeration",
    )
    enumerated = time.monotonic() - began
    b_began = time.monotonic()
    status_b, body_b = trigger(session, stack.base, b_token, "@all")
    pushes = [body_a.get("push_id", ""), body_b.get("push_id", "")]
    done = wait_done(pushes, timeout=1800)
    worker_cpu, pg_cpu = stack.worker_cpu() - cpu_before, postgres_cpu_seconds() - pg_before
    stack.stop()

    common.check(
        (status_a, status_b) == (202, 202), f"{tag}triggers answered {status_a}, {status_b}", failures
    )
    common.check(len(done) == 2, f"{tag}both broadcasts done", failures)
    check_push(fake, a_app, pushes[0], openids_of(a_app), failures, f"{tag}A")
    check_push(fake, b_app, pushes[1], openids_of(b_app), failures, f"{tag}B")
    nan = float("nan")
    return {
        "a_seconds": done.get(pushes[0], nan) - began,
        "b_seconds": done.get(pushes[1], nan) - b_began,
        "enumerated": enumerated,
        "cpu_per_delivery": 1000 * worker_cpu / (users + second),
        "pg_per_delivery": 1000 * pg_cpu / (users + second),
    }


def run_fairness(users: int, rate: float, second: int) -> list[str]:
    common.setup_django()
    failures: list[str] = []
    scratch = Path(tempfile.mkdtemp(prefix="pushhub-fairness-"))
    with common.Processes() as processes:
        fake = common.FakeWeChat(processes, latency_ms=20)
        env = common.bench_env(SEND_RATE_PER_APP=SEND_RATE)
        one = common.one_queue(env)
        print(f"fairness: {users:,} users, B at {rate:g}/s; logs in {scratch}", flush=True)
        # Every run's tenants first, then VACUUM ANALYZE: no run pays for the rows generated for the next.
        triggering = int(rate * max(60, users / 200)) + 20
        data = {
            tag: [new_tenant(fake, f"{tag}a", users), new_tenant(fake, f"{tag}b", b_users)]
            for tag, b_users in (("lanes-", triggering), ("one-", triggering), ("share-", second),
                                 ("noshare-", second))
        }  # fmt: skip
        from django.db import connection

        with connection.cursor() as cursor:
            for table in ("formids_miniuser", "formids_credit"):
                cursor.execute(f"VACUUM (ANALYZE) {table}")
        # The baselines first: any warming of PostgreSQL's buffers or the OS cache favours the lanes' runs'
        # figures less than the other way round.
        single = triggers_during_broadcast(
            fake, processes, one, scratch, data["one-"], rate, "one-", failures
        )
        print(f"  one queue: B p50 {single['p50']:.0f} / p99 {single['p99']:.0f} ms", flush=True)
        lanes = triggers_during_broadcast(
            fake, processes, env, scratch, data["lanes-"], rate, "lanes-", failures
        )
        print(f"  lanes: B p50 {lanes['p50']:.0f} / p99 {lanes['p99']:.0f} ms", flush=True)
        unshared = two_broadcasts(
            fake, processes, {**env, "BROADCAST_SHARE": "0"}, scratch, data["noshare-"], "noshare-", failures
        )
        print(f"  no share: B done in {unshared['b_seconds']:.1f} s", flush=True)
        shared = two_broadcasts(fake, processes, env, scratch, data["share-"], "share-", failures)
        print(f"  share: B done in {shared['b_seconds']:.1f} s", flush=True)

    scope = dict(users=users, rate=rate, second=second)
    common.figure("fairness.b_trigger_end_to_end_p99_ms", lanes["p99"], "ms", baseline=single["p99"], goal=1000,
                  better="lower", label=f"tenant B's one-user trigger, end to end p99, while A broadcasts {users:,}",
                  baseline_label="one queue", **scope)  # fmt: skip
    common.figure("fairness.b_trigger_end_to_end_p50_ms", lanes["p50"], "ms", baseline=single["p50"],
                  better="lower", **scope)  # fmt: skip
    common.figure("fairness.a_broadcast_seconds", lanes["a_seconds"], "s", baseline=single["a_seconds"],
                  better="lower", **scope)  # fmt: skip
    common.figure("fairness.b_broadcast_seconds", shared["b_seconds"], "s", baseline=unshared["b_seconds"],
                  better="lower", **scope)  # fmt: skip
    common.print_table(
        f"Fairness 1: tenant B's one-user triggers at {rate:g}/s while tenant A broadcasts @all to {users:,} "
        f"({WORKERS} broadcast workers × {CONCURRENCY}, the sends and maintenance workers; fake WeChat 20 ms)",
        [
            Row(
                "B end to end (trigger → fake WeChat has it) p50 / p99 / max",
                f"{lanes['p50']:.0f} / {lanes['p99']:.0f} / {lanes['max']:.0f} ms",
                f"{single['p50']:.0f} / {single['p99']:.0f} / {single['max']:.0f} ms (one queue)",
                common.ratio(lanes["p99"], single["p99"], higher_is_better=False),
                "p99 < 1 s",
            ),
            Row("B's triggers during A's broadcast", f"{lanes['fired']}", f"{single['fired']}"),
            Row(
                "A's broadcast: seconds (deliveries/s)",
                f"{lanes['a_seconds']:.1f} s ({lanes['a_rate']:,.0f}/s)",
                f"{single['a_seconds']:.1f} s ({single['a_rate']:,.0f}/s)",
            ),
            Row(
                "worker CPU per delivery (all workers)",
                f"{lanes['cpu_per_delivery']:.2f} ms",
                f"{single['cpu_per_delivery']:.2f} ms",
            ),
        ],  # fmt: skip
    )
    common.print_table(
        f"Fairness 2: tenant A broadcasts @all to {users:,}, tenant B @all to {second:,} once A's chunks are all "
        "queued (both with the lanes)",
        [
            Row(
                "B's broadcast: trigger → done",
                f"{shared['b_seconds']:.1f} s",
                f"{unshared['b_seconds']:.1f} s (no share)",
                common.ratio(shared["b_seconds"], unshared["b_seconds"], higher_is_better=False),
                "B progresses while A runs",
            ),
            Row(
                "A's broadcast: trigger → done (→ enumerated, when B starts)",
                f"{shared['a_seconds']:.1f} s ({shared['enumerated']:.1f} s)",
                f"{unshared['a_seconds']:.1f} s ({unshared['enumerated']:.1f} s)",
            ),
            Row(
                "worker / PostgreSQL CPU per delivery",
                f"{shared['cpu_per_delivery']:.2f} / {shared['pg_per_delivery']:.2f} ms",
                f"{unshared['cpu_per_delivery']:.2f} / {unshared['pg_per_delivery']:.2f} ms",
            ),
        ],  # fmt: skip
        notes=["PostgreSQL CPU: every postgres process of the machine (other helpers' included)."],
    )
    return failures


def run(full: bool = False) -> list[str]:
    return run_fairness(100_000 if full else 20_000, 5.0, 10_000 if full else 2_000)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=20_000, help="tenant A's broadcast")
    parser.add_argument("--rate", type=float, default=5.0, help="tenant B's one-user triggers per second")
    parser.add_argument(
        "--second", type=int, help="tenant B's broadcast in the second scenario (default N/10)"
    )
    args = parser.parse_args()
    failures = run_fairness(args.users, args.rate, args.second or args.users // 10)
    for failure in failures:
        print(f"FAILED: {failure}")
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()

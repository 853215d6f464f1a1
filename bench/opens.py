"""Opens under load: ``POST /sdk/v1/{appid}/opens`` at a target rate over HTTP (gunicorn as the Procfile runs
it) while a broadcast runs through the Celery workers, against the same broadcast without the opens.

    python -m bench.opens [--users 5000] [--rate 1000] [--seed-users 12000] [--workers 2] [--concurrency 2]
                          [--latency-ms 20]

1. A first broadcast (``@all`` to ``--seed-users`` users of one app) leaves sent deliveries: their refs
   (``templates_app.opens_ref.make_ref``) and their users' SDK sessions are what the load generator posts, each
   ref from its own user's session, as the SDK would. Every 10th request repeats an earlier ref (a repeated
   open: answered 200, counted once).
2. A broadcast to ``--users`` users of a second app, alone: its deliveries/s.
3. The same broadcast to a third app of the same size, while the load generator posts opens at ``--rate``/s
   (aiohttp, one connection pool, at most MAX_IN_FLIGHT requests in flight: when the server is slower, the
   achieved rate says so). The generator stops when that broadcast is done.

Reported: opens/s achieved and their latency percentiles (sending → answer), the broadcast's deliveries/s
without and with the opens (target: within 10 %). Checked: every open answered 200; each delivery opened at
most once; the seed push's counts.opened, its deliveries' opened_at and the funnel's ``opened`` all equal the
number of distinct refs opened; both measured broadcasts reached every user exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import common
from bench.common import Row

TARGET_RATE = 1000.0  # opens per second
TARGET_SLOWDOWN = 0.10  # the broadcast with opens within 10 % of without
MAX_IN_FLIGHT = 128
REPEAT_EVERY = 10  # every 10th open repeats an earlier ref
# The load comes from one address: the per-IP SDK limit (1,200 per minute) is raised for the run, so it measures
# the endpoint, not the limiter; the per-user limit stays as it is (each user opens at most twice).
# SEND_RATE_PER_APP is raised as bench.broadcast does.
RUN_ENV = {"SDK_RATE_PER_IP": "1000000000", "SEND_RATE_PER_APP": "1000000"}


def broadcast(app, template, timeout: float) -> tuple[object, float]:
    """``@all`` of ``app`` as the trigger endpoint starts it; (the push when done, seconds trigger → done)."""
    from templates_app.models import Push
    from templates_app.pushes.request import parse_send_request
    from templates_app.pushes.start import start_push

    request = parse_send_request(template, {"to": "@all", "data": common.TEMPLATE_DATA["formid"]})
    began = time.monotonic()
    push = start_push(template, request, created_by="bench", status_url=lambda p: "").push
    while True:
        state = Push.objects.get(pk=push.pk)
        if state.status == Push.Status.DONE:
            return state, time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise SystemExit(f"push {push.pk} not done after {timeout:.0f} s")
        time.sleep(0.05)


def open_plan(seed_push) -> list[tuple[str, str]]:
    """(session token, ref) per open to post: every sent delivery of the seed push once, from its user's
    session, and every REPEAT_EVERY-th an earlier one again."""
    from formids.sdk_auth import issue_session
    from templates_app.models import Delivery
    from templates_app.opens_ref import make_ref

    app = seed_push.app
    rows = Delivery.objects.filter(push=seed_push, status=Delivery.Status.SENT).order_by("pk")
    firsts = [
        (issue_session(app, openid)[0], make_ref(pk)) for pk, openid in rows.values_list("pk", "openid")
    ]
    plan = []
    for n, item in enumerate(firsts):
        plan.append(item)
        if n % (REPEAT_EVERY - 1) == REPEAT_EVERY - 2:
            plan.append(firsts[n // 2])
    return plan


class LoadGenerator:
    """Posts the plan's opens at ``rate`` per second on an event loop of its own thread until stopped (or
    the plan is used up); each result is (status, milliseconds from sending to the answer, ref)."""

    def __init__(self, url: str, plan: list[tuple[str, str]], rate: float):
        self.url, self.plan, self.rate = url, plan, rate
        self.results: list[tuple[int, float, str]] = []
        self.stop = threading.Event()
        self.started = self.ended = 0.0
        self.ran_out = False
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="opens-load")

    def start(self) -> None:
        self._thread.start()

    def finish(self) -> None:
        self.stop.set()
        self._thread.join()

    def finish_when_done(self) -> None:
        """Wait until the whole plan is posted."""
        self._thread.join()

    async def _run(self) -> None:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            slots = asyncio.Semaphore(MAX_IN_FLIGHT)
            tasks = []
            loop = asyncio.get_running_loop()
            self.started = time.monotonic()
            start = loop.time()
            for n, (token, ref) in enumerate(self.plan):
                if self.stop.is_set():
                    break
                delay = start + n / self.rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await slots.acquire()
                tasks.append(asyncio.create_task(self._post(session, slots, token, ref)))
            else:
                self.ran_out = True
            await asyncio.gather(*tasks)
            self.ended = time.monotonic()

    async def _post(self, session, slots: asyncio.Semaphore, token: str, ref: str) -> None:
        began = time.perf_counter()
        try:
            async with session.post(
                self.url, json={"ref": ref}, headers={"Authorization": f"Session {token}"}
            ) as response:
                await response.read()
                status = response.status
        except Exception:  # a refused or broken connection: recorded as status 0
            status = 0
        finally:
            slots.release()
        self.results.append((status, (time.perf_counter() - began) * 1000, ref))


def warm_up(url: str, plan: list[tuple[str, str]], requests_count: int = 200) -> None:
    """Every gunicorn worker thread has imported and connected before the measurement: opens of refs that
    name no delivery (404, nothing counted), from the plan's sessions."""
    from templates_app.opens_ref import make_ref

    warm = LoadGenerator(
        url, [(token, make_ref(10**12 + n)) for n, (token, _) in enumerate(plan[:requests_count])], 200
    )
    warm.start()
    warm.finish_when_done()
    statuses = {status for status, _, _ in warm.results}
    if statuses != {404}:
        raise SystemExit(f"warm-up opens answered {statuses}, not 404")


def broadcast_app(fake, label: str, users: int):
    app = common.make_app(fake, label)
    template, _ = common.make_template(app, fake, "formid")
    common.generate_users(app, users, formids=1)
    common.teach_fake(fake, app)
    return app, template


def run_opens(
    users: int = 5000,
    rate: float = TARGET_RATE,
    seed_users: int = 12_000,
    workers: int = 2,
    concurrency: int = 2,
    latency_ms: float = 20.0,
    timeout: float = 1800.0,
) -> list[str]:
    common.setup_django()
    from django.db.models import Sum

    from formids.models import TemplateDailyStat
    from templates_app.models import Delivery, Push

    failures: list[str] = []
    scratch = Path(tempfile.mkdtemp(prefix="pushhub-opens-"))
    with common.Processes() as processes:
        fake = common.FakeWeChat(processes, latency_ms=latency_ms)
        env = common.bench_env(**RUN_ENV)
        seed_app, seed_template = broadcast_app(fake, "opens-seed", seed_users)
        alone_app, alone_template = broadcast_app(fake, "opens-alone", users)
        loaded_app, loaded_template = broadcast_app(fake, "opens-loaded", users)
        port = common.free_port()
        web_workers, web_threads = common.web_shape(env)
        web = common.start_web(processes, env, scratch / "gunicorn.log", port)  # the Procfile's web line
        worker_procs = common.start_workers(processes, env, workers, concurrency, scratch)

        seed_push, seed_wall = broadcast(seed_app, seed_template, timeout)  # also warms the workers up
        print(f"opens: seed broadcast sent {seed_push.sent:,} in {seed_wall:.1f} s", flush=True)
        plan = open_plan(seed_push)
        url = f"http://127.0.0.1:{port}/sdk/v1/{seed_app.appid}/opens"
        warm_up(url, plan)

        alone, alone_wall = broadcast(alone_app, alone_template, timeout)
        print(f"  broadcast alone: {alone.sent:,} in {alone_wall:.1f} s", flush=True)

        load = LoadGenerator(url, plan, rate)
        web_cpu_before = common.tree_cpu_seconds(web.pid)
        workers_cpu_before = sum(common.tree_cpu_seconds(w.pid) for w in worker_procs)
        load.start()
        time.sleep(0.5)  # the opens are flowing when the broadcast starts
        loaded, loaded_wall = broadcast(loaded_app, loaded_template, timeout)
        load.finish()
        web_cpu = common.tree_cpu_seconds(web.pid) - web_cpu_before
        workers_cpu = sum(common.tree_cpu_seconds(w.pid) for w in worker_procs) - workers_cpu_before
        print(f"  broadcast with opens: {loaded.sent:,} in {loaded_wall:.1f} s", flush=True)
        stats = {name: fake.stats(app.appid) for name, app in (("alone", alone_app), ("loaded", loaded_app))}

    results = load.results
    answered = len(results)
    seconds = max(load.ended - load.started, 1e-9)
    latencies = [ms for status, ms, _ in results if status == 200]
    statuses: dict[int, int] = {}
    for status, _, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    distinct = len({ref for status, _, ref in results if status == 200})
    alone_rate, loaded_rate = alone.sent / alone_wall, loaded.sent / loaded_wall
    slowdown = 1 - loaded_rate / alone_rate
    rows = [
        Row("opens/s answered (target rate)", f"{answered / seconds:,.0f} ({rate:,.0f})"),
        Row("opens posted / distinct refs / repeats", f"{answered:,} / {distinct:,} / {answered - distinct:,}"),
        Row("open latency p50 / p95 / p99",
            " / ".join(f"{common.percentile(latencies, p):.1f} ms" for p in (50, 95, 99))),
        Row("broadcast deliveries/s alone", f"{alone_rate:,.0f}"),
        Row("broadcast deliveries/s with the opens", f"{loaded_rate:,.0f}", f"{alone_rate:,.0f}",
            f"{100 * -slowdown:+.1f} %"),
        Row("CPU during the loaded broadcast: web / workers", f"{web_cpu:.1f} s / {workers_cpu:.1f} s"),
        Row("web CPU per open", f"{1000 * web_cpu / max(answered, 1):.2f} ms"),
    ]  # fmt: skip
    common.print_table(
        f"Opens: {rate:,.0f}/s targeted while a broadcast to {users:,} users runs ({workers} workers × "
        f"{concurrency} tasks, fake WeChat at {latency_ms:g} ms)",
        rows,
        [
            f"gunicorn from the Procfile's web line ({web_workers} workers × {web_threads} threads); the "
            f"load generator (aiohttp, ≤ {MAX_IN_FLIGHT} in flight) runs in the bench process on the same cores",
            f"baseline of the last row: the same broadcast to another app of {users:,} users without the opens; "
            f"target: within {100 * TARGET_SLOWDOWN:.0f} % ({'met' if slowdown <= TARGET_SLOWDOWN else 'NOT met'})",
            "SDK_RATE_PER_IP raised for the run (one client address); SDK_RATE_PER_OPENID as configured",
            *(["the load generator ran out of refs before the broadcast ended"] if load.ran_out else []),
        ],
    )

    opened_rows = Delivery.objects.filter(push=seed_push, opened_at__isnull=False).count()
    seed_push.refresh_from_db()
    funnel = (
        TemplateDailyStat.objects.filter(app=seed_app, template_id=seed_template.template_id).aggregate(
            n=Sum("opened")
        )["n"]
        or 0
    )
    common.check(statuses == {200: answered}, f"every open answered 200 ({statuses})", failures)
    common.check(
        seed_push.opened == distinct == opened_rows,
        f"each open counted once: counts.opened {seed_push.opened}, deliveries opened {opened_rows}, "
        f"distinct refs {distinct}",
        failures,
    )
    common.check(funnel == distinct, f"the funnel's opened ({funnel}) equals the distinct refs", failures)
    for name, push, stat in (("alone", alone, stats["alone"]), ("with opens", loaded, stats["loaded"])):
        common.check(
            push.sent == users == stat["users"] and stat["users_with_duplicates"] == 0,
            f"broadcast {name}: {push.sent} sent, {stat['users']} users got one, "
            f"{stat['users_with_duplicates']} got two",
            failures,
        )
    common.check(
        not Push.objects.filter(pk__in=[alone.pk, loaded.pk], opened__gt=0).exists(),
        "the measured broadcasts' pushes have no opens",
        failures,
    )
    return failures


def run(full: bool = False) -> list[str]:
    if full:
        return run_opens(users=50_000, seed_users=120_000)
    return run_opens()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=5000, help="users of each measured broadcast")
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="opens per second to post")
    parser.add_argument(
        "--seed-users", type=int, default=12_000, help="users of the first broadcast, whose refs are opened"
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=2, help="chunk tasks at a time per worker")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args()
    failures = run_opens(
        users=args.users,
        rate=args.rate,
        seed_users=args.seed_users,
        workers=args.workers,
        concurrency=args.concurrency,
        latency_ms=args.latency_ms,
    )
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

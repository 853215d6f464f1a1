"""An @all broadcast through real Celery workers and the standalone sandbox; prints deliveries per second.

    .venv/bin/python bench/broadcast.py [--users 10000] [--workers 1] [--concurrency 2] [--pool threads]

Database: DATABASE_URL if set (migrated, then left with the bench's tenant in it), else a fresh SQLite file
var/bench-broadcast.sqlite3. Broker and cache: REDIS_URL if set, else a filesystem broker in a temporary
directory and the database cache. Every process (sandbox server, workers) runs on this machine, so the
figure is the pipeline and the sandbox sharing its CPUs, not WeChat's speed.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--kind", choices=("formid", "subscribe"), default="formid")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=2, help="tasks at a time per worker")
    parser.add_argument("--pool", choices=("threads", "prefork"), default="threads")
    parser.add_argument("--sandbox-threads", type=int, default=32)
    parser.add_argument("--chunk-size", type=int, default=500)
    parser.add_argument("--send-concurrency", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=600.0)
    return parser.parse_args()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process and its reaped children (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    args = parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="pushhub-bench-"))
    if not os.environ.get("DATABASE_URL"):
        db = BASE_DIR / "var" / "bench-broadcast.sqlite3"
        for leftover in db.parent.glob(db.name + "*"):
            leftover.unlink()
        os.environ["DATABASE_URL"] = f"sqlite:///{db}"
    port = free_port()
    queue = f"bench-{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.delivery.worker_settings",
        "PYTHONPATH": str(BASE_DIR),
        "DELIVERY_TEST_QUEUE": queue,
        "SANDBOX_API_BASE": f"http://127.0.0.1:{port}",
        "SANDBOX_EVENTS_BASE": "http://127.0.0.1:9",  # the sandbox pushes its events nowhere
        "PUSH_CHUNK_SIZE": str(args.chunk_size),
        "SEND_CONCURRENCY": str(args.send_concurrency),
        "LOG_LEVEL": "WARNING",
    }
    if not os.environ.get("REDIS_URL"):
        for sub in ("queue", "processed", "control"):
            (scratch / "broker" / sub).mkdir(parents=True)
        env["DELIVERY_TEST_BROKER_DIR"] = str(scratch / "broker")
    os.environ.update(env)

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("createcachetable", verbosity=0)

    from pushhub.celery import app as celery_app
    from pushhub.wechat.sandbox import services as sandbox
    from templates_app import tasks
    from templates_app.models import Push
    from tenants import services as tenants
    from tests.delivery.helpers import forget_redis_queue, inbox_counts, make_push, make_template, seed_users

    children: list[subprocess.Popen] = []
    python = sys.executable
    try:
        children.append(
            subprocess.Popen(
                [
                    python,
                    "-m",
                    "pushhub.wechat.sandbox",
                    "--port",
                    str(port),
                    "--threads",
                    str(args.sandbox_threads),
                ],
                cwd=BASE_DIR,
                env=env,
                start_new_session=True,
            )
        )
        tenant = tenants.create_tenant(
            f"Bench {secrets.token_hex(3)}", f"{uuid.uuid4().hex}@bench.test", "bench password"
        ).tenant
        app = tenants.register_app(
            tenant,
            appid="wx" + secrets.token_hex(8),
            secret=secrets.token_hex(16),
            name="bench",
            sandbox_app=True,
        )
        template = make_template(app, args.kind)
        started = time.monotonic()
        if args.kind == "formid":
            seed_users(app, args.users, formids=1)
        else:
            seed_users(app, args.users, subscribe=template)
        print(f"seeded {args.users} users with credits in {time.monotonic() - started:.1f} s", flush=True)

        def sandbox_up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_until(sandbox_up, 30, "the sandbox server")
        logs = []
        for n in range(args.workers):
            log = scratch / f"worker-{n}.log"
            logs.append(log)
            with log.open("wb") as out:
                children.append(
                    subprocess.Popen(
                        [str(Path(python).parent / "celery"), "-A", "pushhub", "worker", "--pool", args.pool,
                         "--concurrency", str(args.concurrency), "-Q", queue, "-n", f"{queue}-{n}@%h",
                         "--loglevel", "INFO", "--without-mingle", "--without-gossip", "--without-heartbeat"],
                        cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                    )
                )  # fmt: skip
        wait_until(lambda: all(" ready." in log.read_text() for log in logs), 60, "the workers")

        push = make_push(template)
        options = {}
        if "DELIVERY_TEST_BROKER_DIR" in env:
            options = dict(settings.CELERY_BROKER_TRANSPORT_OPTIONS)
        url = "filesystem://" if options else settings.REDIS_URL
        started = time.monotonic()
        with celery_app.connection_for_write(url, transport_options=options) as conn:
            tasks.deliver_push.apply_async(args=(str(push.pk),), queue=queue, connection=conn)
        last_report = 0.0
        while True:
            state = Push.objects.get(pk=push.pk)
            elapsed = time.monotonic() - started
            if state.status == "done":
                break
            if elapsed - last_report >= 2:
                last_report = elapsed
                print(
                    f"  {elapsed:5.1f} s: sent {state.sent}, failed {state.failed}, pending {state.pending}",
                    flush=True,
                )
            if elapsed > args.timeout:
                raise SystemExit(f"not done after {args.timeout:.0f} s")
            time.sleep(0.1)
        total = (state.finished_at - state.started_at).total_seconds()
        wall = time.monotonic() - started
        inbox = inbox_counts(app.appid)
        stats = sandbox.stats(app.appid)
        print(
            f"{state.sent} sent, {state.failed} failed of {state.recipients} recipients "
            f"({args.kind}, {args.workers}×{args.concurrency} {args.pool}, chunk {args.chunk_size}, "
            f"{args.send_concurrency} sends/chunk, {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}, "
            f"{'redis' if settings.REDIS_URL else 'filesystem broker'})"
        )
        print(
            f"total {total:.1f} s (started → finished; {wall:.1f} s from enqueue): {state.sent / total:.0f} deliveries/s"
        )
        print(
            f"inbox: {sum(inbox.values())} messages, {len(inbox)} users, max {max(inbox.values(), default=0)} per user"
        )
        print(f"sandbox: {stats['sends_by_errcode']}, tokens issued {stats['tokens_issued']}")
        sandbox_cpu, worker_cpu = cpu_seconds(children[0].pid), sum(cpu_seconds(c.pid) for c in children[1:])
        if sandbox_cpu is not None:
            print(
                f"CPU: sandbox server {sandbox_cpu:.1f} s, workers {worker_cpu:.1f} s "
                f"({1000 * worker_cpu / max(state.sent, 1):.2f} ms of worker CPU per delivery)"
            )
    finally:
        for child in children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        if os.environ.get("REDIS_URL"):
            forget_redis_queue(os.environ["REDIS_URL"], queue)


if __name__ == "__main__":
    main()

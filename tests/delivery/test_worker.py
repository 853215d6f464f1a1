"""The pipeline on real Celery workers (subprocesses on the test database and the same broker): a 1,000-user
broadcast, and a worker SIGKILLed mid-broadcast whose work another worker finishes, every message once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from formids import services as credits
from formids.models import Credit, MiniUser
from pushhub.celery import app as celery_app
from templates_app import tasks
from templates_app.models import Push

from .helpers import assert_counters_match_rows, forget_redis_queue, inbox_counts, make_push, seed_users

pytestmark = pytest.mark.django_db(transaction=True)

BASE_DIR = Path(settings.BASE_DIR)
CELERY = str(Path(sys.executable).parent / "celery")


def wait_for(check, timeout: float, what: str, interval: float = 0.05):
    """Poll ``check`` until it returns something truthy, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def database_url() -> str:
    """The test database, as a DATABASE_URL for another process."""
    conf = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{conf['NAME']}"
    user = quote(conf["USER"] or "", safe="")
    password = f":{quote(conf['PASSWORD'], safe='')}" if conf["PASSWORD"] else ""
    return f"postgres://{user}{password}@{conf['HOST'] or '127.0.0.1'}:{conf['PORT'] or 5432}/{conf['NAME']}"


class Broker:
    """The broker the workers use: the configured one when it is Redis or RabbitMQ (CELERY_BROKER_URL, by
    default REDIS_URL), else kombu's filesystem transport in a directory of this test's own; always a queue of
    this test's own."""

    def __init__(self, tmp_path: Path):
        self.queue = f"delivery-test-{uuid.uuid4().hex[:12]}"
        self.kind = settings.BROKER_KIND if settings.BROKER_KIND in ("redis", "rabbitmq") else "filesystem"
        self.directory = tmp_path / "broker" if self.kind == "filesystem" else None
        self.options = {}
        if self.directory:
            for sub in ("queue", "processed", "control"):
                (self.directory / sub).mkdir(parents=True)
            self.options = {
                "data_folder_in": str(self.directory / "queue"),
                "data_folder_out": str(self.directory / "queue"),
                "processed_folder": str(self.directory / "processed"),
                "control_folder": str(self.directory / "control"),
                "store_processed": False,
            }

    def connection(self):
        url = "filesystem://" if self.directory else settings.CELERY_BROKER_URL
        return celery_app.connection_for_write(url, transport_options=self.options)

    def send(self, task, *args) -> None:
        with self.connection() as conn:
            task.apply_async(args=args, queue=self.queue, connection=conn)

    def delete_queue(self) -> None:
        if self.kind == "redis":
            forget_redis_queue(settings.CELERY_BROKER_URL, self.queue)
        elif self.kind == "rabbitmq":  # the killed workers' unacknowledged tasks went back to it: gone too
            with self.connection() as conn:
                conn.default_channel.queue_delete(self.queue)


@pytest.fixture
def broker(tmp_path):
    broker = Broker(tmp_path)
    yield broker
    broker.delete_queue()


@pytest.fixture
def start_worker(broker, sandbox_base, transactional_db, settings, tmp_path):
    """start_worker(pool, **env) → a running `celery worker` subprocess (its own session, so it and its pool
    children can be killed together). Every worker started is killed at teardown, before the database is
    flushed."""
    started: list[subprocess.Popen] = []

    def start(pool: str = "threads", **extra_env: str) -> subprocess.Popen:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.delivery.worker_settings",
            "PYTHONPATH": str(BASE_DIR),
            "DATABASE_URL": database_url(),
            "CACHE_KEY_PREFIX": settings.CACHES["default"]["KEY_PREFIX"],
            "SANDBOX_API_BASE": settings.SANDBOX_API_BASE,
            "WECHAT_API_BASE": settings.WECHAT_API_BASE,
            "SANDBOX_EVENTS_BASE": settings.SANDBOX_EVENTS_BASE,
            "DELIVERY_TEST_QUEUE": broker.queue,
            "DELIVERY_RETRY_BASE": "0.05",
            "DELIVERY_RETRY_MAX": "0.5",
            "LOG_LEVEL": "INFO",
            # The sandbox here is the test's live server: a thread and a PostgreSQL connection per request.
            # Two prefork children × the default 64 sends would pass max_connections (100).
            "WECHAT_POOL_SIZE": "32",
            **extra_env,
        }
        if broker.directory:
            env["DELIVERY_TEST_BROKER_DIR"] = str(broker.directory)
        log = tmp_path / f"worker-{len(started)}.log"
        command = [
            CELERY, "-A", "pushhub", "worker", "--pool", pool, "--concurrency", "2", "-Q", broker.queue,
            "-n", f"{broker.queue}-{len(started)}@%h", "--loglevel", "INFO",
            "--without-mingle", "--without-gossip", "--without-heartbeat",
        ]  # fmt: skip
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        started.append(process)

        def ready():
            if process.poll() is not None:
                raise AssertionError(f"the worker exited:\n{log.read_text()[-3000:]}")
            return " ready." in log.read_text()

        wait_for(ready, 30, "the worker to start")
        process.log = log
        return process

    yield start
    for process in started:
        kill(process)


def kill(process: subprocess.Popen) -> None:
    """SIGKILL the worker and its pool children (its process group; we started it in a session of its own)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def push_state(push_id) -> Push:
    return Push.objects.get(pk=push_id)


def test_a_1000_user_broadcast_completes_on_a_real_worker(app, formid_template, broker, start_worker):
    users = seed_users(app, 1000, formids=1)
    seed_users(app, 20, formids=1, push_enabled=False)
    start_worker("threads")
    push = make_push(formid_template)

    broker.send(tasks.deliver_push, str(push.pk))
    wait_for(lambda: push_state(push.pk).status == "done", 45, "the broadcast to finish")

    push.refresh_from_db()
    assert (push.recipients, push.sent, push.failed, push.opted_out, push.pending) == (1020, 1000, 0, 20, 0)
    assert inbox_counts(app.appid) == {openid: 1 for openid in users}
    assert not Credit.objects.filter(app=app, state="claimed").exists()
    assert_counters_match_rows(push)


def test_a_worker_killed_mid_broadcast_leaves_every_user_exactly_one_message(
    app, formid_template, broker, start_worker
):
    users = seed_users(app, 1000, formids=2)
    leases = {"PUSH_CHUNK_SIZE": "100", "DELIVERY_IN_FLIGHT_LEASE": "1", "DELIVERY_ENUMERATION_LEASE": "2"}
    first = start_worker("prefork", **leases)
    push = make_push(formid_template)
    broker.send(tasks.deliver_push, str(push.pk))
    wait_for(lambda: push_state(push.pk).sent >= 150, 30, "some deliveries to be sent")

    kill(first)  # mid-broadcast: chunks in flight, queued, and prefetched die with it
    interrupted = push_state(push.pk)
    assert interrupted.status == "running" and interrupted.sent < 1000
    start_worker("prefork", **leases)

    def finished():
        # What beat does every 15 s, with a 1 s stall threshold: pushes without progress are resumed.
        broker.send(tasks.run_scheduled_pushes, 1.0)
        return push_state(push.pk).status == "done"

    wait_for(finished, 60, "another worker to finish the broadcast", interval=0.5)

    assert inbox_counts(app.appid) == {openid: 1 for openid in users}
    credits.release_stale(timedelta(microseconds=1))  # claims orphaned by the killed worker, if any
    assert not Credit.objects.filter(app=app, state="claimed").exists()
    assert Credit.objects.filter(app=app, state="available").count() == 1000  # everyone's second formId
    push.refresh_from_db()
    assert (push.recipients, push.sent, push.failed, push.pending) == (1000, 1000, 0, 0)
    assert_counters_match_rows(push)


def test_a_worker_killed_while_holds_are_released_sends_each_held_message_once(
    app, formid_template, broker, start_worker, monkeypatch
):
    """1,000 held users gain a formId each; the worker dies while their messages go out. Once another worker
    and the sweeps are done, every user has exactly one message and no hold is left."""
    from pushhub.wechat.sandbox.models import SandboxApp, SandboxFormId
    from templates_app.delivery import holds
    from templates_app.delivery import queue as delivery_queue

    users = seed_users(app, 1000)  # known to both sides, no credit
    push = make_push(formid_template, users, hold_seconds=600)
    assert (push.held, push.pending) == (1000, 0)
    leases = {"DELIVERY_IN_FLIGHT_LEASE": "1", "DELIVERY_ENUMERATION_LEASE": "2"}
    first = start_worker("prefork", **leases)
    # The release task goes to this test's own queue, as the uploads' after-commit hook would queue it.
    monkeypatch.setattr(
        delivery_queue,
        "enqueue",
        lambda task, *args, countdown=None: broker.send(getattr(tasks, task), *args),
    )

    # Each user's new formId, on both sides, announced as an upload announces it.
    wechat_app, now = SandboxApp.objects.get(appid=app.appid), timezone.now()
    user_ids = dict(MiniUser.objects.filter(app=app).values_list("openid", "pk"))
    SandboxFormId.objects.bulk_create(
        [
            SandboxFormId(app=wechat_app, openid=o, value=f"held-{o}", kind="formid", uses_left=1)
            for o in users
        ]
    )
    Credit.objects.bulk_create(
        [
            Credit(
                app=app,
                user_id=user_ids[o],
                kind="formid",
                value=f"held-{o}",
                expires_at=now + timedelta(days=7),
            )
            for o in users
        ]
    )
    assert holds.mark_arrivals(app.pk, users) == 1000
    wait_for(lambda: push_state(push.pk).sent >= 150, 30, "some held messages to be sent")

    kill(first)  # mid-release: the chunk of released rows dies with it
    assert push_state(push.pk).sent < 1000
    start_worker("prefork", **leases)

    def finished():
        # What beat does: resume pushes without progress (1 s here), release what is still marked.
        broker.send(tasks.run_scheduled_pushes, 1.0)
        broker.send(tasks.sweep_holds)
        return push_state(push.pk).status == "done"

    wait_for(finished, 60, "another worker to send the rest", interval=0.5)

    assert inbox_counts(app.appid) == {openid: 1 for openid in users}
    push.refresh_from_db()
    assert (push.sent, push.held, push.pending, push.failed, push.no_credit) == (1000, 0, 0, 0, 0)
    assert not Credit.objects.filter(app=app, state="claimed").exists()
    assert_counters_match_rows(push)

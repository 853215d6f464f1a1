"""The real stack the fault scenarios run against, every part its own process that a scenario can break:

- PostgreSQL: the machine's server, a database of the suite's own (``pushhub_faults``, created afresh each
  run), so dropping its connections (``pg_terminate_backend``) touches nothing else;
- Redis: a ``redis-server`` of the suite's own on a free port (cache, locks, rate limits and the Celery
  broker), so restarting it (all its data gone: it keeps nothing on disk, like the machine's) disturbs no
  other user of the machine's Redis;
- or, with ``broker="amqp"`` (``--broker amqp``), the machine's RabbitMQ as the Celery broker, on a vhost of
  the suite's own (created for the run, deleted after it: closing its connections touches nobody else), the
  suite's Redis still the cache;
- gunicorn serving PushHub (the trigger URLs the scenarios call, the status URLs they poll);
- the Procfile's Celery workers, started from its lines: two ``worker`` processes (the broadcast lane, the
  ones a scenario SIGKILLs), one ``sends`` and one ``maintenance``; and Celery beat (the stall and stale-claim
  sweeps, every FAULTS_BEAT_SECONDS, on the maintenance lane, and the webhooks' sweep, every
  WEBHOOK_SWEEP_SECONDS);
- the webhook worker, as the Procfile starts it (threads pool, its default concurrency, its own queue);
- the benchmarks' fake WeChat (bench/fake_wechat.py: the sandbox's rules, in memory, with knobs for -1
  answers, lost answers and token resets), which counts every message each openid received.

Timings are shortened so that recovery takes seconds, not minutes; each is named in ``TIMINGS`` and the
README's fault-injection section says why.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench import common
from bench.common import BASE_DIR, PYTHON, Processes, free_port, port_open, wait_until

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/pushhub_faults"
# The machine's RabbitMQ, without a vhost (the suite adds its own): FAULTS_RABBITMQ_URL to use another.
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672"
BROKERS = ("redis", "amqp")
BIN = Path(PYTHON).parent

TIMINGS = {
    # WeChat calls: an answer not back in 1.5 s is a read timeout (the fake holds injected ones for 3 s).
    "WECHAT_READ_TIMEOUT": "1.5",
    "WECHAT_CONNECT_TIMEOUT": "1",
    # A chunk stops starting sends after 5 s; an attempt unrecorded for 8 s belongs to a dead worker.
    "DELIVERY_CHUNK_BUDGET": "5",
    "DELIVERY_IN_FLIGHT_LEASE": "8",
    # A push without progress for 6 s is re-queued by the beat sweep (every 2 s).
    "DELIVERY_STALL_AFTER": "6",
    "DELIVERY_ENUMERATION_LEASE": "10",
    "FAULTS_BEAT_SECONDS": "2",
    # Retries: 0.5 s doubled up to 4 s, 8 attempts. With 10 % of sends answered -1, the default 5 attempts
    # would leave about one user in 5,000 failed after five -1 answers in a row (0.1^5 per user): a
    # tenant facing such an error rate raises the attempts the same way.
    "DELIVERY_MAX_ATTEMPTS": "8",
    "DELIVERY_RETRY_BASE": "0.5",
    "DELIVERY_RETRY_MAX": "4",
    # A broadcast chunk's share lease (templates_app/delivery/share.py): a SIGKILLed worker's chunks stop
    # counting against their tenant's share after 20 s (the chunk budget above, plus its last answers).
    "BROADCAST_SHARE_LEASE": "20",
    # Claims outlive any recovery above (a chunk renews its claims when it runs).
    "CREDIT_CLAIM_LEASE": "60",
    # The engine, not the per-app limiter, is under test (the limiter has its own tests).
    "SEND_RATE_PER_APP": "1000000",
    "TRIGGER_RATE_PER_TEMPLATE": "1000000",
    "TRIGGER_RATE_PER_TENANT": "1000000",
    # Webhooks: the receiver is on loopback; the retry schedule (5 s, 5 min, 30 min … 10 h: 27.6 h in all) runs
    # 5,000 times faster (1 ms, 60 ms, 0.4 s, 1.4 s, 3.6 s, 7.2 s, 7.2 s: 20 s in all), and beat's sweep
    # queues due retries every 2 s.
    "WEBHOOK_ALLOW_PRIVATE": "1",
    "WEBHOOK_RETRY_SCALE": "0.0002",
    "WEBHOOK_SWEEP_SECONDS": "2",
    # The receiver answers at once: 2 s instead of 10 s for an answer also shortens what a SIGKILLed webhook
    # worker leaves held, its drains' slots and leased events (the drain's budget + one timeout + 30 s).
    "WEBHOOK_TIMEOUT": "2",
}
FAKE_TIMEOUT_HOLD_MS = 3000


class Stack:
    """Start with ``with Stack(workdir) as stack``; every process is killed on exit."""

    def __init__(
        self, workdir: Path | None = None, workers: int = 2, concurrency: int = 2, broker: str = "redis"
    ):
        if broker not in BROKERS:
            raise SystemExit(f"unknown broker {broker!r}: one of {', '.join(BROKERS)}")
        self.broker = broker
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="pushhub-faults-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.worker_count, self.concurrency = workers, concurrency
        self.processes = Processes()
        self.database_url = os.environ.get("FAULTS_DATABASE_URL", DEFAULT_DATABASE_URL)
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.web_port = free_port()
        self.queue = f"faults-{uuid.uuid4().hex[:8]}"
        self.vhost = f"pushhub-{self.queue}" if broker == "amqp" else None
        self.broker_url = self.redis_url
        if self.vhost:
            base = os.environ.get("FAULTS_RABBITMQ_URL", DEFAULT_RABBITMQ_URL).rstrip("/")
            self.broker_url = f"{base}/{self.vhost}"
        self.redis: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen | None] = []
        self.restarts = 0

    # --- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> Stack:
        self.processes.__enter__()
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)  # every process, and the vhost if one was made
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.processes.__exit__(*exc)
        if self.vhost:
            _rabbitmqctl("delete_vhost", self.vhost, check=False)

    def _start(self) -> None:
        self.start_redis()
        if self.vhost:
            _rabbitmqctl("add_vhost", self.vhost)
            _rabbitmqctl("set_permissions", "-p", self.vhost, _amqp_user(self.broker_url), ".*", ".*", ".*")
        os.environ.update(self.env())
        self._fresh_database()
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        self.fake = common.FakeWeChat(self.processes, latency_ms=10)
        self.fake.control("knobs", {"timeout_hold_ms": FAKE_TIMEOUT_HOLD_MS})
        env = self.env()
        self.processes.start(
            [str(BIN / "gunicorn"), "pushhub.wsgi", "--bind", f"127.0.0.1:{self.web_port}", "--workers", "2",
             "--worker-class", "gthread", "--threads", "4", "--log-level", "warning"],
            env, self.workdir / "gunicorn.log",
        )  # fmt: skip
        self.workers = [self.start_worker(n) for n in range(self.worker_count)]
        # The other lanes' workers, as the Procfile runs them: one-user sends, and beat's sweeps (the stall
        # sweep the scenarios depend on) on the maintenance lane.
        self.lane_workers = [self._start_procfile_worker(p, 0) for p in ("sends", "maintenance")]
        self.webhook_worker = self.start_webhook_worker()
        self.processes.start(
            [str(BIN / "celery"), "-A", "pushhub", "beat", "--loglevel", "INFO",
             "--schedule", str(self.workdir / "beat-schedule")],
            env, self.workdir / "beat.log",
        )  # fmt: skip
        wait_until(lambda: port_open(self.web_port), 60, "gunicorn")
        self.base_url = f"http://127.0.0.1:{self.web_port}"

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.faults.settings",
            "PYTHONPATH": str(BASE_DIR),
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "CELERY_BROKER_URL": self.broker_url,
            "FAULTS_QUEUE": self.queue,
            "DEFAULT_QUEUE": self.queue,
            "BROADCAST_QUEUE": f"{self.queue}-broadcast",
            "SEND_QUEUE": f"{self.queue}-sends",
            "MAINTENANCE_QUEUE": f"{self.queue}-maintenance",
            "PROMETHEUS_MULTIPROC_DIR": "",
            "LOG_LEVEL": "WARNING",
            **TIMINGS,
        }
        fake = getattr(self, "fake", None)
        if fake is not None:
            env["SANDBOX_API_BASE"] = fake.base
        return env

    def _fresh_database(self) -> None:
        import psycopg
        from environ import Env

        config = Env.db_url_config(self.database_url)
        if "postgresql" not in config["ENGINE"]:
            raise SystemExit("the fault suite needs PostgreSQL: set FAULTS_DATABASE_URL to a postgres:// URL")
        self.database_name = config["NAME"]
        admin = dict(host=config["HOST"] or "127.0.0.1", port=config["PORT"] or 5432, user=config["USER"])
        with psycopg.connect(dbname="postgres", autocommit=True, **admin) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database_name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.database_name}"')
        self._admin = admin

    # --- the parts a scenario breaks ---------------------------------------------------------------
    def start_redis(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise SystemExit("the fault suite starts its own Redis: redis-server is not installed")
        self.redis = self.processes.start(
            [server, "--bind", "127.0.0.1", "--port", str(self.redis_port), "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            os.environ.copy(), self.workdir / "redis.log",
        )  # fmt: skip
        wait_until(lambda: port_open(self.redis_port), 30, "redis-server")

    def restart_redis(self, down_seconds: float = 2.0) -> None:
        """Stop Redis without saving (everything in it is lost: queues, unacknowledged tasks, locks, cached
        tokens, progress marks), leave it down for a moment, start it again empty on the same port."""
        assert self.redis is not None
        self.processes.stop(self.redis, signal.SIGKILL)
        wait_until(lambda: not port_open(self.redis_port), 10, "redis-server to stop")
        time.sleep(down_seconds)
        self.start_redis()

    def close_broker_connections(self) -> int:
        """RabbitMQ closes every connection to the suite's vhost (workers' consumers, the web's and beat's
        publishers, the webhook worker), as in a broker restart or a network cut: unacknowledged tasks go
        back to their queues, every client must reconnect. Returns how many were closed."""
        assert self.vhost, "only with broker='amqp'"
        listed = _rabbitmqctl("list_connections", "-p", self.vhost, "--no-table-headers", "-q", "pid")
        count = len([line for line in listed.splitlines() if line.strip()])
        _rabbitmqctl("close_all_connections", "--vhost", self.vhost, "--limit", "1000", "fault suite")
        return count

    def start_worker(self, n: int) -> subprocess.Popen:
        """The Procfile's ``worker`` line (the broadcast lane), ``self.concurrency`` threads."""
        return self._start_procfile_worker("worker", n)

    def _start_procfile_worker(self, process: str, n: int) -> subprocess.Popen:
        log = self.workdir / f"{process}-{n}.log"
        log.unlink(missing_ok=True)
        worker = common.procfile_process(
            self.processes, process, self.env(), log,
            WORKER_CONCURRENCY=str(self.concurrency), WORKER_NAME=f"{self.queue}-{process}-{n}",
        )  # fmt: skip
        wait_until(lambda: " ready." in _read(log), 60, f"Celery {process} worker {n}")
        return worker

    def kill_worker(self, n: int, restart_after: float = 1.0) -> None:
        """SIGKILL worker ``n`` (its tasks die mid-send, unacknowledged), then start it again."""
        worker = self.workers[n]
        assert worker is not None
        self.processes.stop(worker, signal.SIGKILL)
        time.sleep(restart_after)
        self.workers[n] = self.start_worker(n)
        self.restarts += 1

    def start_webhook_worker(self) -> subprocess.Popen:
        return common.start_webhook_worker(self.processes, self.env(), self.workdir / "webhook-worker.log")

    def kill_webhook_worker(self, restart_after: float = 1.0) -> None:
        """SIGKILL the webhook worker (its drains die mid-POST, leases held, tasks unacknowledged), then start
        it again."""
        self.processes.stop(self.webhook_worker, signal.SIGKILL)
        log = self.workdir / "webhook-worker.log"
        log.replace(self.workdir / f"webhook-worker.killed-{self.restarts}.log")
        time.sleep(restart_after)
        self.webhook_worker = self.start_webhook_worker()
        self.restarts += 1

    def drop_database_connections(self) -> int:
        """pg_terminate_backend on every connection to the suite's database (web, workers, beat, this
        runner): each finds its connection gone at its next query, mid-transaction or not."""
        import psycopg

        with psycopg.connect(dbname="postgres", autocommit=True, **self._admin) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                "pg_backend_pid()",
                [self.database_name],
            ).fetchall()
        return sum(1 for (done,) in rows if done)


def _rabbitmqctl(*args: str, check: bool = True) -> str:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        raise SystemExit("the fault suite on RabbitMQ needs rabbitmqctl (and RabbitMQ running)")
    result = subprocess.run([ctl, *args], capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise SystemExit(
            f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}"
        )
    return result.stdout


def _amqp_user(url: str) -> str:
    from urllib.parse import unquote, urlsplit

    return unquote(urlsplit(url).username or "guest")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""

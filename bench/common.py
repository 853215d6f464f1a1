"""What every benchmark shares: the environment (PostgreSQL + Redis), child processes and their CPU/RSS,
the fast fake WeChat, data generators in bulk SQL, and the result tables.

The benchmarks use their own database (``pushhub_bench``, created if missing) and Redis database (2), so a run
never touches the test database or a developer's data; BENCH_DATABASE_URL / BENCH_REDIS_URL override them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/pushhub_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/2"


# --- environment -----------------------------------------------------------------------------------
def bench_env(**extra: str) -> dict[str, str]:
    """The environment of the bench and of every process it starts (web, workers)."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "PYTHONPATH": str(BASE_DIR),
        "DATABASE_URL": os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        "REDIS_URL": os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL),
        "LOG_LEVEL": "WARNING",
    }
    env["BENCH_QUEUE"] = extra.get("BENCH_QUEUE") or env.get("BENCH_QUEUE") or f"bench-{uuid.uuid4().hex[:8]}"
    # The lanes (README "Procfile"), on queues of the run's own: the Procfile's worker lines and the bench's
    # settings both read these names.
    queue = env["BENCH_QUEUE"]
    env.update(DEFAULT_QUEUE=queue, BROADCAST_QUEUE=f"{queue}-broadcast", SEND_QUEUE=f"{queue}-sends",
               MAINTENANCE_QUEUE=f"{queue}-maintenance")  # fmt: skip
    # Prometheus counts in memory, as the figures before the Procfile started the workers (bench.metrics_cost
    # measures the multiprocess directory's cost).
    env.setdefault("PROMETHEUS_MULTIPROC_DIR", "")
    env.update(extra)
    return env


_ready = False


def setup_django(**extra: str) -> dict[str, str]:
    """Point this process at the bench database (created and migrated, once) and Redis; returns the env
    for child processes. Call bench_env() again after starting the fake WeChat (it sets SANDBOX_API_BASE)."""
    global _ready
    env = bench_env(**extra)
    os.environ.update(env)
    if not _ready:
        _create_database(env["DATABASE_URL"])
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        _ready = True
    return env


def _create_database(url: str) -> None:
    import psycopg
    from django.db.backends.postgresql.client import DatabaseClient  # noqa: F401  (psycopg is there)
    from environ import Env

    config = Env.db_url_config(url)
    if "postgresql" not in config["ENGINE"]:
        raise SystemExit("the benchmarks run on PostgreSQL: set BENCH_DATABASE_URL to a postgres:// URL")
    admin = dict(host=config["HOST"] or "127.0.0.1", port=config["PORT"] or 5432, user=config["USER"])
    with psycopg.connect(dbname="postgres", autocommit=True, **admin) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [config["NAME"]]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{config["NAME"]}"')


def flush_redis() -> None:
    """Empty the bench's Redis database (broker queues and cache left by an interrupted run)."""
    import redis

    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()


# --- processes ---------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(step)


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process and its reaped children (/proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def tree_pids(pid: int) -> list[int]:
    """A process and its descendants (gunicorn and celery prefork fork their workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def tree_cpu_seconds(pid: int) -> float:
    return sum(cpu_seconds(p) for p in tree_pids(pid))


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set size, in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Processes:
    """Child processes started in their own session, all killed (with their children) on exit."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen] = []

    def start(self, args: Sequence[str], env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
        out = log.open("wb") if log else subprocess.DEVNULL
        child = subprocess.Popen(
            list(args), cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.children.append(child)
        return child

    def stop(self, child: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        if child.poll() is None:
            try:
                os.killpg(child.pid, sig)
                child.wait(timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()

    def __enter__(self) -> Processes:
        # A SIGTERM (timeout, pkill) ends the benchmark through __exit__, which kills the children: they run in
        # sessions of their own, and left behind they would load the machine for the next measurement.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        return self

    def __exit__(self, *exc: Any) -> None:
        for child in self.children:
            if child.poll() is None:
                try:
                    os.killpg(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            child.wait()


def procfile_line(process: str) -> str:
    """The command of the Procfile's ``process`` line, as written (``${VAR:-default}`` and all)."""
    for line in PROCFILE.read_text().splitlines():
        if line.startswith(f"{process}:"):
            return line.split(":", 1)[1].strip()
    raise KeyError(f"no {process!r} line in the Procfile")


def procfile_process(
    processes: Processes, process: str, env: dict[str, str], log: Path | None = None, **variables: str
) -> subprocess.Popen:
    """Start the Procfile's ``process`` line as honcho would: through ``sh -c`` with ``variables`` in its
    environment (WORKER_CONCURRENCY, WORKER_NAME, SEND_QUEUE ...), the virtualenv's commands first on PATH.
    ``exec`` makes the started pid the command's own (its CPU, its signals)."""
    env = {**env, **variables, "PATH": f"{Path(PYTHON).parent}{os.pathsep}{env.get('PATH', os.defpath)}"}
    return processes.start(["sh", "-c", f"exec {procfile_line(process)}"], env, log)


def lane_queues(env: dict[str, str]) -> list[str]:
    """The distinct queues of the delivery lanes in ``env`` (one when they are configured as one queue)."""
    return list(dict.fromkeys(env[name] for name in ("BROADCAST_QUEUE", "SEND_QUEUE", "MAINTENANCE_QUEUE")))


def one_queue(env: dict[str, str]) -> dict[str, str]:
    """``env`` with every lane on the bench's default queue: the pipeline as it ran before lanes."""
    queue = env["BENCH_QUEUE"]
    return {**env, "SEND_QUEUE": queue, "BROADCAST_QUEUE": queue, "MAINTENANCE_QUEUE": queue}


def start_workers(
    processes: Processes, env: dict[str, str], count: int, concurrency: int, logdir: Path, tag: str = ""
) -> list[subprocess.Popen]:
    """The Procfile's workers, waited for until ready: ``count`` ``worker`` processes (the broadcast lane,
    WORKER_CONCURRENCY=``concurrency`` threads each), and its ``sends`` and ``maintenance`` workers unless
    ``env`` puts every lane on one queue (``one_queue``). The ``worker`` processes are returned first."""
    started, logs = [], []
    lanes = ["worker"] * count
    if len(lane_queues(env)) > 1:
        lanes += ["sends", "maintenance"]
    for n, process in enumerate(lanes):
        log = logdir / f"{tag}{process}-{n}.log"
        logs.append(log)
        started.append(
            procfile_process(
                processes, process, env, log, WORKER_CONCURRENCY=str(concurrency),
                WORKER_NAME=f"{env['BENCH_QUEUE']}-{tag}{process}-{n}",
            )
        )  # fmt: skip
    wait_until(lambda: all(_worker_ready(log) for log in logs), 60, "the Celery workers")
    return started


PROCFILE = BASE_DIR / "Procfile"


def procfile_default(variable: str) -> str:
    """The default the Procfile gives ``variable`` (``${VARIABLE:-default}``)."""
    import re

    match = re.search(r"\$\{" + re.escape(variable) + r":-([^}]*)\}", PROCFILE.read_text())
    if match is None:
        raise KeyError(f"the Procfile gives {variable} no default")
    return match.group(1)


def web_shape(env: dict[str, str]) -> tuple[int, int]:
    """(gunicorn workers, threads each) of the Procfile's ``web`` line in ``env``."""
    return (
        int(env.get("WEB_CONCURRENCY") or procfile_default("WEB_CONCURRENCY")),
        int(env.get("WEB_THREADS") or procfile_default("WEB_THREADS")),
    )


def start_web(processes: Processes, env: dict[str, str], log: Path, port: int) -> subprocess.Popen:
    """gunicorn as the Procfile's ``web`` line starts it (its workers, threads, access log and logger class;
    WEB_CONCURRENCY / WEB_THREADS from ``env`` when set there), on 127.0.0.1:``port``, waited for."""
    web = procfile_process(processes, "web", env, log, WEB_PORT=str(port), BIND="127.0.0.1")
    wait_until(lambda: port_open(port), 60, "gunicorn")
    return web


def procfile_webhook_concurrency() -> int:
    """The webhook worker's default thread count, as the Procfile's ``webhooks`` line has it."""
    import re

    match = re.search(r"WEBHOOK_CONCURRENCY:-(\d+)", PROCFILE.read_text())
    return int(match.group(1)) if match else 8


# Celery's mingle, gossip and event heartbeats: a Redis broker that restarts can leave a worker connected but
# consuming nothing (celery/celery#8030, #8091; seen here: the fault suite's webhook worker after its Redis
# restart). PushHub uses none of them (no remote control, no event monitor), so the Procfile turns them off.
WORKER_FLAGS = ("--without-mingle", "--without-gossip", "--without-heartbeat")


def procfile_worker_flags(process: str) -> list[str]:
    """The ``--without-*`` switches of the Procfile's ``process`` line, in WORKER_FLAGS order."""
    line = next((ln for ln in PROCFILE.read_text().splitlines() if ln.startswith(f"{process}:")), "")
    return [flag for flag in WORKER_FLAGS if flag in line.split()]


def procfile_webhook_nice() -> int:
    """The webhook worker's default niceness, as the Procfile's ``webhooks`` line has it (0: none)."""
    import re

    match = re.search(r"webhooks: nice -n \$\{WEBHOOK_NICE:-(\d+)\}", PROCFILE.read_text())
    return int(match.group(1)) if match else 0


def start_webhook_worker(
    processes: Processes,
    env: dict[str, str],
    log: Path,
    concurrency: int | None = None,
    name: str = "webhooks",
) -> subprocess.Popen:
    """The webhook worker as the Procfile starts it (niced, threads pool, WEBHOOK_CONCURRENCY threads) on
    the process's WEBHOOK_QUEUE (its settings'), waited for until ready."""
    from django.conf import settings

    celery = str(Path(PYTHON).parent / "celery")
    log.unlink(missing_ok=True)
    nice = procfile_webhook_nice()
    worker = processes.start(
        [*(["nice", "-n", str(nice)] if nice else []), celery, "-A", "pushhub", "worker", "--loglevel", "INFO", "-n", f"{name}-{uuid.uuid4().hex[:6]}@%h",
         "-Q", settings.WEBHOOK_QUEUE, "--pool", "threads",
         "--concurrency", str(concurrency or procfile_webhook_concurrency()), *procfile_worker_flags("webhooks")],
        env, log,
    )  # fmt: skip
    wait_until(lambda: _worker_ready(log), 60, "the webhook worker")
    return worker


def _worker_ready(log: Path) -> bool:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return False
    return " ready." in text


# --- the fake WeChat -----------------------------------------------------------------------------------
class FakeWeChat:
    """A running ``bench.fake_wechat`` process and its control endpoints."""

    def __init__(self, processes: Processes, latency_ms: float = 20.0, error_rate: float = 0.0):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = processes.start(
            [PYTHON, "-m", "bench.fake_wechat", "--port", str(self.port), "--latency-ms", str(latency_ms),
             "--error-rate", str(error_rate)],
            {**os.environ, "PYTHONPATH": str(BASE_DIR)},
        )  # fmt: skip
        wait_until(lambda: port_open(self.port), 30, "the fake WeChat")
        # Sandbox apps send to SANDBOX_API_BASE: here, and in every process started with bench_env() after.
        os.environ["SANDBOX_API_BASE"] = self.base
        from django.conf import settings

        settings.SANDBOX_API_BASE = self.base

    def control(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import requests

        url = f"{self.base}/_control/{path}"
        if body is None:
            response = requests.get(url, timeout=60)
        else:
            response = requests.post(url, data=json.dumps(body), timeout=120)
        response.raise_for_status()
        return response.json()

    def stats(self, appid: str) -> dict[str, Any]:
        import requests

        response = requests.get(f"{self.base}/_control/stats", params={"appid": appid}, timeout=60)
        response.raise_for_status()
        return response.json()

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)


# --- tenants, apps, templates, users, credits --------------------------------------------------------
def make_app(fake: FakeWeChat | None, label: str = "bench"):
    """A tenant with one sandbox app (its sends go to SANDBOX_API_BASE, the fake), registered in the fake."""
    import secrets

    from tenants import services as tenants

    tenant = tenants.create_tenant(
        f"{label} {secrets.token_hex(3)}", f"{uuid.uuid4().hex}@bench.test", "bench password"
    ).tenant
    secret = secrets.token_hex(16)
    app = tenants.register_app(
        tenant, appid="wx" + secrets.token_hex(8), secret=secret, name=label, sandbox_app=True
    )
    if fake is not None:
        fake.control("apps", {"appid": app.appid, "secret": secret})
    return app


TEMPLATE_FIELDS = {
    "formid": [{"key": "keyword1", "name": "订单号"}, {"key": "keyword2", "name": "金额"}],
    "subscribe": [{"key": "character_string1", "name": "订单号"}, {"key": "thing2", "name": "商品"}],
}
TEMPLATE_DATA = {
    "formid": {"keyword1": {"value": "A123"}, "keyword2": {"value": "¥99.00", "color": "#173177"}},
    "subscribe": {"character_string1": {"value": "A123"}, "thing2": {"value": "机械键盘"}},
}


def make_template(app, fake: FakeWeChat | None, kind: str = "formid"):
    """A catalogued template with a trigger URL, known to the fake under the same template id.
    Returns (template, trigger token)."""
    from pushhub import crypto
    from templates_app import catalogue

    fields = TEMPLATE_FIELDS[kind]
    content = "".join(f"{f['name']}:{{{{{f['key']}.DATA}}}}\n" for f in fields)
    template = catalogue.create_template(
        app, kind=kind, template_id=f"bench-{uuid.uuid4().hex[:16]}", title="订单通知", fields=fields,
        page="pages/order?id=1", actor="bench",
    )  # fmt: skip
    if fake is not None:
        fake.control(
            "templates",
            {"appid": app.appid, "kind": kind, "template_id": template.template_id, "content": content},
        )
    return template, crypto.decrypt(template.trigger_token_ciphertext)


def generate_users(app, count: int, *, formids: int = 0, subscribe_template_id: str = "", prefix: str = "o"):
    """``count`` users of ``app`` with ``formids`` formIds each (expiring in 1 to 7 days, spread) and/or one
    subscribe credit for ``subscribe_template_id``: INSERT … SELECT over generate_series, no ORM objects.
    Returns the users' ids range (first, last)."""
    from django.db import connection

    tag = uuid.uuid4().hex[:8]
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO formids_miniuser (app_id, openid, unionid, push_enabled, first_seen, last_seen)
            SELECT %s, %s || %s || lpad(g::text, 9, '0'), '', true, now(), now()
            FROM generate_series(1, %s) AS g
            RETURNING id
            """,
            [app.pk, prefix, tag, count],
        )
        ids = [row[0] for row in cursor.fetchall()]
        first, last = min(ids), max(ids)
        if formids:
            cursor.execute(
                """
                INSERT INTO formids_credit (app_id, user_id, kind, value, template_id, uses_left, expires_at,
                                            state, source, claimed_by, created_at)
                SELECT u.app_id, u.id, 'formid', md5(u.openid || ':' || n), '', 1,
                       now() + interval '1 day' + (random() * interval '6 days'), 'available', 'sdk', '', now()
                FROM formids_miniuser u CROSS JOIN generate_series(1, %s) AS n
                WHERE u.app_id = %s AND u.id BETWEEN %s AND %s
                """,
                [formids, app.pk, first, last],
            )
        if subscribe_template_id:
            cursor.execute(
                """
                INSERT INTO formids_credit (app_id, user_id, kind, value, template_id, uses_left, expires_at,
                                            state, source, claimed_by, created_at)
                SELECT u.app_id, u.id, 'subscribe', '', %s, 1, NULL, 'available', 'sdk', '', now()
                FROM formids_miniuser u WHERE u.app_id = %s AND u.id BETWEEN %s AND %s
                """,
                [subscribe_template_id, app.pk, first, last],
            )
        cursor.execute("ANALYZE formids_miniuser")
        cursor.execute("ANALYZE formids_credit")
    return first, last


def teach_fake(fake: FakeWeChat, app, subscribe_template_id: str = "", batch: int = 50_000) -> int:
    """Tell the fake WeChat every formId and subscription PushHub holds for ``app`` (WeChat would know
    them: it issued them). Returns how many credits it learnt."""
    from formids.models import Credit

    taught = 0
    rows = Credit.objects.filter(app=app, state=Credit.State.AVAILABLE).order_by("pk")
    formids = rows.filter(kind__in=["formid", "prepay"]).values_list("user__openid", "value", "uses_left")
    for chunk in _batches(formids.iterator(chunk_size=batch), batch):
        fake.control("formids", {"appid": app.appid, "items": chunk})
        taught += len(chunk)
    if subscribe_template_id:
        subs = rows.filter(kind="subscribe", template_id=subscribe_template_id).values_list("user__openid")
        for chunk in _batches(subs.iterator(chunk_size=batch), batch):
            fake.control(
                "subscriptions",
                {
                    "appid": app.appid,
                    "template_id": subscribe_template_id,
                    "items": [[o, 1] for (o,) in chunk],
                },
            )
            taught += len(chunk)
    return taught


def direct_sends(fake: FakeWeChat, label: str, count: int) -> list[tuple[str, dict]]:
    """What a tenant's own server would send without PushHub: ``count`` formId messages of a fresh app,
    each as (url with the access token, JSON body) for one ``requests.post`` straight to the fake."""
    import requests

    from formids.models import Credit

    app = make_app(fake, label)
    template, _ = make_template(app, fake, "formid")
    generate_users(app, count, formids=1)
    teach_fake(fake, app)
    token = requests.post(
        f"{fake.base}/cgi-bin/stable_token",
        json={"grant_type": "client_credential", "appid": app.appid, "secret": app.get_secret()},
        timeout=10,
    ).json()["access_token"]
    url = f"{fake.base}/cgi-bin/message/wxopen/template/send?access_token={token}"
    pairs = Credit.objects.filter(app=app).values_list("user__openid", "value")[:count]
    return [
        (url, {"touser": openid, "template_id": template.template_id, "form_id": form_id,
               "data": TEMPLATE_DATA["formid"]})
        for openid, form_id in pairs
    ]  # fmt: skip


def _batches(rows: Iterable, size: int):
    batch = []
    for row in rows:
        batch.append(list(row))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# --- results -------------------------------------------------------------------------------------------
# Everything a run measured, for ``python -m bench --json FILE``: each table as printed, and the headline
# figures as numbers (``figure``), which ``bench.report`` turns into the README's tables.
RESULTS: dict[str, list[dict[str, Any]]] = {"figures": [], "tables": []}
CURRENT_BENCHMARK = {"name": ""}


def figure(
    name: str,
    value: float | None,
    unit: str,
    *,
    baseline: float | None = None,
    goal: float | None = None,
    better: str = "higher",
    **context: Any,
) -> None:
    """Record one measured figure: ``name`` (dotted, stable: ``broadcast.deliveries_per_s``), its value in
    ``unit``, the baseline measured in the same run, the issue's goal (``better`` says which side of it is
    met: "higher" or "lower") and what it was measured on (``context``: users, rate, …)."""
    RESULTS["figures"].append(
        {
            "benchmark": CURRENT_BENCHMARK["name"] or name.split(".", 1)[0],
            "name": name,
            "value": None if value is None else round(float(value), 4),
            "unit": unit,
            "baseline": None if baseline is None else round(float(baseline), 4),
            "goal": goal,
            "better": better,
            "met": None
            if goal is None or value is None
            else (value >= goal if better == "higher" else value <= goal),
            "context": context,
        }
    )


@dataclass
class Row:
    figure: str
    pushhub: str
    baseline: str = "—"
    ratio: str = "—"
    target: str = ""


def ratio(ours: float, theirs: float, higher_is_better: bool = True) -> str:
    if not ours or not theirs:
        return "—"
    value = ours / theirs if higher_is_better else theirs / ours
    return f"{value:.1f}×"


def print_table(title: str, rows: Sequence[Row], notes: Sequence[str] = ()) -> str:
    """A Markdown table (the README takes it as printed)."""
    columns = 5 if any(r.target for r in rows) else 4  # the target column where a row has one
    head = ("figure", "PushHub", "baseline", "ratio", "target")[:columns]
    cells = [head] + [(r.figure, r.pushhub, r.baseline, r.ratio, r.target or "—")[:columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(columns)]
    lines = [f"### {title}", ""]
    for n, cell in enumerate(cells):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += [""] + [f"- {note}" for note in notes]
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    RESULTS["tables"].append(
        {
            "benchmark": CURRENT_BENCHMARK["name"],
            "title": title,
            "rows": [
                {
                    "figure": r.figure,
                    "pushhub": r.pushhub,
                    "baseline": r.baseline,
                    "ratio": r.ratio,
                    "target": r.target,
                }
                for r in rows
            ],
            "notes": list(notes),
        }
    )
    return text


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (not interpolated: a reported p99 is a real sample)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-pct * len(ordered) // 100))))
    return ordered[rank - 1]


def check(condition: bool, message: str, failures: list[str]) -> None:
    """A correctness assertion of a benchmark run: printed, and collected so the run exits non-zero."""
    print(f"  {'ok  ' if condition else 'FAIL'} {message}", flush=True)
    if not condition:
        failures.append(message)


def drop_database() -> None:
    """Drop the database DATABASE_URL names (a benchmark's own, made for one run: bench.stats, bench.retention)."""
    import psycopg
    from django.db import connections
    from environ import Env

    connections.close_all()
    config = Env.db_url_config(os.environ["DATABASE_URL"])
    admin = dict(host=config["HOST"] or "127.0.0.1", port=config["PORT"] or 5432, user=config["USER"])
    with psycopg.connect(dbname="postgres", autocommit=True, **admin) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{config["NAME"]}" WITH (FORCE)')
    print(f"  database {config['NAME']} dropped (--keep keeps it)", flush=True)


def machine_facts() -> dict[str, Any]:
    """What a run was measured on: when, which commit, the machine, PostgreSQL and Redis, how busy it was."""
    import datetime
    import platform

    def first(path: str, prefix: str) -> str:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return ""

    def output(*args: str) -> str:
        try:
            return subprocess.run(
                args, capture_output=True, text=True, timeout=10, cwd=BASE_DIR
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    facts: dict[str, Any] = {
        "started_at": datetime.datetime.now(datetime.UTC)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z"),
        # "-dirty" when tracked files differ from the commit: the figures are then not that commit's.
        "commit": output("git", "describe", "--always", "--dirty", "--abbrev=7", "--exclude=*"),
        "cores": os.cpu_count(),
        "cpu": first("/proc/cpuinfo", "model name"),
        "memory": first("/proc/meminfo", "MemTotal"),
        "python": platform.python_version(),
        "load_average": list(os.getloadavg()),
        "procfile": PROCFILE.read_text().splitlines(),
    }
    try:
        import psycopg
        import redis
        from environ import Env

        config = Env.db_url_config(os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL))
        with psycopg.connect(dbname="postgres", host=config["HOST"] or "127.0.0.1",
                             port=config["PORT"] or 5432, user=config["USER"]) as conn:  # fmt: skip
            facts["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
            facts["postgresql_shared_buffers"] = conn.execute("SHOW shared_buffers").fetchone()[0]
        facts["redis"] = redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)).info()[
            "redis_version"
        ]
    except Exception as exc:  # the facts are informative: a run does not stop for them
        facts["services_error"] = repr(exc)
    return facts

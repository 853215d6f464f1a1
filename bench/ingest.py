"""Ingest: formIds per second through ``POST /sdk/v1/{appid}/formids`` under gunicorn, on PostgreSQL + Redis.

    .venv/bin/python -m bench.ingest [--full] [--seconds N] [--connections N] [--only-batched] [--profile DIR]

PushHub: batches of 20 formIds per request (what the SDK sends when it flushes its buffer); baseline: one formId
per request (an SDK that uploads every tap at once). Both runs hit the same gunicorn, with 1000 users each
holding a session token, from a bounded asyncio client (aiohttp, keep-alive, N connections) in its own process,
so its CPU is measured apart from the server's.

Correctness under load, after each run: every distinct formId uploaded is stored exactly once, for an uploader
of it (about one request in ten also repeats a formId sent just before, often still in flight, so duplicates
race with their originals), none is lost, and the server's answers (accepted, duplicates) add up to what is
stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench import common

USERS = 1000
BATCH = 20  # formIds per request in the PushHub run
MAX_BATCH = 100  # the most the SDK endpoint takes in one list (an extra row of the table)
DUPLICATE_SHARE = 0.1  # this share of the requests also repeats a formId sent just before
TARGET = 10_000  # formIds/s (issue 19's goal for the batched run: ≥ 500 requests/s of 20)
# Every request still checks both SDK rate limits (same Redis calls as in production); the ceilings are
# raised because the whole load comes from one address, and a --full run sends more than 120/min per user.
RATE_LIMITS = {"SDK_RATE_PER_IP": "1000000000", "SDK_RATE_PER_OPENID": "1000000000"}


# --- the load generator (its own process: ``python -m bench.ingest --loadgen CONFIG``) -------------------
def loadgen_main(config_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    result = asyncio.run(_load(config))
    Path(config["out"]).write_text(json.dumps(result))


async def _load(config: dict) -> dict:
    import aiohttp

    url, users, batch, tag = config["url"], config["users"], config["batch"], config["tag"]
    warmup, seconds = config["warmup"], config["seconds"]
    recent: list[str] = []  # formIds just sent, for the duplicates
    sent: dict[str, int] = {}  # formId → times sent in a request answered 200
    totals = {"requests": 0, "errors": 0, "accepted": 0, "duplicates": 0, "items": 0}
    latencies: list[float] = []  # seconds, requests completed inside the measured window
    measured = {"requests": 0, "items": 0}
    errors: dict[str, int] = {}
    counter = 0

    def body() -> tuple[bytes, list[str], str]:
        nonlocal counter
        counter += 1
        user_id, token = users[counter % len(users)]  # every request from the next user
        # The uploader's id is in the value, so the checks can tell whose formId a stored credit is.
        values = [f"{tag}{user_id}-{uuid.uuid4().hex}" for _ in range(batch)]
        repeat = random.random() < DUPLICATE_SHARE and recent
        if repeat:
            values[-1] = random.choice(recent[-64:])  # probably still in flight in another request
        recent.extend(values[:-1] if repeat else values)
        del recent[:-256]
        return json.dumps({"formids": values}).encode(), values, token

    start = time.monotonic()
    window_start, window_end = start + warmup, start + warmup + seconds
    cpu: dict[str, float] = {}

    async def connection(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < window_end:
            payload, values, token = body()
            headers = {"Authorization": f"Session {token}", "Content-Type": "application/json"}
            began = time.monotonic()
            try:
                async with session.post(url, data=payload, headers=headers) as response:
                    answer = await response.read()
                    status = response.status
            except aiohttp.ClientError as exc:
                status, answer = type(exc).__name__, b""
            ended = time.monotonic()
            totals["requests"] += 1
            if status != 200:
                totals["errors"] += 1
                key = f"{status} {answer[:120].decode(errors='replace')}"
                errors[key] = errors.get(key, 0) + 1
                continue
            data = json.loads(answer)
            totals["accepted"] += data["accepted"]
            totals["duplicates"] += data["duplicates"] + len(data["rejected"])
            totals["items"] += len(values)
            for value in values:
                sent[value] = sent.get(value, 0) + 1
            if window_start <= began and ended <= window_end:
                latencies.append(ended - began)
                measured["requests"] += 1
                measured["items"] += len(values)

    async def mark_window() -> None:
        await asyncio.sleep(max(0.0, window_start - time.monotonic()))
        cpu["start"] = _own_cpu()
        await asyncio.sleep(max(0.0, window_end - time.monotonic()))
        cpu["end"] = _own_cpu()

    connector = aiohttp.TCPConnector(limit=config["connections"], force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(mark_window(), *(connection(session) for _ in range(config["connections"])))
    return {
        **totals,
        "measured": measured,
        "latencies": latencies,
        "errors_by_kind": errors,
        "distinct": len(sent),
        "repeated": sum(n - 1 for n in sent.values()),
        "cpu": cpu["end"] - cpu["start"],
        "seconds": seconds,
    }


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- CPU of the services the server talks to (not our children: found by name in /proc) -------------------
def cpu_by_name(*names: str) -> float:
    total = 0.0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() in names:
                total += common.cpu_seconds(int(comm.parent.name))
        except OSError:
            continue
    return total


def backend_cpu() -> dict[int, float]:
    """{pid: CPU seconds} of the PostgreSQL backends connected to the bench's database, this process's own
    excepted: the server's connections. Other databases' work (other jobs on a shared machine) is left out,
    and so are PostgreSQL's background processes (WAL writer, checkpointer, autovacuum)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return {pid: common.cpu_seconds(pid) for (pid,) in cursor.fetchall()}


def backend_cpu_since(before: dict[int, float]) -> float:
    """CPU the bench database's backends used since ``before`` (a backend started since counts whole)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in backend_cpu().items())


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (/proc/stat), all cores."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


# --- one run ---------------------------------------------------------------------------------------------
@dataclass
class Run:
    label: str
    batch: int
    formids_per_s: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu: float  # cores
    loadgen_cpu: float
    postgres_cpu: float  # the bench database's backends
    postgres_all_cpu: float  # every PostgreSQL process on the machine
    redis_cpu: float
    machine_busy: float  # fraction of all cores
    result: dict


def measure(label: str, batch: int, url: str, users: list[tuple[int, str]], server_pid: int, seconds: float,
            connections: int, scratch: Path, env: dict[str, str]) -> Run:  # fmt: skip
    import subprocess

    tag = f"{label[:2]}{uuid.uuid4().hex[:8]}-"  # every value of this run starts with it
    config = {
        "url": url, "users": users, "batch": batch, "tag": tag, "connections": connections,
        "warmup": 1.0, "seconds": seconds, "out": str(scratch / f"{label}.json"),
    }  # fmt: skip
    config_path = scratch / f"{label}-config.json"
    config_path.write_text(json.dumps(config))
    child = subprocess.Popen(
        [common.PYTHON, "-m", "bench.ingest", "--loadgen", str(config_path)], cwd=common.BASE_DIR, env=env
    )
    time.sleep(config["warmup"])  # the load generator starts its window after the same warm-up
    server0, pg0, redis0, (busy0, all0), backends0 = (
        common.tree_cpu_seconds(server_pid), cpu_by_name("postgres"), cpu_by_name("redis-server"),
        machine_busy_seconds(), backend_cpu(),
    )  # fmt: skip
    started = time.monotonic()
    if child.wait(timeout=seconds + 120) != 0:
        raise SystemExit(f"the load generator failed (exit {child.returncode})")
    elapsed = time.monotonic() - started
    server1, pg1, redis1, (busy1, all1), backends = (
        common.tree_cpu_seconds(server_pid), cpu_by_name("postgres"), cpu_by_name("redis-server"),
        machine_busy_seconds(), backend_cpu_since(backends0),
    )  # fmt: skip
    result = json.loads(Path(config["out"]).read_text())
    result["tag"] = tag
    latencies = result.pop("latencies")
    window = result["seconds"]
    return Run(
        label=label,
        batch=batch,
        formids_per_s=result["measured"]["items"] / window,
        requests_per_s=result["measured"]["requests"] / window,
        p50_ms=common.percentile(latencies, 50) * 1000,
        p99_ms=common.percentile(latencies, 99) * 1000,
        # The window seen here includes the load generator's exit: CPU over elapsed, not over the window.
        server_cpu=(server1 - server0) / elapsed,
        loadgen_cpu=result["cpu"] / window,
        postgres_cpu=backends / elapsed,
        postgres_all_cpu=(pg1 - pg0) / elapsed,
        redis_cpu=(redis1 - redis0) / elapsed,
        machine_busy=(busy1 - busy0) / max(all1 - all0, 1e-9),
        result=result,
    )


def check_run(run: Run, app, failures: list[str]) -> None:
    """What the database holds for the run's formIds against what was sent and what the server answered."""
    from django.db import connection
    from django.db.models import Count

    from formids.models import Credit

    r = run.result
    print(f"correctness ({run.label}, {r['requests']} requests, {r['items']} formIds sent):", flush=True)
    stored = Credit.objects.filter(app=app, value__startswith=r["tag"])
    counts = stored.aggregate(rows=Count("id"), values=Count("value", distinct=True))
    common.check(
        r["errors"] == 0,
        f"every request answered 200 ({r['errors']} did not: {r['errors_by_kind']})",
        failures,
    )
    common.check(
        counts["rows"] == counts["values"],
        f"no formId stored twice ({counts['rows']} rows, {counts['values']} values)",
        failures,
    )
    common.check(
        counts["values"] == r["distinct"],
        f"every distinct formId uploaded is stored ({counts['values']} stored of {r['distinct']})",
        failures,
    )
    common.check(
        r["accepted"] == counts["rows"],
        f"the answers' 'accepted' add up to the rows stored ({r['accepted']} vs {counts['rows']})",
        failures,
    )
    common.check(
        r["duplicates"] == r["repeated"] and r["accepted"] + r["duplicates"] == r["items"],
        f"every repeat was answered as a duplicate ({r['duplicates']} answered, {r['repeated']} sent) and "
        f"accepted + duplicates = formIds sent",
        failures,
    )
    common.check(
        not stored.exclude(kind="formid", state="available", uses_left=1, source="sdk").exists(),
        "every stored formId is an available, one-use SDK formId",
        failures,
    )
    # The uploader's id is in the value: only a repeated formId may belong to another user (the repeater
    # whose request was stored first).
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM formids_credit WHERE app_id = %s AND starts_with(value, %s)"
            " AND split_part(substr(value, %s), '-', 1) <> user_id::text",
            [app.pk, r["tag"], len(r["tag"]) + 1],
        )
        strangers = cursor.fetchone()[0]
    common.check(
        strangers <= r["repeated"],
        f"every formId is stored for its uploader ({strangers} for the user who repeated it)",
        failures,
    )


# --- the benchmark -----------------------------------------------------------------------------------------
def run(
    full: bool = False,
    seconds: float | None = None,
    connections: int = 32,
    only_batched: bool = False,
    profile: Path | None = None,
) -> list[str]:
    seconds = seconds or (30.0 if full else 8.0)
    failures: list[str] = []
    common.setup_django()
    from django.db.models import Sum

    from formids.models import DailyStat, MiniUser
    from formids.sdk_auth import issue_session

    app = common.make_app(None, "ingest")
    first, last = common.generate_users(app, USERS)
    users = MiniUser.objects.filter(app=app, pk__range=(first, last)).values_list("pk", "openid")
    users = [(pk, issue_session(app, openid)[0]) for pk, openid in users]
    env = common.bench_env(**RATE_LIMITS)
    port = common.free_port()
    scratch = Path(tempfile.mkdtemp(prefix="pushhub-ingest-"))
    url = f"http://127.0.0.1:{port}/sdk/v1/{app.appid}/formids"
    workers, threads = common.web_shape(env)
    runs: list[Run] = []
    with common.Processes() as processes:
        server = common.start_web(processes, env, scratch / "gunicorn.log", port)  # the Procfile's web line
        if profile is not None:  # py-spy samples every gunicorn worker; collapsed stacks for flame graphs
            profile.mkdir(parents=True, exist_ok=True)
            spy = str(Path(common.PYTHON).parent / "py-spy")
            spy_proc = processes.start(
                [spy, "record", "--pid", str(server.pid), "--subprocesses", "--format", "raw", "--rate", "200", "--gil",
                 "-o", str(profile / "gunicorn.txt")],
                env, profile / "py-spy.log",
            )  # fmt: skip
        plan = (
            [("pushhub", BATCH)]
            if only_batched
            else [("pushhub", BATCH), ("baseline", 1), ("pushhub-max", MAX_BATCH)]
        )
        for label, batch in plan:
            runs.append(measure(label, batch, url, users, server.pid, seconds, connections, scratch, env))
        if profile is not None:
            processes.stop(spy_proc, signal.SIGINT, timeout=30)  # py-spy writes its file on SIGINT
        server_rss = sum(common.peak_rss_mb(pid) for pid in common.tree_pids(server.pid))
        processes.stop(server)

    ours, base, biggest = (runs * 3)[:3] if only_batched else runs
    rows = [
        common.Row("formIds/s", f"{ours.formids_per_s:,.0f}", f"{base.formids_per_s:,.0f}",
                   common.ratio(ours.formids_per_s, base.formids_per_s)),
        common.Row(f"formIds/s with {MAX_BATCH} per request (the endpoint's maximum)",
                   f"{biggest.formids_per_s:,.0f}", f"{base.formids_per_s:,.0f}",
                   common.ratio(biggest.formids_per_s, base.formids_per_s)),
        common.Row("requests/s", f"{ours.requests_per_s:,.0f}", f"{base.requests_per_s:,.0f}"),
        common.Row("p50 request latency", f"{ours.p50_ms:.1f} ms", f"{base.p50_ms:.1f} ms"),
        common.Row("p99 request latency", f"{ours.p99_ms:.1f} ms", f"{base.p99_ms:.1f} ms"),
        common.Row("gunicorn CPU", f"{ours.server_cpu:.2f} cores", f"{base.server_cpu:.2f} cores"),
        common.Row("gunicorn CPU per request", f"{ours.server_cpu / ours.requests_per_s * 1e3:.2f} ms",
                   f"{base.server_cpu / base.requests_per_s * 1e3:.2f} ms"),
        common.Row("PostgreSQL CPU per request (the bench database's backends)",
                   f"{ours.postgres_cpu / ours.requests_per_s * 1e3:.2f} ms",
                   f"{base.postgres_cpu / base.requests_per_s * 1e3:.2f} ms"),
        common.Row("gunicorn CPU per 1000 formIds", f"{ours.server_cpu / ours.formids_per_s * 1e6:.0f} ms",
                   f"{base.server_cpu / base.formids_per_s * 1e6:.0f} ms",
                   common.ratio(ours.server_cpu / ours.formids_per_s, base.server_cpu / base.formids_per_s,
                                higher_is_better=False)),
        common.Row("PostgreSQL CPU (the bench database's backends)", f"{ours.postgres_cpu:.2f} cores",
                   f"{base.postgres_cpu:.2f} cores"),
        common.Row("PostgreSQL CPU (every postgres process on the machine)", f"{ours.postgres_all_cpu:.2f} cores",
                   f"{base.postgres_all_cpu:.2f} cores"),
        common.Row("Redis CPU", f"{ours.redis_cpu:.2f} cores", f"{base.redis_cpu:.2f} cores"),
        common.Row("load generator CPU", f"{ours.loadgen_cpu:.2f} cores", f"{base.loadgen_cpu:.2f} cores"),
        common.Row("machine busy (2 cores)", f"{ours.machine_busy:.0%}", f"{base.machine_busy:.0%}"),
        common.Row("gunicorn peak RSS (all processes)", f"{server_rss:.0f} MiB"),
    ]  # fmt: skip
    met = "met" if ours.formids_per_s >= TARGET else "NOT met"
    notes = [
        f"{seconds:.0f} s measured per run after 1 s of warm-up; {connections} keep-alive connections from one "
        f"aiohttp process; {USERS} users, each request from the next user's session.",
        f"gunicorn: the Procfile's web line ({workers} workers × {threads} threads, gthread, its access log), "
        "DEBUG off, PostgreSQL + Redis on the same 2 cores as the server and the load generator.",
        "SDK_RATE_PER_IP and SDK_RATE_PER_OPENID raised to 10⁹/min for the server (all the load comes from one "
        "address): both limits are still checked, with the same Redis calls, on every request.",
        f"{DUPLICATE_SHARE:.0%} of the requests repeat a formId sent just before (a duplicate, answered as such).",
        f"Target ≥ {TARGET:,} formIds/s in batches of {BATCH}: {met}.",
    ]
    common.print_table("Ingest: formIds through POST /sdk/v1/{appid}/formids", rows, notes)
    scope = dict(
        batch=BATCH,
        connections=connections,
        seconds=seconds,
        gunicorn=f"{workers}x{threads}",
    )
    common.figure(
        "ingest.formids_per_s",
        ours.formids_per_s,
        "formIds/s",
        baseline=base.formids_per_s,
        goal=10_000,
        **scope,
    )
    common.figure(
        "ingest.requests_per_s",
        ours.requests_per_s,
        "requests/s",
        baseline=base.requests_per_s,
        goal=500,
        **scope,
    )
    common.figure("ingest.p99_ms", ours.p99_ms, "ms", baseline=base.p99_ms, better="lower", **scope)
    common.figure(
        "ingest.server_cpu_ms_per_request",
        1000 * ours.server_cpu / max(ours.requests_per_s, 1e-9),
        "ms",
        baseline=1000 * base.server_cpu / max(base.requests_per_s, 1e-9),
        goal=1.5,
        better="lower",
        **scope,
    )
    common.figure(
        "ingest.postgres_cpu_ms_per_request",
        1000 * ours.postgres_cpu / max(ours.requests_per_s, 1e-9),
        "ms",
        baseline=1000 * base.postgres_cpu / max(base.requests_per_s, 1e-9),
        goal=0.6,
        better="lower",
        **scope,
    )
    common.figure("ingest.max_batch_formids_per_s", biggest.formids_per_s, "formIds/s", batch=MAX_BATCH)
    common.figure("ingest.machine_busy", ours.machine_busy, "fraction", **scope)
    for one in runs:
        check_run(one, app, failures)
    accepted = sum(one.result["accepted"] for one in runs)
    collected = DailyStat.objects.filter(app=app).aggregate(n=Sum("formids_collected"))["n"] or 0
    common.check(
        collected == accepted, f"the daily statistics count every accepted formId ({collected} of {accepted})",
        failures,
    )  # fmt: skip
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="30 s per run instead of 8")
    parser.add_argument("--seconds", type=float, help="seconds measured per run")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections")
    parser.add_argument(
        "--only-batched", action="store_true", help=f"only the run of {BATCH} per request (no baseline)"
    )
    parser.add_argument("--profile", type=Path, help="py-spy the gunicorn workers into DIR/gunicorn.txt")
    parser.add_argument("--loadgen", metavar="CONFIG", help=argparse.SUPPRESS)  # the load generator's process
    args = parser.parse_args()
    if args.loadgen:
        loadgen_main(args.loadgen)
        return
    failures = run(
        full=args.full,
        seconds=args.seconds,
        connections=args.connections,
        only_batched=args.only_batched,
        profile=args.profile,
    )
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

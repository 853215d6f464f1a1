"""``python -m bench.http_client``: the CPU a broadcast's HTTP client spends per send, PushHub's keep-alive
pool (pushhub.wechat.http_pool, what the sending loop uses) against aiohttp's ClientSession (what it used
before), on the same asyncio loop against the same server.

    python -m bench.http_client [--requests 20000] [--concurrency 128] [--latency-ms 5] [--rounds 3]

The server is bench/fake_wechat.py's kind of answer (a small JSON body after a fixed latency) on aiohttp in a
process of its own, so only the client's CPU is counted (this process's user + system time). The two
clients take turns, ``--rounds`` times each; the table shows each one's best and worst round. Every answer
must be the server's 200 with the request's own number in it, and the server must have counted exactly the
requests sent: exit 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time

SERVER = """
import asyncio, sys
from aiohttp import web
latency = float(sys.argv[2])
count = 0
async def send(request):
    global count
    body = await request.json()
    count += 1
    await asyncio.sleep(latency)
    return web.json_response({"errcode": 0, "errmsg": "ok", "msgid": body["n"]})
async def counted(request):
    return web.json_response({"count": count})
app = web.Application()
app.router.add_post("/cgi-bin/message/subscribe/send", send)
app.router.add_get("/_count", counted)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""

HEADERS = {"User-Agent": "PushHub/1.0", "Content-Type": "application/json; charset=utf-8"}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _round(kind: str, url: str, requests: int, concurrency: int) -> tuple[float, float, list[str]]:
    """(CPU µs per request, requests/s, failures) of one client's round."""
    import aiohttp

    from pushhub.wechat.http_pool import ConnectionPool

    pool = ConnectionPool(concurrency)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=0))
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=3, sock_read=10)
    slots = asyncio.Semaphore(concurrency)
    failures: list[str] = []

    async def one(n: int) -> None:
        body = json.dumps({"touser": f"o{n:027d}", "template_id": "T" * 43, "n": n}).encode()
        async with slots:
            if kind == "pool":
                status, raw = await pool.post(url, body, HEADERS, connect_timeout=3, read_timeout=10)
            else:
                async with session.post(url, data=body, headers=HEADERS, timeout=timeout) as response:
                    status, raw = response.status, await response.read()
        if status != 200 or json.loads(raw).get("msgid") != n:
            failures.append(f"{kind} request {n}: {status} {raw[:80]!r}")

    await asyncio.gather(*(one(n) for n in range(min(concurrency, requests))))  # connections opened
    cpu, started = _cpu(), time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(requests)))
    cpu, elapsed = _cpu() - cpu, time.perf_counter() - started
    await pool.close()
    await session.close()
    return cpu / requests * 1e6, requests / elapsed, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_client", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--latency-ms", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=9271)
    args = parser.parse_args(argv)

    server = subprocess.Popen([sys.executable, "-c", SERVER, str(args.port), str(args.latency_ms / 1000)])
    try:
        import urllib.request

        base = f"http://127.0.0.1:{args.port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/_count", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        url = f"{base}/cgi-bin/message/subscribe/send?access_token=" + "T" * 136
        results: dict[str, list[tuple[float, float]]] = {"pool": [], "aiohttp": []}
        failures: list[str] = []
        sent = 0
        for _ in range(args.rounds):
            for kind in results:
                cpu, rate, failed = asyncio.run(_round(kind, url, args.requests, args.concurrency))
                results[kind].append((cpu, rate))
                failures += failed
                sent += args.requests + min(args.concurrency, args.requests)
        counted = json.loads(urllib.request.urlopen(f"{base}/_count", timeout=5).read())["count"]
    finally:
        server.terminate()
        server.wait()

    print(
        f"### HTTP client: {args.requests:,} POSTs a round, {args.concurrency} in flight, "
        f"server latency {args.latency_ms:g} ms, {args.rounds} rounds each\n"
    )
    print("| client | CPU per request (best – worst round) | requests/s (best – worst) |")
    print("|---|---|---|")
    names = {"pool": "pushhub.wechat.http_pool (shipped)", "aiohttp": "aiohttp ClientSession (before)"}
    for kind, rounds in results.items():
        cpus = sorted(cpu for cpu, _ in rounds)
        rates = sorted((rate for _, rate in rounds), reverse=True)
        print(f"| {names[kind]} | {cpus[0]:.0f} – {cpus[-1]:.0f} µs | {rates[0]:,.0f} – {rates[-1]:,.0f} |")
    print()
    checks = [
        (not failures, f"every answer was the server's 200 for its own request ({len(failures)} not)"),
        (counted == sent, f"the server counted {counted:,} requests of {sent:,} sent"),
    ]
    for passed, text in checks:
        print(f"  {'ok  ' if passed else 'FAIL'} {text}")
    for failure in failures[:5]:
        print(f"    {failure}")
    return 0 if all(passed for passed, _ in checks) else 1


if __name__ == "__main__":
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pushhub.settings")
    sys.exit(main())

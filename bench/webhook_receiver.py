"""A tenant's webhook receiver for the benchmarks and the fault suite: one asyncio process (aiohttp), every
request verified with the ``standardwebhooks`` library, answered 2xx or (``--fail-rate`` of them) 500.

    python -m bench.webhook_receiver --port 9300 [--fail-rate 0.5] [--no-verify] [--seed N]

Each endpoint posts to its own path; ``POST /_control/secret {"path", "secret"}`` tells the receiver the
secret to verify that path's requests with (a request on a path with no secret counts as not verified).
What it keeps, per ``webhook-id``: requests, 2xx answers, 500 answers, the SHA-256 of every body seen (a
retry must send the very same bytes) and whether every request verified. ``GET /_control/stats`` sums it
up; ``POST /_control/ids`` returns the per-id records (``{"ids": [...]}`` for those only, or all).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import resource
import time
from dataclasses import dataclass, field

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Seen:
    requests: int = 0
    ok: int = 0
    refused: int = 0
    unverified: int = 0
    bodies: set[str] = field(default_factory=set)
    path: str = ""


@dataclass
class State:
    fail_rate: float
    verify: bool
    rng: random.Random
    secrets: dict[str, Webhook] = field(default_factory=dict)
    seen: dict[str, Seen] = field(default_factory=dict)
    requests: int = 0
    ok: int = 0
    refused: int = 0
    unverified: int = 0
    no_id: int = 0
    first: float = 0.0
    last: float = 0.0


def make_app(state: State) -> web.Application:
    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        webhook_id = headers.get("webhook-id", "")
        verified = True
        if state.verify:
            hook = state.secrets.get(request.path)
            try:
                if hook is None:
                    raise WebhookVerificationError("no secret for this path")
                hook.verify(body, headers)
            except (WebhookVerificationError, ValueError, KeyError):
                verified = False
        refuse = state.fail_rate > 0 and state.rng.random() < state.fail_rate
        now = time.monotonic()
        state.first = state.first or now
        state.last = now
        state.requests += 1
        if not webhook_id:
            state.no_id += 1
        seen = state.seen.get(webhook_id)
        if seen is None:
            seen = state.seen[webhook_id] = Seen(path=request.path)
        seen.requests += 1
        seen.bodies.add(hashlib.sha256(body).hexdigest())
        if not verified:
            seen.unverified += 1
            state.unverified += 1
            return web.Response(status=401, text="signature not verified")
        if refuse:
            seen.refused += 1
            state.refused += 1
            return web.Response(status=500, text="injected failure")
        seen.ok += 1
        state.ok += 1
        return web.Response(status=204)

    async def set_secret(request: web.Request) -> web.Response:
        body = await request.json()
        state.secrets[body["path"]] = Webhook(body["secret"])
        return web.json_response({"ok": True})

    async def stats(request: web.Request) -> web.Response:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return web.json_response(
            {
                "requests": state.requests,
                "ok": state.ok,
                "refused": state.refused,
                "unverified": state.unverified,
                "no_id": state.no_id,
                "ids": len(state.seen),
                "ids_ok": sum(1 for s in state.seen.values() if s.ok),
                "ids_ok_twice": sum(1 for s in state.seen.values() if s.ok > 1),
                "ids_bodies_differ": sum(1 for s in state.seen.values() if len(s.bodies) > 1),
                "seconds": state.last - state.first,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
            }
        )

    async def ids(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        wanted = body.get("ids")
        keys = state.seen.keys() if wanted is None else [i for i in wanted if i in state.seen]
        return web.json_response(
            {
                i: {
                    "requests": state.seen[i].requests,
                    "ok": state.seen[i].ok,
                    "refused": state.seen[i].refused,
                    "unverified": state.seen[i].unverified,
                    "bodies": sorted(state.seen[i].bodies),
                    "path": state.seen[i].path,
                }
                for i in keys
            }
        )

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/_control/secret", set_secret)
    app.router.add_get("/_control/stats", stats)
    app.router.add_post("/_control/ids", ids)
    app.router.add_post("/{tail:.*}", receive)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fail-rate", type=float, default=0.0, help="share of requests answered 500")
    parser.add_argument("--no-verify", action="store_true", help="do not verify signatures")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    state = State(args.fail_rate, not args.no_verify, random.Random(args.seed))
    web.run_app(make_app(state), host="127.0.0.1", port=args.port, print=None, access_log=None)


class Client:
    """The runner's side: a receiver process started by ``bench.common.Processes``, and its controls."""

    def __init__(self, processes, fail_rate: float = 0.0, verify: bool = True, log=None):
        import os

        from bench.common import BASE_DIR, PYTHON, free_port, port_open, wait_until

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = [
            PYTHON,
            "-m",
            "bench.webhook_receiver",
            "--port",
            str(self.port),
            "--fail-rate",
            str(fail_rate),
        ]
        if not verify:
            args.append("--no-verify")
        self.process = processes.start(args, {**os.environ, "PYTHONPATH": str(BASE_DIR)}, log)
        wait_until(lambda: port_open(self.port), 30, "the webhook receiver")

    def url(self, name: str) -> str:
        return f"{self.base}/hooks/{name}"

    def set_secret(self, name: str, secret: str) -> None:
        import requests

        requests.post(
            f"{self.base}/_control/secret", json={"path": f"/hooks/{name}", "secret": secret}, timeout=10
        ).raise_for_status()

    def stats(self) -> dict:
        import requests

        response = requests.get(f"{self.base}/_control/stats", timeout=60)
        response.raise_for_status()
        return response.json()

    def ids(self, wanted: list[str] | None = None) -> dict[str, dict]:
        import requests

        body = {} if wanted is None else {"ids": wanted}
        response = requests.post(f"{self.base}/_control/ids", json=body, timeout=120)
        response.raise_for_status()
        return response.json()

    def cpu_seconds(self) -> float:
        from bench.common import cpu_seconds

        return cpu_seconds(self.process.pid)


if __name__ == "__main__":
    main()

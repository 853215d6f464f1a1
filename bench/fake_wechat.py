"""A fast in-memory fake of the WeChat endpoints PushHub sends through, for benchmarks.

    python -m bench.fake_wechat --port 9200 [--latency-ms 20] [--error-rate 0] [--timeout-rate 0]

The sandbox (pushhub.wechat.sandbox) is the faithful fake for tests and the demo, but it keeps its state in
the database and runs Django per request: at benchmark rates it, not PushHub, would be what is measured.
This one answers from memory on one asyncio event loop (aiohttp's C HTTP parser, keep-alive), holds every
answer for a fixed latency (the network to WeChat), and follows the sandbox's rules in the sandbox's order:
token checks (41001/40014/40001/42001), 40037 unknown template, 40003 unknown user, 41028 not this user's
formId, 41029 formId used up, 41030 bad page, 47001/47003 data (subscribe values through
pushhub.wechat.rules, the same checks the sandbox and PushHub's own validation use), 43101 no subscription.

What the benchmark needs from it besides answers: exact counts (messages per openid, formIds spent, answers
by errcode), a timeline of accepted sends (the deliveries/s plot), and its own CPU time, so that the fake's
cost is reported apart from PushHub's. The state is loaded in bulk through ``/_control/`` endpoints.

Fault knobs (``/_control/knobs``, used by tests/faults): ``error_rate`` answers that share of sends -1
(system busy, nothing sent); ``timeout_rate`` holds that share of sends' answers for ``timeout_hold_ms``
(longer than PushHub's read timeout), half of them after the message was delivered (the answer is lost) and
half before anything happened (the request is lost), which are the two cases a caller cannot tell apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import resource
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from pushhub.wechat import rules
from pushhub.wechat.errors import ERRCODE_TEXT

TOKEN_TTL = 7200
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_\-]{16,512}")
MINIPROGRAM_STATES = {"developer", "trial", "formal"}
LANGS = {"zh_CN", "en_US", "zh_HK", "zh_TW"}
TIMELINE_STEP = 0.1  # seconds per bucket of the accepted-sends timeline


class Refusal(Exception):
    def __init__(self, errcode: int, errmsg: str | None = None):
        super().__init__(errcode)
        self.errcode = errcode
        self.errmsg = errmsg or ERRCODE_TEXT.get(errcode, "error")


@dataclass
class FakeApp:
    appid: str
    secret: str
    token: str = ""
    token_expires: float = 0.0
    tokens_issued: int = 0
    templates: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # id → (kind, field keys)
    users: set[str] = field(default_factory=set)
    formids: dict[str, list] = field(default_factory=dict)  # value → [openid, uses_left]
    subscriptions: Counter = field(default_factory=Counter)  # (openid, template_id) → credits left
    inbox: Counter = field(default_factory=Counter)  # openid → messages delivered
    received_at: dict = field(default_factory=dict)  # openid → epoch seconds of its first message
    answers: Counter = field(default_factory=Counter)  # errcode → send answers
    next_msgid: int = 1
    timeline: Counter = field(default_factory=Counter)  # bucket → accepted sends
    first_send: float | None = None
    last_send: float | None = None


class FakeWeChat:
    def __init__(self, latency: float = 0.02, error_rate: float = 0.0, timeout_rate: float = 0.0):
        self.latency = latency
        self.error_rate = error_rate
        self.timeout_rate = timeout_rate
        self.timeout_hold = 5.0  # seconds an answer is held when a timeout is injected
        self.timeouts: Counter = Counter()  # injected timeouts: "answer_lost" (handled), "request_lost"
        self.apps: dict[str, FakeApp] = {}
        self.tokens: dict[str, FakeApp] = {}
        self.started = time.time()
        self.requests = 0

    # --- WeChat's side --------------------------------------------------------------------------
    def app_by_credentials(self, appid: Any, secret: Any) -> FakeApp:
        if not appid:
            raise Refusal(41002)
        if not secret:
            raise Refusal(41004)
        app = self.apps.get(appid)
        if app is None:
            raise Refusal(40013)
        if app.secret != secret:
            raise Refusal(40125)
        return app

    def stable_token(self, payload: dict[str, Any]) -> dict[str, Any]:
        if payload.get("grant_type") != "client_credential":
            raise Refusal(40002)
        app = self.app_by_credentials(payload.get("appid"), payload.get("secret"))
        now = time.time()
        if payload.get("force_refresh") or not app.token or app.token_expires - now < 300:
            self.issue_token(app, now)
        return {"access_token": app.token, "expires_in": int(app.token_expires - now)}

    def issue_token(self, app: FakeApp, now: float) -> None:
        self.tokens.pop(app.token, None)  # the previous stable token stops working at once
        app.token, app.token_expires = secrets.token_urlsafe(48), now + TOKEN_TTL
        app.tokens_issued += 1
        self.tokens[app.token] = app

    def authenticate(self, token: str | None) -> FakeApp:
        if not token:
            raise Refusal(41001)
        if not TOKEN_SHAPE.fullmatch(token):
            raise Refusal(40014)
        app = self.tokens.get(token)
        if app is None:
            raise Refusal(40001)
        if app.token_expires <= time.time():
            raise Refusal(42001)
        return app

    @staticmethod
    def _template(app: FakeApp, kind: str, template_id: Any) -> list[str]:
        found = app.templates.get(template_id) if isinstance(template_id, str) else None
        if found is None or found[0] != kind:
            raise Refusal(40037)
        return found[1]

    @staticmethod
    def _user(app: FakeApp, openid: Any) -> str:
        if not isinstance(openid, str) or openid not in app.users:
            raise Refusal(40003)
        return openid

    @staticmethod
    def _page(payload: dict[str, Any]) -> None:
        page = payload.get("page") or ""
        if not isinstance(page, str) or page.startswith("/") or any(ch.isspace() for ch in page):
            raise Refusal(41030)

    def send_template(self, app: FakeApp, payload: dict[str, Any]) -> dict[str, Any]:
        self._template(app, "formid", payload.get("template_id"))
        openid = self._user(app, payload.get("touser"))
        form_id = payload.get("form_id")
        entry = app.formids.get(form_id) if isinstance(form_id, str) else None
        if entry is None or entry[0] != openid:
            raise Refusal(41028)
        if entry[1] <= 0:
            raise Refusal(41029)
        self._page(payload)
        if not isinstance(payload.get("data") or {}, dict):
            raise Refusal(47001)
        entry[1] -= 1
        self.deliver(app, openid)
        return {"errcode": 0, "errmsg": "ok"}

    def send_subscribe(self, app: FakeApp, payload: dict[str, Any]) -> dict[str, Any]:
        template_id = payload.get("template_id")
        keys = self._template(app, "subscribe", template_id)
        openid = self._user(app, payload.get("touser"))
        data = payload.get("data") or {}
        if not isinstance(data, dict):
            raise Refusal(47001)
        for key in keys:
            entry = data.get(key)
            value = entry.get("value") if isinstance(entry, dict) else None
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str) or rules.check_value(key, value) is not None:
                raise Refusal(47003, f"argument invalid! data.{key}.value invalid")
        if app.subscriptions[(openid, template_id)] <= 0:
            raise Refusal(43101)
        self._page(payload)
        if (payload.get("miniprogram_state") or "formal") not in MINIPROGRAM_STATES:
            raise Refusal(47003, "argument invalid! miniprogram_state invalid")
        if (payload.get("lang") or "zh_CN") not in LANGS:
            raise Refusal(47003, "argument invalid! lang invalid")
        app.subscriptions[(openid, template_id)] -= 1
        msgid = app.next_msgid
        app.next_msgid += 1
        self.deliver(app, openid)
        return {"errcode": 0, "errmsg": "ok", "msgid": msgid}

    def deliver(self, app: FakeApp, openid: str) -> None:
        now = time.time()
        app.inbox[openid] += 1
        app.received_at.setdefault(openid, now)
        app.timeline[int((now - self.started) / TIMELINE_STEP)] += 1
        app.first_send = app.first_send or now
        app.last_send = now

    # --- control (the benchmark's side) ---------------------------------------------------------
    def stats(self, app: FakeApp) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        delivered = sum(app.inbox.values())
        timeline = []
        if app.timeline:
            first, last = min(app.timeline), max(app.timeline)
            timeline = [
                [round((b - first) * TIMELINE_STEP, 3), app.timeline.get(b, 0)]
                for b in range(first, last + 1)
            ]
        return {
            "delivered": delivered,
            "users": len(app.inbox),
            "max_per_user": max(app.inbox.values(), default=0),
            "users_with_duplicates": sum(1 for n in app.inbox.values() if n > 1),
            "answers": {str(code): n for code, n in sorted(app.answers.items())},
            "formids_spent": sum(1 for entry in app.formids.values() if entry[1] <= 0),
            "tokens_issued": app.tokens_issued,
            "first_send": app.first_send,
            "last_send": app.last_send,
            "timeline_step": TIMELINE_STEP,
            "timeline": timeline,  # [seconds since the first send's step, accepted sends in that step]
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "max_rss_mb": usage.ru_maxrss / 1024,
            "requests": self.requests,
            "timeouts": dict(self.timeouts),
        }

    def inbox_of(self, app: FakeApp, openids: list[str]) -> dict[str, int]:
        return {openid: app.inbox.get(openid, 0) for openid in openids}


def _json(body: dict[str, Any]) -> web.Response:
    return web.Response(body=json.dumps(body, ensure_ascii=False).encode(), content_type="application/json")


def build_app(fake: FakeWeChat) -> web.Application:
    async def wechat_call(request: web.Request, operation) -> web.Response:
        fake.requests += 1
        if fake.latency:
            await asyncio.sleep(fake.latency)
        try:
            payload = await request.json() if request.can_read_body else {}
        except ValueError:
            return _json({"errcode": 47001, "errmsg": ERRCODE_TEXT.get(47001, "data format error")})
        try:
            if not isinstance(payload, dict):
                raise Refusal(47001)
            body = operation(payload)
        except Refusal as refusal:
            body = {"errcode": refusal.errcode, "errmsg": refusal.errmsg}
        return _json(body)

    def sending(kind: str):
        async def handler(request: web.Request) -> web.Response:
            def operation(payload: dict[str, Any]) -> dict[str, Any]:
                app = fake.authenticate(request.query.get("access_token"))
                try:
                    if fake.error_rate and random.random() < fake.error_rate:
                        raise Refusal(-1)  # WeChat's "system busy": nothing was sent
                    answer = (fake.send_template if kind == "formid" else fake.send_subscribe)(app, payload)
                except Refusal as refusal:
                    app.answers[refusal.errcode] += 1
                    raise
                app.answers[0] += 1
                return answer

            if fake.timeout_rate and random.random() < fake.timeout_rate:
                return await held_answer(request, operation)
            return await wechat_call(request, operation)

        return handler

    async def held_answer(request: web.Request, operation) -> web.Response:
        """An injected read timeout: the answer comes after the caller gave up. Half the time the message
        went through first (the caller must not send it twice), half the time nothing happened."""
        handled = random.random() < 0.5
        fake.timeouts["answer_lost" if handled else "request_lost"] += 1
        if handled:
            response = await wechat_call(request, operation)
            await asyncio.sleep(fake.timeout_hold)
            return response
        await asyncio.sleep(fake.timeout_hold)
        return _json({"errcode": -1, "errmsg": "system error"})

    async def stable_token(request: web.Request) -> web.Response:
        return await wechat_call(request, fake.stable_token)

    async def plain_token(request: web.Request) -> web.Response:
        query = request.query

        def operation(_payload: dict[str, Any]) -> dict[str, Any]:
            if query.get("grant_type") != "client_credential":
                raise Refusal(40002)
            app = fake.app_by_credentials(query.get("appid"), query.get("secret"))
            fake.issue_token(app, time.time())
            return {"access_token": app.token, "expires_in": TOKEN_TTL}

        return await wechat_call(request, operation)

    def control_app(body: dict[str, Any]) -> FakeApp:
        app = fake.apps.get(str(body.get("appid")))
        if app is None:
            raise web.HTTPNotFound(text='{"error": "unknown appid"}', content_type="application/json")
        return app

    async def control_apps(request: web.Request) -> web.Response:
        body = await request.json()
        fake.apps[body["appid"]] = FakeApp(appid=body["appid"], secret=body["secret"])
        return _json({"appid": body["appid"]})

    async def control_templates(request: web.Request) -> web.Response:
        body = await request.json()
        app = control_app(body)
        keys = [f["key"] for f in rules.parse_template_fields(body.get("content", ""))]
        app.templates[body["template_id"]] = (body["kind"], keys)
        return _json({"template_id": body["template_id"], "keys": keys})

    async def control_formids(request: web.Request) -> web.Response:
        body = await request.json()  # {"appid", "items": [[openid, value, uses], ...]}
        app = control_app(body)
        for openid, value, uses in body["items"]:
            app.users.add(openid)
            app.formids[value] = [openid, int(uses)]
        return _json({"formids": len(app.formids)})

    async def control_subscriptions(request: web.Request) -> web.Response:
        body = await request.json()  # {"appid", "template_id", "items": [[openid, credits], ...]}
        app = control_app(body)
        for openid, credits in body["items"]:
            app.users.add(openid)
            app.subscriptions[(openid, body["template_id"])] += int(credits)
        return _json({"subscriptions": len(app.subscriptions)})

    async def control_stats(request: web.Request) -> web.Response:
        return _json(fake.stats(control_app(dict(request.query))))

    async def control_inbox(request: web.Request) -> web.Response:
        body = await request.json()  # {"appid", "openids": [...]}: messages per openid
        return _json(fake.inbox_of(control_app(body), list(body["openids"])))

    async def control_received(request: web.Request) -> web.Response:
        body = await request.json()  # {"appid", "openids": [...]}: when each first got a message (or null)
        app = control_app(body)
        return _json({openid: app.received_at.get(openid) for openid in body["openids"]})

    async def control_reset_token(request: web.Request) -> web.Response:
        app = control_app(await request.json())
        fake.tokens.pop(app.token, None)  # the current token answers 40001 from now on
        app.token, app.token_expires = "", 0.0
        return _json({"reset": True})

    async def control_knobs(request: web.Request) -> web.Response:
        body = await request.json()
        if "latency_ms" in body:
            fake.latency = float(body["latency_ms"]) / 1000
        if "error_rate" in body:
            fake.error_rate = float(body["error_rate"])
        if "timeout_rate" in body:
            fake.timeout_rate = float(body["timeout_rate"])
        if "timeout_hold_ms" in body:
            fake.timeout_hold = float(body["timeout_hold_ms"]) / 1000
        return _json(
            {
                "latency_ms": fake.latency * 1000,
                "error_rate": fake.error_rate,
                "timeout_rate": fake.timeout_rate,
                "timeout_hold_ms": fake.timeout_hold * 1000,
            }
        )

    application = web.Application(client_max_size=256 * 1024 * 1024)
    application.router.add_post("/cgi-bin/stable_token", stable_token)
    application.router.add_get("/cgi-bin/token", plain_token)
    application.router.add_post("/cgi-bin/message/wxopen/template/send", sending("formid"))
    application.router.add_post("/cgi-bin/message/subscribe/send", sending("subscribe"))
    application.router.add_post("/_control/apps", control_apps)
    application.router.add_post("/_control/templates", control_templates)
    application.router.add_post("/_control/formids", control_formids)
    application.router.add_post("/_control/subscriptions", control_subscriptions)
    application.router.add_get("/_control/stats", control_stats)
    application.router.add_post("/_control/inbox", control_inbox)
    application.router.add_post("/_control/received", control_received)
    application.router.add_post("/_control/reset-token", control_reset_token)
    application.router.add_post("/_control/knobs", control_knobs)
    return application


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fake_wechat", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--latency-ms", type=float, default=20.0, help="held before every answer")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of sends answered -1")
    parser.add_argument("--timeout-rate", type=float, default=0.0, help="share of sends answered too late")
    args = parser.parse_args(argv)
    fake = FakeWeChat(
        latency=args.latency_ms / 1000, error_rate=args.error_rate, timeout_rate=args.timeout_rate
    )
    print(f"fake WeChat at http://{args.host}:{args.port}/ ({args.latency_ms:g} ms per call)", flush=True)
    web.run_app(build_app(fake), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()

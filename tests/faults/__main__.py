"""Fault injection: broadcasts on the real stack (tests/faults/stack.py) while something breaks.

    python -m tests.faults [--users 20000] [--only NAME ...] [--broker redis|amqp]   (make test-faults)

With ``--broker amqp`` (or FAULTS_BROKER=amqp; make test-rabbitmq) the Celery broker is the machine's RabbitMQ,
on a vhost of the run's own, and the suite's Redis is the cache only; one scenario more then closes every
connection to that vhost mid-run.

Each scenario makes two sandbox apps of 20,000 users each: one with a formId per user and a formId template,
one with a subscribe credit per user and a subscribe template, plus 500 users per app whose credit is not
usable (an expired formId; a subscription to another template) who must get nothing. Both broadcasts start
through their trigger URLs (``POST /t/{token}`` with ``"to": "@all"``) and run at once; mid-run (when 30 % of
the formId users have their message) the scenario's fault strikes. When both pushes are done, the fake
WeChat's per-openid counts and the database are checked:

- formId template: every user with a usable credit got exactly one message (none lost, none twice);
- subscribe template: every user got at most one; a user who got none must be among the deliveries reported
  ``timeout_ambiguous`` (WeChat may or may not have sent it, and a subscribe credit is never sent twice);
- no credit is left ``claimed``; each push's counters equal its delivery rows; nobody without a usable
  credit got a message.

The webhook scenarios also register, before the broadcasts, an endpoint (events ``["*"]``) for each app's
tenant at a receiver of their own (bench/webhook_receiver.py: it verifies every request with
``standardwebhooks`` and answers 500 to a random half of them, 204 to the rest). When the pushes are done, the
runner waits until the webhook worker has settled every event, then checks: every event recorded for those
tenants reached the receiver with a 2xx (none lost), with the same bytes on every attempt, every signature
verified; the events are the ones the pushes imply (one ``push.finished`` per push with its final counts, one
``user.unreachable`` per user sent their only credit, ``deliveries.failed`` covering the failed deliveries);
no dispatch is left pending or failed. An event answered 500 on all 8 attempts of the schedule (2^-8 of
them at 50 %) is failed, as ../shared/API.md says: the runner checks the receiver did refuse each of its
attempts, then resends it as a tenant would (``POST …/events/{id}/resend``) and counts it.

The table is printed as Markdown; the exit status is 1 if any check failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench import common
from bench.webhook_receiver import Client as Receiver
from tests.faults.stack import BROKERS, Stack

USERS = 20_000
UNUSABLE = 500
STRIKE_AT = 0.3  # share of the formId users served when the fault strikes
PUSH_TIMEOUT = 300.0
WEBHOOK_FAIL_RATE = 0.5  # the receiver answers 500 to this share of requests
WEBHOOK_TIMEOUT = 900.0  # seconds after the pushes for every event to be settled
WEBHOOK_RESEND_ROUNDS = 5


@dataclass
class Scenario:
    name: str
    description: str
    knobs: dict = field(default_factory=dict)  # fake WeChat knobs for the whole run
    strike: Callable[[Stack, list], str] | None = None  # mid-run; returns what it did
    webhook_fail_rate: float | None = None  # register endpoints at a receiver refusing this share; None: none
    brokers: tuple[str, ...] = ("redis", "amqp")  # the brokers it runs on (--broker)


def _reset_tokens(stack: Stack, apps: list) -> str:
    for app in apps:
        stack.fake.control("reset-token", {"appid": app.appid})
    time.sleep(2.0)
    for app in apps:  # and once more while the workers use their fresh token
        stack.fake.control("reset-token", {"appid": app.appid})
    return "both apps' access tokens reset twice, 2 s apart"


def _kill_worker(stack: Stack, apps: list) -> str:
    stack.kill_worker(0, restart_after=1.0)
    return "worker 0 SIGKILLed, restarted 1 s later"


def _restart_redis(stack: Stack, apps: list) -> str:
    stack.restart_redis(down_seconds=2.0)
    lost = (
        "queues, unacked tasks, locks, tokens" if stack.broker == "redis" else "locks, tokens, progress marks"
    )
    return f"Redis killed ({lost} lost), down 2 s, restarted empty"


def _close_broker_connections(stack: Stack, apps: list) -> str:
    first = stack.close_broker_connections()
    time.sleep(2.0)
    second = stack.close_broker_connections()
    return f"RabbitMQ closed every connection to the vhost, twice 2 s apart ({first} + {second})"


def _drop_connections(stack: Stack, apps: list) -> str:
    first = stack.drop_database_connections()
    time.sleep(1.5)
    second = stack.drop_database_connections()
    return f"pg_terminate_backend on every connection, twice 1.5 s apart ({first} + {second})"


def _kill_webhook_worker(stack: Stack, apps: list) -> str:
    """Once a drain holds leased events (it is mid-POST or about to be), SIGKILL the webhook worker."""
    from django.utils import timezone

    from webhooks.models import EventDispatch

    leased, deadline = 0, time.monotonic() + 30
    while not leased and time.monotonic() < deadline:
        leased = EventDispatch.objects.filter(status="pending", leased_until__gt=timezone.now()).count()
        if not leased:
            time.sleep(0.01)
    stack.kill_webhook_worker(restart_after=1.0)
    return f"the webhook worker SIGKILLed mid-drain ({leased} events leased to it), restarted 1 s later"


SCENARIOS = [
    Scenario("no fault", "the control run"),
    Scenario("10 % -1 errors", "WeChat answers -1 (system busy) to 10 % of sends", {"error_rate": 0.10}),
    Scenario("1 % read timeouts", "1 % of answers come after the 1.5 s read timeout", {"timeout_rate": 0.01}),
    Scenario("token reset", "WeChat invalidates the access token mid-run", strike=_reset_tokens),
    Scenario("worker SIGKILL", "a worker dies mid-run, unacknowledged tasks with it", strike=_kill_worker),
    Scenario("Redis restart", "Redis dies mid-run and comes back empty", strike=_restart_redis),
    Scenario("PostgreSQL drop", "every database connection is terminated mid-run", strike=_drop_connections),
    Scenario(
        "RabbitMQ connections closed",
        "RabbitMQ closes every client's connection mid-run (unacked tasks requeued)",
        # The webhook worker's connection is closed too; the webhook scenarios after this one run on it.
        strike=_close_broker_connections,
        brokers=("amqp",),
    ),
    Scenario(
        "webhook receiver 50 % 500s",
        "every event to a webhook receiver answering 500 half the time",
        webhook_fail_rate=WEBHOOK_FAIL_RATE,
    ),
    Scenario(
        "webhook worker SIGKILL",
        "the same receiver; the webhook worker dies mid-run",
        strike=_kill_webhook_worker,
        webhook_fail_rate=WEBHOOK_FAIL_RATE,
    ),
]


@dataclass
class Outcome:
    """What one scenario measured."""

    scenario: str
    description: str = ""
    seconds: float = 0.0
    struck: str = ""
    formid: dict = field(default_factory=dict)
    subscribe: dict = field(default_factory=dict)
    webhooks: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


# --- building a scenario's apps ----------------------------------------------------------------------
def _prepare(stack: Stack, label: str, users: int):
    """Two apps (formId, subscribe) with ``users`` served users each and UNUSABLE users without a usable
    credit; returns [(kind, app, trigger token, usable openids, unusable openids)]."""
    from django.db import connection

    from formids.models import MiniUser

    prepared = []
    for kind in ("formid", "subscribe"):
        app = common.make_app(stack.fake, f"{label} {kind}")
        template, token = common.make_template(app, stack.fake, kind)
        subscribe_id = template.template_id if kind == "subscribe" else ""
        served = common.generate_users(
            app, users, formids=1 if kind == "formid" else 0, subscribe_template_id=subscribe_id
        )
        if kind == "formid":  # a formId that expired yesterday
            unusable = common.generate_users(app, UNUSABLE, formids=1, prefix="x")
            with connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE formids_credit SET expires_at = now() - interval '1 day' "
                    "WHERE app_id = %s AND user_id BETWEEN %s AND %s",
                    [app.pk, *unusable],
                )
        else:  # subscribed to another template only
            other, _ = common.make_template(app, stack.fake, "subscribe")
            unusable = common.generate_users(
                app, UNUSABLE, subscribe_template_id=other.template_id, prefix="x"
            )
        # WeChat knows every credit it issued, expired or not: a wrong send would be delivered and counted.
        common.teach_fake(stack.fake, app, subscribe_id)
        if kind == "subscribe":
            common.teach_fake(stack.fake, app, other.template_id)
        openids = MiniUser.objects.filter(app=app).order_by("pk")
        usable = list(openids.filter(pk__range=served).values_list("openid", flat=True))
        unusable_ids = list(openids.filter(pk__range=unusable).values_list("openid", flat=True))
        prepared.append((kind, app, token, usable, unusable_ids))
    return prepared


def _trigger(stack: Stack, token: str, kind: str) -> str:
    response = requests.post(
        f"{stack.base_url}/t/{token}", json={"to": "@all", "data": common.TEMPLATE_DATA[kind]}, timeout=30
    )
    if response.status_code != 202:
        raise SystemExit(f"trigger answered {response.status_code}: {response.text[:300]}")
    return response.json()["push_id"]


def _status(stack: Stack, token: str, push_id: str) -> dict | None:
    """The push's status through the status URL (gunicorn); None while the web cannot answer."""
    try:
        response = requests.get(f"{stack.base_url}/t/{token}/pushes/{push_id}", timeout=10)
    except requests.RequestException:
        return None
    return response.json() if response.status_code == 200 else None


def _inbox(stack: Stack, appid: str, openids: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for start in range(0, len(openids), 5000):
        counts.update(stack.fake.control("inbox", {"appid": appid, "openids": openids[start : start + 5000]}))
    return counts


# --- one scenario --------------------------------------------------------------------------------------
def run_scenario(stack: Stack, scenario: Scenario, users: int) -> Outcome:
    from django.db import connection

    outcome = Outcome(scenario.name, scenario.description)
    connection.close()
    prepared = _prepare(stack, scenario.name, users)
    apps = [app for _, app, _, _, _ in prepared]
    hooks = _register_webhooks(stack, scenario, apps) if scenario.webhook_fail_rate is not None else None
    if scenario.knobs:
        stack.fake.control("knobs", scenario.knobs)
    began = time.monotonic()
    pushes = [(kind, token, _trigger(stack, token, kind)) for kind, _, token, _, _ in prepared]
    struck = scenario.strike is None
    statuses: dict[str, dict] = {}
    while True:
        for kind, token, push_id in pushes:
            status = _status(stack, token, push_id)
            if status is not None:
                statuses[kind] = status
        if all(statuses.get(kind, {}).get("status") == "done" for kind, _, _ in pushes):
            break
        if not struck and statuses.get("formid", {}).get("counts", {}).get("sent", 0) >= STRIKE_AT * users:
            outcome.struck = scenario.strike(stack, apps)
            struck = True
        if time.monotonic() - began > PUSH_TIMEOUT:
            outcome.failures.append(f"pushes not done after {PUSH_TIMEOUT:.0f} s: {statuses}")
            break
        time.sleep(0.2)
    outcome.seconds = time.monotonic() - began
    if not struck:
        outcome.failures.append("the push finished before the fault could strike")
    if scenario.knobs:
        stack.fake.control("knobs", {"error_rate": 0, "timeout_rate": 0})
    connection.close()  # it may have been terminated by the scenario
    for (kind, app, _token, usable, unusable), (_, _, push_id) in zip(prepared, pushes, strict=True):
        measured = _check(stack, kind, app, push_id, usable, unusable, outcome.failures)
        setattr(outcome, kind, measured)
    if hooks is not None:
        done_at = time.monotonic()
        outcome.webhooks = _check_webhooks(hooks, [p for _, _, p in pushes], outcome.failures)
        outcome.webhooks["pushes_seconds"] = outcome.seconds
        outcome.webhooks["after_checks_seconds"] = done_at - began
    return outcome


def _check(stack: Stack, kind: str, app, push_id: str, usable: list, unusable: list, failures: list) -> dict:
    from django.db.models import Count

    from formids.models import Credit
    from templates_app.models import Delivery, Push

    label = f"{kind}:"
    inbox = _inbox(stack, app.appid, usable + unusable)
    got = [inbox[o] for o in usable]
    stats = stack.fake.stats(app.appid)
    push = Push.objects.get(pk=push_id)
    rows = dict.fromkeys(Delivery.Status.values, 0)
    rows.update(dict(Delivery.objects.filter(push=push).values_list("status").annotate(n=Count("pk"))))
    ambiguous = set(
        Delivery.objects.filter(push=push, status=Delivery.Status.FAILED, errcode="timeout_ambiguous")
        .values_list("openid", flat=True)
    )  # fmt: skip
    measured = {
        "users": len(usable),
        "one": sum(1 for n in got if n == 1),
        "lost": sum(1 for o in usable if inbox[o] == 0 and o not in ambiguous),
        "duplicated": sum(1 for n in got if n > 1),
        "ambiguous": len(ambiguous),
        "ambiguous_delivered": sum(1 for o in ambiguous if inbox[o] > 0),
        "unusable_sent": sum(1 for o in unusable if inbox[o] > 0),
        "claimed": Credit.objects.filter(app=app, state=Credit.State.CLAIMED).count(),
        "counters_match": all(getattr(push, status) == n for status, n in rows.items()),
        "sent": push.sent,
        "failed": push.failed,
        "answers": stats["answers"],
        "tokens": stats["tokens_issued"],
    }
    if kind == "formid":
        common.check(measured["one"] == len(usable), f"{label} {measured['one']} of {len(usable)} users got "
                     "exactly one message", failures)  # fmt: skip
        common.check(measured["ambiguous"] == 0, f"{label} no delivery left ambiguous", failures)
    common.check(
        measured["lost"] == 0, f"{label} {measured['lost']} users with a usable credit lost", failures
    )
    common.check(measured["duplicated"] == 0, f"{label} {measured['duplicated']} users got two", failures)
    common.check(measured["unusable_sent"] == 0, f"{label} {measured['unusable_sent']} users without a usable "
                 "credit got a message", failures)  # fmt: skip
    common.check(measured["claimed"] == 0, f"{label} {measured['claimed']} credits left claimed", failures)
    common.check(measured["counters_match"], f"{label} counters equal the delivery rows {rows}", failures)
    common.check(push.sent == rows["sent"] == measured["one"] - measured["ambiguous_delivered"],
                 f"{label} the push counts {push.sent} sent, as many as got their message and were not "
                 "reported ambiguous", failures)  # fmt: skip
    return measured


# --- webhooks -------------------------------------------------------------------------------------------
@dataclass
class Hooks:
    receiver: Receiver
    endpoints: list  # one per app's tenant


def _register_webhooks(stack: Stack, scenario: Scenario, apps: list) -> Hooks:
    """A receiver of the scenario's own, and an endpoint wanting every event for each app's tenant."""
    from webhooks import services

    slug = "".join(c if c.isalnum() else "-" for c in scenario.name)
    receiver = Receiver(
        stack.processes, fail_rate=scenario.webhook_fail_rate, log=stack.workdir / f"receiver-{slug}.log"
    )
    endpoints = []
    for app in apps:
        endpoint, secret = services.create_endpoint(
            app.tenant, url=receiver.url(app.appid), events=["*"], actor="faults"
        )
        receiver.set_secret(app.appid, secret)
        endpoints.append(endpoint)
    return Hooks(receiver, endpoints)


def _settle_webhooks(hooks: Hooks, failures: list) -> dict:
    """Wait until no dispatch of the endpoints is pending; resend (as a tenant would) those failed after the
    whole schedule, once each round, checking first that the receiver did refuse every attempt of them."""
    from django.db.models import Count, Q

    from webhooks import services
    from webhooks.models import EventDispatch

    dispatches = EventDispatch.objects.filter(endpoint__in=hooks.endpoints)
    began = time.monotonic()
    resent, rounds, last_report, settled = 0, 0, 0.0, None
    while True:
        elapsed = time.monotonic() - began
        pending = dispatches.filter(status=EventDispatch.Status.PENDING).count()
        if not pending:
            settled = settled if settled is not None else elapsed
            failed = list(dispatches.filter(status=EventDispatch.Status.FAILED).select_related("endpoint"))
            if not failed or rounds >= WEBHOOK_RESEND_ROUNDS:
                break
            rounds += 1
            seen = hooks.receiver.ids([d.event_id for d in failed])
            refused_500 = dict(
                dispatches.filter(pk__in=[d.pk for d in failed])
                .values_list("pk")
                .annotate(n=Count("attempt_log", filter=Q(attempt_log__status_code=500)))
            )
            dishonest = [
                d.event_id
                for d in failed
                if seen.get(d.event_id, {}).get("refused", 0) < refused_500.get(d.pk, 0)
                or refused_500.get(d.pk, 0) < d.attempts
            ]
            common.check(not dishonest, f"webhooks: {len(failed)} dispatches failed after the whole schedule, "
                         f"each refused by the receiver on every attempt ({len(dishonest)} not)", failures)  # fmt: skip
            for d in failed:
                services.resend(d.endpoint, d.event_id, actor="faults")
            resent += len(failed)
            print(
                f"  webhooks: {len(failed)} events failed after 8 attempts, resent (round {rounds})",
                flush=True,
            )
            continue
        if elapsed - last_report >= 10:
            last_report = elapsed
            print(f"  webhooks: {elapsed:5.0f} s after the pushes, {pending:,} events pending", flush=True)
        if elapsed > WEBHOOK_TIMEOUT:
            failures.append(
                f"webhooks: {pending} events still pending {WEBHOOK_TIMEOUT:.0f} s after the pushes"
            )
            break
        time.sleep(0.5)
    return {
        "settled_seconds": settled,
        "seconds": time.monotonic() - began,
        "resent": resent,
        "rounds": rounds,
    }


def _check_webhooks(hooks: Hooks, push_ids: list[str], failures: list) -> dict:
    import hashlib

    from django.db.models import Count

    from templates_app.models import Delivery, Push
    from webhooks.dispatch import body_of
    from webhooks.models import EventDispatch, WebhookAttempt, WebhookEvent

    settled = _settle_webhooks(hooks, failures)
    tenants = [e.tenant_id for e in hooks.endpoints]
    events = list(WebhookEvent.objects.filter(tenant_id__in=tenants))
    seen = hooks.receiver.ids()
    stats = hooks.receiver.stats()
    dispatches = EventDispatch.objects.filter(endpoint__in=hooks.endpoints)
    by_status = dict(dispatches.values_list("status").annotate(n=Count("pk")))
    attempts = WebhookAttempt.objects.filter(endpoint__in=hooks.endpoints)
    attempts_ok = attempts.filter(status_code__gte=200, status_code__lt=300).count()
    attempts_500 = attempts.filter(status_code=500).count()
    attempts_other = attempts.count() - attempts_ok - attempts_500
    lost = [e.pk for e in events if not seen.get(e.pk, {}).get("ok")]
    other_bytes = [
        e.pk
        for e in events
        if e.pk in seen and seen[e.pk]["bodies"] != [hashlib.sha256(body_of(e)).hexdigest()]
    ]
    unknown = set(seen) - {e.pk for e in events}
    measured = {
        "events": len(events),
        "types": dict(sorted(Counter(e.type for e in events).items())),
        "requests": stats["requests"],
        "answered_500": stats["refused"],
        "answered_2xx": stats["ok"],
        "attempts": attempts_ok + attempts_500 + attempts_other,
        "attempts_other": attempts_other,
        "ids_twice_2xx": stats["ids_ok_twice"],
        "lost": len(lost),
        "dispatches": by_status,
        **settled,
    }
    label = "webhooks:"
    common.check(
        bool(events), f"{label} {len(events):,} events recorded for the scenario's tenants", failures
    )
    common.check(not lost, f"{label} {len(lost)} of {len(events):,} events never answered 2xx by the receiver "
                 f"{lost[:3]}", failures)  # fmt: skip
    common.check(not other_bytes, f"{label} {len(other_bytes)} events whose attempts did not all send the bytes "
                 "of the recorded event", failures)  # fmt: skip
    common.check(stats["unverified"] == 0 and stats["no_id"] == 0, f"{label} every one of {stats['requests']:,} "
                 f"requests verified ({stats['unverified']} not, {stats['no_id']} without an id)", failures)  # fmt: skip
    common.check(not unknown, f"{label} {len(unknown)} ids received that no event has", failures)
    common.check(set(by_status) == {"succeeded"}, f"{label} every dispatch succeeded, none pending or failed "
                 f"{by_status}", failures)  # fmt: skip
    common.check(attempts_other == 0, f"{label} {attempts_other} attempts with no 2xx/500 answer", failures)
    # Every attempt the workers recorded was a request the receiver answered so; a worker killed after the
    # POST and before the record makes requests with no attempt logged (at least once), never the reverse.
    exact = stats["refused"] == attempts_500 and stats["ok"] == attempts_ok
    common.check(stats["refused"] >= attempts_500 and stats["ok"] >= attempts_ok,
                 f"{label} the receiver answered {stats['ok']:,} 2xx / {stats['refused']:,} 500, the attempts log "
                 f"has {attempts_ok:,} / {attempts_500:,}{'' if exact else ' (requests no attempt records)'}",
                 failures)  # fmt: skip

    # The events the pushes imply.
    by_tenant: dict[int, list] = {}
    for e in events:
        by_tenant.setdefault(e.tenant_id, []).append(e)
    for push_id in push_ids:
        push = Push.objects.select_related("app").get(pk=push_id)
        mine = by_tenant.get(push.tenant_id, [])
        kind = push.app.name.rsplit(" ", 1)[-1]
        finished = [e for e in mine if e.type == "push.finished"]
        counts = {
            "recipients": push.recipients,
            "sent": push.sent,
            "failed": push.failed,
            "no_credit": push.no_credit,
            "opted_out": push.opted_out,
            "pending": push.pending,
            "held": push.held,
            "opened": push.opened,
        }
        common.check(
            len(finished) == 1
            and finished[0].data.get("push_id") == str(push.pk)
            and finished[0].data.get("status") == "done"
            and finished[0].data.get("counts") == counts,
            f"{label} {kind}: one push.finished, done, with the push's counts {counts} "
            f"({[e.data.get('counts') for e in finished]})",
            failures,
        )
        sent = set(
            Delivery.objects.filter(push=push, status=Delivery.Status.SENT).values_list("openid", flat=True)
        )
        failed_rows = set(
            Delivery.objects.filter(push=push, status=Delivery.Status.FAILED)
            .exclude(errcode="canceled")
            .values_list("openid", flat=True)
        )
        unreachable = [e.data.get("openid") for e in mine if e.type == "user.unreachable"]
        common.check(
            len(unreachable) == len(set(unreachable)) and sent <= set(unreachable) <= sent | failed_rows,
            f"{label} {kind}: {len(unreachable):,} user.unreachable, one per user sent their only credit "
            f"(push sent {push.sent:,})",
            failures,
        )
        reported = [d["openid"] for e in mine if e.type == "deliveries.failed" for d in e.data["deliveries"]]
        batches = [len(e.data["deliveries"]) for e in mine if e.type == "deliveries.failed"]
        common.check(
            sorted(reported) == sorted(failed_rows) and all(n <= 500 for n in batches),
            f"{label} {kind}: deliveries.failed report {len(reported)} deliveries in {len(batches)} events "
            f"(≤ 500 each), the push's {push.failed} failed",
            failures,
        )
        extra = {e.type for e in mine} - {"push.finished", "user.unreachable", "deliveries.failed"}
        common.check(not extra, f"{label} {kind}: no other event types ({extra})", failures)
    return measured


# --- the table -----------------------------------------------------------------------------------------
def print_table(outcomes: list[Outcome], users: int, broker: str = "redis") -> None:
    head = ("scenario", "time", "formId: exactly one", "lost", "twice", "subscribe: one", "ambiguous (got it)",
            "lost", "twice", "claimed left", "counters = rows", "WeChat answers (formId / subscribe)")  # fmt: skip
    lines = [head]
    for o in outcomes:
        f, s = o.formid, o.subscribe
        if not f or not s:
            lines.append((o.scenario, f"{o.seconds:.0f} s", *["—"] * (len(head) - 2)))
            continue
        lines.append((
            o.scenario, f"{o.seconds:.0f} s", f"{f['one']:,} / {f['users']:,}", str(f["lost"]), str(f["duplicated"]),
            f"{s['one']:,} / {s['users']:,}", f"{s['ambiguous']} ({s['ambiguous_delivered']})", str(s["lost"]),
            str(s["duplicated"]), str(f["claimed"] + s["claimed"]),
            "yes" if f["counters_match"] and s["counters_match"] else "NO",
            f"{_answers(f['answers'])} / {_answers(s['answers'])}",
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    print(
        f"\n### Fault injection: @all to {users:,} formId users and {users:,} subscribe users at once, broker {broker}\n"
    )
    for n, row in enumerate(lines):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print()
    for o in outcomes:
        print(f"- {o.scenario}: {o.description}{'; ' + o.struck if o.struck else ''}")
    for o in outcomes:
        if o.webhooks:
            print(f"- {o.scenario}, webhooks: {_webhook_note(o.webhooks)}")
    print(
        "- ambiguous: subscribe deliveries reported `timeout_ambiguous` (the message may have gone out; a "
        "subscribe credit is never sent twice), in brackets how many of those users did get it; lost counts "
        "users with a usable credit and no message who are not reported ambiguous",
        flush=True,
    )


def _webhook_note(w: dict) -> str:
    types = ", ".join(f"{t} {n:,}" for t, n in w["types"].items())
    resent = f"; {w['resent']} failed after all 8 attempts and were resent" if w["resent"] else ""
    settled = (
        f"all settled {w['settled_seconds']:.0f} s after the pushes were done"
        if w["settled_seconds"] is not None
        else f"NOT settled {w['seconds']:.0f} s after the pushes were done"
    )
    return (
        f"{w['events']:,} events ({types}); {w['requests']:,} requests, {w['answered_500']:,} answered 500 "
        f"({w['attempts']:,} attempts logged); {settled}{resent}; {w['lost']} lost"
    )


def _answers(answers: dict) -> str:
    return " ".join(f"{code}×{n:,}" for code, n in sorted(answers.items(), key=lambda kv: -kv[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=USERS, help="served users per app")
    parser.add_argument("--only", nargs="*", help="run only these scenarios (by name)")
    parser.add_argument("--workdir", type=Path, help="logs of every process (default: a temporary folder)")
    parser.add_argument(
        "--broker",
        choices=BROKERS,
        default=os.environ.get("FAULTS_BROKER", "redis"),
        help="Celery's broker: the suite's Redis, or RabbitMQ on a vhost of the run's own (default: FAULTS_BROKER "
        "or redis)",
    )
    args = parser.parse_args(argv)
    chosen = [s for s in SCENARIOS if (not args.only or s.name in args.only) and args.broker in s.brokers]
    outcomes: list[Outcome] = []
    started = time.monotonic()
    with Stack(args.workdir, broker=args.broker) as stack:
        print(
            f"fault suite: stack up in {time.monotonic() - started:.0f} s, broker {args.broker} "
            f"(logs in {stack.workdir})",
            flush=True,
        )
        for scenario in chosen:
            print(f"\n## {scenario.name}: {scenario.description}", flush=True)
            outcome = run_scenario(stack, scenario, args.users)
            print(f"  {outcome.seconds:.1f} s; {outcome.struck or 'no mid-run strike'}", flush=True)
            outcomes.append(outcome)
    print_table(outcomes, args.users, args.broker)
    failed = [f"{o.scenario}: {failure}" for o in outcomes for failure in o.failures]
    print(f"fault suite ({args.broker}): {len(outcomes)} scenarios in {time.monotonic() - started:.0f} s, "
          f"{'all checks passed' if not failed else f'{len(failed)} checks FAILED'}")  # fmt: skip
    for failure in failed:
        print(f"  FAIL {failure}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

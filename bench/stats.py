"""The stats endpoint (GET /api/v1/apps/{appid}/stats) over a 90-day range, with 10M deliveries and the funnel
rows a year of traffic leaves: p50/p95/p99 of ≥ 200 calls each for the whole app, a subscribe template and a
formId template. Target: < 50 ms.

    flock /tmp/pushhub-bench.lock .venv/bin/python -m bench.stats [--deliveries 10M] [--apps 300] [--calls 300] [--keep]
    .venv/bin/python -m bench --only stats        (quick: 1M deliveries)

Data (generated fresh each run with INSERT … SELECT over generate_series): ``apps`` apps with 10 subscribe
templates and 2 formId templates each; TemplateDailyStat for 365 days of every template of every app plus each
app's "" row (formIds), i.e. 13 × 365 rows an app (1.4M rows for 300 apps), counters in proportion to a day's
traffic; and ``deliveries`` delivery rows in pushes of 1,000 of the measured app spread over the year (the
table the endpoint must never read: it is there to be large, with its indexes, as in production).

The calls: ``django.test.Client`` in this process with a read API key (the whole stack: middleware, key check,
tenant scoping, the view, JSON), each timed end to end; the database on loopback. The query plan of the
aggregate is printed (EXPLAIN ANALYZE) so a regression to a scan shows.

The database is ``pushhub_bench_stats`` (BENCH_DATABASE_URL overrides it), dropped at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from bench import common

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/pushhub_bench_stats"
PUSH_SIZE = 1_000
DAYS = 365
SUBSCRIBE_TEMPLATES = 10
FORMID_TEMPLATES = 2
RANGE_DAYS = 90
TARGET_MS = 50.0
PUSHES_PER_STATEMENT = 500


def parse_size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 1_000, "M": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("KM")) * scale)


# --- data ------------------------------------------------------------------------------------------------
def fill(deliveries: int, apps: int) -> dict:
    """Apps, templates, a year of funnel rows for every template, and the deliveries of the measured app."""
    import secrets
    import uuid

    from django.db import connection, transaction

    from formids.models import TemplateDailyStat
    from pushhub import crypto
    from templates_app import catalogue
    from templates_app.models import Delivery, Push, Template
    from tenants import services as tenants
    from tenants.models import MiniProgram, Tenant

    started = time.monotonic()
    with connection.cursor() as cursor:  # what an interrupted run left (the bench's own database)
        cursor.execute(f"TRUNCATE {MiniProgram._meta.db_table}, {Tenant._meta.db_table} CASCADE")
    measured = common.make_app(None, "stats")
    tenant = measured.tenant
    # The other apps: rows straight into the table (register_app's checks and audit are not what is measured).
    MiniProgram.objects.bulk_create(
        [
            MiniProgram(
                tenant=tenant,
                appid="wx" + secrets.token_hex(8),
                name=f"stats {n}",
                sandbox=True,
                secret_ciphertext=measured.secret_ciphertext,
                secret_last4=measured.secret_last4,
                events_token=secrets.token_hex(16),
                events_aes_key_ciphertext=measured.events_aes_key_ciphertext,
            )
            for n in range(apps - 1)
        ],
        batch_size=1000,
    )
    app_ids = list(MiniProgram.objects.values_list("pk", flat=True))
    templates = []
    for app_id in app_ids:
        for n in range(SUBSCRIBE_TEMPLATES + FORMID_TEMPLATES):
            token = secrets.token_urlsafe(24)
            kind = "subscribe" if n < SUBSCRIBE_TEMPLATES else "formid"
            templates.append(
                Template(
                    app_id=app_id,
                    kind=kind,
                    template_id=f"stats-{uuid.uuid4().hex[:20]}",
                    title="订单通知",
                    fields=common.TEMPLATE_FIELDS[kind],
                    subscription="one_time" if kind == "subscribe" else "",
                    trigger_token_hash=catalogue.hash_trigger_token(token),
                    trigger_token_ciphertext=crypto.encrypt(token),
                )
            )
    Template.objects.bulk_create(templates, batch_size=2000)
    stat_table = TemplateDailyStat._meta.db_table
    template_table = Template._meta.db_table
    with connection.cursor() as cursor:
        # Every (app, template, day) of the year and each app's "" row: counters shaped like a day's traffic
        # (credits ≥ sent ≥ opened ≥ resubscribed), from a hash so runs are comparable.
        cursor.execute(
            f"""
            INSERT INTO {stat_table} (app_id, template_id, day, credits_collected, sent, failed, opened, resubscribed)
            SELECT t.app_id, t.template_id, d::date,
                   CASE WHEN t.kind = 'formid' THEN 0 ELSE 200 + h %% 800 END,
                   150 + h %% 600, h %% 20, 30 + h %% 150, h %% 12
            FROM (SELECT app_id, template_id, kind FROM {template_table}
                  UNION ALL SELECT id, '', 'formids' FROM {MiniProgram._meta.db_table}) t
            CROSS JOIN generate_series(current_date - %s, current_date, interval '1 day') AS d
            CROSS JOIN LATERAL (SELECT abs(hashtext(t.template_id || t.app_id::text || d::text)) AS h) x
            ORDER BY d, t.app_id, t.template_id
            """,
            [DAYS - 1],
        )
        cursor.execute(f"UPDATE {stat_table} SET credits_collected = 5000 + sent WHERE template_id = ''")
        stat_rows = TemplateDailyStat.objects.count()
    print(f"  {len(app_ids):,} apps, {len(templates):,} templates, {stat_rows:,} funnel rows", flush=True)

    subscribe = Template.objects.filter(app=measured, kind="subscribe").first()
    formid = Template.objects.filter(app=measured, kind="formid").first()
    pushes = max(1, deliveries // PUSH_SIZE)
    push_table, delivery_table = Push._meta.db_table, Delivery._meta.db_table
    model = Push.objects.create(
        tenant=tenant, app=measured, template=subscribe, status="done", recipients=PUSH_SIZE, sent=PUSH_SIZE,
        no_credit=0, opted_out=0, enumerated=True,
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {push_table}
            SELECT (jsonb_populate_record(NULL::{push_table}, to_jsonb(p) || jsonb_build_object(
                'id', gen_random_uuid(),
                'created_at', now() - make_interval(secs => %s * 86400.0 * (1 - g::float8 / %s)),
                'finished_at', now() - make_interval(secs => %s * 86400.0 * (1 - g::float8 / %s)) + interval '1 hour'
            ))).*
            FROM {push_table} p CROSS JOIN generate_series(1, %s) AS g WHERE p.id = %s
            """,
            [DAYS, pushes, DAYS, pushes, pushes, model.pk],
        )
        cursor.execute(f"DELETE FROM {push_table} WHERE id = %s", [model.pk])
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexdef NOT LIKE 'CREATE UNIQUE%%'",
            [delivery_table],
        )
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
    ordered = list(Push.objects.filter(app=measured).order_by("created_at").values_list("pk", flat=True))
    print(f"  {pushes:,} pushes; filling {pushes * PUSH_SIZE:,} deliveries", flush=True)
    for first in range(0, len(ordered), PUSHES_PER_STATEMENT):
        batch = ordered[first : first + PUSHES_PER_STATEMENT]
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"""
                INSERT INTO {delivery_table} (push_id, openid, status, errcode, errmsg, attempts, sent_at,
                                               created_at, updated_at)
                SELECT p.id, 'o' || lpad(g::text, 9, '0'), 'sent', '', '', 1, p.created_at + g * interval '1 ms',
                       p.created_at + g * interval '1 ms', p.created_at + g * interval '1 ms'
                FROM {push_table} p CROSS JOIN generate_series(1, %s) AS g
                WHERE p.id = ANY(%s::uuid[])
                ORDER BY p.created_at, g
                """,
                [PUSH_SIZE, [str(pk) for pk in batch]],
            )
        done = min(first + PUSHES_PER_STATEMENT, len(ordered)) * PUSH_SIZE
        if (first // PUSHES_PER_STATEMENT) % 4 == 3 or done == pushes * PUSH_SIZE:
            elapsed = time.monotonic() - started
            print(f"    {done:,} deliveries in {elapsed:.0f} s", flush=True)
    with connection.cursor() as cursor:
        print(f"  building {len(indexes)} delivery indexes again", flush=True)
        for _, definition in indexes:
            cursor.execute(definition)
        for table in (delivery_table, push_table, stat_table, template_table):
            cursor.execute(f"VACUUM (ANALYZE) {table}")
    _, key = tenants.create_api_key(tenant, "read", name="bench")
    print(f"  data ready in {time.monotonic() - started:.0f} s", flush=True)
    return {
        "app": measured,
        "key": key,
        "subscribe": subscribe,
        "formid": formid,
        "deliveries": Delivery.objects.filter(push__app=measured).count(),
        "stat_rows": stat_rows,
        "apps": len(app_ids),
        "templates": len(templates),
    }


# --- the calls -------------------------------------------------------------------------------------------------
def time_calls(client, url: str, calls: int) -> tuple[list[float], dict]:
    """``calls`` GETs of ``url`` after 10 warm-up calls; milliseconds each, and the last answer."""
    for _ in range(10):
        response = client.get(url)
        assert response.status_code == 200, response.content[:300]
    took = []
    for _ in range(calls):
        started = time.perf_counter()
        response = client.get(url)
        took.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.content[:300]
    return took, response.json()


def explain(app_id: int, start, end, template) -> str:
    """The aggregate's plan as PostgreSQL ran it (the very queryset the endpoint runs)."""
    from formids import funnel

    rows = funnel.funnel_rows(
        app_id,
        start,
        end,
        template_id=template.template_id if template else None,
        formid_template=bool(template) and template.kind == "formid",
    )
    plan = rows.explain(analyze=True, costs=False, timing=False, summary=True)
    return "\n".join("      " + line for line in plan.splitlines())


def run_stats(deliveries: int, apps: int = 300, calls: int = 300, keep: bool = False) -> list[str]:
    os.environ.setdefault("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    common.setup_django()
    from datetime import timedelta

    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    failures: list[str] = []
    data = fill(deliveries, apps)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {data['key']}")
    end = timezone.now().date()
    start = end - timedelta(days=RANGE_DAYS - 1)
    base = f"/api/v1/apps/{data['app'].appid}/stats?from={start}&to={end}"
    cases = [
        ("the whole app", base, None),
        ("a subscribe template", f"{base}&template={data['subscribe'].template_id}", data["subscribe"]),
        ("a formId template", f"{base}&template={data['formid'].pk}", data["formid"]),
    ]
    rows = [
        common.Row("deliveries in the table", f"{data['deliveries']:,}"),
        common.Row("apps / templates / funnel rows (a year)", f"{data['apps']:,} / {data['templates']:,} / {data['stat_rows']:,}"),
    ]  # fmt: skip
    plans = []
    for label, url, template in cases:
        took, answer = time_calls(client, url, calls)
        p50, p95, p99 = (common.percentile(took, p) for p in (50, 95, 99))
        rows.append(
            common.Row(
                f"{label}, {RANGE_DAYS} days: p50 / p95 / p99 ({calls} calls)",
                f"{p50:.1f} / {p95:.1f} / {p99:.1f} ms (mean {statistics.mean(took):.1f})",
            )
        )
        common.check(len(answer["days"]) == RANGE_DAYS, f"{label}: {RANGE_DAYS} days answered", failures)
        common.check(
            all(day["sent"] > 0 for day in answer["days"]),
            f"{label}: every day has its rows' counts",
            failures,
        )
        common.check(p99 < TARGET_MS, f"{label}: p99 {p99:.1f} ms < {TARGET_MS:.0f} ms", failures)
        plans.append(f"    {label}:\n{explain(data['app'].pk, start, end, template)}")
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        version = cursor.fetchone()[0].split(",")[0]
    common.print_table(
        f"Stats endpoint: {RANGE_DAYS}-day range with {data['deliveries']:,} deliveries",
        rows,
        [
            f"{version}; django.test.Client in the bench process (the whole Django stack, no HTTP server), a read "
            f"key; 2 cores shared with other jobs (load average {os.getloadavg()[0]:.1f} at the end): figures as "
            "measured on a busy machine.",
            "plans of the aggregate (EXPLAIN ANALYZE):",
            *plans,
        ],
    )
    if not keep:
        common.drop_database()
    return failures


def run(full: bool = False) -> list[str]:
    return run_stats(10_000_000 if full else 1_000_000)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deliveries", type=parse_size, default=10_000_000, help="deliveries (e.g. 1M, 10M)")
    parser.add_argument("--apps", type=int, default=300, help="apps with a year of funnel rows each")
    parser.add_argument("--calls", type=int, default=300, help="timed calls per case (≥ 200)")
    parser.add_argument("--keep", action="store_true", help="keep the database (pushhub_bench_stats)")
    args = parser.parse_args()
    raise SystemExit(1 if run_stats(args.deliveries, args.apps, max(200, args.calls), args.keep) else 0)


if __name__ == "__main__":
    main()

"""Retention sweep on 10M deliveries: how fast it deletes, how long its longest transaction is, and whether a
writer working on a live push at the same time is ever held up.

    flock /tmp/pushhub-bench.lock .venv/bin/python -m bench.retention [--rows 10M] [--keep]

Data (generated fresh each run by INSERT … SELECT over generate_series, ids growing with time as in
production): one app, ``rows`` deliveries in pushes of 1,000 spread evenly over the last 180 days (half of
them finished before the 90-day cutoff), and in proportion: 0.2 consumed/expired credits, 0.1 inbound events and
0.05 sandbox messages per delivery, one idempotency record and one webhook event (with its dispatch and
attempt) per push, spread the same way (5/6 of them past a 30-day cutoff). In the old rows, a push created 135 days ago still
running keeps 500 pending and 500 held deliveries (in use: must stay). The delivery table's non-unique
indexes are dropped during the fill and built again after it (minutes, not tens of minutes).

The database is ``pushhub_bench_retention`` (BENCH_DATABASE_URL overrides it), not ``pushhub_bench``: the sweep
deletes every table's old rows, which would take other benchmarks' data with it, and their rows (inserted
now, ids below ours) would not follow the "ids grow with time" order the sweep relies on. It is dropped at the
end unless ``--keep``.

The sweep: ``templates_app.retention.sweep()`` with the production settings (batches of RETENTION_BATCH_SIZE,
runs of RETENTION_TIME_BUDGET seconds, one after another until a run completes), timing every batch. Meanwhile
a writer on its own connection works on a live push without pause: inserts a delivery, marks it sent, bumps
the push's counter, and updates one of the old push's pending deliveries (rows the sweep walks past); every
statement is timed, and a monitor samples pg_stat_activity every 2 ms for the writer waiting on a lock.

Checks: exactly the rows past their cutoff are gone (every kind), the in-use deliveries are all there, the
pushes' counts are unchanged, the writer was never seen waiting on a lock. Its statement latencies before and
during the sweep are reported, not checked: on this shared machine CPU and WAL-flush contention alone cost
milliseconds (the wait events sampled say which).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections import defaultdict

from bench import common

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/pushhub_bench_retention"
PUSH_SIZE = 1_000
DAYS = 180  # the data spans this many days back from now: half of it past the deliveries' 90
FILL_PUSHES_PER_STATEMENT = 500  # 500k deliveries an INSERT


def parse_size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 1_000, "M": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("KM")) * scale)


# --- data ------------------------------------------------------------------------------------------------
def fill(rows: int) -> dict:
    """Generate the data (see the module docstring); returns what the checks need."""
    from django.db import connection, transaction
    from django.utils import timezone

    from formids.models import Credit, InboundEvent, MiniUser
    from pushhub.wechat.sandbox.models import SandboxApp, SandboxMessage
    from templates_app.models import Delivery, IdempotencyRecord, Push
    from webhooks import services as webhook_services
    from webhooks.models import EventDispatch, WebhookAttempt, WebhookEvent

    started = time.monotonic()
    tables = [
        m._meta.db_table
        for m in (WebhookAttempt, EventDispatch, WebhookEvent, IdempotencyRecord, Delivery, Push, Credit)
        + (InboundEvent, SandboxMessage, MiniUser)
    ]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
    app = common.make_app(None, "retention")
    template, _ = common.make_template(app, None, "formid")
    endpoint, _ = webhook_services.create_endpoint(
        app.tenant, url="http://127.0.0.1:9/hook", events=["*"], actor="bench"
    )
    pushes = max(2, rows // PUSH_SIZE)
    model = Push.objects.create(
        tenant=app.tenant, app=app, template=template, status="done", recipients=PUSH_SIZE, sent=PUSH_SIZE,
        no_credit=0, opted_out=0, enumerated=True,
    )  # fmt: skip
    push_table, delivery_table = Push._meta.db_table, Delivery._meta.db_table
    with connection.cursor() as cursor:
        # Pushes k = 1..pushes, created evenly over DAYS days (oldest first), each finished an hour later.
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
        # The non-unique indexes of the delivery table: built again after the fill.
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexdef NOT LIKE 'CREATE UNIQUE%%'",
            [delivery_table],
        )
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
    print(f"  {pushes:,} pushes; filling {pushes * PUSH_SIZE:,} deliveries", flush=True)
    ordered = list(Push.objects.order_by("created_at").values_list("pk", flat=True))
    for first in range(0, len(ordered), FILL_PUSHES_PER_STATEMENT):
        batch = ordered[first : first + FILL_PUSHES_PER_STATEMENT]
        with transaction.atomic(), connection.cursor() as cursor:
            # ORDER BY: ids are handed out in the order of the pushes' creation, as in production.
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
        done = min(first + FILL_PUSHES_PER_STATEMENT, len(ordered)) * PUSH_SIZE
        if (first // FILL_PUSHES_PER_STATEMENT) % 4 == 3 or done == pushes * PUSH_SIZE:
            elapsed = time.monotonic() - started
            print(f"    {done:,} deliveries in {elapsed:.0f} s ({done / elapsed:,.0f}/s)", flush=True)
    # A quarter into the rows (135 days ago): a push still running, its deliveries 500 pending and 500
    # held, among the ids the sweep walks.
    stuck = Push.objects.order_by("created_at")[pushes // 4]
    Push.objects.filter(pk=stuck.pk).update(status="running", finished_at=None, sent=0, pending=500, held=500)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {delivery_table} SET status = CASE WHEN openid <= 'o000000500' THEN 'pending' ELSE 'held' END "
            f"WHERE push_id = %s",
            [stuck.pk],
        )
    print(
        f"  deliveries filled in {time.monotonic() - started:.0f} s; rebuilding {len(indexes)} indexes",
        flush=True,
    )
    # SET LOCAL inside one transaction: nothing is left on the session (the code works behind pgbouncer's
    # transaction pooling, and tests/test_pgbouncer.py refuses a session SET anywhere in the tree).
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
        for _, definition in indexes:
            cursor.execute(definition)
    print(f"  indexes rebuilt at {time.monotonic() - started:.0f} s", flush=True)

    user = MiniUser.objects.create(app=app, openid="o-retention")
    credits, events, messages = rows // 5, rows // 10, rows // 20
    phone = SandboxApp.objects.get(appid=app.appid)
    spread = "now() - make_interval(secs => %s * 86400.0 * (1 - g::float8 / %s))"
    with connection.cursor() as cursor:
        for first in range(1, credits + 1, 1_000_000):
            last = min(first + 999_999, credits)
            cursor.execute(
                f"""
                INSERT INTO {Credit._meta.db_table} (app_id, user_id, kind, value, template_id, uses_left, expires_at,
                    state, source, claimed_by, created_at, finished_at)
                SELECT %s, %s, 'formid', md5('c' || g), '', 0, {spread} + interval '7 days',
                       CASE WHEN g %% 2 = 0 THEN 'consumed' ELSE 'expired' END, 'sdk', '', {spread},
                       {spread} + interval '1 hour'
                FROM generate_series(%s, %s) AS g ORDER BY g
                """,
                [app.pk, user.pk, DAYS, credits, DAYS, credits, DAYS, credits, first, last],
            )
        cursor.execute(
            f"""
            INSERT INTO {InboundEvent._meta.db_table} (app_id, source, event, openid, payload, dedupe_key, outcome,
                                                       received_at)
            SELECT %s, 'wechat', 'subscribe_msg_popup_event', 'o' || g, '{{}}', '', '{{}}', {spread}
            FROM generate_series(1, %s) AS g ORDER BY g
            """,
            [app.pk, DAYS, events, events],
        )
        cursor.execute(
            f"""
            INSERT INTO {SandboxMessage._meta.db_table} (app_id, openid, kind, template_id, title, data, page,
                form_id, miniprogram_state, lang, emphasis_keyword, created_at)
            SELECT %s, 'o' || g, 'formid', 't', '', '{{}}', '', '', '', '', '', {spread}
            FROM generate_series(1, %s) AS g ORDER BY g
            """,
            [phone.pk, DAYS, messages, messages],
        )
        # One idempotency record and one webhook event (a dispatch, an attempt) per push, at its creation.
        cursor.execute(
            f"""
            INSERT INTO {IdempotencyRecord._meta.db_table} (template_id, key, fingerprint, response, created_at, push_id)
            SELECT template_id, id::text, 'f', '{{}}', created_at, id FROM {push_table} ORDER BY created_at
            """
        )
        cursor.execute(
            f"""
            INSERT INTO {WebhookEvent._meta.db_table} (id, tenant_id, type, data, created_at)
            SELECT 'msg_' || md5(id::text), tenant_id, 'push.finished', '{{}}', finished_at
            FROM {push_table} WHERE finished_at IS NOT NULL ORDER BY created_at
            """
        )
        cursor.execute(
            f"""
            INSERT INTO {EventDispatch._meta.db_table} (event_id, endpoint_id, status, attempts, retries,
                                                         next_attempt_at, created_at, finished_at)
            SELECT id, %s, 'succeeded', 1, 0, created_at, created_at, created_at
            FROM {WebhookEvent._meta.db_table} ORDER BY created_at
            """,
            [endpoint.pk],
        )
        cursor.execute(
            f"""
            INSERT INTO {WebhookAttempt._meta.db_table} (dispatch_id, endpoint_id, event_id, attempt, status_code,
                                                          error, response_body, duration_ms, created_at)
            SELECT id, endpoint_id, event_id, 1, 200, '', '', 12, created_at
            FROM {EventDispatch._meta.db_table} ORDER BY created_at
            """
        )
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"VACUUM (ANALYZE) {table}")
    print(f"  all data ready in {time.monotonic() - started:.0f} s", flush=True)

    # What must be gone after the sweep: per kind, the rows past its cutoff and not in use.
    from templates_app import retention

    now = timezone.now()  # the sweep's too: the rows near a cutoff do not cross it while the bench runs
    expected, totals = {}, {}
    for kind in retention.KINDS:
        cutoff = retention.cutoff_of(kind, now)
        totals[kind.name] = kind.model.objects.count()
        expected[kind.name] = kind.model.objects.filter(kind.deletable(cutoff)).count() if cutoff else 0
    in_use = Delivery.objects.filter(push=stuck).count()
    live = Push.objects.create(
        tenant=app.tenant, app=app, template=template, status="running", recipients=0, enumerated=False,
    )  # fmt: skip
    return {
        "now": now,
        "app": app,
        "expected": expected,
        "totals": totals,
        "stuck": stuck,
        "in_use": in_use,
        "live": live,
        "counts": _push_counts(),
    }


def _push_counts() -> tuple:
    from django.db.models import Sum

    from templates_app.models import Push

    return tuple(
        Push.objects.aggregate(s=Sum("sent"), f=Sum("failed"), p=Sum("pending"), h=Sum("held")).values()
    )


# --- the concurrent writer ---------------------------------------------------------------------------------
class Writer:
    """A live push's work on its own connection, every statement timed; a monitor samples whether it waits
    on a lock."""

    def __init__(self, dsn: str, live_push, stuck_push):
        self.dsn, self.live, self.stuck = dsn, str(live_push.pk), str(stuck_push.pk)
        self.stop = threading.Event()
        self.phase = "before"
        self.latencies: dict[str, list[float]] = defaultdict(list)  # phase → ms
        self.slowest: dict[str, tuple[float, str]] = {}
        self.waits: dict[str, int] = defaultdict(int)  # the writer's wait_event_type during the sweep
        self.samples = 0
        self.pid = None

    def start(self) -> None:
        self.threads = [
            threading.Thread(target=self._write, daemon=True),
            threading.Thread(target=self._monitor, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def _timed(self, cursor, label: str, sql: str, params) -> list:
        started = time.perf_counter()
        cursor.execute(sql, params)
        rows = cursor.fetchall() if cursor.description else []
        took = (time.perf_counter() - started) * 1000
        self.latencies[self.phase].append(took)
        if took > self.slowest.get(self.phase, (0.0, ""))[0]:
            self.slowest[self.phase] = (took, label)
        return rows

    def _write(self) -> None:
        import psycopg

        from templates_app.models import Delivery, Push

        delivery, push = Delivery._meta.db_table, Push._meta.db_table
        with psycopg.connect(self.dsn, autocommit=True) as conn, conn.cursor() as cursor:
            self.pid = conn.info.backend_pid
            cursor.execute(
                f"SELECT id FROM {delivery} WHERE push_id = %s AND status = 'pending'", [self.stuck]
            )
            in_use = [row[0] for row in cursor.fetchall()]
            n = 0
            while not self.stop.is_set():
                n += 1
                (row,) = self._timed(
                    cursor, "insert a delivery",
                    f"INSERT INTO {delivery} (push_id, openid, status, errcode, errmsg, attempts, created_at, "
                    f"updated_at) VALUES (%s, %s, 'pending', '', '', 0, now(), now()) RETURNING id",
                    [self.live, f"live{n:09d}"],
                )  # fmt: skip
                self._timed(cursor, "mark it sent",
                            f"UPDATE {delivery} SET status = 'sent', sent_at = now(), attempts = 1 WHERE id = %s",
                            [row[0]])  # fmt: skip
                self._timed(cursor, "count it on the push",
                            f"UPDATE {push} SET sent = sent + 1 WHERE id = %s", [self.live])  # fmt: skip
                self._timed(cursor, "touch an old in-use delivery",
                            f"UPDATE {delivery} SET attempts = attempts WHERE id = %s", [in_use[n % len(in_use)]])  # fmt: skip
                time.sleep(0.002)

    def _monitor(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn, conn.cursor() as cursor:
            while not self.stop.is_set():
                if self.pid is not None and self.phase == "during":
                    cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [self.pid])
                    row = cursor.fetchone()
                    if row:
                        self.samples += 1
                        self.waits[row[0] or "none"] += 1
                time.sleep(0.002)


# --- the run ---------------------------------------------------------------------------------------------------
def run_retention(rows: int, keep: bool = False) -> list[str]:
    os.environ.setdefault("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    common.setup_django()
    from django.conf import settings
    from django.db import connection

    from templates_app import retention

    failures: list[str] = []
    data = fill(rows)
    dsn = os.environ["DATABASE_URL"]
    writer = Writer(dsn, data["live"], data["stuck"])
    writer.start()
    time.sleep(3)  # the writer's latencies before the sweep: what this busy machine gives anyway
    writer.phase = "during"
    batches: dict[str, list[float]] = defaultdict(list)
    deleted: dict[str, int] = defaultdict(int)
    runs = 0
    started = time.monotonic()
    while True:
        runs += 1
        reports = retention.sweep(now=data["now"], on_batch=lambda name, n, took: batches[name].append(took))
        for report in reports:
            deleted[report.name] += report.deleted
        if all(report.complete for report in reports):
            break
    elapsed = time.monotonic() - started
    writer.phase = "after"
    time.sleep(1)
    writer.join()

    from templates_app.models import Delivery

    total = sum(deleted.values())
    longest_kind, longest = max(
        ((name, max(d)) for name, d in batches.items() if d), key=lambda item: item[1]
    )
    all_batches = [took for took in (t for d in batches.values() for t in d)]
    during = writer.latencies["during"]
    before = writer.latencies["before"]
    table_rows = [
        common.Row("rows deleted (all kinds)", f"{total:,} in {elapsed:.0f} s, {runs} runs of ≤ {settings.RETENTION_TIME_BUDGET:.0f} s"),
        common.Row("rows/s (all kinds)", f"{total / elapsed:,.0f}"),
        common.Row("deliveries deleted", f"{deleted['deliveries']:,} ({deleted['deliveries'] / elapsed:,.0f}/s of the whole run)"),
        common.Row(f"batches (≤ {settings.RETENTION_BATCH_SIZE} rows, one transaction each)", f"{len(all_batches):,}"),
        common.Row("batch transaction: median / p99", f"{statistics.median(all_batches) * 1000:.0f} ms / {common.percentile(all_batches, 99) * 1000:.0f} ms"),
        common.Row("longest batch transaction", f"{longest * 1000:.0f} ms ({longest_kind})"),
        common.Row("writer statements before / during the sweep", f"{len(before):,} / {len(during):,}"),
        common.Row("writer p99 before / during", f"{common.percentile(before, 99):.1f} ms / {common.percentile(during, 99):.1f} ms"),
        common.Row("writer slowest before / during", f"{writer.slowest.get('before', (0, ''))[0]:.1f} ms / {writer.slowest['during'][0]:.1f} ms ({writer.slowest['during'][1]})"),
        common.Row("writer statements over 5 ms before / during", f"{_share_over(before, 5)} / {_share_over(during, 5)}"),
        common.Row("writer seen waiting on a lock (row or table)", f"{writer.waits['Lock']} of {writer.samples:,} samples (every 2 ms)"),
        common.Row("writer's other waits seen during", ", ".join(f"{k} {v}" for k, v in sorted(writer.waits.items()) if k not in ("Lock", "none")) or "none"),
    ]  # fmt: skip
    for name in sorted(batches):
        d = batches[name]
        table_rows.append(
            common.Row(
                f"  {name}", f"{deleted[name]:,} rows, {len(d):,} batches, longest {max(d) * 1000:.0f} ms"
            )
        )
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        version = cursor.fetchone()[0].split(",")[0]
    common.print_table(
        f"Retention sweep: {rows:,} deliveries, half past the cutoff",
        table_rows,
        [
            f"{version}, shared_buffers as configured; 2 cores shared with other jobs (load average "
            f"{os.getloadavg()[0]:.1f} at the end): figures as measured on a busy machine.",
            "writer: insert a delivery of a live push, mark it sent, bump the push's counter, update one of an old "
            "running push's pending deliveries (among the rows the sweep walks), 2 ms apart, its own connection.",
        ],
    )
    for kind, want in data["expected"].items():
        common.check(
            deleted[kind] == want, f"{kind}: {deleted[kind]:,} deleted, {want:,} past the cutoff", failures
        )
    common.check(
        Delivery.objects.filter(push=data["stuck"]).count() == data["in_use"],
        f"the running push's {data['in_use']:,} pending/held deliveries are all there",
        failures,
    )
    common.check(_push_counts() == _counts_plus_writer(data), "the pushes' counts are unchanged", failures)
    common.check(writer.waits["Lock"] == 0, "the writer never waited on a lock", failures)
    if not keep:
        common.drop_database()
    return failures


def _share_over(latencies: list[float], ms: float) -> str:
    over = sum(1 for took in latencies if took > ms)
    return f"{over:,} ({100 * over / max(1, len(latencies)):.1f} %)"


def _counts_plus_writer(data) -> tuple:
    """The counts before the sweep, plus what the writer sent on the live push since."""
    from templates_app.models import Push

    sent, failed, pending, held = data["counts"]
    live = Push.objects.get(pk=data["live"].pk)
    return (sent + live.sent, failed, pending, held)


def run(full: bool = False) -> list[str]:
    return run_retention(10_000_000 if full else 1_000_000)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=parse_size, default=10_000_000, help="deliveries (e.g. 1M, 10M)")
    parser.add_argument("--keep", action="store_true", help="keep the database (pushhub_bench_retention)")
    args = parser.parse_args()
    raise SystemExit(1 if run_retention(args.rows, args.keep) else 0)


if __name__ == "__main__":
    main()

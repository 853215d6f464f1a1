"""The funnel's aggregate rows (formids.models.TemplateDailyStat): credits collected → sent → failed → opened
→ re-subscribed, per app, template and UTC day. Every counter is bumped by the event that it counts, with the
same one-statement upsert as the per-app DailyStat (``add_to_counters``), so the stats endpoint and the charts
read aggregates and never scan deliveries or credits.

- ``credits_collected``: at ingest (formids.services), one bump per template per batch (one multi-row
  statement); formIds and prepay ids under template "" (any formId template may use them).
- ``sent`` / ``failed``: at outcomes (formids.services.send_outcome_statements, written by the delivery ledger),
  under the push's template id; WeChat's later sent-event failure moves one from sent to failed
  (``sent_turned_failed``) on the day it was sent.
- ``opened``: ``record_open``, once per delivery (the first open).
- ``resubscribed``: an open leaves a RecentOpen row; a new subscribe credit of that template from that user
  within 24 h of it settles the latest such open (``credits_collected`` →
  ``_settle_opens``) and counts on the day of the open, not of the credit. formIds never do.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping
from datetime import date, datetime, timedelta

from django.db import connection
from django.db.models import F, Model, Q, Sum
from django.utils import timezone

from formids.models import DailyStat, RecentOpen, TemplateDailyStat
from pushhub.api import ApiError

COUNTERS = ("credits_collected", "sent", "failed", "opened", "resubscribed")
FORMID_TEMPLATE = ""  # the row of formIds and prepay ids: no template owns them
RESUBSCRIBE_WINDOW = timedelta(hours=24)


def bump_template_stat(app_id: int, template_id: str, day: date, **increments: int) -> None:
    """Add to one (app, template, day) row's counters; ``template_id`` "" for formIds and prepay ids."""
    increments = {name: n for name, n in increments.items() if n}
    unknown = set(increments) - set(COUNTERS)
    if unknown:
        raise ValueError(f"unknown funnel counters: {sorted(unknown)}")
    add_to_counters(TemplateDailyStat, {"app_id": app_id, "template_id": template_id, "day": day}, increments)


def add_to_counters(model: type[Model], key: dict, increments: dict[str, int]) -> None:
    """Add ``increments`` to the counters of the row of ``model`` named by ``key`` (its unique fields, as
    field names: ``app`` with an instance or ``app_id`` with an id), creating it with the day's first event.

    One ``INSERT … ON CONFLICT (key) DO UPDATE SET c = c + EXCLUDED.c``: one round trip, and two first events
    of a day racing each other both count (an update-else-insert needs a retry for the loser). PostgreSQL and
    SQLite ≥ 3.24 both take it. Columns not incremented are inserted with their field default (the columns
    have no database default)."""
    add_to_counter_rows(model, [(key, increments)])


def add_to_counter_rows(model: type[Model], rows: list[tuple[dict, dict[str, int]]]) -> None:
    """``add_to_counters`` for several rows (distinct keys, the same key fields) in one statement: a batch of
    credits for three templates is one round trip, not three. Rows are written in key order, so two batches
    touching the same rows lock them in the same order."""
    statement = counter_rows_sql(model, rows)
    if statement is not None:
        with connection.cursor() as cursor:
            cursor.execute(*statement)


def counter_rows_sql(model: type[Model], rows: list[tuple[dict, dict[str, int]]]) -> tuple[str, list] | None:
    """The statement of ``add_to_counter_rows`` as (sql, params), to run alone or with others
    (``pushhub.sql.execute_together``); None when there is nothing to add."""
    rows = [(_sharded(model, key), {name: n for name, n in inc.items() if n}) for key, inc in rows]
    rows = [(key, inc) for key, inc in rows if inc]
    if not rows:
        return None
    meta = model._meta
    key_names = list(rows[0][0])
    key_fields = [meta.get_field(name) for name in key_names]
    conflict = [field.column for field in key_fields]
    counters = [f for f in meta.concrete_fields if not f.primary_key and f.column not in conflict]
    incremented = sorted({name for _, inc in rows for name in inc})
    unknown = set(incremented) - {f.name for f in counters}
    if unknown:
        raise ValueError(f"{meta.label} has no counters {sorted(unknown)}")
    records = []
    for key, inc in rows:
        record = []
        for name, field in zip(key_names, key_fields, strict=True):
            value = key[name]
            if isinstance(value, Model):
                value = value.pk
            target = field.target_field if field.is_relation else field
            record.append(target.get_db_prep_value(value, connection))
        records.append((record, [inc.get(field.name, field.get_default()) for field in counters]))
    records.sort(key=lambda r: tuple(str(v) for v in r[0]))
    table, quote = meta.db_table, connection.ops.quote_name
    columns = [*conflict, *(f.column for f in counters)]
    updates = ", ".join(
        f"{quote(column)} = {quote(table)}.{quote(column)} + EXCLUDED.{quote(column)}"
        for column in (meta.get_field(name).column for name in incremented)
    )
    placeholders = "(" + ", ".join(["%s"] * len(columns)) + ")"
    sql = (
        f"INSERT INTO {quote(table)} ({', '.join(quote(c) for c in columns)}) "
        f"VALUES {', '.join([placeholders] * len(records))} "
        f"ON CONFLICT ({', '.join(quote(c) for c in conflict)}) DO UPDATE SET {updates}"
    )
    return sql, [value for record, counts in records for value in (*record, *counts)]


def _sharded(model: type[Model], key: dict) -> dict:
    """The key with its ``shard`` (DailyStat, TemplateDailyStat): 0 unless the caller named one. Only the SDK
    upload spreads its count over the shards (formids.models.DailyStat.shard says why)."""
    if "shard" in key or not any(field.name == "shard" for field in model._meta.concrete_fields):
        return key
    return {**key, "shard": 0}


@functools.cache
def counter_upsert_sql(
    model: type[Model], key_names: tuple[str, ...], counter: str, source: str, amount: str
) -> str:
    """``add_to_counters`` for one row and one counter as SQL to embed in a larger statement (a CTE): the
    amount is the SQL expression ``amount`` over the relation ``source`` (e.g. ``n`` of a ``counted`` CTE), and
    nothing is written when it is not positive. The row's key goes in as one ``%s`` per name of ``key_names``
    (column values: a foreign key's id), in that order. ``formids.services`` stores an upload and counts it
    in the day's statistics with it, in one statement. Made once per shape: every SDK upload runs it. A model
    with a ``shard`` not named in ``key_names`` gets shard 0."""
    meta = model._meta
    given = key_names
    key_names = tuple(_sharded(model, dict.fromkeys(given)))
    key_fields = [meta.get_field(name) for name in key_names]
    conflict = [field.column for field in key_fields]
    counters = [f for f in meta.concrete_fields if not f.primary_key and f.column not in conflict]
    if counter not in {f.name for f in counters}:
        raise ValueError(f"{meta.label} has no counter {counter!r}")
    defaults = {f.name: f.get_default() for f in counters if f.name != counter}
    if not all(type(value) is int for value in defaults.values()):
        raise ValueError(f"{meta.label}: counters must default to integers")
    values = ["%s" if name in given else "0" for name in key_names] + [
        amount if f.name == counter else str(defaults[f.name]) for f in counters
    ]
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    column = quote(meta.get_field(counter).column)
    return (
        f"INSERT INTO {table} ({', '.join(quote(c) for c in [*conflict, *(f.column for f in counters)])}) "
        f"SELECT {', '.join(values)} FROM {source} WHERE {amount} > 0 "
        f"ON CONFLICT ({', '.join(quote(c) for c in conflict)}) DO UPDATE SET "
        f"{column} = {table}.{column} + EXCLUDED.{column}"
    )


def credits_collected(
    app_id: int,
    day: date,
    *,
    formids: int = 0,
    subscribe: Mapping[str, int] | None = None,
    openid: str = "",
    now: datetime | None = None,
) -> None:
    """A batch of new credits was stored: ``formids`` formIds / prepay ids, and ``subscribe`` {template id:
    new credits} (one-time accepts or new long-term subscriptions) from ``openid``. One bump per template;
    the opens those subscribe credits follow are settled (``resubscribed``) only when there are any."""
    subscribe = {tid: n for tid, n in (subscribe or {}).items() if n}
    collected = {**({FORMID_TEMPLATE: formids} if formids else {}), **subscribe}
    add_to_counter_rows(
        TemplateDailyStat,
        [
            ({"app_id": app_id, "template_id": template_id, "day": day}, {"credits_collected": n})
            for template_id, n in collected.items()
        ],
    )
    if subscribe and openid:
        _settle_opens(app_id, openid, sorted(subscribe), now or timezone.now())


def _settle_opens(app_id: int, openid: str, template_ids: list[str], now: datetime) -> None:
    """The user's newest not-yet-counted open of each template within the last 24 h is re-subscribed: one
    guarded UPDATE … RETURNING (an open is counted once even when two credits race for it), then one bump per
    (template, day of the open). The partial index (app, openid, template_id, opened_at) WHERE
    resubscribed_at IS NULL answers it; with no recent open it reads nothing."""
    table, quote = RecentOpen._meta.db_table, connection.ops.quote_name
    marks = ", ".join(["%s"] * len(template_ids))
    sql = (
        f"UPDATE {quote(table)} SET resubscribed_at = %s "
        f"WHERE resubscribed_at IS NULL AND id IN ("
        f"  SELECT MAX(id) FROM {quote(table)} WHERE app_id = %s AND openid = %s AND template_id IN ({marks})"
        f"  AND opened_at >= %s AND resubscribed_at IS NULL GROUP BY template_id) "
        f"RETURNING template_id, opened_at"
    )
    stamp = RecentOpen._meta.get_field(
        "opened_at"
    )  # raw SQL: the backend's form of a datetime (SQLite: text)
    params = [stamp.get_db_prep_value(now, connection), app_id, openid, *template_ids]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, stamp.get_db_prep_value(now - RESUBSCRIBE_WINDOW, connection)])
        settled = cursor.fetchall()
    by_day = Counter((template_id, _as_datetime(opened_at).date()) for template_id, opened_at in settled)
    add_to_counter_rows(
        TemplateDailyStat,
        [
            ({"app_id": app_id, "template_id": template_id, "day": day}, {"resubscribed": n})
            for (template_id, day), n in by_day.items()
        ],
    )


def _as_datetime(value) -> datetime:
    """A RETURNING'd timestamp: a datetime on PostgreSQL, text on SQLite (raw SQL skips the converters)."""
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def send_outcomes_sql(app_id: int, template_id: str, day: date, *, sent: int = 0, failed: int = 0):
    """A chunk's outcomes, under the push's template id (a formId template's sends under its own id), as
    (sql, params) for ``pushhub.sql.execute_together``; None when both are 0."""
    key = {"app_id": app_id, "template_id": template_id, "day": day}
    return counter_rows_sql(TemplateDailyStat, [(key, {"sent": sent, "failed": failed})])


def sent_turned_failed(app_id: int, template_id: str, day: date) -> None:
    """WeChat's subscribe_msg_sent_event failed a message counted as sent on ``day``: it moves from sent to
    failed there, in the per-app and per-template rows (a guarded UPDATE: a missing row or one at 0 is left
    alone rather than going negative)."""
    for model, key in (
        (DailyStat, {"app_id": app_id, "day": day}),
        (TemplateDailyStat, {"app_id": app_id, "template_id": template_id, "day": day}),
    ):
        # Sends are counted in shard 0 only (formids.models.DailyStat.shard): one row moves.
        model.objects.filter(**key, shard=0, sent__gt=0).update(sent=F("sent") - 1, failed=F("failed") + 1)


def record_open(app_id: int, openid: str, template_id: str, opened_at) -> None:
    """A message of ``template_id`` was opened by ``openid`` (first open of that delivery only): the day's
    ``opened`` counter, and a RecentOpen row for ``resubscribed`` (a new credit of the template within 24 h).
    Called by templates_app.opens in the transaction that set ``opened_at``."""
    bump_template_stat(app_id, template_id, opened_at.date(), opened=1)
    RecentOpen.objects.create(app_id=app_id, openid=openid, template_id=template_id, opened_at=opened_at)


# --- reading: the stats endpoint and the charts ---------------------------------------------------------
MAX_RANGE_DAYS = 366
DEFAULT_RANGE_DAYS = 30


def stats_range(first: str | None, last: str | None, today: date | None = None) -> tuple[date, date]:
    """The UTC days asked for (``from`` / ``to`` as YYYY-MM-DD, both included): ``to`` defaults to today,
    ``from`` to 29 days before ``to``. A 400 naming the parameter for a malformed date, a reversed range or
    more than 366 days."""
    today = today or timezone.now().date()
    end = _day(last, "to") if last else today
    start = _day(first, "from") if first else end - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    if start > end:
        raise ApiError(400, "validation_error", "from must not be after to.", field="from")
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        raise ApiError(400, "validation_error", f"At most {MAX_RANGE_DAYS} days at a time.", field="from")
    return start, end


def _day(text: str, name: str) -> date:
    try:
        if len(text) != 10:
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise ApiError(400, "validation_error", f"{name} must be a date as YYYY-MM-DD.", field=name) from None


def funnel_rows(
    app_id: int, start: date, end: date, *, template_id: str | None = None, formid_template: bool = False
):
    """The one aggregate query of ``daily_funnel``: {day, counters…} per day that has rows, GROUP BY day.
    Without ``template_id`` the app's rows ("" included) by the (app, day) index; for one template its own
    rows by the unique (app, template_id, day) index, and a formId template's credits from the "" row."""
    rows = TemplateDailyStat.objects.filter(app_id=app_id, day__gte=start, day__lte=end)
    if template_id is None:
        sums = {name: Sum(name) for name in COUNTERS}
    elif formid_template:
        rows = rows.filter(template_id__in=[template_id, FORMID_TEMPLATE])
        own = Q(template_id=template_id)
        sums = {name: Sum(name, filter=own) for name in COUNTERS}
        sums["credits_collected"] = Sum("credits_collected", filter=Q(template_id=FORMID_TEMPLATE))
    else:
        rows = rows.filter(template_id=template_id)
        sums = {name: Sum(name) for name in COUNTERS}
    return rows.order_by().values("day").annotate(**sums)


def daily_funnel(
    app_id: int, start: date, end: date, *, template_id: str | None = None, formid_template: bool = False
) -> list[dict]:
    """Every UTC day from ``start`` to ``end`` (both included, days without a row as zeros) with its
    counters: summed over the app's templates ("" included) without ``template_id``, else the template's
    (``funnel_rows``: one query, at most 366 rows a template read)."""
    rows = funnel_rows(app_id, start, end, template_id=template_id, formid_template=formid_template)
    found = {row["day"]: row for row in rows}
    days = []
    for offset in range((end - start).days + 1):
        day = start + timedelta(days=offset)
        row = found.get(day, {})
        days.append({"date": day.isoformat(), **{name: row.get(name) or 0 for name in COUNTERS}})
    return days


def totals(days: list[dict]) -> dict[str, int]:
    """The counters summed over ``days`` (the funnel chart's bars)."""
    return {name: sum(day[name] for day in days) for name in COUNTERS}


CHART_RANGES = (7, 30, 90)  # the dashboard's range choices, in days


def chart_range(value: str | None) -> int:
    """The dashboard's ``?days=``: one of CHART_RANGES, else the default 30."""
    return int(value) if value in {str(n) for n in CHART_RANGES} else DEFAULT_RANGE_DAYS


def chart_data(
    app_id: int, days: int, *, template_id: str | None = None, formid_template: bool = False
) -> dict:
    """The last ``days`` UTC days (today included) for the dashboard's charts: each day as the stats endpoint
    gives it, the totals over the range (the funnel's bars) and each day's open rate (opened / sent, None on
    a day without sends)."""
    end = timezone.now().date()
    start = end - timedelta(days=days - 1)
    series = daily_funnel(app_id, start, end, template_id=template_id, formid_template=formid_template)
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "days": series,
        "totals": totals(series),
        "open_rate": [round(day["opened"] / day["sent"], 4) if day["sent"] else None for day in series],
    }

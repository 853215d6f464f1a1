"""A chunk whose database connection drops, or whose Redis is unreachable, loses nothing: answers already
had are written (again on a new connection), sends not started wait for a later run. The whole stack under
these faults, with a 20,000-user broadcast, is tests/faults (make test-faults)."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection

from pushhub.wechat.sandbox import services as sandbox
from templates_app import tasks
from templates_app.delivery import chunk, ledger
from templates_app.models import Delivery

from .helpers import assert_counters_match_rows, inbox_counts, make_push, seed_users

pytestmark = pytest.mark.django_db(transaction=True)


def _terminate(pid: int) -> None:
    """pg_terminate_backend from a connection of its own: the backend ``pid`` is gone at its next query."""
    conf = connection.settings_dict
    with psycopg.connect(
        dbname=conf["NAME"], user=conf["USER"], host=conf["HOST"] or "127.0.0.1", port=conf["PORT"] or 5432,
        autocommit=True,
    ) as admin:  # fmt: skip
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="drops a PostgreSQL connection")
def test_answers_are_written_on_a_new_connection_when_the_database_drops_the_old_one(
    app, subscribe_template, task_queue, monkeypatch
):
    users = seed_users(app, 6, subscribe=subscribe_template)
    push = make_push(subscribe_template, users)
    real_write, writes, dropped = ledger.write, [], []

    def drop_inside_the_transaction(execute, sql, params, many, context):
        # Inside the write's transaction: behind pgbouncer in transaction mode (make test-pgbouncer) a server
        # connection dropped between transactions is replaced unseen; one dropped in a transaction is not.
        if not dropped and connection.in_atomic_block:
            dropped.append(True)
            _terminate(connection.connection.execute("SELECT pg_backend_pid()").fetchone()[0])
        return execute(sql, params, many, context)

    def write_after_the_connection_dropped(push, outcomes):
        # The sends have been answered; the connection dies while their outcomes are written (once).
        if outcomes:
            writes.append(len(outcomes))
            if len(writes) == 1:
                with connection.execute_wrapper(drop_inside_the_transaction):
                    return real_write(push, outcomes)
        return real_write(push, outcomes)

    monkeypatch.setattr(ledger, "write", write_after_the_connection_dropped)
    tasks.deliver_push(str(push.pk))
    task_queue.run()

    assert writes[0] == writes[1] == 6  # the first write failed with the connection; the second went through
    assert inbox_counts(app.appid) == dict.fromkeys(users, 1)
    rows = Delivery.objects.filter(push=push)
    # Subscribe credits are never sent twice: had the answers been lost, these would be "timeout_ambiguous".
    assert sorted(rows.values_list("status", "errcode")) == [("sent", "")] * 6
    assert all(msgid for msgid in rows.values_list("msgid", flat=True))
    assert_counters_match_rows(push)


def test_with_redis_unreachable_a_chunk_sends_nothing_and_loses_nothing(
    app, formid_template, task_queue, settings
):
    users = seed_users(app, 5, formids=1)
    push = make_push(formid_template, users)
    ids = list(Delivery.objects.filter(push=push).values_list("pk", flat=True))
    working_caches = settings.CACHES
    settings.CACHES = {  # a Redis that refuses every connection (the discard port)
        **working_caches,
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:9/0",
        },
    }

    report = tasks.deliver_chunk(str(push.pk), ids)

    assert report["sent"] == 0 and report["requeued"] == 5
    assert sandbox.stats(app.appid)["sends_by_errcode"] == {}
    assert list(Delivery.objects.filter(push=push).values_list("status", "attempts").distinct()) == [
        ("pending", 0)
    ]
    [(task, args, countdown)] = task_queue.history
    assert (task, sorted(args[1]), countdown) == ("deliver_chunk", sorted(ids), 2.0)

    settings.CACHES = working_caches  # Redis is back: the queued chunk delivers every message once
    task_queue.run()
    assert inbox_counts(app.appid) == dict.fromkeys(users, 1)
    assert_counters_match_rows(push)


def test_a_chunks_answers_are_written_a_batch_at_a_time(app, formid_template, task_queue, monkeypatch):
    """A worker that dies mid-chunk takes at most a batch of unrecorded answers with it, not the chunk."""
    monkeypatch.setattr(chunk, "FLUSH_ANSWERS", 8)  # SEND_CONCURRENCY is 8 in these tests
    users = seed_users(app, 40, formids=1)
    push = make_push(formid_template, users)
    real_write, sent_rows_seen = ledger.write, []

    def counting_write(push, outcomes):
        if outcomes:
            sent_rows_seen.append(Delivery.objects.filter(push=push, status="sent").count())
        return real_write(push, outcomes)

    monkeypatch.setattr(ledger, "write", counting_write)
    tasks.deliver_push(str(push.pk))
    task_queue.run()

    # The first write took a batch, not all 40 answers: the second saw some rows sent and some not.
    assert len(sent_rows_seen) >= 2 and 0 < sent_rows_seen[1] < 40
    assert sent_rows_seen == sorted(sent_rows_seen) and sent_rows_seen[0] == 0
    assert inbox_counts(app.appid) == dict.fromkeys(users, 1)
    assert_counters_match_rows(push)

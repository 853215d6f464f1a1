"""PushHub behind pgbouncer in transaction mode (README "Operations: pgbouncer"): nothing of ours outlives a
transaction on the server. These run everywhere; `make test-pgbouncer` (tests/pgbouncer.py) also runs them, with
the send path's tests, through a pgbouncer that DISCARDs ALL after every transaction, where the last ones show
that such a pooler really forgets whatever a session kept, so the suite would catch code that relied on it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
THROUGH_PGBOUNCER = settings.DATABASE_POOL_MODE == "transaction"
postgresql_only = pytest.mark.skipif("connection.vendor != 'postgresql'", reason="PostgreSQL's sessions")
through_pgbouncer_only = pytest.mark.skipif(
    not THROUGH_PGBOUNCER,
    reason="what the pooler of `make test-pgbouncer` does (DATABASE_POOL_MODE=transaction)",
)

# Statements that leave state in the server session, as our SQL would spell them (upper case): a session-level
# advisory lock (the _xact_ ones end with the transaction and are fine), LISTEN/NOTIFY, temp tables, held
# cursors, a SET that is not SET LOCAL at the start of a statement, and named (server-side) cursors.
SESSION_STATE = re.compile(
    r"pg_(try_)?advisory_lock(_shared)?\s*\(|\bLISTEN\s|\bUNLISTEN\b|pg_notify\s*\(|\bNOTIFY\s"
    r"|CREATE\s+(TEMP|TEMPORARY)\s|\bWITH\s+HOLD\b|[\"']\s*SET\s+(?!LOCAL\b)|\.cursor\(\s*name\s*="
    r"|\bchunked_cursor\b|\bDISCARD\s|\bPREPARE\s"
)
SOURCES = ("pushhub", "tenants", "formids", "templates_app", "webhooks", "bench", "tests")
# The session settings allowed, each where it is sent in DATABASE_POOL_MODE=session only: the one sent at connect,
# where prepared statements (session state too) are used (test_generic_plans_only_where_statements_are_prepared
# shows it is never sent otherwise), and a test's of the upload's prepared plan (skipped in transaction mode).
SESSION_MODE_ONLY = {
    "pushhub/postgresql/base.py": 'PLAN_CACHE_MODE_SQL = "SET plan_cache_mode = force_generic_plan"',
    "tests/plans.py": (
        'EXPLAIN_EVERY_STATEMENT = "SET {scope}auto_explain.log_min_duration = 0; SET {scope}client_min_messages = log"'
    ),
}


def test_the_code_keeps_no_state_in_the_database_session():
    """A session SET, an advisory lock held past its statement, LISTEN, a temp table or a held cursor would work
    on PostgreSQL directly and break behind pgbouncer in transaction mode: none is written anywhere."""
    exempt = {Path(__file__).resolve(), ROOT / "tests" / "pgbouncer.py"}  # the pooler and its checks
    found = []
    for package in SOURCES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.resolve() in exempt or "node_modules" in path.parts:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if SESSION_MODE_ONLY.get(str(path.relative_to(ROOT))) == line.strip():
                    continue
                if SESSION_STATE.search(line) and not line.lstrip().startswith("#"):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []


def prepared_statements() -> list[str]:
    with connection.cursor() as cursor:  # the same transaction, so the same server session behind pgbouncer
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


@postgresql_only
@pytest.mark.django_db
def test_django_prepares_no_statement_on_the_server():
    """Django's psycopg backend connects with prepare_threshold=None, and its default cursor is psycopg's
    ClientCursor (parameters bound on the client), which never prepares: a query run again and again is never
    PREPAREd on the server (psycopg's own default, its server-binding Cursor, would after 5 runs). Only
    ``pushhub.sql.prepared_cursor`` prepares, and only in DATABASE_POOL_MODE=session."""
    User = get_user_model()
    User.objects.create_user("someone@acme.test", "someone@acme.test", "correct horse battery")
    for _ in range(10):
        assert User.objects.filter(username="someone@acme.test").count() == 1
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM auth_user WHERE username = %s", ["someone@acme.test"])
            assert cursor.fetchone() == (1,)
    assert not [sql for sql in prepared_statements() if "auth_user" in sql]
    if THROUGH_PGBOUNCER:
        assert connection.connection.prepare_threshold is None
        assert prepared_statements() == []


@postgresql_only
@pytest.mark.django_db
@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_prepared_cursor_prepares_only_when_sessions_are_kept(pool_mode, settings):
    """``pushhub.sql.prepared_cursor``: planned once per connection when each connection is a session of its
    own (DATABASE_POOL_MODE=session), Django's cursor behind a pooler in transaction mode; the same answers
    either way, timestamps in UTC."""
    from pushhub.sql import prepared_cursor

    if pool_mode == "session" and THROUGH_PGBOUNCER:
        pytest.skip(
            "the pooler of `make test-pgbouncer` forgets prepared statements: session mode is not tested there"
        )
    settings.DATABASE_POOL_MODE = pool_mode
    sql = "SELECT %(n)s::int + 1, now(), 'prepared_cursor probe'"
    for n in range(3):
        with prepared_cursor() as cursor:
            cursor.execute(sql, {"n": n})
            plus_one, now, _ = cursor.fetchone()
        assert plus_one == n + 1
        assert now.utcoffset().total_seconds() == 0
    probes = [statement for statement in prepared_statements() if "prepared_cursor probe" in statement]
    assert len(probes) == (1 if pool_mode == "session" else 0), probes


@postgresql_only
@pytest.mark.django_db
def test_generic_plans_only_where_statements_are_prepared():
    """Straight to PostgreSQL (session mode) each connection plans a prepared statement once; behind the pooler in
    transaction mode the session keeps PostgreSQL's default (the SET is never sent there)."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW plan_cache_mode")
        mode = cursor.fetchone()[0]
    assert mode == ("auto" if THROUGH_PGBOUNCER else "force_generic_plan")


@postgresql_only
@pytest.mark.django_db
@pytest.mark.parametrize("server_side_binding", [False, True])
def test_no_generic_plans_forced_when_django_binds_on_the_server(server_side_binding, monkeypatch):
    """With OPTIONS server_side_binding every Django query with parameters is bound on the server: forcing generic
    plans would plan those blind to their values, so a new connection is left with PostgreSQL's default there."""
    if THROUGH_PGBOUNCER:
        pytest.skip("transaction mode: the setting is never sent (test_generic_plans_only_where_…)")
    options = {**connection.settings_dict["OPTIONS"], "server_side_binding": server_side_binding}
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", options)
    raw = connection.get_new_connection(connection.get_connection_params())
    try:
        connection._configure_connection(raw)
        with raw.cursor() as cursor:
            cursor.execute("SHOW plan_cache_mode")
            mode = cursor.fetchone()[0]
    finally:
        raw.close()
    assert mode == ("auto" if server_side_binding else "force_generic_plan")


@postgresql_only
@pytest.mark.django_db
def test_prepared_cursor_leaves_long_arrays_to_django_s_cursor(settings):
    """A statement given an array longer than PREPARED_ARRAY_LIMIT is not prepared: PostgreSQL's generic plan of
    a prepared statement is costed for about ten elements, and for a 500-row chunk it was seven times slower.
    The same statement with a short array is prepared; both give the same answers."""
    from pushhub.sql import PREPARED_ARRAY_LIMIT, pg_array, prepared_cursor

    if THROUGH_PGBOUNCER:
        pytest.skip("the pooler of `make test-pgbouncer` forgets prepared statements")
    settings.DATABASE_POOL_MODE = "session"
    for marker, length in [
        ("long array probe", PREPARED_ARRAY_LIMIT + 1),
        ("short array probe", PREPARED_ARRAY_LIMIT),
    ]:
        ids = list(range(1, length + 1))
        with prepared_cursor(len(ids)) as cursor:
            cursor.execute(
                f"SELECT sum(v), '{marker}' FROM unnest(%s::bigint[]) AS v", [pg_array(ids, "bigint")]
            )
            assert cursor.fetchone()[0] == sum(ids)
    prepared = "\n".join(prepared_statements())
    assert "short array probe" in prepared
    assert "long array probe" not in prepared


@postgresql_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("server_side_binding", [False, True], ids=["client-binding", "server-binding"])
def test_a_query_run_many_times_in_autocommit_needs_no_session(server_side_binding):
    """Either of Django's cursors (OPTIONS server_side_binding: psycopg's Cursor, which would prepare a query run
    5 times but for prepare_threshold=None), each statement its own transaction: behind the strict pooler every
    one lands on a reset server connection, and all of them answer."""
    params = connection.get_connection_params()
    if server_side_binding:
        from django.db.backends.postgresql.base import ServerBindingCursor

        params["cursor_factory"] = ServerBindingCursor
    with psycopg.connect(**params, autocommit=True) as conn:
        answers = [conn.execute("SELECT %s::int + 1", [n]).fetchone()[0] for n in range(12)]
        with conn.transaction():
            prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]
    assert answers == list(range(1, 13))
    assert prepared == 0


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_iterator_reads_every_row_outside_a_transaction():
    """QuerySet.iterator() in autocommit: with DATABASE_POOL_MODE=transaction a plain query, read in chunks on
    the client, since the DECLARE … WITH HOLD / FETCH pairs of a server-side cursor span transactions."""
    User = get_user_model()
    names = [f"user{n}@acme.test" for n in range(7)]
    for name in names:
        User.objects.create_user(name, name, "correct horse battery")
    assert connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS", False) is THROUGH_PGBOUNCER
    assert [u.username for u in User.objects.order_by("username").iterator(chunk_size=2)] == names


def _settings_of(**env: str) -> subprocess.CompletedProcess:
    script = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.DATABASES['default'].get('DISABLE_SERVER_SIDE_CURSORS', False))"
    )
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "pushhub.settings", **env},
    )  # fmt: skip


def test_the_pool_mode_setting():
    postgres = "postgres://postgres@127.0.0.1:5432/pushhub"
    assert _settings_of(DATABASE_URL=postgres, DATABASE_POOL_MODE="session").stdout.strip() == "False"
    assert _settings_of(DATABASE_URL=postgres, DATABASE_POOL_MODE="transaction").stdout.strip() == "True"
    refused = _settings_of(DATABASE_URL=postgres + "?prepare_threshold=5", DATABASE_POOL_MODE="transaction")
    assert refused.returncode != 0 and "prepare_threshold" in refused.stderr
    unknown = _settings_of(DATABASE_URL=postgres, DATABASE_POOL_MODE="statement")
    assert unknown.returncode != 0 and "DATABASE_POOL_MODE must be" in unknown.stderr


# --- The pooler of `make test-pgbouncer` catches what relies on the session ------------------------------


def _raw(**options) -> psycopg.Connection:
    """A connection of its own, through the same pooler as Django's, in autocommit: each statement is its own
    transaction, as in Django outside atomic()."""
    return psycopg.connect(**{**connection.get_connection_params(), **options}, autocommit=True)


@through_pgbouncer_only
@pytest.mark.django_db
def test_the_pooler_forgets_a_set_and_an_advisory_lock():
    with _raw() as conn:
        conn.execute("SET statement_timeout = '4321ms'")
        assert conn.execute("SHOW statement_timeout").fetchone()[0] != "4321ms"
        assert conn.execute("SELECT pg_try_advisory_lock(424242)").fetchone()[0] is True
        held = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 424242 AND granted"
        ).fetchone()[0]
    assert held == 0  # released with the transaction that took it: it excluded nobody


@through_pgbouncer_only
@pytest.mark.django_db
def test_the_pooler_fails_prepared_statements_and_held_cursors():
    # What DATABASE_URL's ?server_side_binding=true&prepare_threshold=0 would do (Django's default cursor, psycopg's
    # ClientCursor, never prepares, whatever prepare_threshold says).
    with _raw(prepare_threshold=0, cursor_factory=psycopg.Cursor) as conn:
        with pytest.raises(
            psycopg.errors.InvalidSqlStatementName
        ):  # psycopg PREPAREs, then the pooler resets
            conn.execute("SELECT count(*) FROM auth_user WHERE username = %s", ["someone"])
    with _raw() as conn:  # what QuerySet.iterator() does without DISABLE_SERVER_SIDE_CURSORS
        with pytest.raises(psycopg.errors.InvalidCursorName), conn.cursor("rows", withhold=True) as cursor:
            cursor.execute("SELECT generate_series(1, 10)")
            cursor.fetchmany(2)

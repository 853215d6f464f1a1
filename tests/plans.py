"""PostgreSQL's plans of the statements a block runs (auto_explain, sent to the client as notices), for the tests
of statements whose plan must not depend on the statistics of the moment or on a plan kept from small tables."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.conf import settings
from django.db import connection

# Every statement's plan, to the client (``scope``: "LOCAL " in a transaction, or "" for the session).
EXPLAIN_EVERY_STATEMENT = "SET {scope}auto_explain.log_min_duration = 0; SET {scope}client_min_messages = log"


@contextmanager
def explained_plans() -> Iterator[list[str]]:
    """``with explained_plans() as plans:``: each statement run in the block adds its plan's text to ``plans``.

    In a transaction (a test's own) the settings are ``SET LOCAL`` and are put back after. Outside one they are
    the session's, and the connection is closed after the block so that they go with it: a test using it that
    way runs in session mode only (behind pgbouncer in transaction mode the next client would get them)."""
    scope = "LOCAL " if connection.in_atomic_block else ""
    if not scope and settings.DATABASE_POOL_MODE != "session":
        pytest.skip("session settings: session mode only")
    connection.ensure_connection()
    plans: list[str] = []

    def collect(diagnostic) -> None:
        plans.append(diagnostic.message_primary or "")

    raw = connection.connection
    raw.add_notice_handler(collect)
    with connection.cursor() as cursor:
        try:
            cursor.execute("LOAD 'auto_explain'")
        except Exception:
            pytest.skip("auto_explain is not installed")
        cursor.execute(EXPLAIN_EVERY_STATEMENT.format(scope=scope))
    try:
        yield plans
    finally:
        raw.remove_notice_handler(collect)
        if scope:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SET LOCAL client_min_messages = notice; SET LOCAL auto_explain.log_min_duration = -1"
                )
        else:
            connection.close()


def plan_of(plans: list[str], statement_start: str) -> str:
    """The one plan whose statement contains ``statement_start``."""
    [plan] = [p for p in plans if statement_start in p]
    return plan


def table_reads(plan: str, table: str) -> list[str]:
    """The plan's lines that read ``table`` (its scans, not the node that updates it)."""
    lines = [line.strip() for line in plan.splitlines()]
    return [
        line for line in lines if f" on {table}" in line and not line.startswith(("Update on", "Insert on"))
    ]

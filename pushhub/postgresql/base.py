"""Django's PostgreSQL backend (``ENGINE = "pushhub.postgresql"``), with a cheaper per-request health check and,
straight to PostgreSQL, the prepared statements' plans made once.

With ``CONN_HEALTH_CHECKS`` Django runs ``SELECT 1`` on a persistent connection before the first query of
every request (and of every Celery task), so a connection the server dropped meanwhile is replaced instead of
failing the request. That round trip was a tenth of the CPU of an SDK upload's request, and a statement more
for PostgreSQL each time.

The check here first asks the operating system: an idle connection the server dropped has something to read
(PostgreSQL's FATAL message, pgbouncer's error, then the end of the stream) or is already marked bad by psycopg.
A connection left in an aborted transaction is not quiet either: ``SELECT 1`` would fail there.
Nothing to read and a good status: the connection is used as it is, as after a successful ``SELECT 1``. Anything
else: Django's own check (``SELECT 1``) decides, and closes it if it fails. What neither can see, a peer gone
without a word (a cable cut), a ``SELECT 1`` would only have waited on too.
"""

from __future__ import annotations

import select

from django.conf import settings
from django.db.backends.postgresql import base

# The statements ``pushhub.sql.prepared_cursor`` prepares are fixed ones, given arrays of at most
# PREPARED_ARRAY_LIMIT items: planned once (the generic plan, costed for about ten items) is what they are
# prepared for. Left to choose, PostgreSQL re-planned every one of them that takes an array, at every run: a
# plan for one id is always cheaper on paper than the generic plan for ten, so after its five trial custom
# plans it never switched (pg_prepared_statements: generic_plans 0). That was five of a one-user push's
# statements, each planned at each run. Django's own statements are not prepared, so this changes nothing
# for them.
PLAN_CACHE_MODE_SQL = "SET plan_cache_mode = force_generic_plan"


class DatabaseWrapper(base.DatabaseWrapper):
    def _configure_connection(self, connection):
        # At connect, as Django sets the connection's time zone and role. Only where prepared statements are
        # used (DATABASE_POOL_MODE=session: PostgreSQL itself, or a pgbouncer in session mode, whose
        # server_reset_query clears it when the client leaves); behind a pooler in transaction mode nothing
        # is prepared, and nothing may be left in the session.
        # Not with OPTIONS server_side_binding either: there every Django query with parameters is a statement
        # the server binds, and it would get a generic plan too, blind to its values.
        commit = super()._configure_connection(connection)
        if settings.DATABASE_POOL_MODE != "session" or self.settings_dict["OPTIONS"].get(
            "server_side_binding"
        ):
            return commit
        with connection.cursor() as cursor:
            cursor.execute(PLAN_CACHE_MODE_SQL)
        return True

    def close_if_health_check_failed(self):
        if (
            self.connection is not None
            and self.health_check_enabled
            and not self.health_check_done
            and not self.pool
            and _quiet(self.connection)
        ):
            self.health_check_done = True
            return
        super().close_if_health_check_failed()


# libpq's PQtransactionStatus values in which a connection that sent nothing takes a statement as it is: idle,
# or inside a transaction of Django's own (an atomic block). Not "in error": there ``SELECT 1`` fails, so
# Django's check would have replaced the connection; nor "active" (a query still running) or "unknown".
_USABLE_TRANSACTION_STATUSES = frozenset({0, 2})  # PQTRANS_IDLE, PQTRANS_INTRANS


def _quiet(connection) -> bool:
    """The psycopg connection is open, in a good state outside an aborted transaction, and the server has sent
    it nothing since its last answer (an idle connection is only ever sent something when it is being closed)."""
    try:
        pgconn = connection.pgconn
        if connection.closed or pgconn.status != 0:  # 0: CONNECTION_OK
            return False
        if pgconn.transaction_status not in _USABLE_TRANSACTION_STATUSES:
            return False
        poller = select.poll()
        poller.register(pgconn.socket, select.POLLIN | select.POLLPRI)
        return not poller.poll(0)  # POLLHUP and POLLERR are always reported
    except Exception:  # a socket psycopg can no longer give, or any surprise: let SELECT 1 decide
        return False

"""The per-request health check of pushhub.postgresql: no SELECT 1 on a quiet connection, and a connection the
server dropped is still replaced before a query uses it (real PostgreSQL; its own statistics tell which
statement a backend ran last)."""

from __future__ import annotations

import select
import time

import pytest
from django.db import connection, connections
from django.db.backends.postgresql import base as django_postgresql

from tenants.models import Tenant

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's backend"),
]


@pytest.fixture
def observer():
    """A second connection to the test database, to watch and end the first one's backend."""
    other = connections.create_connection("default")
    yield other
    other.close()


def last_statement(observer, pid: int) -> str:
    with observer.cursor() as cursor:
        cursor.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone()[0]


def new_request() -> None:
    """What Django does between two requests (or Celery tasks) on a persistent connection."""
    connection.health_check_enabled = True
    connection.health_check_done = False


def test_the_engine_is_ours():
    assert connection.settings_dict["ENGINE"] == "pushhub.postgresql"


def test_a_quiet_connection_is_used_as_it_is_without_a_select_1(observer):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 'the request before'")
    pid = connection.connection.info.backend_pid

    new_request()
    connection.close_if_health_check_failed()
    assert connection.health_check_done
    assert connection.connection is not None and connection.connection.info.backend_pid == pid
    assert last_statement(observer, pid) == "SELECT 'the request before'"  # nothing was sent

    new_request()  # Django's own check, for comparison: one more statement each time
    django_postgresql.DatabaseWrapper.close_if_health_check_failed(connections["default"])
    assert last_statement(observer, pid) == "SELECT 1"


def test_a_connection_the_server_dropped_is_replaced_before_a_query_uses_it(observer):
    Tenant.objects.exists()
    pid = connection.connection.info.backend_pid
    with observer.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        assert cursor.fetchone()[0] is True
    # The server's goodbye (a FATAL message, then the end of the stream) reaches the socket.
    poller = select.poll()
    poller.register(connection.connection.pgconn.socket, select.POLLIN)
    deadline = time.monotonic() + 5
    while not poller.poll(50) and time.monotonic() < deadline:
        pass

    new_request()
    Tenant.objects.exists()  # no error: the check closed it and connected again
    assert connection.connection.info.backend_pid != pid


def test_a_connection_left_in_an_aborted_transaction_is_replaced_as_django_s_select_1_would(observer):
    """Quiet socket, good status, but a failed statement inside an open transaction: Django's SELECT 1 fails
    there and replaces the connection, so ours must not take it as it is."""
    Tenant.objects.exists()
    pgconn = connection.connection.pgconn
    pid = connection.connection.info.backend_pid
    pgconn.exec_(b"BEGIN")
    pgconn.exec_(b"SELECT 1/0")
    assert pgconn.transaction_status == 3  # PQTRANS_INERROR

    new_request()
    assert Tenant.objects.exists() is False  # no "current transaction is aborted": a new connection
    assert connection.connection.info.backend_pid != pid


def test_without_the_check_the_dropped_connection_fails_the_query(observer):
    """The case the check exists for (so the test above can fail)."""
    from django.db import OperationalError

    Tenant.objects.exists()
    pid = connection.connection.info.backend_pid
    with observer.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    time.sleep(0.2)
    connection.health_check_enabled = False
    connection.health_check_done = False
    with pytest.raises(OperationalError):
        Tenant.objects.exists()
    connection.close()

"""`make test-pgbouncer`: the send path's tests with every database connection going through a pgbouncer in
transaction mode (README "Operations: pgbouncer").

It starts a pgbouncer of its own (a temporary directory, a free port on 127.0.0.1, `pool_mode = transaction`, every
database passed on to the PostgreSQL of DATABASE_URL), runs the delivery tests, the send and SDK-ingest tests and
tests/test_pgbouncer.py with DATABASE_URL pointed at it and DATABASE_POOL_MODE=transaction, then stops it.

It is stricter than a production pgbouncer on purpose: `server_reset_query = DISCARD ALL` runs after every
transaction (`server_reset_query_always`), so whatever a transaction leaves in its server session (a SET, an
advisory lock, a prepared statement, a held cursor, a LISTEN, a temp table) is gone before the next one, on any
connection, every time. Code that depends on it fails here deterministically, not only under load when another
client happens to get the server connection in between.

Django creates the test database through pgbouncer (CREATE DATABASE and the migrations go through it). It cannot
drop it through it: pgbouncer keeps idle server connections to it, and DROP DATABASE refuses a database in use.
So pytest runs with --reuse-db (no drop at the end) and this runner drops the test database directly on
PostgreSQL, before (a leftover of an interrupted run) and after, once pgbouncer is stopped.

    python -m tests.pgbouncer                       # the default suite
    python -m tests.pgbouncer tests/test_send.py -x # other pytest arguments instead
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

BASE_DIR = Path(__file__).resolve().parent.parent

# What exercises the send path and SDK ingest: the delivery pipeline (real Celery workers included), trigger
# URLs and the API send, audiences, credits arriving from the SDK and WeChat events, claims, long-term
# subscriptions, the sandbox phone's taps over HTTP, SDK login, quotas, the webhook outbox and its workers, and
# the checks that the pooler forgets session state.
SUITE = [
    "tests/test_pgbouncer.py",
    "tests/delivery",
    "tests/test_send.py",
    "tests/test_send_audience.py",
    "tests/test_sdk_credits.py",
    "tests/test_credit_claims.py",
    "tests/test_long_term.py",
    "tests/test_wechat_events.py",
    "tests/test_phone_flow.py",
    "tests/test_sdk_login.py",
    "tests/test_quota_api.py",
    "tests/webhooks",
]

# Enough server connections for the tests' live servers (a thread per request), two Celery workers of two
# threads each and the test itself holding a transaction, with room to spare; far below max_connections (100).
POOL_SIZE = 20
CONFIG = """\
[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
pool_mode = transaction
auth_type = trust
auth_file = {directory}/userlist.txt
admin_users = {user}
default_pool_size = {pool_size}
max_db_connections = {max_db}
max_client_conn = 500
server_reset_query = DISCARD ALL
server_reset_query_always = 1
query_wait_timeout = 60
logfile = {directory}/pgbouncer.log
pidfile = {directory}/pgbouncer.pid
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"pgbouncer exited ({process.returncode}):\n{log.read_text(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"pgbouncer did not listen on {port} within {timeout:.0f} s")


def drop_database(direct: dict, name: str) -> None:
    """On PostgreSQL itself (not through pgbouncer): FORCE ends whatever still holds the database."""
    with psycopg.connect(**{**direct, "dbname": "postgres"}, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class PoolWatch:
    """Samples pgbouncer's SHOW POOLS for the test database while the tests run (the peaks size a real pool),
    and reads SHOW STATS at the end. Its admin console speaks only the simple query protocol: libpq's exec."""

    def __init__(self, port: int, user: str, database: str):
        self.admin = psycopg.connect(
            host="127.0.0.1", port=port, user=user, dbname="pgbouncer", autocommit=True
        )
        self.database = database
        self.peak = {"cl_active": 0, "cl_waiting": 0, "sv_active": 0, "maxwait_s": 0.0}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _rows(self, command: str) -> list[dict[str, str]]:
        result = self.admin.pgconn.exec_(command.encode())
        names = [result.fname(i).decode() for i in range(result.nfields)]
        return [
            {name: (result.get_value(row, i) or b"").decode() for i, name in enumerate(names)}
            for row in range(result.ntuples)
        ]

    def _sample(self) -> None:
        while not self.stop.wait(0.2):
            for row in self._rows("SHOW POOLS"):
                if row["database"] == self.database:
                    for key in ("cl_active", "cl_waiting", "sv_active"):
                        self.peak[key] = max(self.peak[key], int(row[key]))
                    waited = int(row["maxwait"]) + int(row["maxwait_us"]) / 1e6
                    self.peak["maxwait_s"] = max(self.peak["maxwait_s"], waited)

    def summary(self) -> str:
        self.stop.set()
        self.thread.join()
        stats = next((row for row in self._rows("SHOW STATS") if row["database"] == self.database), None)
        self.admin.close()
        if stats is None:
            return "pgbouncer saw no traffic to the test database"
        transactions, queries = int(stats["total_xact_count"]), int(stats["total_query_count"])
        average = int(stats["total_xact_time"]) / max(transactions, 1) / 1000
        peak = self.peak
        return (
            f"through pgbouncer: {transactions:,} transactions, {queries:,} queries, {average:.1f} ms a transaction "
            f"on average; at most {peak['cl_active']} client connections at once, {peak['sv_active']} server "
            f"connections in use (pool {POOL_SIZE}), {peak['cl_waiting']} clients waiting for one, the longest "
            f"{peak['maxwait_s']:.2f} s"
        )


def main(argv: list[str]) -> int:
    url = os.environ.get("DATABASE_URL", "")
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql", "pgsql"}:
        raise SystemExit(
            "make test-pgbouncer needs DATABASE_URL=postgres://… (the PostgreSQL behind pgbouncer)"
        )
    binary = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if binary is None:
        raise SystemExit("pgbouncer not found: apt-get install pgbouncer (.ci/run does)")

    user = unquote(parts.username or "postgres")
    password = unquote(parts.password or "")
    host, port, name = parts.hostname or "127.0.0.1", parts.port or 5432, parts.path.lstrip("/")
    direct = {"host": host, "port": port, "user": user, "password": password or None}
    test_database = f"test_{name}"  # Django's name for the test database of NAME

    directory = Path(tempfile.mkdtemp(prefix="pushhub-pgbouncer-"))
    listen_port = free_port()
    (directory / "userlist.txt").write_text(f'"{user}" "{password}"\n')
    (directory / "pgbouncer.ini").write_text(
        CONFIG.format(
            host=host, port=port, listen_port=listen_port, directory=directory, user=user,
            pool_size=POOL_SIZE, max_db=POOL_SIZE + 10,
        )
    )  # fmt: skip
    command = [binary, str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:  # pgbouncer refuses to run as root: as the postgres (or nobody) account instead
        account = next(a for a in ("postgres", "nobody") if _exists(a))
        shutil.chown(directory, account)
        for path in directory.iterdir():
            shutil.chown(path, account)
        command[1:1] = ["-u", account]

    drop_database(direct, test_database)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for_port(listen_port, process, directory / "pgbouncer.log")
        credentials, at, _ = parts.netloc.rpartition("@")
        through = urlunsplit(parts._replace(netloc=f"{credentials}{at}127.0.0.1:{listen_port}"))
        print(
            f"pgbouncer {listen_port} (transaction mode, DISCARD ALL after every transaction) → {host}:{port}",
            flush=True,
        )
        env = {**os.environ, "DATABASE_URL": through, "DATABASE_POOL_MODE": "transaction"}
        pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--reuse-db", *(argv or SUITE)]  # fmt: skip
        watch = PoolWatch(listen_port, user, test_database)
        code = subprocess.call(pytest, cwd=BASE_DIR, env=env)
        print(watch.summary())
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log = (directory / "pgbouncer.log").read_text(errors="replace")
        shutil.rmtree(directory, ignore_errors=True)
        drop_database(direct, test_database)
    if code:
        print("pgbouncer's log, last lines:\n" + "\n".join(log.splitlines()[-30:]))
    return code


def _exists(account: str) -> bool:
    try:
        pwd.getpwnam(account)
        return True
    except KeyError:
        return False


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The fuzz run's tally: answers per operation and status, printed at the end of the run."""

from __future__ import annotations

import sys


def pytest_terminal_summary(terminalreporter):
    fuzz = sys.modules.get("tests.fuzz.test_api_schema")  # only if it ran: importing it loads the schema
    if fuzz is None or not fuzz.CALLS:
        return
    terminalreporter.section("schemathesis: answers per operation (by HTTP status)")
    for label, statuses in sorted(fuzz.CALLS.items()):
        counts = ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items()))
        terminalreporter.write_line(f"{sum(statuses.values()):5d}  {label:52s} {counts}")
    total = sum(sum(statuses.values()) for statuses in fuzz.CALLS.values())
    terminalreporter.write_line(f"{total:5d}  requests to {len(fuzz.CALLS)} operations")

"""``python -m bench [--full] [--only NAME ...]``: every benchmark, one after another, each printing its table.

The quick run (default) takes about three minutes on 2 cores; ``--full`` runs the 100k broadcast (and its plot,
docs/bench-broadcast.png, and again with webhooks on), 10M credits for the claims, longer ingest and trigger
runs, and 20,000 webhook events (to one endpoint, then spread over the webhook worker's threads). Exits 1 when any
correctness check failed (a target missed is reported in the tables, not an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

BENCHMARKS = (
    "broadcast",
    "ingest",
    "trigger",
    "claims",
    "webhooks",
    "holds",
    "opens",
    "inbox",
    "stats",
    "fairness",
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="the full sizes (100k users, 10M credits)")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    args = parser.parse_args()
    failures: dict[str, list[str]] = {}
    started = time.monotonic()
    for name in args.only or BENCHMARKS:
        print(f"\n=== bench.{name} {'(full)' if args.full else '(quick)'} ===\n", flush=True)
        module = importlib.import_module(f"bench.{name}")
        failures[name] = module.run(full=args.full)
    print(f"\nall benchmarks done in {time.monotonic() - started:.0f} s", flush=True)
    failed = {name: found for name, found in failures.items() if found}
    for name, found in failed.items():
        print(f"FAILED checks in bench.{name}: " + "; ".join(found), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

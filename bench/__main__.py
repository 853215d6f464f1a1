"""``python -m bench [--full] [--only NAME ...] [--json FILE]``: every benchmark, one after another, each
printing its table.

The quick run (default) takes a few minutes on 2 cores; ``--full`` runs the 100k broadcast (and its plot,
docs/bench-broadcast.png, and again with webhooks on), 10M credits for the claims, longer ingest and trigger
runs, and 20,000 webhook events (to one endpoint, then spread over the webhook worker's threads). Exits 1 when any
correctness check failed (a target missed is reported in the tables, not an exit code).

``--json FILE`` also writes everything measured: the machine, each benchmark's duration and failed checks, every
table as printed, and the headline figures as numbers (name, value, unit, baseline, goal, met, context).
``python -m bench.report FILE`` turns that file into the README's tables.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import uuid
from pathlib import Path

from bench import common

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
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every figure to FILE (JSON)")
    parser.add_argument(
        "--append",
        action="store_true",
        help="with --json: add to FILE's figures (e.g. one benchmark at full size)",
    )
    args = parser.parse_args()
    failures: dict[str, list[str]] = {}
    durations: dict[str, float] = {}
    started = time.monotonic()
    machine = common.machine_facts()
    earlier = json.loads(args.json.read_text()) if args.append and args.json and args.json.exists() else None
    # One queue name for the whole run: this process reads Django's settings (its queues) once, in the first
    # benchmark, and a later one's workers must listen where it queues (with a name each, `--only trigger
    # broadcast` queued the broadcast where no worker listened).
    os.environ.setdefault("BENCH_QUEUE", f"bench-{uuid.uuid4().hex[:8]}")
    for name in args.only or BENCHMARKS:
        print(f"\n=== bench.{name} {'(full)' if args.full else '(quick)'} ===\n", flush=True)
        common.CURRENT_BENCHMARK["name"] = name
        began = time.monotonic()
        module = importlib.import_module(f"bench.{name}")
        environment = dict(os.environ)
        try:
            failures[name] = module.run(full=args.full)
        finally:
            # A benchmark may point the environment at its own database (bench.stats: BENCH_DATABASE_URL, a
            # database it drops at the end): the next one starts from the environment this run was given.
            os.environ.clear()
            os.environ.update(environment)
        durations[name] = time.monotonic() - began
        if args.json:  # after each benchmark: a run cut short still leaves what it measured
            write_json(args.json, machine, args.full, durations, failures, earlier)
    print(f"\nall benchmarks done in {time.monotonic() - started:.0f} s", flush=True)
    failed = {name: found for name, found in failures.items() if found}
    for name, found in failed.items():
        print(f"FAILED checks in bench.{name}: " + "; ".join(found), flush=True)
    if args.json:
        print(f"figures written to {args.json}", flush=True)
    sys.exit(1 if failed else 0)


def write_json(
    path: Path,
    machine: dict,
    full: bool,
    durations: dict[str, float],
    failures: dict[str, list[str]],
    earlier: dict | None = None,
) -> None:
    """The run's document; with ``earlier`` (``--append``), this run's benchmarks, figures and tables are added
    to that file's (a figure measured again is found last: ``bench.report`` takes the latest)."""
    runs = {
        name: {
            "seconds": round(durations[name], 1),
            "failed_checks": failures.get(name, []),
            "full": full,
            # which run measured it (with --append, the file's benchmarks come from several)
            "commit": machine.get("commit", ""),
            "started_at": machine.get("started_at", ""),
        }
        for name in durations
    }
    earlier = earlier or {}
    document = {
        "machine": machine,
        "earlier_runs": [*earlier.get("earlier_runs", []), earlier["machine"]]
        if earlier.get("machine")
        else [],
        "benchmarks": {**earlier.get("benchmarks", {}), **runs},
        "figures": [*earlier.get("figures", []), *common.RESULTS["figures"]],
        "tables": [*earlier.get("tables", []), *common.RESULTS["tables"]],
    }
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()

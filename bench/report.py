"""``python -m bench.report FILE [--readme README.md]``: the README's generated benchmark tables, from the JSON
that ``python -m bench --json FILE`` wrote.

Two tables, each between its markers in the README (``<!-- bench-report:NAME -->`` … ``<!-- /bench-report:NAME -->``):

- ``goals``: each headline figure of the performance issue as measured, its baseline from the same run, the
  goal, and whether it is met;
- ``scale-out``: deliveries per second per worker core, per PostgreSQL core and per Redis core, from the
  broadcast's CPU per delivery, and what a 10M-user broadcast needs on bigger machines.

Without ``--readme`` the tables are printed. Nothing here is measured: every number comes from FILE.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

Figure = dict[str, Any]


def find(figures: list[Figure], name: str, **context: Any) -> Figure | None:
    """The last figure called ``name`` whose context has these values (a later run of the same figure wins)."""
    found = [
        f for f in figures if f["name"] == name and all(f["context"].get(k) == v for k, v in context.items())
    ]
    return found[-1] if found else None


def biggest_broadcast(figures: list[Figure]) -> int | None:
    """The user count of the largest plain ``@all`` broadcast in the file (its per-delivery costs are the most
    representative: the enumeration's start-up is a smaller share)."""
    sizes = [
        f["context"]["users"]
        for f in figures
        if f["name"] == "broadcast.deliveries_per_s"
        and not f["context"].get("segment")
        and not f["context"].get("webhooks")
        and f["context"].get("kind", "formid") == "formid"
    ]
    return max(sizes) if sizes else None


def number(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:,.1f}"
    else:
        text = f"{value:,.2f}"
    return f"{text} {unit}".strip()


def met(f: Figure | None) -> str:
    if not f or f.get("met") is None:
        return ""
    return "met" if f["met"] else "**not met**"


def goal(f: Figure | None) -> str:
    if not f or f.get("goal") is None:
        return ""
    sign = "≥" if f.get("better", "higher") == "higher" else "≤"
    return f"{sign} {number(f['goal'], f['unit'])}"


def table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def goals_table(document: dict[str, Any]) -> str:
    figures = document["figures"]
    rows: list[tuple[str, ...]] = []

    def add(label: str, f: Figure | None, baseline_label: str = "") -> None:
        if f is None:
            return
        baseline = number(f.get("baseline"), f["unit"]) if f.get("baseline") is not None else ""
        if baseline and baseline_label:
            baseline = f"{baseline} ({baseline_label})"
        rows.append((label, f"**{number(f['value'], f['unit'])}**", baseline, goal(f), met(f)))

    plain = dict(segment=False, webhooks=[], kind="formid")
    sizes = sorted(
        {f["context"]["users"] for f in figures if f["name"] == "broadcast.deliveries_per_s"
         and all(f["context"].get(k) == v for k, v in plain.items())}
    )  # fmt: skip
    for users in sizes:
        add(f"`@all` broadcast to {users:,} users, fake WeChat at 20 ms: deliveries/s",
            find(figures, "broadcast.deliveries_per_s", users=users, **plain), "sequential `requests.post`")  # fmt: skip
    if sizes:
        users = sizes[-1]
        add(f"worker CPU per delivery ({users:,} users)",
            find(figures, "broadcast.worker_cpu_ms_per_delivery", users=users, **plain))  # fmt: skip
        add(f"PostgreSQL CPU per delivery ({users:,} users)",
            find(figures, "broadcast.postgres_cpu_ms_per_delivery", users=users, **plain))  # fmt: skip
    add(
        "SDK ingest, 20 formIds a request: formIds/s",
        find(figures, "ingest.formids_per_s"),
        "one formId a request",
    )
    add("the same: requests/s", find(figures, "ingest.requests_per_s"), "one formId a request")
    add("the same: server (gunicorn) CPU a request", find(figures, "ingest.server_cpu_ms_per_request"),
        "one formId a request")  # fmt: skip
    add("the same: PostgreSQL CPU a request", find(figures, "ingest.postgres_cpu_ms_per_request"),
        "one formId a request")  # fmt: skip
    # The goals' points (fake WeChat at 20 ms; a file from before the sends lane's point has no other).
    for rate in sorted({f["context"]["rate"] for f in figures if f["name"] == "trigger.accept_p99_ms"
                        and f["context"].get("latency_ms", 20.0) == 20.0}):  # fmt: skip
        add(f"trigger accept p99 at {rate:g}/s", find(figures, "trigger.accept_p99_ms", rate=rate, latency_ms=20.0),
            "calling WeChat directly")  # fmt: skip
        achieved = find(figures, "trigger.achieved_per_s", rate=rate, latency_ms=20.0)
        if achieved and achieved["value"] < 0.95 * rate:
            rows.append(
                (f"triggers/s achieved of {rate:g}/s asked", number(achieved["value"]), "", "", "**short**")
            )
        alone = find(figures, "trigger.web_alone.accept_p99_ms", rate=rate, latency_ms=20.0)
        if alone:  # no goal: the accept path's ceiling, with no worker running while the triggers come
            answered = find(figures, "trigger.web_alone.achieved_per_s", rate=rate, latency_ms=20.0)
            add(f"the same, the web alone (no worker running until the last answer; "
                f"{number(answered['value'] if answered else None)}/s answered)", alone, "calling WeChat directly")  # fmt: skip
    # The sends lane against a slower WeChat: no goal, its baseline is WeChat's own answer.
    for f in figures:
        if f["name"] in ("trigger.end_to_end_p50_ms", "trigger.end_to_end_p99_ms") and (
            f["context"].get("latency_ms", 20.0) != 20.0
        ):
            context = f["context"]
            add(f"one-user trigger end to end {f['name'].split('_')[-2]} at {context['rate']:g}/s, fake WeChat "
                f"at {context['latency_ms']:g} ms (the sends lane)", f, "calling WeChat directly")  # fmt: skip
    for f in figures:
        if f["name"].startswith("fairness.") and f.get("goal") is not None:
            add(f["context"].get("label") or f["name"], f, f["context"].get("baseline_label", ""))
    b_broadcast = find(figures, "fairness.b_broadcast_seconds")
    if b_broadcast:
        context = b_broadcast["context"]
        add(f"tenant B's {context.get('second', 0):,}-user broadcast behind A's {context.get('users', 0):,}: "
            "trigger → done", b_broadcast, "no per-tenant share")  # fmt: skip
    if not rows:
        return "No figures in the file.\n"
    return table(("figure", "measured", "baseline (same run)", "goal", ""), rows)


def scale_out_table(document: dict[str, Any]) -> str:
    figures = document["figures"]
    users = biggest_broadcast(figures)
    if users is None:
        return "No `@all` broadcast in the file.\n"
    plain = dict(users=users, segment=False, webhooks=[], kind="formid")

    def value(name: str) -> float | None:
        f = find(figures, name, **plain)
        return f["value"] if f else None

    worker, postgres, redis = (
        value("broadcast.worker_cpu_ms_per_delivery"),
        value("broadcast.postgres_cpu_ms_per_delivery"),
        value("broadcast.redis_cpu_ms_per_delivery"),
    )
    rss = value("broadcast.peak_rss_mib_per_worker")
    if not worker or not postgres:
        return "The broadcast's CPU figures are missing.\n"
    redis = redis or 0.0
    per_worker_core = 1000 / worker
    per_postgres_core = 1000 / postgres
    per_redis_core = 1000 / redis if redis else float("inf")
    rows = []
    for worker_cores in (2, 4, 8, 16, 32, 64):
        rate = worker_cores * per_worker_core
        postgres_cores = rate / per_postgres_core
        redis_cores = rate / per_redis_core if redis else 0.0
        minutes = 10_000_000 / rate / 60
        rows.append(
            (
                str(worker_cores),
                f"{rate:,.0f}",
                f"{postgres_cores:.1f}",
                f"{redis_cores:.2f}",
                f"{minutes:,.0f} min" if minutes >= 1 else f"{minutes * 60:.0f} s",
                f"{worker_cores * (rss or 0) / 1024:.1f} GiB" if rss else "—",
            )
        )
    head = (
        "worker cores",
        "deliveries/s (worker-bound)",
        "PostgreSQL cores it needs",
        "Redis cores",
        "10M users take",
        "worker memory (one process a core)",
    )
    summary = table(
        ("measured per delivery", "worker", "PostgreSQL", "Redis"),
        [
            (f"CPU ms (`@all`, {users:,} users)", number(worker, "ms"), number(postgres, "ms"), number(redis, "ms")),
            ("deliveries/s per core", f"{per_worker_core:,.0f}", f"{per_postgres_core:,.0f}",
             f"{per_redis_core:,.0f}" if redis else "—"),
        ],
    )  # fmt: skip
    # The run that measured the broadcast (a file appended to holds several runs), else the file's own.
    measured = {**document.get("machine", {}), **document.get("benchmarks", {}).get("broadcast", {})}
    commit, when = measured.get("commit", ""), measured.get("started_at", "")
    return (
        summary
        + "\n"
        + table(head, rows)
        + f"\nFrom `python -m bench --json` at {commit} ({when}); one app's sends are also capped by "
        "`SEND_RATE_PER_APP` (WeChat's quota for the app), which no number of cores lifts.\n"
    )


SECTIONS: dict[str, Callable[[dict[str, Any]], str]] = {"goals": goals_table, "scale-out": scale_out_table}


def rewrite(readme: str, document: dict[str, Any]) -> str:
    for name, make in SECTIONS.items():
        pattern = re.compile(
            rf"(<!-- bench-report:{re.escape(name)} -->\n).*?(<!-- /bench-report:{re.escape(name)} -->)", re.S
        )
        if not pattern.search(readme):
            raise SystemExit(
                f"README has no <!-- bench-report:{name} --> … <!-- /bench-report:{name} --> markers"
            )
        body = make(document)
        readme = pattern.sub(lambda m, body=body: m.group(1) + body + m.group(2), readme)
    return readme


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("file", type=Path, help="the JSON written by python -m bench --json FILE")
    parser.add_argument("--readme", type=Path, help="rewrite the marked tables of this README in place")
    args = parser.parse_args(argv)
    document = json.loads(args.file.read_text())
    if args.readme:
        args.readme.write_text(rewrite(args.readme.read_text(), document))
        print(f"{args.readme}: tables rewritten from {args.file}")
        return
    for name, make in SECTIONS.items():
        sys.stdout.write(f"## {name}\n\n{make(document)}\n")


if __name__ == "__main__":
    main()

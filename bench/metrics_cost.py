"""``python -m bench.metrics_cost``: what the Prometheus instrumentation costs a ``deliver_chunk``, in
prometheus-client's multiprocess mode (as the Procfile runs the workers) and in-process.

A chunk of 500 deliveries counts its outcomes once per write (one inc(n) per (outcome, errcode) pair) and
observes WeChat's latency once per send. Each operation is timed N times in CPU time (best of 5), and the
per-delivery cost set against the broadcast benchmark's worker CPU per delivery (README, Benchmarks).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

N = 100_000
CHUNK = 500
WORKER_CPU_PER_DELIVERY_US = 440  # README: the 100k @all broadcast, 0.44–0.46 ms worker CPU per delivery

MEASURE = """
import os, time
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pushhub.settings")
import django
django.setup()
from pushhub import metrics
N = int(os.environ["N"])
tally = {("sent", ""): 480, ("failed", "40003"): 15, ("retry", "-1"): 5}

def best(fn):
    runs = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(N):
            fn()
        runs.append((time.process_time() - started) / N * 1e6)
    return min(runs)

print(best(lambda: metrics.deliveries(tally)), best(lambda: metrics.wechat_call("cgi-bin/message/subscribe/send", 0.012)))
"""


def measure(multiprocess_dir: str | None) -> tuple[float, float]:
    env = {**os.environ, "N": str(N)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if multiprocess_dir:
        env["PROMETHEUS_MULTIPROC_DIR"] = multiprocess_dir
    out = subprocess.run([sys.executable, "-c", MEASURE], env=env, check=True, capture_output=True, text=True)
    tally_us, observe_us = map(float, out.stdout.split()[-2:])
    return tally_us, observe_us


def run(full: bool = False) -> list[str]:
    with tempfile.TemporaryDirectory() as directory:
        rows = [("multiprocess", *measure(directory)), ("in-process", *measure(None))]
    print(f"{N:,} operations each, CPU time, best of 5 ({time.strftime('%Y-%m-%d')})\n")
    print(
        "| mode | outcomes of a write (3 pairs) | one latency observe | per delivery (chunk of 500) | share of 0.44 ms |"
    )
    print("|---|---|---|---|---|")
    for mode, tally_us, observe_us in rows:
        per_delivery = observe_us + tally_us / CHUNK
        share = per_delivery / WORKER_CPU_PER_DELIVERY_US * 100
        print(f"| {mode} | {tally_us:.1f} µs | {observe_us:.1f} µs | {per_delivery:.2f} µs | {share:.1f} % |")
    return []


if __name__ == "__main__":
    run()

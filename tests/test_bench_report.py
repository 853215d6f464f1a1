"""``python -m bench --json`` and ``bench.report``: figures are recorded as numbers, and the README's generated
tables are exactly what the committed results file gives."""

import json
from pathlib import Path

import pytest

from bench import common, report
from bench.__main__ import write_json

BASE = Path(__file__).resolve().parent.parent


@pytest.fixture
def results(monkeypatch):
    fresh = {"figures": [], "tables": []}
    monkeypatch.setattr(common, "RESULTS", fresh)
    monkeypatch.setitem(common.CURRENT_BENCHMARK, "name", "broadcast")
    return fresh


def broadcast_figures(
    worker_ms: float, postgres_ms: float, redis_ms: float, rate: float, users: int = 10_000
):
    scope = dict(
        users=users, segment=False, kind="formid", webhooks=[], workers=2, concurrency=2, latency_ms=20.0
    )
    common.figure("broadcast.deliveries_per_s", rate, "deliveries/s", baseline=43.0, goal=3000, **scope)
    common.figure("broadcast.worker_cpu_ms_per_delivery", worker_ms, "ms", goal=0.25, better="lower", **scope)
    common.figure(
        "broadcast.postgres_cpu_ms_per_delivery", postgres_ms, "ms", goal=0.15, better="lower", **scope
    )
    common.figure("broadcast.redis_cpu_ms_per_delivery", redis_ms, "ms", better="lower", **scope)
    common.figure("broadcast.peak_rss_mib_per_worker", 128.0, "MiB", better="lower", **scope)


def test_figures_and_tables_are_recorded_with_whether_the_goal_is_met(results, capsys):
    broadcast_figures(worker_ms=0.5, postgres_ms=0.1, redis_ms=0.01, rate=3200.0)
    common.print_table("Broadcast", [common.Row("deliveries/s", "3,200", "43", "74.4×")], ["a note"])
    by_name = {f["name"]: f for f in results["figures"]}
    assert by_name["broadcast.deliveries_per_s"]["met"] is True  # 3,200 ≥ 3,000
    assert by_name["broadcast.worker_cpu_ms_per_delivery"]["met"] is False  # 0.5 > 0.25
    assert by_name["broadcast.postgres_cpu_ms_per_delivery"]["met"] is True
    assert by_name["broadcast.redis_cpu_ms_per_delivery"]["met"] is None  # no goal
    assert by_name["broadcast.deliveries_per_s"]["benchmark"] == "broadcast"
    assert results["tables"][0]["rows"][0] == {
        "target": "",
        "figure": "deliveries/s",
        "pushhub": "3,200",
        "baseline": "43",
        "ratio": "74.4×",
    }
    assert "| deliveries/s | 3,200   |" in capsys.readouterr().out


def test_json_file_holds_the_machine_the_checks_and_every_figure(results, tmp_path):
    broadcast_figures(worker_ms=0.4, postgres_ms=0.2, redis_ms=0.02, rate=2500.0)
    path = tmp_path / "bench.json"
    machine = {"cores": 2, "commit": "abc1234", "started_at": "2026-12-06T20:00:00Z"}
    write_json(path, machine, False, {"broadcast": 12.34}, {"broadcast": ["one user got two"]})
    document = json.loads(path.read_text())
    assert document["machine"] == machine
    assert document["benchmarks"] == {
        "broadcast": {
            "seconds": 12.3,
            "failed_checks": ["one user got two"],
            "full": False,
            "commit": "abc1234",
            "started_at": "2026-12-06T20:00:00Z",
        }
    }
    assert [f["name"] for f in document["figures"]][:2] == [
        "broadcast.deliveries_per_s",
        "broadcast.worker_cpu_ms_per_delivery",
    ]


def test_append_adds_a_second_run_to_the_first(results, tmp_path):
    broadcast_figures(worker_ms=0.4, postgres_ms=0.2, redis_ms=0.02, rate=2500.0)
    path = tmp_path / "bench.json"
    write_json(path, {"commit": "a"}, False, {"broadcast": 10.0}, {"broadcast": []})
    first = json.loads(path.read_text())
    results["figures"].clear()
    common.figure(
        "fairness.b_broadcast_seconds", 9.0, "s", baseline=16.0, better="lower", users=100_000, second=10_000
    )
    write_json(path, {"commit": "b"}, True, {"fairness": 300.0}, {"fairness": []}, earlier=first)
    document = json.loads(path.read_text())
    assert document["machine"] == {"commit": "b"} and document["earlier_runs"] == [{"commit": "a"}]
    assert (
        set(document["benchmarks"]) == {"broadcast", "fairness"}
        and document["benchmarks"]["fairness"]["full"]
    )
    assert len(document["figures"]) == 6
    assert (
        "| tenant B's 10,000-user broadcast behind A's 100,000: trigger → done | **9.00 s** | 16.0 s (no per-tenant share) |"
        in report.goals_table(document)
    )
    # the sizing comes from the broadcast, so it names the run that measured the broadcast, not the last one
    assert "From `python -m bench --json` at a " in report.scale_out_table(document)


def test_scale_out_table_follows_the_measured_cost_per_delivery(results):
    broadcast_figures(worker_ms=0.5, postgres_ms=0.25, redis_ms=0.02, rate=2000.0, users=100_000)
    text = report.scale_out_table({"figures": results["figures"], "machine": {"commit": "abc"}})
    assert "| deliveries/s per core | 2,000 | 4,000 | 50,000 |" in text
    # 8 worker cores at 2,000/s each: 16,000/s, 4 PostgreSQL cores, 10M users in 10 minutes
    assert "| 8 | 16,000 | 4.0 | 0.32 | 10 min | 1.0 GiB |" in text


def test_goals_table_shows_measured_baseline_goal_and_misses(results):
    broadcast_figures(worker_ms=0.3, postgres_ms=0.12, redis_ms=0.02, rate=2800.0)
    common.figure(
        "trigger.accept_p99_ms",
        61.0,
        "ms",
        baseline=24.0,
        goal=50.0,
        better="lower",
        rate=200.0,
        requests=2000,
        latency_ms=20.0,
    )
    common.figure(
        "trigger.achieved_per_s", 150.0, "triggers/s", goal=200.0, rate=200.0, requests=2000, latency_ms=20.0
    )
    text = report.goals_table({"figures": results["figures"]})
    assert (
        "| `@all` broadcast to 10,000 users, fake WeChat at 20 ms: deliveries/s | **2,800 deliveries/s** | 43.0 deliveries/s (sequential `requests.post`) | ≥ 3,000 deliveries/s | **not met** |"
        in text
    )
    assert "| PostgreSQL CPU per delivery (10,000 users) | **0.12 ms** |  | ≤ 0.15 ms | met |" in text
    assert (
        "| trigger accept p99 at 200/s | **61.0 ms** | 24.0 ms (calling WeChat directly) | ≤ 50.0 ms | **not met** |"
        in text
    )
    assert "triggers/s achieved of 200/s asked | 150 |" in text


def test_goals_table_shows_the_web_alone_under_its_point_without_a_goal(results):
    """The 200/s point measured with no worker running is shown under the goal's row, with no goal of its own,
    and does not stand in for the goal's figure."""
    scope = dict(rate=200.0, requests=2000, latency_ms=20.0)
    common.figure("trigger.accept_p99_ms", 852.0, "ms", baseline=24.0, goal=50.0, better="lower", **scope)
    common.figure("trigger.achieved_per_s", 169.0, "triggers/s", goal=200.0, **scope)
    common.figure("trigger.web_alone.accept_p99_ms", 168.1, "ms", baseline=24.6, better="lower", **scope)
    common.figure("trigger.web_alone.achieved_per_s", 197.7, "triggers/s", **scope)
    text = report.goals_table({"figures": results["figures"]})
    lines = text.splitlines()
    goal_row = lines.index(
        "| trigger accept p99 at 200/s | **852 ms** | 24.0 ms (calling WeChat directly) | ≤ 50.0 ms | **not met** |"
    )
    assert lines[goal_row + 1] == "| triggers/s achieved of 200/s asked | 169 |  |  | **short** |"
    assert lines[goal_row + 2] == (
        "| the same, the web alone (no worker running until the last answer; 198/s answered) | **168 ms** "
        "| 24.6 ms (calling WeChat directly) |  |  |"
    )


def test_goals_table_shows_the_sends_lane_point_without_a_goal(results):
    """The 50/s point against a 100 ms WeChat is a figure, not one of the issue's trigger goals."""
    scope = dict(rate=50.0, requests=500, latency_ms=100.0)
    common.figure("trigger.accept_p99_ms", 12.6, "ms", baseline=103.0, better="lower", **scope)
    common.figure("trigger.end_to_end_p50_ms", 111.0, "ms", baseline=102.6, better="lower", **scope)
    common.figure("trigger.end_to_end_p99_ms", 118.1, "ms", baseline=103.6, better="lower", **scope)
    common.figure("trigger.achieved_per_s", 50.0, "triggers/s", goal=50.0, **scope)
    text = report.goals_table({"figures": results["figures"]})
    assert "trigger accept p99 at 50/s" not in text
    assert (
        "| one-user trigger end to end p50 at 50/s, fake WeChat at 100 ms (the sends lane) | **111 ms** "
        "| 103 ms (calling WeChat directly) |  |  |" in text
    )
    assert (
        "| one-user trigger end to end p99 at 50/s, fake WeChat at 100 ms (the sends lane) | **118 ms** |"
        in text
    )


def test_rewrite_replaces_only_the_marked_sections(results):
    broadcast_figures(worker_ms=0.5, postgres_ms=0.25, redis_ms=0.02, rate=2000.0)
    readme = (
        "intro\n<!-- bench-report:goals -->\nold\n<!-- /bench-report:goals -->\nmiddle\n"
        "<!-- bench-report:scale-out -->\nold\n<!-- /bench-report:scale-out -->\nend\n"
    )
    out = report.rewrite(readme, {"figures": results["figures"], "machine": {}})
    assert out.startswith("intro\n<!-- bench-report:goals -->\n| figure |")
    assert "\nmiddle\n" in out and out.endswith("<!-- /bench-report:scale-out -->\nend\n")
    assert "old" not in out
    with pytest.raises(SystemExit):
        report.rewrite("no markers here", {"figures": results["figures"]})


def test_readme_tables_are_the_ones_generated_from_the_committed_results():
    """docs/bench-results.json is the last measured run; the README's tables must be regenerated from it
    (python -m bench.report docs/bench-results.json --readme README.md) whenever either changes."""
    document = json.loads((BASE / "docs" / "bench-results.json").read_text())
    readme = (BASE / "README.md").read_text()
    assert report.rewrite(readme, document) == readme

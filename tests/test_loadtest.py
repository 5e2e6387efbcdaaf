"""The load-test tooling end to end, in seconds: `python -m loadtests.run --plan smoke` starts the
embedded stack on the tiny model, runs locust (colorize + diverse + async) for a few seconds,
and must leave locust's CSV + HTML and load.json / summary.md with requests and no failure."""

from __future__ import annotations

import csv
import importlib.util
import json

import pytest

# find_spec, not importorskip: importing locust monkey-patches this process with gevent
needs_locust = pytest.mark.skipif(
    importlib.util.find_spec("locust") is None, reason="locust is in the `load` extra"
)


@needs_locust
@pytest.mark.timeout(120)
def test_smoke_run_writes_csv_and_json(tiny_repo, tmp_path):
    from loadtests import run

    out = tmp_path / "lt"
    status = run.main(["--model", str(tiny_repo), "--plan", "smoke", "--seconds", "3",
                       "--out", str(out)])  # fmt: skip
    assert status == 0

    report = json.loads((out / "load.json").read_text())
    [result] = report["results"]
    assert result["total_requests"] > 0
    assert result["failures"] == 0
    assert result["requests"]["/colorize [256px]"]["count"] > 0
    assert result["batch_mean"] >= 1
    assert result["overhead"]["requests"] > 0

    rundir = out / result["id"]
    with (rundir / "locust_stats.csv").open(newline="") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    assert int(rows["Aggregated"]["Request Count"]) > 0
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    assert (rundir / "report.html").stat().st_size > 1000
    assert "/colorize [256px]" in (out / "summary.md").read_text()


def test_full_plan_shares_points_and_measures_overhead_at_one_user():
    from loadtests import run
    from loadtests import scenarios as sc

    argv = ["--plan", "full", "--max-batch", "8", "--max-wait-ms", "10", "--workers", "2"]
    runs = run.build_plan(run.parser().parse_args(argv))
    assert len({r.key for r in runs}) == len(runs) == 27  # shared points run once
    one = [r for r in runs if r.users == 1]
    assert {r.stack.topology for r in one} == {"embedded", "redis"}
    assert all(r.overhead and r.scenario == sc.COLORIZE_256 for r in one)
    stacks = [s for s, _ in run.grouped(runs)]
    assert len(stacks) == len(set(stacks)) == 10  # one start per stack configuration
    assert {r.stack.max_batch for r in runs if r.role == "batch"} == {1, 2, 4, 16}


def test_server_timing_header():
    from loadtests.scenarios import server_timing

    header = "queue;dur=1.5, decode;dur=0.4, compute;dur=30, encode;dur=2.25, bad;dur=x"
    assert server_timing(header) == {"queue": 1.5, "decode": 0.4, "compute": 30.0, "encode": 2.25}
    assert server_timing(None) == {}


def test_scenarios_filter_keeps_only_the_named_scenarios():
    from loadtests import run
    from loadtests import scenarios as sc

    argv = ["--plan", "scenarios", "--scenarios", sc.COLORIZE_12MP]
    runs = run.build_plan(run.parser().parse_args(argv))
    assert [r.scenario for r in runs] == [sc.COLORIZE_12MP] * 2
    assert {r.stack.topology for r in runs} == {"embedded", "redis"}

"""Prometheus rules and the Grafana dashboard: promtool checks the config and the rules and runs
their unit tests; every dashboard query parses; rule and alert conventions hold; and every
metric the rules and the dashboard use exists on a live /metrics scrape of the service."""

from __future__ import annotations

import json
import re
import subprocess

from .conftest import (
    DASHBOARD_FILE,
    DEPLOY,
    dashboard_exprs,
    grafana_to_promql,
    need_tool,
    promql_metric_names,
    rule_groups,
    sample_names,
)

EXTERNAL = ("DCGM_FI_",)  # NVIDIA dcgm-exporter, not the service
BUILTIN = {"up", "ALERTS", "ALERTS_FOR_STATE"}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = need_tool("promtool")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, cwd=DEPLOY)


def test_promtool_checks_config_and_rules():
    r = _promtool("check", "config", "prometheus/prometheus.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 rule files found" in r.stdout + r.stderr
    r = _promtool("check", "rules", "prometheus/rules/disco.rules.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_rule_unit_tests():
    r = _promtool("test", "rules", "prometheus/tests/disco.rules.test.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_dashboard_queries_parse(tmp_path):
    rules = [
        {"record": f"dashboard:query{i}:check", "expr": grafana_to_promql(expr)}
        for i, (_, expr) in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = _promtool("check", "rules", str(path))
    assert r.returncode == 0, r.stdout + r.stderr


def test_rules_follow_the_conventions():
    recorded = set()
    for group in rule_groups():
        for rule in group["rules"]:
            if "record" in rule:
                level, metric, ops = rule["record"].split(":")  # level:metric:operations
                assert level and metric.startswith("disco_") and ops, rule["record"]
                recorded.add(rule["record"])
            else:
                assert re.fullmatch(r"Disco[A-Z]\w+", rule["alert"])
                assert rule.get("for"), f"{rule['alert']} has no `for`"
                assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
                assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
    alerts = {r["alert"] for g in rule_groups() for r in g["rules"] if "alert" in r}
    # the failures the operators asked to be paged for
    assert {
        "DiscoHighErrorRatio",
        "DiscoHighLatencyP99",
        "DiscoBacklogGrowing",
        "DiscoDeadLetters",
        "DiscoNoWorkers",
        "DiscoModelNotReady",
    } <= alerts


def test_dashboard_structure():
    dash = json.loads(DASHBOARD_FILE.read_text())
    assert dash["uid"] == "disco-serve" and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert p["targets"] and p.get("description"), p["title"]
            uses_dcgm = any("DCGM_" in t["expr"] for t in p["targets"])
            assert uses_dcgm == ("dcgm-exporter" in p["title"]), (
                f"{p['title']}: DCGM panels (and only they) say they come from dcgm-exporter"
            )
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in (
        "request rate",
        "error",
        "latency",
        "queue depth",
        "queue wait",
        "batch size",
        "compute",
        "decode / encode",
        "gpu utilisation",
        "gpu memory",
    ):
        assert topic in titles, topic


def test_promql_metric_name_extraction():
    expr = (
        'histogram_quantile(0.99, sum by (endpoint, le) (rate(disco_x_bucket{endpoint=~"a|b",'
        'le!="1"}[$__rate_interval]))) / on(job) group_left (instance) job:disco_y:rate5m '
        '> 0 and up{job="api"} == 0 or vector(0)'
    )
    assert promql_metric_names(expr) == {"disco_x_bucket", "job:disco_y:rate5m", "up"}


def _referenced() -> dict[str, set[str]]:
    """{metric name: where it is used} over the rules and the dashboard (DCGM left out)."""
    out: dict[str, set[str]] = {}
    for group in rule_groups():
        for rule in group["rules"]:
            where = rule.get("record") or rule["alert"]
            for name in promql_metric_names(rule["expr"]):
                out.setdefault(name, set()).add(f"rule {where}")
    for title, expr in dashboard_exprs():
        for name in promql_metric_names(expr):
            out.setdefault(name, set()).add(f"panel {title!r}")
    return {k: v for k, v in out.items() if not k.startswith(EXTERNAL)}


def test_every_metric_used_exists_on_a_live_scrape(embedded_scrape):
    """The API in embedded mode exports the API's and the worker's metrics; names appear with
    their _total / _bucket / _sum / _count suffixes. Recording-rule names must be defined."""
    live = sample_names(embedded_scrape)
    recorded = {r["record"] for g in rule_groups() for r in g["rules"] if "record" in r}
    missing = {
        name: where
        for name, where in _referenced().items()
        if name not in live and name not in recorded and name not in BUILTIN
    }
    assert not missing, f"not exported by the service: {missing}"
    assert any(
        n.startswith("DCGM_FI_") for _, e in dashboard_exprs() for n in promql_metric_names(e)
    )


def test_live_exposition_passes_promtool_lint(embedded_scrape):
    exe = need_tool("promtool")
    r = subprocess.run(
        [exe, "check", "metrics"], input=embedded_scrape, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr

"""Shared helpers of the deploy checks: paths, tools (skipped cleanly when missing), rendered
kustomize overlays, PromQL metric-name extraction, and a live /metrics scrape of the service.

Tools: `kubectl` (kustomize), `promtool` (Debian `prometheus`), `docker compose` (optional);
Python: check-jsonschema (compose-spec schema), kubernetes-validate (Kubernetes schemas)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = ROOT / "docker-compose.yml"
RULES_FILE = DEPLOY / "prometheus" / "rules" / "disco.rules.yml"
DASHBOARD_FILE = DEPLOY / "grafana" / "dashboards" / "disco-serve.json"
OVERLAYS = ("cpu", "gpu")
# what the compose interpolation needs (the one required variable), as an operator's .env has it
COMPOSE_ENV = {"DISCO_REDIS_PASSWORD": "test-password"}


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (see tests/deploy/conftest.py for what CI installs)")
    return path


@cache
def run_local_module() -> ModuleType:
    """deploy/run_local.py, imported by path (deploy/ is not a package)."""
    spec = importlib.util.spec_from_file_location("disco_run_local", DEPLOY / "run_local.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def run_local() -> ModuleType:
    return run_local_module()


@cache
def _render(overlay: str) -> tuple[dict[str, Any], ...]:
    kubectl = need_tool("kubectl")
    out = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


@pytest.fixture(scope="session", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, tuple[dict[str, Any], ...]]:
    """(overlay name, the documents `kubectl kustomize` renders for it)."""
    return request.param, _render(request.param)


def find(docs: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> dict[str, Any]:
    hits = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


# -- PromQL ----------------------------------------------------------------------------------------

_PROMQL_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
    "atan2",
}
_CLAUSE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def promql_metric_names(expr: str) -> set[str]:
    """Metric (and recording-rule) names an expression selects: identifiers outside strings,
    label matchers, grouping clauses and ranges that are not function calls or keywords."""
    e = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = _CLAUSE.sub(" ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", e):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in _PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


def grafana_to_promql(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced, so promtool can parse it."""
    e = re.sub(r"\$__(rate_)?interval|\$__range", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", "x", e)


def rule_groups() -> list[dict[str, Any]]:
    return yaml.safe_load(RULES_FILE.read_text())["groups"]


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of the dashboard, rows' nested panels included."""
    import json

    out = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((p["title"], t["expr"]))
            walk(p.get("panels", []))

    walk(json.loads(DASHBOARD_FILE.read_text())["panels"])
    return out


# -- the service's metrics, live -----------------------------------------------------------------


def sample_names(exposition: str) -> set[str]:
    """Every sample name of a Prometheus text exposition (`_bucket`/`_sum`/`_count`/`_total`)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {s.name for fam in text_string_to_metric_families(exposition) for s in fam.samples}


@pytest.fixture(scope="session")
def embedded_scrape(tiny_repo: Path) -> str:
    """/metrics of the API in embedded mode (it runs the batching worker in-process, so the worker
    metrics are in its registry too) after a colorize request."""
    fastapi_testclient = pytest.importorskip("fastapi.testclient")
    from service.api import create_app
    from service.settings import Settings

    run_local = run_local_module()
    settings = Settings(queue_url="memory://", model_dir=tiny_repo, threads=1, max_wait_ms=5)
    with fastapi_testclient.TestClient(create_app(settings)) as client:
        image = run_local.smoke_image()
        r = client.post("/colorize", content=image, headers={"content-type": "image/png"})
        assert r.status_code == 200, r.text
        assert client.get("/readyz").status_code == 200
        return client.get("/metrics").text

"""The compose topology for real, without Docker: deploy/run_local.py starts redis-server, the
API and two workers as processes with exactly the DISCO_* environment docker-compose.yml gives
their containers (hostnames and ports mapped to free local ones), and a smoke test goes through
the API. The workers' own /metrics are scraped too: worker-only metrics live there."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.queue.constants import WORKER_INDEX_KEY

from .conftest import (
    COMPOSE_ENV,
    COMPOSE_FILE,
    dashboard_exprs,
    promql_metric_names,
    rule_groups,
    sample_names,
)

pytest.importorskip("redis")


def _expected_env(run_local, service: str, plan) -> dict[str, str]:
    """What the container of `service` sees (image ENV + compose environment), mapped."""
    compose = run_local.load_compose(COMPOSE_FILE, {**COMPOSE_ENV, **plan_shell(plan)})
    env = {**run_local.image_env(), **run_local.environment_of(compose["services"][service])}
    env["DISCO_QUEUE_URL"] = env["DISCO_QUEUE_URL"].replace(
        "redis:6379", f"127.0.0.1:{plan.redis.port}"
    )
    env["DISCO_MODEL_DIR"] = str(plan_model(plan))
    if service == "api":
        env.update(DISCO_HOST="127.0.0.1", DISCO_PORT=str(plan.api.port))
    return env


def plan_shell(plan) -> dict[str, str]:
    return {"DISCO_REDIS_PASSWORD": plan.password, "DISCO_WORKER_THREADS": "1"}


def plan_model(plan) -> Path:
    return Path(plan.api.env["DISCO_MODEL_DIR"])


def _make_plan(run_local, model: Path, workdir: Path):
    shell = {"PATH": "/usr/bin", **COMPOSE_ENV, "DISCO_WORKER_THREADS": "1"}
    return run_local.plan(model, workdir, shell_env=shell)


def test_plan_maps_only_what_cannot_be_the_same(run_local, tmp_path):
    model = tmp_path / "model"
    plan = _make_plan(run_local, model, tmp_path)
    assert [w.name for w in plan.workers] == ["worker1", "worker2"]  # compose: replicas 2
    assert plan.password == COMPOSE_ENV["DISCO_REDIS_PASSWORD"]
    assert plan.api.env == _expected_env(run_local, "api", plan)
    for w in plan.workers:
        assert w.env == _expected_env(run_local, "worker", plan)
        assert w.argv[-2:] == ["--metrics-port", str(w.port)]
    ports = [p.port for p in plan.all]
    assert len(set(ports)) == len(ports)
    redis = plan.redis.argv
    assert redis[redis.index("--appendonly") + 1] == "yes"
    assert redis[redis.index("--requirepass") + 1] == plan.password
    # no DISCO_* of the calling shell leaks in: only image + compose variables
    assert {k for k in plan.api.env if k.startswith("DISCO_")} == {
        k for k in _expected_env(run_local, "api", plan) if k.startswith("DISCO_")
    }


def test_print_env_starts_nothing(run_local, tmp_path, capsys):
    assert (
        run_local.main(["--print-env", "--model", str(tmp_path), "--workdir", str(tmp_path)]) == 0
    )
    out = capsys.readouterr().out
    assert out.count("service.cli worker") == 2 and "service.cli serve" in out
    assert "DISCO_QUEUE_URL=redis://127.0.0.1:" in out


@pytest.mark.slow
def test_compose_topology_as_processes_passes_the_smoke_test(run_local, tiny_repo, tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (make test installs it)")
    import redis

    plan = _make_plan(run_local, tiny_repo, tmp_path)
    with run_local.running(plan, ready_timeout_s=90):
        result = run_local.smoke(plan)
        assert result["content_type"] == "image/png" and result["image"][:4] == b"\x89PNG"
        assert result["readyz"]["status"] == "ok"

        # each process got exactly the environment its container gets (DISCO_* and PYTHON*)
        for proc in (plan.api, *plan.workers):
            pid = plan.procs[proc.name].pid
            raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            env = dict(x.decode().split("=", 1) for x in raw if b"=" in x)
            got = {k: v for k, v in env.items() if k.startswith("DISCO_")}
            want = _expected_env(run_local, "api" if proc is plan.api else "worker", plan)
            assert got == {k: v for k, v in want.items() if k.startswith("DISCO_")}, proc.name

        # Redis as compose runs it: AOF on, and nothing answers without the password
        client = redis.Redis(host="127.0.0.1", port=plan.redis.port, password=plan.password)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.zcard(WORKER_INDEX_KEY) == 2  # both workers registered their health
        client.close()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=plan.redis.port).ping()

        # every metric of the rules and the dashboard exists on the live processes' scrapes
        live = sample_names(result["api_metrics"])
        for text in result["worker_metrics"].values():
            live |= sample_names(text)
        assert "disco_model_info" in sample_names(next(iter(result["worker_metrics"].values())))
        recorded = {r["record"] for g in rule_groups() for r in g["rules"] if "record" in r}
        used = {
            n for g in rule_groups() for r in g["rules"] for n in promql_metric_names(r["expr"])
        }
        used |= {n for _, e in dashboard_exprs() for n in promql_metric_names(e)}
        missing = {n for n in used - recorded - live if not n.startswith("DCGM_") and n != "up"}
        assert not missing, missing
    for name, proc in plan.procs.items():
        assert proc.returncode is not None, f"{name} still running"

"""docker-compose.yml without a Docker engine: `docker compose config` where the CLI has compose,
the compose-spec JSON schema (vendored by check-jsonschema), and the topology's own rules: Redis
with AOF and a healthcheck, services started on `service_healthy`, a scalable worker, a `gpu`
profile with a device reservation, grace periods above the drain time, and every file it
references present."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from service.settings import Settings

from .conftest import COMPOSE_ENV, COMPOSE_FILE, ROOT, run_local_module


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return run_local_module().load_compose(COMPOSE_FILE, COMPOSE_ENV)


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for value, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration):
        total += float(value) * units[unit]
    return total


def test_compose_file_matches_the_compose_spec_schema(compose):
    jsonschema = pytest.importorskip("jsonschema")
    resources = pytest.importorskip("importlib.resources")
    pytest.importorskip("check_jsonschema")
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendor / "compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(compose)
    ]
    assert not errors, "\n".join(errors)


def _docker_compose() -> list[str] | None:
    """`docker compose` (the plugin) or a standalone compose v2 binary, if either answers."""
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for cmd in candidates:
        r = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=30)
        if r.returncode == 0 and re.search(r"v?2\.\d+", r.stdout):
            return cmd
    return None


@pytest.mark.parametrize("profiles", [[], ["gpu"], ["grafana"]], ids=["default", "gpu", "grafana"])
def test_docker_compose_config_resolves(profiles, compose, tmp_path):
    """The real parser (no daemon needed); its interpolation agrees with deploy/run_local.py."""
    cmd = _docker_compose()
    if cmd is None:
        pytest.skip("no `docker compose` v2 here (the schema test covers the file)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCO_", "COMPOSE_"))}
    env.update(COMPOSE_ENV)
    args = [*cmd, "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT)]
    for p in profiles:
        args += ["--profile", p]
    r = subprocess.run(
        [*args, "config", "--format", "json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert r.returncode == 0, r.stderr
    resolved = json.loads(r.stdout)
    expected = (
        {"redis", "api", "worker", "prometheus"}
        | ({"worker-gpu", "dcgm-exporter"} if "gpu" in profiles else set())
        | ({"grafana"} if "grafana" in profiles else set())
    )
    assert set(resolved["services"]) == expected
    run_local = run_local_module()
    for name in expected:
        ours, theirs = compose["services"][name], resolved["services"][name]
        assert run_local.environment_of(ours) == run_local.environment_of(theirs), name
        assert run_local.command_of(ours) == run_local.command_of(theirs), name


def test_redis_is_durable_and_checked(compose):
    redis = compose["services"]["redis"]
    cmd = redis["command"]
    assert cmd[0] == "redis-server"
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    assert cmd[cmd.index("--maxmemory-policy") + 1] == "noeviction"
    assert cmd[cmd.index("--requirepass") + 1] == COMPOSE_ENV["DISCO_REDIS_PASSWORD"]
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert "ping" in " ".join(redis["healthcheck"]["test"])


def test_the_redis_password_is_required():
    run_local = run_local_module()
    with pytest.raises(run_local.ComposeError, match="DISCO_REDIS_PASSWORD"):
        run_local.load_compose(COMPOSE_FILE, {})


def test_services_wait_for_healthy_dependencies(compose):
    services = compose["services"]
    for name in ("api", "worker", "worker-gpu"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy", name
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    for name, svc in services.items():
        if name != "dcgm-exporter":
            assert "healthcheck" in svc, f"{name} has no healthcheck"


def test_api_and_workers_share_the_settings_and_drain_in_time(compose):
    services = compose["services"]
    fields = {f"DISCO_{name.upper()}" for name in Settings.model_fields}
    for name in ("api", "worker", "worker-gpu"):
        env = services[name]["environment"]
        unknown = {k for k in env if k.startswith("DISCO_")} - fields
        assert not unknown, f"{name}: not settings: {unknown}"
        assert env["DISCO_QUEUE_URL"].startswith("redis://redis:6379/")
        assert env["DISCO_REDIS_PASSWORD"] == COMPOSE_ENV["DISCO_REDIS_PASSWORD"]
        wait = float(env["DISCO_JOB_COMPLETION_WAIT_S"])
        assert _seconds(services[name]["stop_grace_period"]) > wait, name
        Settings(
            **{
                k.removeprefix("DISCO_").lower(): v
                for k, v in env.items()
                if k.startswith("DISCO_") and k != "DISCO_MODEL_DIR"
            }
        )
    # uvicorn's graceful shutdown is DISCO_JOB_COMPLETION_WAIT_S + 5 s
    assert _seconds(services["api"]["stop_grace_period"]) > wait + 5


def test_workers_scale_and_the_gpu_profile_reserves_a_gpu(compose):
    services = compose["services"]
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker  # `--scale worker=N` works
    assert worker["deploy"]["replicas"] >= 2
    assert "--metrics-port" in worker["command"]
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"] and services["dcgm-exporter"]["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert gpu["build"]["dockerfile"] == "deploy/docker/Dockerfile.gpu"
    for name in ("api", "worker", "worker-gpu"):  # hardened like the Kubernetes pods
        svc = services[name]
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"], name
        assert "/tmp" in svc["tmpfs"], name


def test_every_referenced_file_exists(compose):
    services = compose["services"]
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            context = ROOT / build["context"]
            assert (context / build["dockerfile"]).is_file(), name
            for extra in (build.get("additional_contexts") or {}).values():
                assert (ROOT / extra).is_dir(), f"{name}: build context {extra}"
            target = build.get("target")
            if target:
                text = (context / build["dockerfile"]).read_text()
                assert re.search(rf"^FROM .+ AS {target}\s*$", text, re.M), f"{name}: {target}"
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: {source}"
    prometheus = services["prometheus"]
    assert any(v.startswith("./deploy/prometheus:/etc/prometheus") for v in prometheus["volumes"])
    assert (ROOT / "deploy/prometheus/prometheus.yml").is_file()
    assert (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").is_file()
    assert (ROOT / "deploy/grafana/provisioning/dashboards/disco.yml").is_file()
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "deploy/grafana/dashboards" / Path(home).name).is_file()


def test_prometheus_scrapes_what_compose_runs(compose):
    import yaml

    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    names = {n for j in jobs.values() for sd in j.get("dns_sd_configs", []) for n in sd["names"]}
    assert {"api", "worker", "worker-gpu", "dcgm-exporter"} <= names
    assert names <= set(compose["services"])
    assert jobs["disco-api"]["dns_sd_configs"][0]["port"] == 8000
    assert jobs["disco-worker"]["dns_sd_configs"][0]["port"] == 9100
    datasource = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and datasource["uid"] == "prometheus"


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A}", {"A": "1"}, "1"),
        ("${A:-d}", {}, "d"),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A-d}", {"A": ""}, ""),
        ("${A:+alt}", {"A": "x"}, "alt"),
        ("${A:+alt}", {}, ""),
        ("$A/$$B", {"A": "a"}, "a/$B"),
        ("redis://${H:-redis}:6379/0", {}, "redis://redis:6379/0"),
    ],
)
def test_compose_interpolation(text, env, expected):
    assert run_local_module().interpolate(text, env) == expected

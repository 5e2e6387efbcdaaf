"""The Kubernetes manifests: both overlays render (`kubectl kustomize`), the built-in kinds
validate strictly against the Kubernetes OpenAPI schemas (kubernetes-validate, offline), and the
custom resources (KEDA, Prometheus Operator) plus the service's own rules are checked here:
probes, grace periods, security contexts, GPU requests, KEDA on the stream lag, monitoring."""

from __future__ import annotations

from typing import Any

import pytest

from service.settings import Settings

from .conftest import RULES_FILE, find

K8S_VERSION = "1.30.0"  # the oldest minor the manifests promise (native sidecars, PDB v1, HPA v2)
CRD_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}
IMAGE_ONLY = {"DISCO_TRT_CACHE_DIR"}  # read by the GPU image's entrypoint, not by Settings


def _containers(docs: tuple[dict[str, Any], ...]) -> list[tuple[dict, dict]]:
    """(workload, container) for every Deployment / StatefulSet container."""
    out = []
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            out += [(d, c) for c in d["spec"]["template"]["spec"]["containers"]]
    return out


def _config(docs) -> dict[str, str]:
    cms = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("disco-config-")
    ]
    assert len(cms) == 1
    return cms[0]["data"]


def test_builtin_kinds_validate_against_kubernetes_schemas(rendered):
    kv = pytest.importorskip("kubernetes_validate")
    _, docs = rendered
    checked = set()
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kv.validate(doc, K8S_VERSION, strict=True)
        except kv.ValidationError as e:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {e.message} at {e.path}")
        checked.add(doc["kind"])
    assert {
        "Deployment",
        "StatefulSet",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
        "Namespace",
    } <= checked


def test_everything_lives_in_one_namespace_and_config_rolls_pods(rendered):
    _, docs = rendered
    ns = find(docs, "Namespace")["metadata"]["name"]
    assert all(d["metadata"].get("namespace") == ns for d in docs if d["kind"] != "Namespace")
    config = [d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"]
    # configMapGenerator: hashed names, referenced by the pods, so a change rolls them
    assert all(len(name.rsplit("-", 1)[-1]) == 10 for name in config), config
    for workload, c in _containers(docs):
        refs = [e["configMapRef"]["name"] for e in c.get("envFrom", [])]
        vols = [
            v["configMap"]["name"]
            for v in workload["spec"]["template"]["spec"]["volumes"]
            if "configMap" in v
        ]
        assert all(r in config for r in refs + vols), (workload["metadata"]["name"], refs, vols)


def test_settings_are_real_and_the_password_comes_from_the_secret(rendered):
    _, docs = rendered
    fields = {f"DISCO_{name.upper()}" for name in Settings.model_fields}
    config = _config(docs)
    assert set(config) <= fields, set(config) - fields
    Settings(
        **{k.removeprefix("DISCO_").lower(): v for k, v in config.items() if k != "DISCO_MODEL_DIR"}
    )
    assert "DISCO_REDIS_PASSWORD" not in config
    for workload, c in _containers(docs):
        env = {e["name"]: e for e in c.get("env", [])}
        assert {k for k in env if k.startswith("DISCO_")} <= fields | IMAGE_ONLY
        for e in env.values():
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert (ref["name"], ref["key"]) == ("disco-redis", "password")
        if workload["metadata"]["name"] != "disco-redis":
            assert "secretKeyRef" in env["DISCO_REDIS_PASSWORD"]["valueFrom"]


def test_pods_are_hardened_and_sized(rendered):
    _, docs = rendered
    for workload, c in _containers(docs):
        name = f"{workload['metadata']['name']}/{c['name']}"
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["capabilities"]["drop"] == ["ALL"], name
        tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert tmp, f"{name}: no writable /tmp"
        vol = next(v for v in pod["volumes"] if v["name"] == tmp[0]["name"])
        assert "emptyDir" in vol, name
        assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], name
        assert c["resources"]["limits"]["memory"], name


def test_api_probes_scaling_and_budget(rendered):
    _, docs = rendered
    api = find(docs, "Deployment", "disco-api")
    c = api["spec"]["template"]["spec"]["containers"][0]
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "replicas" not in api["spec"]  # the HPA owns it
    hpa = find(docs, "HorizontalPodAutoscaler", "disco-api")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "disco-api",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = find(docs, "PodDisruptionBudget", "disco-api")
    assert pdb["spec"]["selector"] == api["spec"]["selector"]
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    svc = find(docs, "Service", "disco-api")
    assert svc["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]


def test_grace_periods_outlast_the_drain(rendered):
    _, docs = rendered
    wait = float(_config(docs)["DISCO_JOB_COMPLETION_WAIT_S"])
    worker = find(docs, "Deployment", "disco-worker")["spec"]["template"]["spec"]
    assert worker["terminationGracePeriodSeconds"] > wait
    api = find(docs, "Deployment", "disco-api")["spec"]["template"]["spec"]
    pre_stop = api["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # preStop sleep + uvicorn's graceful shutdown (wait + 5 s) must fit
    assert api["terminationGracePeriodSeconds"] > float(pre_stop[1]) + wait + 5


def test_worker_deployment_per_overlay(rendered):
    overlay, docs = rendered
    worker = find(docs, "Deployment", "disco-worker")
    pod = worker["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["args"][:2] == ["disco", "worker"] and "command" not in c
    assert c["ports"][0]["containerPort"] == int(c["args"][c["args"].index("--metrics-port") + 1])
    assert "replicas" not in worker["spec"]  # KEDA owns it
    assert {
        p["httpGet"]["port"] for p in (c["startupProbe"], c["readinessProbe"], c["livenessProbe"])
    } == {"metrics"}
    name_env = next(e for e in c["env"] if e["name"] == "DISCO_WORKER_NAME")
    assert name_env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    gpu = c["resources"].get("limits", {}).get("nvidia.com/gpu")
    if overlay == "gpu":
        assert gpu == "1" and c["resources"]["requests"]["nvidia.com/gpu"] == "1"
        assert c["image"].startswith("disco-serve-gpu")
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    else:
        assert gpu is None and c["image"].startswith("disco-serve:")
    pdb = find(docs, "PodDisruptionBudget", "disco-worker")
    assert pdb["spec"]["selector"] == worker["spec"]["selector"]


def test_keda_scales_workers_on_the_stream_lag(rendered):
    _, docs = rendered
    ns = find(docs, "Namespace")["metadata"]["name"]
    so = find(docs, "ScaledObject", "disco-worker")
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    assert so["spec"]["scaleTargetRef"]["name"] == "disco-worker"
    assert so["spec"]["minReplicaCount"] >= 1  # /readyz needs a live worker to accept jobs
    batch = _config(docs)["DISCO_MAX_BATCH"]
    triggers = so["spec"]["triggers"]
    assert {t["type"] for t in triggers} == {"redis-streams"}
    modes = set()
    auth = find(docs, "TriggerAuthentication")
    for t in triggers:
        md = t["metadata"]
        assert md["stream"] == "disco:jobs" and md["consumerGroup"] == "disco:workers"
        host, port = md["address"].rsplit(":", 1)
        assert host.split(".")[:2] == ["disco-redis", ns] and port == "6379"
        assert t["authenticationRef"]["name"] == auth["metadata"]["name"]
        for key in ("lagCount", "pendingEntriesCount"):
            if key in md:
                modes.add(key)
                assert md[key] == batch, f"{key} should be one batch ({batch})"
    assert modes == {"lagCount", "pendingEntriesCount"}
    ref = auth["spec"]["secretTargetRef"][0]
    assert (ref["parameter"], ref["name"], ref["key"]) == ("password", "disco-redis", "password")


def test_redis_statefulset_persists_with_aof(rendered):
    _, docs = rendered
    sts = find(docs, "StatefulSet", "disco-redis")
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    c = sts["spec"]["template"]["spec"]["containers"][0]
    assert any(m["mountPath"] == "/data" and m["name"] == "data" for m in c["volumeMounts"])
    conf = next(
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("disco-redis-config-")
    )
    lines = {
        tuple(line.split()[:2])
        for line in conf["data"]["redis.conf"].splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {("appendonly", "yes"), ("maxmemory-policy", "noeviction"), ("dir", "/data")} <= lines
    assert "--requirepass" in c["args"]
    svc = find(docs, "Service", "disco-redis")
    assert _config(docs)["DISCO_QUEUE_URL"] == f"redis://{svc['metadata']['name']}:6379/0"


def test_service_monitors_scrape_existing_ports(rendered):
    _, docs = rendered
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert {m["metadata"]["name"] for m in monitors} == {"disco-api", "disco-worker"}
    for m in monitors:
        labels = m["spec"]["selector"]["matchLabels"]
        services = [
            d
            for d in docs
            if d["kind"] == "Service" and labels.items() <= d["metadata"]["labels"].items()
        ]
        assert len(services) == 1, m["metadata"]["name"]
        # the job label is the Service name: the rules' DiscoTargetDown matches on it
        assert services[0]["metadata"]["name"] == m["metadata"]["name"]
        ports = {p["name"] for p in services[0]["spec"]["ports"]}
        assert all(e["port"] in ports and e["path"] == "/metrics" for e in m["spec"]["endpoints"])


def test_prometheus_rule_equals_the_rules_file(rendered):
    import yaml

    _, docs = rendered
    rule = find(docs, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES_FILE.read_text()), (
        "deploy/k8s/components/monitoring/prometheusrule.yaml is stale: run "
        "bash deploy/prometheus/sync-k8s-rules.sh"
    )

"""The compose stack for real: the images built with BuildKit, `docker compose up` of redis, the
API, two workers and Prometheus, then through the published port: a colour PNG of the input's
size, Prometheus scraping the API and both workers, a worker SIGKILLed under load without losing
an accepted job, the containers' hardening as compose sets it; `docker compose down -v` at the end.

Needs root, a running dockerd, Debian's /usr/bin/docker (BuildKit), the compose v2 plugin and the
base images (or their stand-ins): `make test` / .ci/run install all of it
(scripts/system-deps.sh, scripts/install-docker.sh -> deploy/docker/offline-bases.sh). Run alone:

    scripts/system-deps.sh && scripts/install-docker.sh
    .venv/bin/python -m pytest tests/deploy/test_live_stack.py -v
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from .conftest import COMPOSE_FILE, ROOT, run_local_module

DOCKER = "/usr/bin/docker"  # Debian's CLI: BuildKit builds without buildx
SERVICES = ("redis", "api", "worker", "prometheus")
BASES = ("python:3.11-slim-bookworm", "ghcr.io/astral-sh/uv:0.13.9", "redis:7.4-alpine")
GRAFANA_IMAGE = "grafana/grafana:11.3.0"
BUNDLED_MANIFEST = ROOT / "service" / "data" / "models" / "disco-demo" / "manifest.json"
SAMPLE = ROOT / "service" / "data" / "samples" / "astronaut_gray.jpg"

pytestmark = pytest.mark.slow


def _why_not() -> str | None:
    """None when the live stack can run here, else why not (the skip message)."""
    hint = "run scripts/system-deps.sh && scripts/install-docker.sh as root (make test does)"
    if os.geteuid() != 0:
        return f"not root: no dockerd here ({hint})"
    if not os.access(DOCKER, os.X_OK):
        return f"{DOCKER} missing (Debian docker.io; {hint})"
    if subprocess.run([DOCKER, "info"], capture_output=True, timeout=30).returncode != 0:
        return f"dockerd not running ({hint})"
    r = subprocess.run([DOCKER, "compose", "version"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return f"no docker compose v2 plugin ({hint})"
    images = [*BASES, "prom/prometheus:v2.55.1"]
    missing = [i for i in images if not _image_exists(i)]
    if missing:
        return f"base images missing: {missing} (deploy/docker/offline-bases.sh makes them)"
    return None


def _image_exists(name: str) -> bool:
    return subprocess.run([DOCKER, "image", "inspect", name], capture_output=True).returncode == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    project: str
    env: dict[str, str]
    api: str  # http://127.0.0.1:PORT
    prometheus: str
    timings: dict[str, float]

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        cmd = [DOCKER, "compose", "-p", self.project, "-f", str(COMPOSE_FILE), *args]
        r = subprocess.run(
            cmd, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check:
            assert r.returncode == 0, f"{' '.join(args)}: {r.stdout}\n{r.stderr}"
        return r.stdout

    def containers(self, service: str) -> list[dict[str, Any]]:
        ids = self.compose("ps", "-q", service).split()
        out = subprocess.run([DOCKER, "inspect", *ids], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)


def _get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float = 60):
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()  # headers: case-insensitive
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    why = _why_not()
    if why and os.geteuid() == 0:  # pytest run directly: set Docker up as `make test` does
        for script in ("system-deps.sh", "install-docker.sh"):
            subprocess.run([str(ROOT / "scripts" / script)], timeout=1200, check=False)
        why = _why_not()
    if why:
        pytest.skip(why)
    project = f"disco-live-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCO_", "COMPOSE_"))}
    env.update(
        DOCKER_BUILDKIT="1",
        DISCO_REDIS_PASSWORD=f"live-{os.urandom(8).hex()}",
        DISCO_API_PORT=str(_free_port()),
        PROMETHEUS_PORT=str(_free_port()),
        DISCO_WORKER_THREADS="1",  # two workers on a 2-core machine
    )
    s = Stack(
        project,
        env,
        f"http://127.0.0.1:{env['DISCO_API_PORT']}",
        f"http://127.0.0.1:{env['PROMETHEUS_PORT']}",
        {},
    )
    try:
        t0 = time.monotonic()
        s.compose("build", timeout=900)
        s.timings["build_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        s.compose("up", "-d", "--wait", "--wait-timeout", "240", *SERVICES, timeout=300)
        s.timings["up_s"] = time.monotonic() - t0
        yield s
    finally:
        logs = s.compose("logs", "--no-color", "--tail", "40", check=False, timeout=60)
        s.compose("down", "-v", "--remove-orphans", "--timeout", "10", check=False, timeout=180)
        label = f"label=com.docker.compose.project={project}"
        left = subprocess.run(
            [DOCKER, "ps", "-aq", "--filter", label],
            capture_output=True,
            text=True,
        ).stdout.split()
        volumes = subprocess.run(
            [DOCKER, "volume", "ls", "-q", "--filter", label],
            capture_output=True,
            text=True,
        ).stdout.split()
        print(f"\nlive stack timings: {s.timings}\n--- last logs ---\n{logs[-4000:]}")
        assert not left and not volumes, f"`down -v` left {left} {volumes}"


def _gray_input() -> tuple[bytes, tuple[int, int]]:
    """The bundled grey sample, resized to an odd, non-square size."""
    from PIL import Image

    img = Image.open(SAMPLE).convert("L").resize((173, 131))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue(), img.size


def test_colorize_through_the_published_port(stack):
    from PIL import Image, ImageStat

    body, size = _gray_input()
    status, headers, out = _post(
        f"{stack.api}/colorize", body, {"content-type": "image/png"}, timeout=60
    )
    assert status == 200, out[:500]
    assert headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(out))
    assert img.size == size and img.mode == "RGB"
    # colour: the chroma channels of the result vary (a grey image has constant a*, b*)
    lab = img.convert("LAB")
    a_std, b_std = ImageStat.Stat(lab).stddev[1:]
    assert max(a_std, b_std) > 2.0, (a_std, b_std)


def test_readiness_reports_the_bundled_model(stack):
    status, body = _get(f"{stack.api}/readyz")
    assert status == 200, body
    ready = json.loads(body)
    manifest = json.loads(BUNDLED_MANIFEST.read_text())
    assert ready["model"]["name"] == manifest["name"]  # disco-demo, not the seed-0 test weights
    assert ready["model"]["version"] == str(manifest["version"])


def test_prometheus_scrapes_the_api_and_both_workers(stack):
    deadline = time.monotonic() + 90  # dns_sd refresh + scrape interval: 15 s each
    seen: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        status, body = _get(f"{stack.prometheus}/api/v1/targets")
        if status == 200:
            seen = {}
            for t in json.loads(body)["data"]["activeTargets"]:
                seen.setdefault(t["labels"]["job"], []).append(t["health"])
            if seen.get("disco-api") == ["up"] and seen.get("disco-worker") == ["up", "up"]:
                return
        time.sleep(2)
    pytest.fail(f"Prometheus targets not all up: {seen}")


def test_containers_are_hardened_exactly_as_compose_sets(stack):
    compose = run_local_module().load_compose(COMPOSE_FILE, stack.env)["services"]
    for service in ("api", "worker"):
        want = compose[service]
        containers = stack.containers(service)
        assert len(containers) == (2 if service == "worker" else 1)
        for c in containers:
            hc, name = c["HostConfig"], c["Name"]
            assert hc["ReadonlyRootfs"] is want["read_only"] is True, name
            assert hc["CapDrop"] == want["cap_drop"] == ["ALL"], name
            assert not hc["CapAdd"], name
            assert set(hc["SecurityOpt"]) == set(want["security_opt"]), name
            assert set(hc["Tmpfs"]) == set(want["tmpfs"]), name
            assert c["Config"]["User"] == "10001:10001", name
            # and from inside: not root, no effective capabilities, / not writable
            ex = [DOCKER, "exec", c["Id"]]
            uid = subprocess.run([*ex, "id", "-u"], capture_output=True, text=True, check=True)
            assert uid.stdout.strip() == "10001", name
            status = subprocess.run(
                [*ex, "cat", "/proc/1/status"], capture_output=True, text=True, check=True
            ).stdout
            caps = dict(line.split(":\t") for line in status.splitlines() if line.startswith("Cap"))
            assert int(caps["CapEff"], 16) == 0 and int(caps["CapPrm"], 16) == 0, (name, caps)
            touch = subprocess.run([*ex, "touch", "/opt/venv/x"], capture_output=True, text=True)
            assert touch.returncode != 0 and "Read-only file system" in touch.stderr, name


def _pending(stack: Stack) -> dict[str, int]:
    """Deliveries each consumer of the job stream holds (XPENDING, through redis-cli in the
    redis container: the stack publishes no Redis port)."""
    redis_id = stack.containers("redis")[0]["Id"]
    out = subprocess.run(
        [DOCKER, "exec", redis_id, "redis-cli", "--raw", "XPENDING", "disco:jobs", "disco:workers"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.split()  # fmt: skip
    rest = out[3:] if out and out[0].isdigit() and int(out[0]) > 0 else []  # count min max ...
    return {rest[i]: int(rest[i + 1]) for i in range(0, len(rest) - 1, 2)}


def test_sigkill_a_worker_under_load_loses_no_accepted_job(stack):
    body, _ = _gray_input()
    accepted: list[str] = []
    rejected: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def submit(n: int) -> None:
        try:
            _submit(n)
        except BaseException as e:  # re-raised in the test's thread
            errors.append(e)

    def _submit(n: int) -> None:
        for _ in range(n):
            status, headers, out = _post(
                f"{stack.api}/colorize",
                body,
                {"content-type": "image/png", "prefer": "respond-async"},
                timeout=30,
            )
            with lock:
                if status == 202:
                    accepted.append(headers["Location"])
                else:  # backpressure (429/503) is allowed; the job was not accepted
                    assert status in (429, 503), (status, out[:300])
                    rejected.append(status)

    # 12 jobs: a backlog both workers are busy with, small enough to finish well within the
    # jobs' deadline (compose: DISCO_JOB_TIMEOUT_S=30) on 2 cores with one worker left
    threads = [threading.Thread(target=submit, args=(4,)) for _ in range(3)]
    for t in threads:
        t.start()
    # kill a worker that holds a delivery right now (mid-batch), not one that is idle or still
    # loading its model: that is the case the queue must recover from
    workers = {c["Config"]["Hostname"]: c["Id"] for c in stack.containers("worker")}
    deadline, victim = time.monotonic() + 60, None
    while victim is None and time.monotonic() < deadline:
        holding = [name for name, n in _pending(stack).items() if n > 0]
        victim = next((cid for host, cid in workers.items()
                       if any(h.startswith(f"{host}-") for h in holding)), None)  # fmt: skip
        time.sleep(0.05)
    assert victim is not None, f"no worker took a delivery in 60 s ({len(accepted)} accepted)"
    subprocess.run([DOCKER, "kill", "--signal", "KILL", victim], check=True, timeout=30)
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(accepted) >= 8, (len(accepted), rejected)
    deadline = time.monotonic() + 120
    pending = list(accepted)
    attempts: dict[str, int] = {}
    while pending and time.monotonic() < deadline:
        still = []
        for loc in pending:
            status, out = _get(f"{stack.api}{loc}")
            assert status == 200, out
            info = json.loads(out)
            attempts[loc] = info["attempts"]
            assert info["status"] not in ("failed", "expired", "cancelled"), (info, len(accepted))
            if info["status"] != "done":
                still.append(loc)
        pending = still
        if pending:
            time.sleep(1)
    assert not pending, f"{len(pending)} of {len(accepted)} accepted jobs not done"
    # the kill hit work in flight: the surviving worker redelivered the victim's jobs
    assert max(attempts.values()) >= 2, sorted(attempts.values())
    tries = sorted(attempts.values())
    print(f"\nSIGKILL under load: {len(accepted)} accepted, all done; attempts {tries}")
    status, out = _get(f"{stack.api}{accepted[-1]}/result")
    assert status == 200 and out[:8] == b"\x89PNG\r\n\x1a\n"


def test_grafana_profile(stack):
    if not _image_exists(GRAFANA_IMAGE):
        pytest.skip(
            f"{GRAFANA_IMAGE} not present: no image registry here and no Debian/PyPI package "
            "to make it from (deploy/docker/offline-bases.sh says so); pull it to run this"
        )
    port = _free_port()
    stack.env["GRAFANA_PORT"] = str(port)
    stack.compose("--profile", "grafana", "up", "-d", "--wait", "grafana", timeout=300)
    status, body = _get(f"http://127.0.0.1:{port}/api/health")
    assert status == 200, body

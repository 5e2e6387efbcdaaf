"""The Dockerfiles without building them (test_live_stack.py builds and runs them): stages, layer
order, non-root users, no torch (and no export/ in the CPU image), the bundled model as the
default, no frontend pull, installs into /opt/venv, files COPY'd exist and are in the build
context, and the lock files still satisfy pyproject.toml. Plus the GPU entrypoint's CPU-side
behaviour."""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from .conftest import DEPLOY, ROOT

DOCKER = DEPLOY / "docker"
DOCKERFILES = {"Dockerfile": "service", "Dockerfile.gpu": "gpu-worker"}  # file -> final target


def stages(path: Path) -> dict[str, str]:
    """{stage name: its text} (continuation lines joined), in file order."""
    out: dict[str, str] = {}
    name = None
    for line in re.sub(r"\\\n", " ", path.read_text()).splitlines():
        m = re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?", line)
        if m:
            name = m.group(1) or f"stage{len(out)}"
            out[name] = ""
        if name is not None and line.strip() and not line.lstrip().startswith("#"):
            out[name] += line.strip() + "\n"
    return out


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_final_stage_is_slim_non_root_and_torch_free(dockerfile):
    s = stages(DOCKER / dockerfile)
    final = list(s)[-1]
    assert final == DOCKERFILES[dockerfile]
    chain = s[final] + (s["runtime"] if final == "service" else "")
    user = re.findall(r"^USER\s+(\S+)", chain, re.M)
    assert user and not user[-1].startswith(("0", "root")), "the service must not run as root"
    assert "import torch" in chain  # the build asserts torch is absent
    for name, text in s.items():  # torch never enters any stage: no export stage, no extra
        assert "[export]" not in text and "torch" not in text.replace(
            'python -c "import torch"', ""
        ), name
    # the bundled model (package data) is the default repository: no export step, no torch
    assert "BUNDLED_MODEL_DIR" in chain and "/models/disco" in chain
    assert "disco export" not in "".join(s.values())


def test_the_cpu_image_holds_the_service_only():
    text = "".join(stages(DOCKER / "Dockerfile").values())
    assert "COPY service ./service" in text
    assert "COPY export" not in text, "export/ must stay out of the CPU image"
    assert '! python -c "import export"' in text  # and the build checks it


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_builds_with_plain_buildkit_into_the_venv(dockerfile):
    """No `# syntax=` frontend pull (no registry here), and every uv install names /opt/venv:
    with UV_PYTHON set, uv installs into that interpreter, not VIRTUAL_ENV (issue #14)."""
    raw = (DOCKER / dockerfile).read_text()
    assert not re.search(r"^#\s*syntax\s*=", raw, re.M | re.I)
    text = re.sub(r"\\\n", " ", raw)
    installs = re.findall(r"uv pip (?:sync|install)[^\n]*", text)
    assert installs
    for cmd in installs:
        assert "--python /opt/venv/bin/python" in cmd, cmd
    assert "UV_PYTHON=" not in text


def _dockerignored(rel: str, patterns: list[str]) -> bool:
    ignored = False
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        hit = any(
            fnmatch.fnmatch(p, pat)
            or fnmatch.fnmatch(p, pat.removeprefix("**/"))
            or fnmatch.fnmatch(parts[i], pat.removeprefix("**/"))
            for i, p in enumerate(prefixes)
        )
        if hit:
            ignored = not neg
    return ignored


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_copied_files_exist_and_are_in_the_build_context(dockerfile):
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    text = re.sub(r"\\\n", " ", (DOCKER / dockerfile).read_text())
    sources = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("COPY") and "--from=" not in line:
            sources += [t for t in line.split()[1:-1] if not t.startswith("--")]
        sources += re.findall(r"--mount=type=bind,source=([^,\s]+)", line)
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert not _dockerignored(src, patterns), f"{src} is excluded by .dockerignore"
    for heavy in (".venv", "artifacts/models", ".git", "tests"):
        assert _dockerignored(heavy, patterns), f"{heavy} should stay out of the build context"


def _pins(lock: Path) -> dict[str, list[tuple[str, str]]]:
    """{name: [(version, marker)]} of a `uv pip compile` output."""
    out: dict[str, list[tuple[str, str]]] = {}
    for line in lock.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+))?", line)
        if m:
            name = re.sub(r"[-_.]+", "-", m.group(1)).lower()
            out.setdefault(name, []).append((m.group(2), (m.group(3) or "").strip()))
    return out


@pytest.mark.parametrize(
    ("lock", "extra_inputs", "dropped"),
    [("serve.txt", [], set()), ("gpu.txt", ["gpu.in"], {"onnxruntime"})],
)
def test_locks_satisfy_pyproject(lock, extra_inputs, dropped):
    requirements = pytest.importorskip("packaging.requirements")
    markers = pytest.importorskip("packaging.markers")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["optional-dependencies"]["serve"])
    for name in extra_inputs:
        reqs += [
            line.split("#")[0].strip()
            for line in (DOCKER / "requirements" / name).read_text().splitlines()
            if line.split("#")[0].strip()
        ]
    pins = _pins(DOCKER / "requirements" / lock)
    text = (DOCKER / "requirements" / lock).read_text()
    assert "--hash=sha256:" in text
    env = {
        "python_version": "3.11",
        "python_full_version": "3.11.9",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "platform_python_implementation": "CPython",
        "implementation_name": "cpython",
    }
    for raw in reqs:
        req = requirements.Requirement(raw)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in dropped:
            assert name not in pins, f"{lock} must not install {name}"
            continue
        assert name in pins, f"{lock} lacks {name} (rerun deploy/docker/lock.sh)"
        versions = [v for v, m in pins[name] if not m or markers.Marker(m).evaluate(env)]
        assert versions and all(req.specifier.contains(v, prereleases=True) for v in versions), (
            f"{lock}: {name} {versions} does not satisfy {req.specifier} (rerun lock.sh)"
        )


def _gpu_prepare(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DISCO_")}
    return subprocess.run(
        [sys.executable, str(DOCKER / "gpu_prepare.py"), *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_gpu_entrypoint_passes_other_engines_through():
    r = _gpu_prepare(
        [sys.executable, "-c", "import os; print(os.environ['DISCO_MODEL_DIR'])"],
        {"DISCO_ENGINE": "onnx", "DISCO_MODEL_DIR": "/models/disco"},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "/models/disco"


def test_gpu_entrypoint_explains_a_missing_tensorrt(tiny_repo, tmp_path):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here: the plans would really be built")
    except ImportError:
        pass
    r = _gpu_prepare(
        ["true"],
        {
            "DISCO_ENGINE": "tensorrt",
            "DISCO_MODEL_DIR": str(tiny_repo),
            "DISCO_TRT_CACHE_DIR": str(tmp_path / "cache"),
        },
    )
    assert r.returncode == 2, r.stderr
    assert "cannot run the TensorRT engine here" in r.stderr and "TensorRT" in r.stderr
    assert not any((tmp_path / "cache").glob("*/manifest.json"))  # nothing half-built left

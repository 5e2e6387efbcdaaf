"""gpu-check is lease-proof on CPU: step timeouts, partial JSON after every step, exit 2 for a
missing backend (never PASSED on another one), reuse of --out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")

from export.gpu_check import StepTimeout, main, pick_backends, time_limit, write_json

ROOT = Path(__file__).resolve().parents[1]
TORCH_ONLY = {"tensorrt": False, "ort_providers": ["CPUExecutionProvider"], "torch_cuda": True}


def test_time_limit_interrupts_a_slow_step() -> None:
    t0 = time.perf_counter()
    with (
        pytest.raises(StepTimeout, match=r"export ran past its 0\.2 s limit"),
        time_limit(0.2, "export"),
    ):
        time.sleep(5)
    assert time.perf_counter() - t0 < 2
    with time_limit(0, "none"):  # 0: no limit, and no alarm left behind
        time.sleep(0.01)


def test_write_json_is_atomic_and_rewritable(tmp_path: Path) -> None:
    path = tmp_path / "out" / "gpu-check.json"
    write_json(path, {"steps": [1]})
    write_json(path, {"steps": [1, 2]})
    assert json.loads(path.read_text()) == {"steps": [1, 2]}
    assert not list(path.parent.glob("*.tmp"))


def test_all_is_strict_present_is_not() -> None:
    assert pick_backends(TORCH_ONLY) == ["torch-cuda"]
    assert pick_backends(TORCH_ONLY, "present") == ["torch-cuda"]
    with pytest.raises(ValueError, match="tensorrt, cuda not available"):
        pick_backends(TORCH_ONLY, "all")


@pytest.mark.parametrize("backend", ["all", "cuda", "tensorrt", "torch-cuda"])
def test_dry_run_missing_backend_exits_2(backend: str, capsys) -> None:
    assert main(["--cpu-dry-run", "--backend", backend]) == 2
    assert "not available" in capsys.readouterr().out


def _script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(ROOT / "deploy" / "gpu-check.sh"), "--cpu-dry-run", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.slow
def test_dry_run_timeout_leaves_partial_json_then_reuses_out(tmp_path: Path) -> None:
    """Export succeeds, the backend step times out (exit 1, JSON says so); a rerun with the same
    --out reuses the export and passes."""
    out = tmp_path / "check"
    slow = _script("--out", str(out), "--step-timeout", "0", cwd=tmp_path)  # warm export
    assert slow.returncode == 0, slow.stdout[-3000:] + slow.stderr[-3000:]
    first = json.loads((out / "gpu-check.json").read_text())
    assert first["finished"] and first["steps"][0]["reused"] is False
    assert [s["step"] for s in first["steps"]] == ["export", "torch-cpu"]

    tight = _script("--out", str(out), "--step-timeout", "0.05", cwd=tmp_path)
    assert tight.returncode == 1, tight.stdout[-3000:] + tight.stderr[-3000:]
    assert "ran past its 0.05 s limit" in tight.stdout
    partial = json.loads((out / "gpu-check.json").read_text())
    assert partial["finished"] is False and "limit" in partial["error"]
    assert (out / "repo" / "manifest.json").is_file()

"""gpu-check is lease-proof on CPU: step timeouts, partial JSON after every step, exit 2 for a
missing backend (never PASSED on another one), reuse of --out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from export.gpu_check import main, pick_backends, write_json

ROOT = Path(__file__).resolve().parents[1]
TORCH_ONLY = {"tensorrt": False, "ort_providers": ["CPUExecutionProvider"], "torch_cuda": True}


def test_time_limit_interrupts_a_slow_step() -> None:
    """In a fresh interpreter: SIGALRM in a pytest process that earlier tests filled with
    OpenVINO/ONNX Runtime thread pools crashed it (seen here), while gpu-check runs alone."""
    import subprocess
    import sys

    code = (
        "import time, pytest\n"
        "from export.gpu_check import StepTimeout, check_deadline, time_limit\n"
        "t0 = time.perf_counter()\n"
        "with pytest.raises(StepTimeout, match=r'export ran past its 0\\.2 s limit'), "
        "time_limit(0.2, 'export'):\n"
        "    while time.perf_counter() - t0 < 5:\n"
        "        time.sleep(0.01)\n"
        "        check_deadline()\n"
        "assert time.perf_counter() - t0 < 2\n"
        "check_deadline()  # the limit is gone with its step\n"
        "with time_limit(0, 'none'):  # 0: no limit, and no alarm left behind\n"
        "    time.sleep(0.01)\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "ok", out.stderr


def test_write_json_is_atomic_and_rewritable(tmp_path: Path) -> None:
    path = tmp_path / "out" / "gpu-check.json"
    write_json(path, {"steps": [1]})
    write_json(path, {"steps": [1, 2]})
    assert json.loads(path.read_text()) == {"steps": [1, 2]}
    assert not list(path.parent.glob("*.tmp"))


def test_all_is_strict_present_is_not() -> None:
    """The lent image (torch CUDA, CuPy, CPU-only ONNX Runtime, no TensorRT) measures both torch
    backends: fp32 eager and bf16 autocast."""
    assert pick_backends(TORCH_ONLY) == ["torch-cuda", "torch-cuda-bf16"]
    assert pick_backends(TORCH_ONLY, "present") == ["torch-cuda", "torch-cuda-bf16"]
    assert pick_backends(TORCH_ONLY, "torch-cuda-bf16") == ["torch-cuda-bf16"]
    assert pick_backends(TORCH_ONLY, "best") == ["torch-cuda"]
    with pytest.raises(ValueError, match="tensorrt, cuda not available"):
        pick_backends(TORCH_ONLY, "all")
    with pytest.raises(ValueError, match="torch-cuda-bf16 is not available"):
        pick_backends({**TORCH_ONLY, "torch_cuda": False}, "torch-cuda-bf16")


def test_torch_cuda_bf16_tolerance_and_options() -> None:
    from export.gpu_check import TOL, TOL_MEAN, main, parity_verdict
    from export.torch_engine import TorchOptions

    assert TOL["torch-cuda"] < TOL["torch-cuda-bf16"] < 1
    report = {"fixed_max_abs": 0.5, "fixed_mean_abs": 0.01, "anchor_token_overlap": 0.9}
    assert parity_verdict(report, TOL["torch-cuda-bf16"], 0.75, TOL_MEAN["torch-cuda-bf16"]) == []
    worse = {**report, "fixed_mean_abs": 0.05}
    (why,) = parity_verdict(worse, TOL["torch-cuda-bf16"], 0.75, TOL_MEAN["torch-cuda-bf16"])
    assert why.startswith("fixed-anchor mean |ab| diff 5.000e-02")
    # what _make_engine builds for torch-cuda-bf16 with --torch-options
    assert TorchOptions.parse(",".join(("bf16", ""))) == TorchOptions(autocast="bf16")
    want = TorchOptions(autocast="bf16", cuda_graphs=True, kmeans="torch")
    assert TorchOptions.parse(",".join(("bf16", "cuda-graphs,kmeans=torch"))) == want
    with pytest.raises(SystemExit):  # argparse knows the option
        main(["--torch-options", "x", "--help"])


@pytest.mark.parametrize("backend", ["all", "cuda", "tensorrt", "torch-cuda", "torch-cuda-bf16"])
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

    # the backend gets 0.05 s, the (reused) export no limit: loading it under load can take longer
    tight = _script(
        "--out", str(out), "--step-timeout", "0.05", "--export-timeout", "0", cwd=tmp_path
    )  # fmt: skip
    assert tight.returncode == 1, tight.stdout[-3000:] + tight.stderr[-3000:]
    assert "ran past its 0.05 s limit" in tight.stdout
    partial = json.loads((out / "gpu-check.json").read_text())
    # a backend that runs past its limit is recorded as that backend's failure; the others go on
    timed_out = [b for b in partial["backends"] if "limit" in b.get("error", "")]
    assert partial["failed"] == ["torch-cpu"] and timed_out
    assert (out / "repo" / "manifest.json").is_file()

    export_tight = _script("--out", str(out), "--export-timeout", "0.0001", cwd=tmp_path)
    assert export_tight.returncode == 1, export_tight.stdout[-3000:] + export_tight.stderr[-3000:]
    stopped = json.loads((out / "gpu-check.json").read_text())
    assert stopped["failed"] == ["export"] and "export ran past" in stopped["error"]

"""TensorRT variant: graph rewrite and bookkeeping (CPU), plugin glue, engine (GPU), gpu-check.

Without TensorRT / CuPy / a CUDA device the engine and build tests skip with the reason; the
ONNX rewrite, the optimization profiles, the manifest bookkeeping, the plugin's host glue and
the gpu-check logic run everywhere, on a tiny model repository.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from service.engine.onnx import ModelRepositoryError, OnnxEngine
from service.engine.plugin import DOMAIN, OP_TYPE, kmeans_anchors
from service.engine.tensorrt import VARIANT, TensorRTEngine, check_compatible, plan_files
from service.engine.tensorrt_plugin import (
    PLUGIN_ID,
    PLUGIN_NAMESPACE,
    TensorRTUnavailable,
    kmeans_on_stream,
)

ROOT = Path(__file__).resolve().parents[1]


def _gpu_skip_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not installed (a GPU node: pip install 'disco-serve[gpu]')"
    if importlib.util.find_spec("cupy") is None:
        return "cupy is not installed (the TensorRT engine keeps its buffers in CuPy arrays)"
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA device"
    except Exception as e:  # the CUDA driver itself may be missing
        return f"no usable CUDA device ({type(e).__name__}: {e})"
    return None


GPU_SKIP = _gpu_skip_reason()
needs_trt_gpu = pytest.mark.skipif(GPU_SKIP is not None, reason=GPU_SKIP or "")
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


# ------------------------------------------------------------------------------------------------
# A tiny model repository (one export for the module)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """disco_demo(n_layers=1), randomly initialised, exported with the k-means plugin node."""
    torch = pytest.importorskip("torch")
    from export.gpu_check import export_model
    from export.model.disco import disco_demo

    torch.set_num_threads(2)
    torch.manual_seed(0)
    repo = tmp_path_factory.mktemp("tensorrt") / "repo"
    export_model(disco_demo(n_layers=1), repo, "plugin", lambda msg: None, retry_seeds=(1, 2, 3))
    return repo


@pytest.fixture()
def repo_copy(tiny_repo: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "repo"
    shutil.copytree(tiny_repo, dst)
    return dst


def _manifest(repo: Path) -> dict:
    return json.loads((repo / "manifest.json").read_text())


# ------------------------------------------------------------------------------------------------
# Lazy imports and clear errors without TensorRT
# ------------------------------------------------------------------------------------------------
def test_modules_import_without_tensorrt_cupy_or_torch():
    code = (
        "import sys\n"
        "import service.engine.tensorrt, service.engine.tensorrt_plugin\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'cupy', 'torch'))\n"
        "assert not bad, bad[:5]\n"
        "import export.tensorrt_build, export.gpu_check\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'cupy'))\n"
        "assert not bad, bad[:5]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_engine_and_build_say_what_is_missing(repo_copy: Path):
    from export.tensorrt_build import build_tensorrt_variant

    before = (repo_copy / "manifest.json").read_bytes()
    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed"):
        TensorRTEngine(repo_copy)
    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed"):
        build_tensorrt_variant(repo_copy)
    assert (repo_copy / "manifest.json").read_bytes() == before
    assert not list(repo_copy.glob("*.plan"))


# ------------------------------------------------------------------------------------------------
# The ONNX rewrite and the optimization profiles (CPU)
# ------------------------------------------------------------------------------------------------
def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def test_plugin_namespace_is_added_to_a_copy_only(tiny_repo: Path):
    from export.tensorrt_build import add_plugin_namespace

    path = tiny_repo / "encoder.onnx"
    original = onnx.load(path)
    before = original.SerializeToString()
    rewritten, count = add_plugin_namespace(original)
    assert count == 1
    assert original.SerializeToString() == before  # the input model is untouched
    nodes = [n for n in rewritten.graph.node if n.domain == DOMAIN and n.op_type == OP_TYPE]
    assert len(nodes) == 1
    attrs = _attrs(nodes[0])
    assert attrs["plugin_namespace"] == PLUGIN_NAMESPACE.encode()
    assert attrs["plugin_version"] == b"1"
    assert attrs["iters"] == 20 and attrs["tol"] == pytest.approx(1e-4)
    assert f"{PLUGIN_NAMESPACE}::{nodes[0].op_type}" == PLUGIN_ID  # op_type = plugin name
    # every other node is as exported, and the copy is still a valid model
    assert len(rewritten.graph.node) == len(original.graph.node)
    onnx.checker.check_model(rewritten)
    # applying it twice does not duplicate the attributes
    again, _ = add_plugin_namespace(rewritten)
    node = next(n for n in again.graph.node if n.op_type == OP_TYPE)
    assert [a.name for a in node.attribute].count("plugin_namespace") == 1
    # the repository's file (what ONNX Runtime loads) is unchanged
    from export.onnx_export import file_sha256 as _sha256

    assert _sha256(path) == _manifest(tiny_repo)["graphs"]["encoder"]["sha256"]
    _, n_gen = add_plugin_namespace(onnx.load(tiny_repo / "generator.onnx"))
    assert n_gen == 0


def test_profile_shapes(tiny_repo: Path):
    from export.graphs import GENERATOR_INPUTS
    from export.tensorrt_build import profile_shapes

    enc = profile_shapes(onnx.load(tiny_repo / "encoder.onnx"))
    assert enc == {
        "l_norm": ((1, 1, 256, 256), (32, 1, 256, 256), (64, 1, 256, 256)),
        "init_idx": ((1, 1), (32, 8), (64, 64)),
    }
    gen = profile_shapes(onnx.load(tiny_repo / "generator.onnx"), batch=(2, 4, 16))
    assert list(gen) == GENERATOR_INPUTS
    assert gen["affinity"] == ((2, 9, 256, 256), (4, 9, 256, 256), (16, 9, 256, 256))
    assert gen["hint_bins"] == ((2, 256), (4, 256), (16, 256))
    assert gen["tokens"][2][0] == 16 and gen["tokens"][0][1:] == gen["tokens"][2][1:]
    with pytest.raises(ValueError, match="min <= opt <= max"):
        profile_shapes(onnx.load(tiny_repo / "generator.onnx"), batch=(8, 1, 64))
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["rows", 3])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["rows", 3])
    odd = onnx.helper.make_model(
        onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    )
    with pytest.raises(ValueError, match="'rows'"):
        profile_shapes(odd)


# ------------------------------------------------------------------------------------------------
# Manifest bookkeeping (CPU)
# ------------------------------------------------------------------------------------------------
def test_variant_is_recorded_beside_the_others(repo_copy: Path):
    from export.onnx_export import file_sha256 as _sha256
    from export.tensorrt_build import record_variant, variant_entry

    manifest = _manifest(repo_copy)
    manifest["variants"]["int8"] = {"precision": "int8", "graphs": {}}  # an existing variant
    (repo_copy / "manifest.json").write_text(json.dumps(manifest, indent=2))
    for key in ("encoder", "generator"):
        (repo_copy / f"{key}.plan").write_bytes(f"not a real {key} plan".encode())
    entry = variant_entry(
        repo_copy, manifest, plugin=True, tensorrt_version="10.9.0.34", device="NVIDIA H200",
        compute_capability="9.0",
    )  # fmt: skip
    record_variant(repo_copy, entry)
    after = _manifest(repo_copy)
    assert set(after["variants"]) == {"int8", VARIANT}
    assert after["variants"]["int8"] == {"precision": "int8", "graphs": {}}
    assert {k: v for k, v in after.items() if k != "variants"} == {
        k: v for k, v in manifest.items() if k != "variants"
    }
    v = after["variants"][VARIANT]
    assert v["precision"] == "fp16" and v["runtime"] == "tensorrt"
    assert v["plugin"]["id"] == PLUGIN_ID
    assert v["profiles"] == {"batch": [1, 32, 64], "anchors": [1, 8, 64]}
    assert (v["tensorrt_version"], v["compute_capability"]) == ("10.9.0.34", "9.0")
    for key in ("encoder", "generator"):
        g = v["graphs"][key]
        assert g["file"] == f"{key}.plan"
        assert g["sha256"] == _sha256(repo_copy / f"{key}.plan")
        assert g["onnx"] == f"{key}.onnx"
        assert g["onnx_sha256"] == manifest["graphs"][key]["sha256"]
    assert plan_files(repo_copy, after) == {
        "encoder": repo_copy / "encoder.plan",
        "generator": repo_copy / "generator.plan",
    }
    OnnxEngine(repo_copy, intra_op_threads=1)  # the fp32 graphs still serve as before


def test_plan_files_explain_what_is_missing(repo_copy: Path):
    manifest = _manifest(repo_copy)
    with pytest.raises(ModelRepositoryError, match="disco export --tensorrt"):
        plan_files(repo_copy, manifest)
    manifest["variants"][VARIANT] = {
        "graphs": {"encoder": {"file": "encoder.plan"}, "generator": {"file": "generator.plan"}}
    }
    (repo_copy / "encoder.plan").write_bytes(b"x")
    with pytest.raises(ModelRepositoryError, match=r"generator\.plan"):
        plan_files(repo_copy, manifest)


def test_plans_only_load_where_they_were_built():
    entry = {"tensorrt_version": "10.9.0.34", "compute_capability": "9.0", "device": "H200"}
    check_compatible(entry, tensorrt_version="10.9.0.34", compute_capability="9.0")
    with pytest.raises(
        ModelRepositoryError, match=r"TensorRT 10\.9\.0\.34, this is TensorRT 10\.8"
    ):
        check_compatible(entry, tensorrt_version="10.8.0.43", compute_capability="9.0")
    with pytest.raises(ModelRepositoryError, match=r"compute capability 9\.0 .*this GPU is 8\.0"):
        check_compatible(entry, tensorrt_version="10.9.0.34", compute_capability="8.0")


# ------------------------------------------------------------------------------------------------
# The plugin's body with a stand-in for CuPy (CPU)
# ------------------------------------------------------------------------------------------------
class _FakeStream:
    """cupy.cuda.ExternalStream's surface: a context manager; counts entries and host syncs."""

    entered = synced = 0

    def __init__(self, ptr: int):
        self.ptr = ptr

    def __enter__(self):
        _FakeStream.entered += 1
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self) -> None:
        _FakeStream.synced += 1


def _fake_asarray(t, dtype=None):
    """Device tensors (objects with .array) become views of their numpy buffers."""
    return np.asarray(getattr(t, "array", t), dtype=dtype)


# numpy stands in for CuPy's array API; tensors are views, so writes land in the outputs
_FAKE_CUPY = SimpleNamespace(
    **{name: getattr(np, name) for name in dir(np) if not name.startswith("_")},
)
_FAKE_CUPY.asarray = _fake_asarray
_FAKE_CUPY.cuda = SimpleNamespace(ExternalStream=_FakeStream)


def test_plugin_body_runs_the_array_kmeans_on_the_stream():
    rng = np.random.default_rng(0)
    enc_out = rng.normal(size=(3, 64, 256)).astype(np.float32)
    sizes = rng.uniform(0.5, 1.5, (3, 256)).astype(np.float32)
    init = np.stack([rng.choice(256, 8, replace=False) for _ in range(3)]).astype(np.int64)
    init[2, 5:] = -1  # a padded row
    ins = [SimpleNamespace(array=a) for a in (enc_out, sizes, init)]
    outs = [
        SimpleNamespace(array=np.full((3, 256), -7, np.float32)),
        SimpleNamespace(array=np.full((3, 8), -7, np.int64)),
    ]
    synced, entered = _FakeStream.synced, _FakeStream.entered
    kmeans_on_stream(ins, outs, 1234, iters=20, tol=1e-4, cupy=_FAKE_CUPY)
    want_mask, want_idx = kmeans_anchors(enc_out, sizes, init, 20, 1e-4)
    np.testing.assert_array_equal(outs[0].array, want_mask)
    np.testing.assert_array_equal(outs[1].array, want_idx)
    assert (outs[1].array[2, 5:] == -1).all()
    assert _FakeStream.entered == entered + 1  # everything ran on TensorRT's stream
    assert _FakeStream.synced == synced  # and no host synchronisation
    wrong = [SimpleNamespace(array=np.zeros((3, 256), np.float32)),
             SimpleNamespace(array=np.zeros((3, 4), np.int64))]  # fmt: skip
    with pytest.raises(ValueError, match="anchor_idx"):
        kmeans_on_stream(ins, wrong, 1234, iters=20, tol=1e-4, cupy=_FAKE_CUPY)


# ------------------------------------------------------------------------------------------------
# gpu-check logic (CPU)
# ------------------------------------------------------------------------------------------------
class _Perturbed:
    """An engine that returns another engine's results, spoiled on purpose."""

    def __init__(self, inner, *, ab_shift: float = 0.0, roll_anchors: bool = False):
        self.inner, self.ab_shift, self.roll = inner, ab_shift, roll_anchors
        self.input_size = inner.input_size

    def encode(self, l_norm, init_idx):
        from dataclasses import replace

        enc = self.inner.encode(l_norm, init_idx)
        return replace(enc, hint_mask=np.roll(enc.hint_mask, 37, axis=1)) if self.roll else enc

    def generate(self, *args):
        return self.inner.generate(*args) + np.float32(self.ab_shift)


def test_gpu_check_parity_and_throughput(tiny_repo: Path):
    from export.gpu_check import compare_engines, parity_images, parity_verdict, throughput

    ref = OnnxEngine(tiny_repo, intra_op_threads=1)
    images = parity_images(ref.input_size, 2)
    assert len(images) == 2
    same = compare_engines(ref, ref, images)
    assert same["fixed_max_abs"] == 0 and same["anchor_rows_equal"] == 1
    assert same["anchor_token_overlap"] == 1 and same["kmeans_max_abs"] == 0
    assert parity_verdict(same, 1e-3, 0.75) == []
    off = compare_engines(ref, _Perturbed(ref, ab_shift=0.1), images)
    assert parity_verdict(off, 1e-2, 0.75)[0].startswith("fixed-anchor max |ab| diff 1.0")
    moved = compare_engines(ref, _Perturbed(ref, roll_anchors=True), images)
    assert moved["anchor_rows_equal"] == 0 and "kmeans_max_abs" not in moved
    assert any("overlap" in p for p in parity_verdict(moved, 1e-2, 0.75))
    nan = {**same, "fixed_max_abs": float("nan")}
    assert parity_verdict(nan, 1e-2, 0.75)
    row = throughput(ref, np.zeros((1, 1, 256, 256), np.float32), 3, warmup=0, runs=1)
    assert row["batch"] == 3 and row["images_per_s"] > 0


def test_gpu_check_backend_choice_and_table():
    from export.gpu_check import pick_backends, summary_table

    everything = {"tensorrt": True, "ort_providers": ["CUDAExecutionProvider"], "torch_cuda": True}
    assert pick_backends(everything) == ["tensorrt", "cuda", "torch-cuda", "torch-cuda-bf16"]
    assert pick_backends(everything, "best") == ["tensorrt"]
    torch_only = {"tensorrt": False, "ort_providers": ["CPUExecutionProvider"], "torch_cuda": True}
    assert pick_backends(torch_only) == ["torch-cuda", "torch-cuda-bf16"]
    assert pick_backends({**torch_only, "torch_cuda": False}) == []
    with pytest.raises(ValueError, match="not available"):
        pick_backends(torch_only, "tensorrt")
    ok = {"backend": "cuda", "parity": {"passed": True, "fixed_max_abs": 1e-3,
          "anchor_rows_equal": 1.0, "anchor_token_overlap": 1.0},
          "throughput": [{"batch": 1, "images_per_s": 50.0}]}  # fmt: skip
    table = summary_table([ok, {"backend": "tensorrt", "error": "RuntimeError: boom"}], (1, 8))
    lines = table.splitlines()
    assert lines[0].startswith("| backend | parity |") and "b=8 img/s" in lines[0]
    assert lines[2] == "| cuda | pass | 1.00e-03 | 1.00 / 1.000 | 50.0 | - |"
    assert "ERROR: RuntimeError: boom" in lines[3]


@pytest.mark.slow
def test_gpu_check_script_cpu_dry_run(tmp_path: Path):
    """The shell script end to end on CPU (about 30-40 s on 2 cores)."""
    out = tmp_path / "result.json"
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(ROOT / "deploy" / "gpu-check.sh"), "--cpu-dry-run", "--json", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "gpu-check PASSED" in proc.stdout
    assert "| torch-cpu | pass |" in proc.stdout
    result = json.loads(out.read_text())
    (backend,) = result["backends"]
    assert backend["parity"]["passed"] and [r["batch"] for r in backend["throughput"]] == [1, 2]


def test_gpu_check_without_a_gpu_exits_2():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available() or GPU_SKIP is None:
        pytest.skip("this machine has a GPU")
    from export.gpu_check import main

    assert main([]) == 2


# ------------------------------------------------------------------------------------------------
# On a GPU node with TensorRT
# ------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@needs_trt_gpu
def test_plugin_registration_is_idempotent():
    from service.engine.tensorrt_plugin import register_plugin

    assert register_plugin() == register_plugin() == PLUGIN_ID


@pytest.mark.gpu
@needs_trt_gpu
def test_build_and_serve_the_tensorrt_variant(repo_copy: Path):
    from export.gpu_check import compare_engines, parity_images, parity_verdict
    from export.tensorrt_build import build_tensorrt_variant

    entry = build_tensorrt_variant(repo_copy)
    assert entry["plugin"]["id"] == PLUGIN_ID
    assert _manifest(repo_copy)["variants"][VARIANT]["accuracy_vs_fp32"]["images"] > 0
    eng, ref = TensorRTEngine(repo_copy), OnnxEngine(repo_copy, providers="cpu")
    images = parity_images(ref.input_size, 4)
    report = compare_engines(ref, eng, images)
    assert parity_verdict(report, 5e-2, 0.75) == [], report
    # the plugin is the numpy reference, run on the engine's own encoder outputs: exact
    rng = np.random.default_rng(3)
    l_norm = rng.uniform(-1, 1, (3, 1, 256, 256)).astype(np.float32)
    init = np.stack([rng.choice(256, 12, replace=False) for _ in range(3)]).astype(np.int64)
    init[1, 4:] = -1
    enc = eng.encode(l_norm, init)
    want, _ = kmeans_anchors(enc.enc_out, enc.spixel_sizes, init, 20, 1e-4)
    np.testing.assert_array_equal(enc.hint_mask, want)
    ab = eng.generate(l_norm, enc.affinity, enc.tokens, enc.hint_mask, enc.sampled_bins[:, 0])
    assert ab.shape == (3, 2, 256, 256) and ab.dtype == np.float32 and np.isfinite(ab).all()
    # more rows than the profile's max batch are served in chunks
    big = np.repeat(l_norm[:1], 70, axis=0)
    enc_big = eng.encode(big, np.repeat(init[:1], 70, axis=0))
    assert enc_big.affinity.shape[0] == 70
    np.testing.assert_array_equal(enc_big.hint_mask[69], enc_big.hint_mask[0])

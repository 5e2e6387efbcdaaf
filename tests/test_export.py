"""`disco export`: ONNX model repositories, the k-means plugin, ONNX Runtime parity."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from export import onnx_export  # noqa: E402
from export.model import anchors as tanchors  # noqa: E402
from export.onnx_export import (  # noqa: E402
    ExportError,
    export_repository,
    kmeans_plugin_graph,
    trace_kmeans_inline,
)
from service.anchors import init_indices  # noqa: E402
from service.cli import app  # noqa: E402
from service.engine.onnx import ModelRepositoryError, OnnxEngine  # noqa: E402
from service.engine.plugin import DOMAIN, OP_TYPE, register  # noqa: E402

runner = CliRunner()
STANDARD_DOMAINS = {"", "ai.onnx"}
FIXED = [(18, (20, 60)), (29, (-30, 40)), (74, (0, -40)), (87, (50, 30)),
         (133, (10, 10)), (154, (-10, -20)), (200, (30, -50)), (237, (0, 70))]  # fmt: skip


def test_manifest_describes_the_repository(seed0_repo):
    m = json.loads((seed0_repo / "manifest.json").read_text())
    assert m["name"] == "test-seed0" and m["opset"] == onnx_export.OPSET
    assert m["kmeans"] == "plugin" and m["precision"] == "fp32"
    assert m["custom_ops"] == [{"domain": DOMAIN, "op_type": OP_TYPE, "version": 1}]
    enc = {io["name"]: io for io in m["graphs"]["encoder"]["inputs"]}
    assert enc["l_norm"] == {"name": "l_norm", "shape": ["batch", 1, 256, 256], "dtype": "float32"}
    assert enc["init_idx"]["dtype"] == "int64" and enc["init_idx"]["shape"] == ["batch", "anchors"]
    outs = [o["name"] for o in m["graphs"]["generator"]["outputs"]]
    assert outs == ["ab"]
    p = m["parity"]
    assert p["anchors_equal"] and max(p["fixed_max_abs"], p["kmeans_max_abs"]) <= 5e-4
    assert m["config"]["d_model"] == 64 and m["default_anchors"] == 8 and m["created"]


def test_default_export_has_only_the_plugin_as_custom_node(seed0_repo):
    for name in ("encoder", "generator"):
        model = onnx.load(seed0_repo / f"{name}.onnx")
        onnx.checker.check_model(model)
        custom = [
            (n.domain, n.op_type) for n in model.graph.node if n.domain not in STANDARD_DOMAINS
        ]
        assert custom == ([(DOMAIN, OP_TYPE)] if name == "encoder" else [])
        meta = {p.key: p.value for p in model.metadata_props}
        assert json.loads(meta["disco.config"])["img_size"] == 256


def _run_cli(*args):
    result = runner.invoke(app, ["colorize", *map(str, args)])
    assert result.exit_code == 0, result.output + repr(result.exception)


@pytest.mark.parametrize("image", ["astronaut", "coffee"])
def test_onnx_engine_reproduces_vectors(tmp_path, seed0_repo, vectors_dir, image):
    src = vectors_dir / f"{image}_gray256.png"
    _run_cli(src, "-o", tmp_path / "km", "--engine", "onnx", "--model", seed0_repo, "--seed", 130,
             "--save-ab")  # fmt: skip
    ref = np.load(vectors_dir / f"{image}_seed0_kmeans_rng130.npz")
    assert (
        np.abs(np.load(tmp_path / "km" / f"{image}_gray256.ab.npy") - ref["final_ab"]).max() <= 5e-4
    )
    hints = tmp_path / "hints.json"
    hints.write_text(json.dumps([{"token": t, "ab": list(ab)} for t, ab in FIXED]))
    _run_cli(src, "-o", tmp_path / "fx", "--engine", "onnx", "--model", seed0_repo,
             "--hints", hints, "--save-ab")  # fmt: skip
    ref = np.load(vectors_dir / f"{image}_seed0_fixed.npz")
    assert (
        np.abs(np.load(tmp_path / "fx" / f"{image}_gray256.ab.npy") - ref["final_ab"]).max() <= 5e-4
    )


def test_onnx_engine_anchors_on_vectors(seed0_repo, vectors_dir):
    engine = OnnxEngine(seed0_repo)
    for image in ("astronaut", "coffee"):
        v = np.load(vectors_dir / f"{image}_seed0_kmeans_rng130.npz")
        l_norm = np.load(vectors_dir / f"{image}_seed0_fixed.npz")["input_L"]
        enc = engine.encode(l_norm, v["kmeans_init_idx"][None])
        np.testing.assert_array_equal(enc.hint_mask.reshape(v["hint_mask"].shape), v["hint_mask"])


@pytest.fixture(scope="module")
def kmeans_sessions(tiny_model):
    so = ort.SessionOptions()
    so.register_custom_ops_library(register())
    plugin = ort.InferenceSession(kmeans_plugin_graph(tiny_model).SerializeToString(), so)
    inline = ort.InferenceSession(trace_kmeans_inline(tiny_model).SerializeToString())
    return plugin, inline


def test_plugin_equals_inline_equals_torch(kmeans_sessions, vectors_dir):
    """50 random token sets (mixed K, padded rows) plus the two conformance images."""
    plugin, inline = kmeans_sessions
    rng = np.random.default_rng(42)
    cases = []
    for case in range(50):
        n = int(rng.integers(1, 4))
        k_true = int(rng.integers(2, 12))
        centres = rng.normal(0, 3, (n, k_true, 64))
        member = rng.integers(0, k_true, (n, 256))
        x = np.take_along_axis(centres, member[..., None], 1) + rng.normal(0, 1, (n, 256, 64))
        ks = rng.choice([1, 4, 8, 16, 64], n)
        init = np.full((n, ks.max()), -1, np.int64)
        for i, k in enumerate(ks):
            init[i, :k] = init_indices(case * 10 + i, int(k))
        sizes = (rng.integers(0, 9, (n, 256)) / 4).astype(np.float32)
        cases.append((x.transpose(0, 2, 1).astype(np.float32), sizes, init))
    for image in ("astronaut", "coffee"):
        v = np.load(vectors_dir / f"{image}_seed0_kmeans_rng130.npz")
        cases.append((v["enc_out"], v["spixel_sizes"].reshape(1, 256), v["kmeans_init_idx"][None]))
    for enc_out, sizes, init in cases:
        feeds = {"enc_out": enc_out, "spixel_sizes": sizes, "init_idx": init}
        p_mask, p_idx = plugin.run(None, feeds)
        i_mask, i_idx = inline.run(None, feeds)
        t_mask, t_idx, _ = tanchors.locate_anchors(*map(torch.from_numpy, (enc_out, sizes, init)))
        np.testing.assert_array_equal(p_mask, i_mask)
        np.testing.assert_array_equal(p_idx, i_idx)
        np.testing.assert_array_equal(p_mask, t_mask.numpy())
        np.testing.assert_array_equal(p_idx, t_idx.numpy())


def test_inline_repository_needs_no_plugin(tmp_path, tiny_model):
    out = tmp_path / "inline"
    m = export_repository(tiny_model, out, name="tiny", kmeans="inline")
    assert m["custom_ops"] == [] and m["parity"]["anchors_equal"]
    enc = onnx.load(out / "encoder.onnx")
    assert all(n.domain in STANDARD_DOMAINS for n in enc.graph.node)
    plugin_repo = tmp_path / "plugin"
    export_repository(tiny_model, plugin_repo, name="tiny")
    l_norm = np.random.default_rng(0).uniform(-1, 1, (2, 1, 256, 256)).astype(np.float32)
    init = np.stack([init_indices(s, 8) for s in (1, 2)])
    a, b = OnnxEngine(out).encode(l_norm, init), OnnxEngine(plugin_repo).encode(l_norm, init)
    np.testing.assert_array_equal(a.hint_mask, b.hint_mask)
    np.testing.assert_array_equal(a.sampled_bins, b.sampled_bins)


def test_export_refuses_when_parity_fails(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setattr(onnx_export, "PARITY_TOL", -1.0)  # nothing can pass
    out = tmp_path / "refused"
    with pytest.raises(ExportError, match="do not reproduce"):
        export_repository(tiny_model, out, name="tiny")
    assert not out.exists() and not list(tmp_path.iterdir())


def test_int8_variant(tmp_path, tiny_model):
    from export.quantize import add_int8_variant

    repo = tmp_path / "q"
    export_repository(tiny_model, repo, name="tiny")
    cost = add_int8_variant(tiny_model, repo)
    manifest = json.loads((repo / "manifest.json").read_text())
    assert manifest["variants"]["int8"]["accuracy_vs_fp32"] == cost
    assert np.isfinite(cost["ab_psnr_db"]) and cost["max_abs"] >= 0
    engine = OnnxEngine(repo, variant="int8")
    assert engine.info["precision"] == "int8"
    ops = {n.op_type for n in onnx.load(repo / "encoder.int8.onnx").graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    with pytest.raises(ModelRepositoryError, match="no 'bf16' variant"):
        OnnxEngine(repo, variant="bf16")


def test_missing_repository_is_a_clear_error(tmp_path):
    with pytest.raises(ModelRepositoryError, match="disco export"):
        OnnxEngine(tmp_path)
    result = runner.invoke(
        app, ["colorize", str(tmp_path), "-o", str(tmp_path), "--engine", "onnx"]
    )
    assert result.exit_code == 2

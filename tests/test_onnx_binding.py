"""ONNX Runtime I/O binding (service/engine/ort_binding.py) against the plain numpy path.

The bound path is what the CUDA EP runs; here it runs with CPU OrtValues on the CPU EP, through
real sessions on the bundled model repository, and must give exactly the plain path's results.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service import pipeline
from service.engine.onnx import OnnxEngine
from service.engine.ort_binding import DeviceTensor, gather_model
from service.hints import Hint

REPO = Path(__file__).resolve().parents[1] / "service" / "data" / "models" / "disco-demo"


@pytest.fixture(scope="module")
def engines() -> tuple[OnnxEngine, OnnxEngine]:
    plain = OnnxEngine(REPO, intra_op_threads=1)
    bound = OnnxEngine(REPO, intra_op_threads=1, io_binding=True)
    return plain, bound


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, 96 * 80, dtype=np.float64).reshape(96, 80)
    return [
        np.clip(base[..., None] + rng.normal(0, 40, (96, 80, 3)), 0, 255).astype(np.uint8)
        for _ in range(n)
    ]


def test_cpu_default_keeps_the_plain_path(engines):
    plain, bound = engines
    assert plain.binder is None, "the CPU EP must keep the numpy session.run path"
    assert bound.binder is not None and bound.binder.device == "cpu"


def test_gather_model_is_valid_onnx():
    onnx = pytest.importorskip("onnx")
    model = onnx.load_from_string(gather_model(rank=3))
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["Gather"]
    x = np.arange(24, dtype=np.float32).reshape(4, 3, 2)
    sess = ort.InferenceSession(gather_model(rank=3), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": x, "idx": np.array([2, 2, 0], np.int64)})
    assert np.array_equal(y, x[[2, 2, 0]])


def test_encoder_outputs_stay_as_ortvalues(engines):
    _, bound = engines
    s = bound.input_size
    l_norm = np.random.default_rng(1).uniform(-1, 1, (2, 1, s, s)).astype(np.float32)
    init = np.tile(np.arange(8, dtype=np.int64), (2, 1))
    enc = bound.encode(l_norm, init)
    for name in ("affinity", "tokens", "enc_out", "pal_logit", "spixel_sizes"):
        assert isinstance(getattr(enc, name), DeviceTensor), name
    assert isinstance(enc.hint_mask, np.ndarray) and isinstance(enc.sampled_bins, np.ndarray)
    rows = enc.affinity[np.array([1, 1, 0])]
    assert isinstance(rows, DeviceTensor), "a row gather stays on the device"
    assert rows.shape == (3, *enc.affinity.shape[1:])
    host = np.asarray(enc.affinity)
    assert np.array_equal(np.asarray(rows), host[[1, 1, 0]])
    assert enc.affinity[np.arange(2)] is enc.affinity  # identity rows: no gather
    with pytest.raises(IndexError):
        enc.tokens[np.array([2])]


def test_encode_generate_equal_plain(engines):
    plain, bound = engines
    s = plain.input_size
    rng = np.random.default_rng(2)
    l_norm = rng.uniform(-1, 1, (3, 1, s, s)).astype(np.float32)
    init = np.stack([rng.permutation(256)[:8] for _ in range(3)]).astype(np.int64)
    init[2, 5:] = -1
    e_plain, e_bound = plain.encode(l_norm, init), bound.encode(l_norm, init)
    for name in e_plain.__dataclass_fields__:
        assert np.array_equal(np.asarray(getattr(e_bound, name)), getattr(e_plain, name)), name
    take = np.array([0, 0, 1, 2, 2, 2])
    mask = e_plain.hint_mask[take]
    bins = e_plain.sampled_bins[take, 0]
    ab_plain = plain.generate(
        l_norm[take], e_plain.affinity[take], e_plain.tokens[take], mask, bins
    )
    ab_bound = bound.generate(
        l_norm[take], e_bound.affinity[take], e_bound.tokens[take], mask, bins
    )
    assert ab_bound.dtype == np.float32 and ab_bound.shape == ab_plain.shape
    assert np.array_equal(ab_bound, ab_plain)


def _kmeans_jobs(imgs: list[np.ndarray]) -> list[pipeline.Job]:
    return [pipeline.Job(imgs[0], seed=3, anchors=8, count=3),
            pipeline.Job(imgs[1], seed=4, anchors=5)]  # fmt: skip


def _fixed_jobs(imgs: list[np.ndarray]) -> list[pipeline.Job]:
    hints = [Hint(token=17, ab=(40, -20)), Hint(x=0.7, y=0.2, color="#3366cc")]
    return [pipeline.Job(imgs[0], hints=hints),
            pipeline.Job(imgs[1], hints=[Hint(token=200, ab=(-10, 30))], size="model")]  # fmt: skip


@pytest.mark.parametrize("make_jobs", [_kmeans_jobs, _fixed_jobs], ids=["kmeans", "fixed"])
def test_pipeline_equal_plain(engines, make_jobs):
    plain, bound = engines
    batch = make_jobs(_images(2))
    want, got = pipeline.run(plain, batch), pipeline.run(bound, batch)
    assert [len(r) for r in got] == [len(r) for r in want]
    for rw, rg in zip(want, got, strict=True):
        for w, g in zip(rw, rg, strict=True):
            assert np.array_equal(g.ab_norm, w.ab_norm)
            assert np.array_equal(g.image, w.image)
            assert g.anchors == w.anchors


def test_automatic_anchors_equal_plain(engines):
    plain, bound = engines
    batch = [pipeline.Job(img, seed=7, anchors=6) for img in _images(2, seed=5)]
    assert pipeline.automatic_anchors(bound, batch) == pipeline.automatic_anchors(plain, batch)

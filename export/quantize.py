"""`disco export --quantize int8`: an opt-in int8 variant of a model repository.

ONNX Runtime static quantization (QDQ, per-channel int8 weights, uint8 activations calibrated
on bundled photos) of the convolutional trunks only: the transformers, the heads, the softmax
of the affinity and the final output conv stay fp32 (they are cheap and the most sensitive).
The accuracy cost against the fp32 graphs is measured here and written into the manifest; the
engine uses the variant only when asked (`OnnxEngine(variant="int8")`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from service import colorspace
from service.anchors import init_indices

from .model.disco import Disco
from .onnx_export import (
    SAMPLES_DIR,
    attach_kmeans,
    file_sha256,
    kmeans_plugin_graph,
    trace_encoder,
    trace_generator,
    trace_kmeans_inline,
)

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION_DIRS = (SAMPLES_DIR, ROOT / "tests" / "data" / "photos")


def calibration_images() -> list[np.ndarray]:
    from service.imageio import read_image

    files = sorted(f for d in CALIBRATION_DIRS if d.is_dir() for f in d.iterdir() if f.is_file()
                   and f.suffix.lower() in {".jpg", ".jpeg", ".png"})  # fmt: skip
    return [read_image(f) for f in files]


class _Feeds:
    """onnxruntime.quantization CalibrationDataReader over a list of feed dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _conv_nodes_to_keep_fp32(model: onnx.ModelProto) -> list[str]:
    """The first conv of each trunk and the final ab conv (the classic sensitive layers)."""
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    return [*convs[:1], *convs[-1:]]


def _quantize(
    model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], tmp: Path
) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    src, dst = tmp / "fp32.onnx", tmp / "int8.onnx"
    onnx.save(model, src)
    quantize_static(
        str(src),
        str(dst),
        _Feeds(feeds),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["Conv", "ConvTranspose"],
        nodes_to_exclude=_conv_nodes_to_keep_fp32(model),
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
    )
    return onnx.load(dst)


def ab_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of ab in Lab units (inputs are ab/110), peak 220."""
    mse = float(np.mean(((a - b) * 110.0) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(220.0**2 / mse)


def add_int8_variant(
    model: Disco, repo: Path, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Quantize the repository's graphs, measure the cost vs fp32, record it in the manifest."""
    from service.engine.onnx import OnnxEngine

    say = progress or (lambda msg: None)
    manifest = json.loads((repo / "manifest.json").read_text())
    fp32 = OnnxEngine(repo, intra_op_threads=2)
    images = calibration_images()
    l_norm = np.concatenate([colorspace.preprocess(im) for im in images])
    k = model.cfg.n_clusters
    init = np.stack([init_indices(i, k, model.cfg.n_tokens) for i in range(len(images))])
    enc = fp32.encode(l_norm, init)
    gen_feeds = [
        {
            "l_norm": l_norm[i : i + 1],
            "affinity": enc.affinity[i : i + 1],
            "tokens": enc.tokens[i : i + 1],
            "hint_mask": enc.hint_mask[i : i + 1],
            "hint_bins": enc.sampled_bins[i : i + 1, 0],
        }
        for i in range(len(images))
    ]
    with tempfile.TemporaryDirectory() as tmp:
        say(f"quantizing the encoder (int8 QDQ, {len(images)} calibration photos)")
        encoder = _quantize(
            trace_encoder(model),
            [{"l_norm": l_norm[i : i + 1]} for i in range(len(images))],
            Path(tmp),
        )
        km = (
            kmeans_plugin_graph(model)
            if manifest["kmeans"] == "plugin"
            else trace_kmeans_inline(model)
        )
        encoder = attach_kmeans(encoder, km)
        say("quantizing the generator")
        generator = _quantize(trace_generator(model), gen_feeds, Path(tmp))
    for m in (encoder, generator):
        onnx.checker.check_model(m)
    onnx.save(encoder, repo / "encoder.int8.onnx")
    onnx.save(generator, repo / "generator.int8.onnx")
    manifest["variants"]["int8"] = {
        "precision": "int8",
        "graphs": {
            key: {"file": f"{key}.int8.onnx", "sha256": file_sha256(repo / f"{key}.int8.onnx")}
            for key in ("encoder", "generator")
        },
    }
    (repo / "manifest.json").write_text(json.dumps(manifest, indent=2))
    say("measuring the int8 accuracy cost against fp32")
    int8 = OnnxEngine(repo, intra_op_threads=2, variant="int8")
    ref_ab = fp32.generate(l_norm, enc.affinity, enc.tokens, enc.hint_mask, enc.sampled_bins[:, 0])
    q_enc = int8.encode(l_norm, init)
    q_ab = int8.generate(
        l_norm, q_enc.affinity, q_enc.tokens, q_enc.hint_mask, q_enc.sampled_bins[:, 0]
    )
    cost = {
        "images": len(images),
        "ab_psnr_db": round(ab_psnr(ref_ab, q_ab), 3),
        "max_abs": float(np.abs(ref_ab - q_ab).max()),
        "mean_abs": float(np.abs(ref_ab - q_ab).mean()),
        "anchor_agreement": float((q_enc.hint_mask == enc.hint_mask).all(1).mean()),
        "note": "end to end (int8 encoder + anchors + int8 generator) vs fp32, ab/110 units",
    }
    manifest["variants"]["int8"]["accuracy_vs_fp32"] = cost
    (repo / "manifest.json").write_text(json.dumps(manifest, indent=2))
    say(f"int8: ab PSNR {cost['ab_psnr_db']} dB vs fp32, max abs {cost['max_abs']:.3f}")
    return cost

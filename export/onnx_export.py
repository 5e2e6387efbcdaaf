"""`disco export`: a checkpoint -> a model repository that the torch-free engines serve.

Repository layout (one folder, written atomically):

    encoder.onnx      l_norm -> affinity, tokens, enc_out, pal_logit, spixel_sizes, sampled_bins,
                      and (init_idx ->) hint_mask, anchor_idx from the anchor k-means
    generator.onnx    l_norm, affinity, tokens, hint_mask, hint_bins -> ab
    manifest.json     what the runtime needs to know; it hard-codes nothing

The exporter checks its own output: it runs the ONNX graphs with ONNX Runtime against the
torch model on bundled inputs and refuses to write a repository whose final ab differs by more
than 5e-4 (fp32) or whose anchors differ at all.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper

from service.engine.plugin import DOMAIN, OP_TYPE, OP_VERSION

from .graphs import (
    DIVERSE_LEVELS,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    GENERATOR_INPUTS,
    GENERATOR_OUTPUTS,
    KMEANS_INPUTS,
    KMEANS_ITERS,
    KMEANS_OUTPUTS,
    KMEANS_TOL,
    EncoderGraph,
    GeneratorGraph,
    KMeansGraph,
)
from .model.disco import Disco, default_cfgs

OPSET = 17
PARITY_TOL = 5e-4
MANIFEST_VERSION = 1
SAMPLES_DIR = Path(__file__).resolve().parents[1] / "service" / "data" / "samples"


class ExportError(RuntimeError):
    """The exported graphs do not reproduce the torch model; nothing was written."""


# ------------------------------------------------------------------------------------------------
# Tracing
# ------------------------------------------------------------------------------------------------
def _to_onnx(module: torch.nn.Module, args: tuple, inputs: list[str], outputs: list[str],
             dynamic: dict[str, dict[int, str]]) -> onnx.ModelProto:  # fmt: skip
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape asserts are expected
        torch.onnx.export(
            module.eval(),
            args,
            buf,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return onnx.load_from_string(buf.getvalue())


def _batch_axes(names: Sequence[str]) -> dict[str, dict[int, str]]:
    return {n: {0: "batch"} for n in names}


def trace_encoder(model: Disco) -> onnx.ModelProto:
    s = model.cfg.img_size
    return _to_onnx(
        EncoderGraph(model),
        (torch.zeros(1, model.cfg.in_chans, s, s),),
        ENCODER_INPUTS,
        ENCODER_OUTPUTS,
        _batch_axes(ENCODER_INPUTS + ENCODER_OUTPUTS),
    )


def trace_generator(model: Disco) -> onnx.ModelProto:
    cfg = model.cfg
    s, g, d = cfg.img_size, cfg.grid, cfg.d_model
    args = (
        torch.zeros(1, cfg.in_chans, s, s),
        torch.full((1, 9, s, s), 1 / 9),
        torch.zeros(1, d, g, g),
        torch.zeros(1, g * g),
        torch.zeros(1, g * g, dtype=torch.int64),
    )
    return _to_onnx(
        GeneratorGraph(model), args, GENERATOR_INPUTS, GENERATOR_OUTPUTS,
        _batch_axes(GENERATOR_INPUTS + GENERATOR_OUTPUTS),
    )  # fmt: skip


def trace_kmeans_inline(model: Disco) -> onnx.ModelProto:
    cfg = model.cfg
    args = (
        torch.randn(1, cfg.d_model, cfg.n_tokens),
        torch.rand(1, cfg.n_tokens),
        torch.arange(cfg.n_clusters)[None],
    )
    dynamic = _batch_axes(KMEANS_INPUTS + KMEANS_OUTPUTS)
    dynamic["init_idx"] = {0: "batch", 1: "anchors"}
    dynamic["anchor_idx"] = {0: "batch", 1: "anchors"}
    return _to_onnx(KMeansGraph(KMEANS_ITERS), args, KMEANS_INPUTS, KMEANS_OUTPUTS, dynamic)


def kmeans_plugin_graph(model: Disco) -> onnx.ModelProto:
    """The anchor locator as ONE custom-domain node."""
    cfg = model.cfg
    f, i64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    node = helper.make_node(
        OP_TYPE, KMEANS_INPUTS, KMEANS_OUTPUTS, name="anchor_kmeans", domain=DOMAIN,
        iters=KMEANS_ITERS, tol=KMEANS_TOL,
    )  # fmt: skip
    graph = helper.make_graph(
        [node],
        "anchor_kmeans",
        [
            helper.make_tensor_value_info("enc_out", f, ["batch", cfg.d_model, cfg.n_tokens]),
            helper.make_tensor_value_info("spixel_sizes", f, ["batch", cfg.n_tokens]),
            helper.make_tensor_value_info("init_idx", i64, ["batch", "anchors"]),
        ],
        [
            helper.make_tensor_value_info("hint_mask", f, ["batch", cfg.n_tokens]),
            helper.make_tensor_value_info("anchor_idx", i64, ["batch", "anchors"]),
        ],
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, OP_VERSION)],
    )


def attach_kmeans(encoder: onnx.ModelProto, kmeans: onnx.ModelProto) -> onnx.ModelProto:
    """Feed the encoder's enc_out / spixel_sizes into the anchor graph; one model, init_idx in."""
    kmeans = onnx.compose.add_prefix(kmeans, "kmeans/", rename_inputs=False, rename_outputs=False)
    g, k = encoder.graph, kmeans.graph
    g.node.extend(k.node)
    g.initializer.extend(k.initializer)
    g.input.extend(i for i in k.input if i.name == "init_idx")
    g.output.extend(k.output)
    have = {o.domain for o in encoder.opset_import}
    encoder.opset_import.extend(o for o in kmeans.opset_import if o.domain not in have)
    return encoder


def _set_metadata(m: onnx.ModelProto, meta: dict[str, Any]) -> None:
    del m.metadata_props[:]
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v if isinstance(v, str) else json.dumps(v))


def _io_spec(values: Sequence[onnx.ValueInfoProto]) -> list[dict[str, Any]]:
    out = []
    for v in values:
        t = v.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in t.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        out.append({"name": v.name, "shape": shape, "dtype": dtype})
    return out


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------
# Self-check: the exported repository against the torch model
# ------------------------------------------------------------------------------------------------
def parity_inputs(size: int, n_synthetic: int = 1) -> list[np.ndarray]:
    """Bundled sample photos plus a deterministic synthetic image, as (H, W, 3) uint8."""
    from service.imageio import read_image

    images = [read_image(p) for p in sorted(SAMPLES_DIR.glob("*")) if p.is_file()]
    rng = np.random.default_rng(0)
    for _ in range(n_synthetic):
        yy, xx = np.mgrid[0:size, 0:size] / size
        base = 128 + 100 * np.sin(6 * xx) * np.cos(4 * yy) + rng.normal(0, 8, (size, size))
        images.append(np.repeat(np.clip(base, 0, 255).astype(np.uint8)[..., None], 3, 2))
    return images


def check_parity(model: Disco, repo: Path, images: Sequence[np.ndarray]) -> dict[str, Any]:
    """Final ab of ONNX Runtime vs torch, fixed-anchor and k-means paths, and the in-graph
    anchors vs the numpy reference run on the graph's own features (they must agree exactly;
    across runtimes k-means may legitimately flip on near-ties of the features, which is
    reported, not failed)."""
    from service import colorspace
    from service.anchors import init_indices, locate_anchors, sample_anchor_bins
    from service.engine.onnx import OnnxEngine

    from .torch_engine import TorchEngine

    ref, ort_engine = TorchEngine(model), OnnxEngine(repo, intra_op_threads=2)
    l_norm = np.concatenate([colorspace.preprocess(im) for im in images])
    n, n_tokens = len(images), model.cfg.n_tokens
    k = model.cfg.n_clusters
    init = np.stack([init_indices(i, k, n_tokens) for i in range(n)])
    init[-1, k // 2 :] = -1  # a padded row: mixed K in one batch
    a, b = ref.encode(l_norm, init), ort_engine.encode(l_norm, init)
    mask_ref, _, _ = locate_anchors(b.enc_out, b.spixel_sizes, init)
    bins_ref = np.stack(
        [sample_anchor_bins(b.pal_logit, t) for t in range(b.sampled_bins.shape[1])], 1
    )
    anchors_equal = bool(
        np.array_equal(mask_ref, b.hint_mask) and np.array_equal(bins_ref, b.sampled_bins)
    )
    rng = np.random.default_rng(1)
    fixed_mask = np.zeros((n, n_tokens), np.float32)
    fixed_mask[:, rng.choice(n_tokens, k, replace=False)] = 1
    fixed_bins = rng.integers(0, model.cfg.num_bins, (n, n_tokens))
    report: dict[str, Any] = {
        "images": n,
        "anchors_equal": anchors_equal,
        "tolerance": PARITY_TOL,
        "kmeans_rows_equal_to_torch": float((a.hint_mask == b.hint_mask).all(1).mean()),
    }
    for path, (mask, bins) in {
        "fixed": (fixed_mask, fixed_bins),
        "kmeans": (a.hint_mask, a.sampled_bins[:, 0]),
    }.items():
        ab_ref = ref.generate(l_norm, a.affinity, a.tokens, mask, bins)
        ab_ort = ort_engine.generate(l_norm, b.affinity, b.tokens, mask, bins)
        diff = np.abs(ab_ref - ab_ort)
        report[f"{path}_max_abs"] = float(diff.max())
        report[f"{path}_mean_abs"] = float(diff.mean())
    report["encoder_enc_out_max_abs"] = float(np.abs(a.enc_out - b.enc_out).max())
    return report


def check_openvino(model: Disco, repo: Path, images: Sequence[np.ndarray]) -> dict[str, Any]:
    """OpenVINO (f32 and, where the CPU has it, bf16) final ab against the fp32 torch model:
    fixed anchors, and the torch k-means anchors on each engine's own features (ab-PSNR peak
    220, max abs, in ab / 110 units like the ONNX parity)."""
    from service import colorspace
    from service.anchors import init_indices

    from .quantize import ab_psnr  # PSNR of ab, peak 220

    try:
        from service.engine.openvino import OpenVinoEngine, cpu_has_bf16
    except ImportError:
        return {"available": False}
    from .torch_engine import TorchEngine

    ref = TorchEngine(model)
    l_norm = np.concatenate([colorspace.preprocess(im) for im in images])
    n, n_tokens, k = len(images), model.cfg.n_tokens, model.cfg.n_clusters
    init = np.stack([init_indices(i, k, n_tokens) for i in range(n)])
    a = ref.encode(l_norm, init)
    rng = np.random.default_rng(1)
    fixed_mask = np.zeros((n, n_tokens), np.float32)
    fixed_mask[:, rng.choice(n_tokens, k, replace=False)] = 1
    paths = {
        "fixed": (fixed_mask, rng.integers(0, model.cfg.num_bins, (n, n_tokens))),
        "kmeans": (a.hint_mask, a.sampled_bins[:, 0]),
    }
    refs = {p: ref.generate(l_norm, a.affinity, a.tokens, m, b) for p, (m, b) in paths.items()}
    bf16 = cpu_has_bf16()
    report: dict[str, Any] = {"available": True, "cpu_bf16": bf16, "images": n}
    with tempfile.TemporaryDirectory() as cache:
        for precision in ("f32", "bf16") if bf16 else ("f32",):
            eng = OpenVinoEngine(repo, precision=precision, threads=2, cache=cache)
            b = eng.encode(l_norm, init)
            row: dict[str, Any] = {
                "anchors_equal_to_torch": bool(np.array_equal(a.hint_mask, b.hint_mask))
            }
            for p, (mask, bins) in paths.items():
                got = eng.generate(l_norm, b.affinity, b.tokens, mask, bins)
                row[f"{p}_max_abs"] = float(np.abs(refs[p] - got).max())
                row[f"{p}_ab_psnr_db"] = ab_psnr(refs[p], got)
            row["max_abs"] = max(row["fixed_max_abs"], row["kmeans_max_abs"])
            row["ab_psnr_db"] = min(row["fixed_ab_psnr_db"], row["kmeans_ab_psnr_db"])
            report[precision] = row
    return report


# ------------------------------------------------------------------------------------------------
# The repository
# ------------------------------------------------------------------------------------------------
def export_repository(
    model: Disco,
    out: Path,
    *,
    name: str,
    version: str = "1",
    source: Path | None = None,
    pretrained: str | None = None,
    kmeans: str = "plugin",
    progress: Any = None,
) -> dict[str, Any]:
    """Trace, assemble, verify and write a model repository; returns the manifest."""
    if kmeans not in ("plugin", "inline"):
        raise ValueError(f"kmeans must be 'plugin' or 'inline', got {kmeans!r}")
    say = progress or (lambda msg: None)
    model = model.eval().float().cpu()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        say("tracing the encoder")
        encoder = trace_encoder(model)
        say(f"attaching the anchor k-means ({kmeans})")
        km = kmeans_plugin_graph(model) if kmeans == "plugin" else trace_kmeans_inline(model)
        encoder = attach_kmeans(encoder, km)
        say("tracing the generator")
        generator = trace_generator(model)
        meta = {
            "disco.config": model.cfg.to_dict(),
            "disco.pretrained_cfg": default_cfgs.get(pretrained or "", {}),
            "disco.name": name,
            "disco.version": version,
        }
        for m in (encoder, generator):
            _set_metadata(m, meta)
            m.producer_name = "disco-serve"
            onnx.checker.check_model(m)
        onnx.save(encoder, tmp / "encoder.onnx")
        onnx.save(generator, tmp / "generator.onnx")
        custom_ops = (
            [{"domain": DOMAIN, "op_type": OP_TYPE, "version": OP_VERSION}]
            if kmeans == "plugin"
            else []
        )
        manifest: dict[str, Any] = {
            "manifest_version": MANIFEST_VERSION,
            "name": name,
            "version": version,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "source": {
                "checkpoint": source.name if source else None,
                "sha256": file_sha256(source) if source else None,
                "pretrained_cfg": pretrained,
            },
            "config": model.cfg.to_dict(),
            "opset": OPSET,
            "precision": "fp32",
            "kmeans": kmeans,
            "custom_ops": custom_ops,
            "default_anchors": model.cfg.n_clusters,
            "diverse_levels": DIVERSE_LEVELS,
            "input_size": model.cfg.img_size,
            "graphs": {
                key: {
                    "file": f"{key}.onnx",
                    "sha256": file_sha256(tmp / f"{key}.onnx"),
                    "inputs": _io_spec(m.graph.input),
                    "outputs": _io_spec(m.graph.output),
                }
                for key, m in (("encoder", encoder), ("generator", generator))
            },
            "variants": {},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        say("checking ONNX Runtime against torch")
        parity = check_parity(model, tmp, parity_inputs(model.cfg.img_size))
        manifest["parity"] = parity
        worst = max(parity["fixed_max_abs"], parity["kmeans_max_abs"])
        if worst > PARITY_TOL or not parity["anchors_equal"]:
            raise ExportError(
                f"exported graphs do not reproduce the torch model: max |ab| diff {worst:.2e} "
                f"(limit {PARITY_TOL:g}), anchors equal: {parity['anchors_equal']}"
            )
        say("checking OpenVINO against torch")
        manifest["openvino"] = (  # the OpenVINO engine serves plugin-k-means exports only
            check_openvino(model, tmp, parity_inputs(model.cfg.img_size))
            if kmeans == "plugin"
            else {"available": False, "reason": "inline k-means: OpenVINO serves plugin exports"}
        )
        ov_f32 = manifest["openvino"].get("f32", {}).get("max_abs", 0.0)
        if ov_f32 > PARITY_TOL:
            raise ExportError(
                f"OpenVINO f32 does not reproduce the torch model: max |ab| diff {ov_f32:.2e} "
                f"(limit {PARITY_TOL:g})"
            )
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if out.exists():
            shutil.rmtree(out)
        tmp.chmod(0o755)  # mkdtemp makes it 0700: a repository is read by the service's own user
        tmp.rename(out)
        return manifest
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

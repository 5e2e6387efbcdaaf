"""`disco bench` / `make bench`: per-image engine time, side by side, in one run.

Every variant runs the same preprocessed photos at batch 1, 2, 4, 8; rounds alternate the
variants (so a noisy neighbour hurts them all alike) and each figure is the median over rounds.
Also: diverse K=3 against a single result, k-means plugin against inline, and the accuracy of
the fast variants against fp32 (ab PSNR with peak 220, max abs). The full-size architecture is
timed (weights do not change the cost); accuracy is reported on every checkpoint given.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service import colorspace
from service.anchors import init_indices
from service.engine.base import Engine

from .model.disco import Disco
from .onnx_export import export_repository
from .quantize import ab_psnr, add_int8_variant, calibration_images
from .torch_engine import TorchEngine

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


@dataclass
class Variant:
    name: str
    engine: Engine


def machine_info() -> dict[str, Any]:
    import onnxruntime as ort

    cpu, flags = platform.processor(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in text.splitlines()
            if line.startswith("model name")
        )
        flags = set(next(line for line in text.splitlines() if line.startswith("flags")).split())
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "isa": sorted(
            f
            for f in flags
            if f in {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"}
        ),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "onnxruntime": ort.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _inputs(n: int) -> np.ndarray:
    images = calibration_images()
    rows = [colorspace.preprocess(images[i % len(images)]) for i in range(n)]
    return np.concatenate(rows)


def _run_once(engine: Engine, l_norm: np.ndarray, count: int = 1) -> float:
    n = len(l_norm)
    init = np.stack([init_indices(i, 8) for i in range(n)])
    start = time.perf_counter()
    enc = engine.encode(l_norm, init)
    rows = np.repeat(np.arange(n), count)
    bins = enc.sampled_bins[:, :count].reshape(n * count, -1)
    engine.generate(l_norm[rows], enc.affinity[rows], enc.tokens[rows], enc.hint_mask[rows], bins)
    return time.perf_counter() - start


def _alternate(
    variants: Sequence[Variant], measure: Callable[[Variant], float], rounds: int
) -> dict[str, float]:
    samples: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(rounds):
        order = variants if r % 2 == 0 else list(reversed(variants))
        for v in order:
            samples[v.name].append(measure(v))
    return {k: statistics.median(v) for k, v in samples.items()}


def accuracy(reference: Engine, fast: Engine, l_norm: np.ndarray) -> dict[str, float]:
    """End-to-end ab of `fast` vs `reference` with the reference's anchors (same hint rows)."""
    init = np.stack([init_indices(i, 8) for i in range(len(l_norm))])
    a = reference.encode(l_norm, init)
    b = fast.encode(l_norm, init)
    ref = reference.generate(l_norm, a.affinity, a.tokens, a.hint_mask, a.sampled_bins[:, 0])
    out = fast.generate(l_norm, b.affinity, b.tokens, a.hint_mask, a.sampled_bins[:, 0])
    return {
        "ab_psnr_db": round(ab_psnr(ref, out), 2),
        "max_abs": round(float(np.abs(ref - out).max()), 4),
    }


def run(
    *,
    model: Disco,
    batches: Sequence[int] = (1, 2, 4, 8),
    rounds: int = 3,
    threads: int | None = None,
    accuracy_models: dict[str, Disco] | None = None,
    workdir: Path | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    tmp = Path(workdir or tempfile.mkdtemp(prefix="disco-bench-"))
    progress(f"exporting the benchmark model to {tmp}")
    repo, inline = tmp / "plugin", tmp / "inline"
    export_repository(model, repo, name="bench")
    export_repository(model, inline, name="bench-inline", kmeans="inline")
    add_int8_variant(model, repo)
    from service.engine.onnx import OnnxEngine

    variants = [
        Variant("torch fp32 eager", TorchEngine(model)),
        Variant("onnx fp32", OnnxEngine(repo, intra_op_threads=threads)),
        Variant("onnx fp32 inline k-means", OnnxEngine(inline, intra_op_threads=threads)),
        Variant("onnx int8", OnnxEngine(repo, intra_op_threads=threads, variant="int8")),
    ]
    info = machine_info()
    has_bf16 = "avx512_bf16" in info["isa"] or "amx_bf16" in info["isa"]
    if has_bf16:
        variants.insert(
            1, Variant("torch bf16 autocast", TorchEngine(model, autocast=torch.bfloat16))
        )
    try:
        from service.engine.openvino import OpenVinoEngine
    except ImportError:
        OpenVinoEngine = None
    if OpenVinoEngine is not None:
        for p in ("f32", "bf16") if has_bf16 else ("f32",):
            variants.append(
                Variant(f"openvino {p}", OpenVinoEngine(repo, precision=p, threads=threads))
            )
    x = _inputs(max(batches))
    for v in variants:  # warm-up: first calls allocate and pick kernels
        _run_once(v.engine, x[:1])
    table: dict[str, dict[int, float]] = {v.name: {} for v in variants}
    for b in batches:
        progress(f"batch {b}: {len(variants)} variants x {rounds} rounds")
        batch = x[:b]
        med = _alternate(variants, lambda v, batch=batch: _run_once(v.engine, batch), rounds)
        for name, seconds in med.items():
            table[name][b] = seconds / b
    progress("diverse K=3 vs single (onnx fp32, batch 1)")
    onnx = variants[[v.name for v in variants].index("onnx fp32")]
    div = _alternate(
        [Variant("single", onnx.engine), Variant("diverse3", onnx.engine)],
        lambda v: _run_once(v.engine, x[:1], 3 if v.name == "diverse3" else 1),
        rounds,
    )
    acc: dict[str, dict[str, Any]] = {}
    models = {"bench weights": model, **(accuracy_models or {})}
    for label, m in models.items():
        progress(f"accuracy vs fp32 on {label}")
        ref = OnnxEngine(repo, intra_op_threads=threads) if m is model else None
        if ref is None:
            r2 = tmp / f"acc-{len(acc)}"
            export_repository(m, r2, name=label)
            add_int8_variant(m, r2)
            ref = OnnxEngine(r2, intra_op_threads=threads)
            int8 = OnnxEngine(r2, intra_op_threads=threads, variant="int8")
        else:
            int8 = OnnxEngine(repo, intra_op_threads=threads, variant="int8")
        xs = x[: min(4, len(x))]
        acc[label] = {"onnx int8": accuracy(ref, int8, xs)}
        if OpenVinoEngine is not None and has_bf16:
            ov_repo = repo if m is model else r2
            acc[label]["openvino bf16"] = accuracy(
                ref, OpenVinoEngine(ov_repo, precision="bf16", threads=threads), xs
            )
        if any(v.name.startswith("torch bf16") for v in variants):
            acc[label]["torch bf16 autocast"] = accuracy(
                ref, TorchEngine(m, autocast=torch.bfloat16), xs
            )
    base = table["torch fp32 eager"]
    return {
        "machine": info,
        "threads": threads,
        "rounds": rounds,
        "per_image_s": {k: {str(b): round(s, 4) for b, s in v.items()} for k, v in table.items()},
        "speedup_vs_torch_fp32": {
            k: {str(b): round(base[b] / s, 2) for b, s in v.items()} for k, v in table.items()
        },
        "diverse": {
            "single_s": round(div["single"], 4),
            "diverse3_s": round(div["diverse3"], 4),
            "ratio": round(div["diverse3"] / div["single"], 2),
        },
        "accuracy_vs_fp32": acc,
    }


def markdown(result: dict[str, Any], command: str) -> str:
    m = result["machine"]
    batches = list(next(iter(result["per_image_s"].values())).keys())
    lines = [
        f"Command: `{command}`  ",
        f"Machine: {m['cpu']}, {m['cores']} cores ({', '.join(m['isa'])}), "
        f"{result['threads']} threads; torch {m['torch']}, onnxruntime {m['onnxruntime']}; "
        f"{m['date']}; median of {result['rounds']} alternating rounds.",
        "",
        "| variant | "
        + " | ".join(f"batch {b} (ms/img)" for b in batches)
        + f" | speed-up vs torch fp32 (batch {batches[0]} / {batches[-1]}) |",
        "|---|" + "---:|" * len(batches) + "---:|",
    ]
    for name, row in result["per_image_s"].items():
        sp = result["speedup_vs_torch_fp32"][name]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{1000 * row[b]:.0f}" for b in batches)
            + f" | {sp[batches[0]]:.2f}x / {sp[batches[-1]]:.2f}x |"
        )
    d = result["diverse"]
    lines += [
        "",
        f"Diverse K=3 vs single (onnx fp32, batch 1): {1000 * d['diverse3_s']:.0f} ms vs "
        f"{1000 * d['single_s']:.0f} ms = **{d['ratio']:.2f}x** "
        "(target <= 1.8x; official code 2.3x).",
        "",
        "| accuracy vs fp32 | variant | ab PSNR (dB, peak 220) | max abs (ab/110) |",
        "|---|---|---:|---:|",
    ]
    for label, variants in result["accuracy_vs_fp32"].items():
        for name, a in variants.items():
            lines.append(f"| {label} | {name} | {a['ab_psnr_db']} | {a['max_abs']} |")
    return "\n".join(lines) + "\n"


def write_report(result: dict[str, Any], command: str, md_path: Path, json_path: Path) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2))
    block = f"{BEGIN}\n{markdown(result, command)}{END}"
    text = md_path.read_text() if md_path.exists() else "# Benchmarks\n\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n## Engine benchmark (`disco bench`)\n\n" + block + "\n"
    md_path.write_text(text)

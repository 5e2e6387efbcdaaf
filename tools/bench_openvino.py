"""End-to-end colorization time per image: OpenVINO bf16 / f32 against ONNX Runtime fp32 and
torch fp32 eager (the stand-in for the official code), full-size network, 256 px, one run.

    python tools/bench_openvino.py [--rounds 5] [--threads 2] [--workdir DIR]

Each round runs `service.pipeline.run` (preprocess, encoder, k-means, generator, compose) on one
256 px photo for every variant in alternating order; figures are medians over rounds. Also
diverse K=3 vs a single result on OpenVINO bf16. Prints a JSON summary and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from export.bench import machine_info
from export.model.checkpoint import test_weights_model
from export.onnx_export import export_repository
from export.torch_engine import TorchEngine
from service import pipeline
from service.engine.onnx import OnnxEngine
from service.engine.openvino import OpenVinoEngine

PHOTO = Path(__file__).resolve().parents[1] / "tests" / "data" / "photos" / "chelsea.jpg"


def _time(engine, job: pipeline.Job) -> float:
    start = time.perf_counter()
    pipeline.run(engine, [job])
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = test_weights_model(0)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="disco-ov-bench-"))
    repo = work / "seed0"
    if not (repo / "manifest.json").is_file():
        print(f"exporting the full-size seed-0 network to {repo}", flush=True)
        export_repository(model, repo, name="bench-seed0", progress=print)
    cache = work / "ov-cache"
    variants = {
        "torch fp32 eager (official-code stand-in)": TorchEngine(model),
        "onnx fp32": OnnxEngine(repo, intra_op_threads=args.threads),
        "openvino f32": OpenVinoEngine(repo, precision="f32", threads=args.threads, cache=cache),
        "openvino bf16": OpenVinoEngine(repo, precision="bf16", threads=args.threads, cache=cache),
    }
    rgb = np.asarray(Image.open(PHOTO).convert("RGB").resize((256, 256)))
    single, diverse = pipeline.Job(rgb), pipeline.Job(rgb, count=3)
    for eng in variants.values():  # warm-up
        _time(eng, single)
    samples: dict[str, list[float]] = {k: [] for k in [*variants, "openvino bf16 diverse K=3"]}
    names = list(variants)
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            samples[name].append(_time(variants[name], single))
        samples["openvino bf16 diverse K=3"].append(_time(variants["openvino bf16"], diverse))
        print(f"round {r + 1}/{args.rounds}", flush=True)
    med = {k: statistics.median(v) for k, v in samples.items()}
    base = med["torch fp32 eager (official-code stand-in)"]
    ov = json.loads((repo / "manifest.json").read_text()).get("openvino", {})
    result = {
        "machine": machine_info(),
        "threads": args.threads,
        "rounds": args.rounds,
        "ms_per_image": {k: round(1000 * v, 1) for k, v in med.items()},
        "speedup_vs_torch_fp32": {k: round(base / v, 2) for k, v in med.items() if k in variants},
        "diverse3_vs_single_bf16": round(
            med["openvino bf16 diverse K=3"] / med["openvino bf16"], 2
        ),
        "seed0_openvino_accuracy_vs_torch_fp32": {
            p: {"ab_psnr_db": round(ov[p]["ab_psnr_db"], 2), "max_abs": round(ov[p]["max_abs"], 5)}
            for p in ("f32", "bf16")
            if p in ov
        },
    }
    print(json.dumps(result, indent=2))
    print("\n| variant (end to end, 256 px, batch 1) | ms/image | images/s | vs torch fp32 |")
    print("|---|---:|---:|---:|")
    for k in variants:
        print(f"| {k} | {1000 * med[k]:.0f} | {1 / med[k]:.2f} | {base / med[k]:.2f}x |")


if __name__ == "__main__":
    main()

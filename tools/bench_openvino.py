"""End-to-end colorization time per image: OpenVINO bf16 / f32 against ONNX Runtime fp32 and
torch fp32 eager (the stand-in for the official code), full-size network, 256 px, one run.

    python tools/bench_openvino.py [--rounds 5] [--threads 2] [--workdir DIR]

Each round runs `service.pipeline.run` (preprocess, encoder, k-means, generator, compose) on one
256 px photo for every variant in alternating order; figures are medians over rounds. Diverse
K=3 (OpenVINO bf16 and ONNX Runtime fp32) runs inside the same alternation. With `--http`, the
same rounds also time real HTTP requests (the app's TestClient: upload, decode, queue, engine,
PNG encode, base64) of `/colorize` and `/colorize/diverse?count=3` on OpenVINO bf16. Prints a
JSON summary and markdown tables.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
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


@contextlib.contextmanager
def _http_calls(repo: Path, cache: Path, rgb: np.ndarray, threads: int) -> Iterator[dict]:
    """Timed real-HTTP calls through the app (OpenVINO bf16, memory queue, in-process worker)."""
    from fastapi.testclient import TestClient

    from service.api import create_app
    from service.settings import Settings

    os.environ["DISCO_CACHE_DIR"] = str(cache)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    photo = buf.getvalue()
    settings = Settings(queue_url="memory://", model_dir=repo, engine="openvino",
                        threads=threads, max_wait_ms=0)  # fmt: skip
    with TestClient(create_app(settings)) as client:

        def call(path: str) -> Callable[[], float]:
            def timed() -> float:
                start = time.perf_counter()
                r = client.post(path, files={"image": ("photo.png", photo, "image/png")})
                took = time.perf_counter() - start
                assert r.status_code == 200, r.text
                return took

            return timed

        yield {
            "http /colorize (openvino bf16)": call("/colorize"),
            "http /colorize/diverse K=3 (openvino bf16)": call("/colorize/diverse?count=3"),
        }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--http", action="store_true", help="also time /colorize over HTTP")
    ap.add_argument("--no-torch", action="store_true", help="skip the torch fp32 stand-in")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = test_weights_model(0)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="disco-ov-bench-"))
    repo = work / "seed0"
    if not (repo / "manifest.json").is_file():
        print(f"exporting the full-size seed-0 network to {repo}", flush=True)
        export_repository(model, repo, name="bench-seed0", progress=print)
    cache = work / "ov-cache"
    variants: dict[str, object] = {}
    if not args.no_torch:
        variants["torch fp32 eager (official-code stand-in)"] = TorchEngine(model)
    variants["onnx fp32"] = OnnxEngine(repo, intra_op_threads=args.threads)
    variants["openvino f32"] = OpenVinoEngine(
        repo, precision="f32", threads=args.threads, cache=cache
    )
    variants["openvino bf16"] = OpenVinoEngine(
        repo, precision="bf16", threads=args.threads, cache=cache
    )
    rgb = np.asarray(Image.open(PHOTO).convert("RGB").resize((256, 256)))
    single, diverse = pipeline.Job(rgb), pipeline.Job(rgb, count=3)
    calls: dict[str, Callable[[], float]] = {
        name: (lambda e=eng: _time(e, single)) for name, eng in variants.items()
    }
    calls["openvino bf16 diverse K=3"] = lambda: _time(variants["openvino bf16"], diverse)
    calls["onnx fp32 diverse K=3"] = lambda: _time(variants["onnx fp32"], diverse)
    with contextlib.ExitStack() as stack:
        if args.http:
            calls.update(stack.enter_context(_http_calls(repo, cache, rgb, args.threads)))
        for fn in calls.values():  # warm-up
            fn()
        samples: dict[str, list[float]] = {k: [] for k in calls}
        names = list(calls)
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                samples[name].append(calls[name]())
            print(f"round {r + 1}/{args.rounds}", flush=True)
    med = {k: statistics.median(v) for k, v in samples.items()}
    pairs = [("openvino bf16 diverse K=3", "openvino bf16"), ("onnx fp32 diverse K=3", "onnx fp32")]
    if args.http:
        pairs.append(("http /colorize/diverse K=3 (openvino bf16)",
                      "http /colorize (openvino bf16)"))  # fmt: skip
    ratios = {d: round(med[d] / med[one], 3) for d, one in pairs}
    base = med.get("torch fp32 eager (official-code stand-in)", med["onnx fp32"])
    ov = json.loads((repo / "manifest.json").read_text()).get("openvino", {})
    result = {
        "machine": machine_info(),
        "threads": args.threads,
        "rounds": args.rounds,
        "ms_per_image": {k: round(1000 * v, 1) for k, v in med.items()},
        "speedup_vs_torch_fp32": {k: round(base / v, 2) for k, v in med.items() if k in variants},
        "diverse3_vs_single": ratios,
        "seed0_openvino_accuracy_vs_torch_fp32": {
            p: {"ab_psnr_db": round(ov[p]["ab_psnr_db"], 2), "max_abs": round(ov[p]["max_abs"], 5)}
            for p in ("f32", "bf16")
            if p in ov
        },
    }
    print(json.dumps(result, indent=2))
    ref = "torch fp32" if not args.no_torch else "onnx fp32"
    print(f"\n| variant (end to end, 256 px, batch 1) | ms/image | images/s | vs {ref} |")
    print("|---|---:|---:|---:|")
    for k in variants:
        print(f"| {k} | {1000 * med[k]:.0f} | {1 / med[k]:.2f} | {base / med[k]:.2f}x |")
    print("\n| request | ms | vs the single result |")
    print("|---|---:|---:|")
    for d, one in pairs:
        print(f"| {one} | {1000 * med[one]:.0f} | 1.00x |")
        print(f"| {d} | {1000 * med[d]:.0f} | {med[d] / med[one]:.2f}x |")


if __name__ == "__main__":
    main()

"""End-to-end colorization time per image: OpenVINO bf16 / f32 against ONNX Runtime fp32 and
torch fp32 eager (the stand-in for the official code), full-size network, 256 px, one run.

    python tools/bench_openvino.py [--rounds 5] [--threads 2] [--workdir DIR] [--http]
                                   [--official DIR --official-python PY]

Each round runs `service.pipeline.run` (preprocess, encoder, k-means, generator, compose) on one
256 px photo for every variant in alternating order; figures are medians over rounds. Diverse
K=3 (OpenVINO bf16 and ONNX Runtime fp32) runs inside the same alternation. With `--http`, the
same rounds also time real HTTP requests (the app's TestClient: upload, decode, queue, engine,
PNG encode, base64) of `/colorize` and `/colorize/diverse?count=3` on OpenVINO bf16. Prints a
JSON summary and markdown tables.

With `--official DIR` the same rounds also time the official code itself: the official DISCO
repository's `main/colorizer/inference.py`, from a checkout you supply (nothing of it is in this
repository), with the same seed-0 weights in the official checkpoint format, over
`--official-images` copies of the photo (it resizes to 256 x 256 as by default). It is
CUDA-only, so it runs on the CPU under a small shim (`OFFICIAL_SHIM`: `.cuda()` and CUDA devices
become no-ops; torchvision and matplotlib, imported but unused at inference, are stubbed) in its
own interpreter (`--official-python`: a venv with its requirements: torch, opencv-python,
scikit-image, tqdm). Its figure is the median time per image (read, resize, forward, Lab -> RGB,
PNG save), from the start of one image to the next as the script announces them, from the third
image on: start-up, weight loading and the first two images (slower while it warms up) are
excluded, as the warm-up call excludes them for this repository's engines. The script writes
its results into the checkout (`disco-serve-bench-anchor8/`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from export.bench import machine_info
from export.model.checkpoint import save_test_checkpoint, test_weights_model
from export.onnx_export import export_repository
from export.torch_engine import TorchEngine
from service import pipeline
from service.engine.onnx import OnnxEngine
from service.engine.openvino import OpenVinoEngine

OFFICIAL = "official code (main/colorizer/inference.py, CPU)"
OFFICIAL_WARMUP = 2  # its first images run slower (about 2.0, 1.9, then 1.5 s here): not counted
PHOTO = Path(__file__).resolve().parents[1] / "tests" / "data" / "photos" / "chelsea.jpg"


OFFICIAL_SHIM = r"""
import builtins, json, os, runpy, sys, time, types
import torch
from torch import nn
marks, _print = [], builtins.print
def _marking_print(*a, **k):  # the script prints "-processing NAME" as it starts each image
    if a and isinstance(a[0], str) and a[0].startswith(("-processing", "-processed")):
        marks.append(time.perf_counter())
    _print(*a, **k)
builtins.print = _marking_print
torch.set_num_threads(int(sys.argv.pop(1)))
for name in ("torchvision", "matplotlib", "matplotlib.pyplot"):
    sys.modules[name] = types.ModuleType(name)
sys.modules["matplotlib"].pyplot = sys.modules["matplotlib.pyplot"]
torch.Tensor.cuda = lambda self, *a, **k: self
nn.Module.cuda = lambda self, *a, **k: self
_to = torch.Tensor.to
def _is_cuda(x):
    if isinstance(x, torch.device):
        return x.type == "cuda"
    return isinstance(x, str) and x.startswith("cuda")
def _to_cpu(self, *a, **k):
    a = tuple("cpu" if _is_cuda(x) else x for x in a)
    if _is_cuda(k.get("device")):
        k["device"] = "cpu"
    return _to(self, *a, **k)
torch.Tensor.to = _to_cpu
sys.argv = sys.argv[1:]
sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
runpy.run_path(sys.argv[0], run_name="__main__")
_print("PER_IMAGE_S " + json.dumps([b - a for a, b in zip(marks, marks[1:])]))
"""


def _official_call(
    checkout: Path, python: str, work: Path, rgb: np.ndarray, images: int, threads: int
) -> Callable[[], float]:
    """One timed run of the official inference script over `images` copies of the photo."""
    script = checkout / "main" / "colorizer" / "inference.py"
    if not script.is_file():
        raise SystemExit(f"--official {checkout}: no main/colorizer/inference.py there")
    ckpt = save_test_checkpoint(work / "official-seed0.pth.tar", seed=0)
    data = work / "official-data"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    for i in range(images):
        Image.fromarray(rgb).save(data / f"photo{i:02d}.png")
    cmd = [python, "-c", OFFICIAL_SHIM, str(threads), str(script), "--data", str(data),
           "--checkpt", str(ckpt), "--name", "disco-serve-bench", "--n_clusters", "8"]  # fmt: skip

    def timed() -> float:
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=script.parent)
        found = re.search(r"^PER_IMAGE_S (.*)$", out.stdout, re.M)
        if out.returncode != 0 or not found:
            tail = out.stdout[-2000:] + out.stderr[-4000:]
            raise SystemExit(f"the official script failed:\n{tail}")
        per_image = json.loads(found.group(1))
        return statistics.median(per_image[OFFICIAL_WARMUP:] or per_image)

    return timed


def _single(name: str, variants: dict, med: dict) -> bool:
    """A one-result variant compared with the official code (only when it was timed)."""
    return OFFICIAL in med and (
        name in variants or name == OFFICIAL or name.startswith("http /colorize (")
    )


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
    ap.add_argument("--official", type=Path, help="a checkout of the official DISCO repository")
    ap.add_argument("--official-python", default=sys.executable, help="its interpreter")
    ap.add_argument("--official-images", type=int, default=8, help="photos per official run")
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
    if args.official:
        calls[OFFICIAL] = _official_call(
            args.official, args.official_python, work, rgb, args.official_images, args.threads
        )
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
        "speedup_vs_official_code": {
            k: round(med[OFFICIAL] / v, 2) for k, v in med.items() if _single(k, variants, med)
        },
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
    if OFFICIAL in med:
        print("\n| end to end, 256 px, batch 1 | ms/image | images/s | vs the official code |")
        print("|---|---:|---:|---:|")
        for k, v in sorted(med.items(), key=lambda kv: -kv[1]):
            if _single(k, variants, med):
                print(f"| {k} | {1000 * v:.0f} | {1 / v:.2f} | {med[OFFICIAL] / v:.2f}x |")
    print("\n| request | ms | vs the single result |")
    print("|---|---:|---:|")
    for d, one in pairs:
        print(f"| {one} | {1000 * med[one]:.0f} | 1.00x |")
        print(f"| {d} | {1000 * med[d]:.0f} | {med[d] / med[one]:.2f}x |")


if __name__ == "__main__":
    main()

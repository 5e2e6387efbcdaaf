"""Where the time goes: ONNX Runtime's profiler on the encoder and generator graphs, and the
worker's stages (decode, engine, compose, encode) for one photo of a given size.

    python tools/profile_engine.py MODEL_DIR [--threads 2] [--rounds 3] [--top 12]
                                   [--photo-size 4000x3000]

Prints median ms of the encoder, of one generator row and of three (a diverse K=3 request),
then the `top` graph nodes of each, grouped by their module path (repnet/conv8up/...), as a
share of that graph's kernel time. With --photo-size, the stage timings of the batch handler
on the bundled sample photo resized to that size (PNG output).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from service.engine.onnx import load_manifest
from service.engine.plugin import register

SAMPLE = Path(__file__).resolve().parents[1] / "service" / "data" / "samples" / "astronaut_gray.jpg"


def _session(path: Path, threads: int, profile_dir: str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(profile_dir) / path.stem)
    so.register_custom_ops_library(register())
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _node_shares(profile: str, depth: int = 3) -> Counter[str]:
    """Kernel time per module path (the first `depth` parts of the node name), microseconds."""
    shares: Counter[str] = Counter()
    for event in json.loads(Path(profile).read_text()):
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.endswith("_kernel_time"):
            parts = name.removesuffix("_kernel_time").strip("/").split("/")
            shares["/".join(parts[:depth])] += event["dur"]
    return shares


def profile_graphs(model_dir: Path, threads: int, rounds: int, top: int) -> None:
    manifest = load_manifest(model_dir)
    graphs = {k: model_dir / v["file"] for k, v in manifest["graphs"].items()}
    size = int(manifest["input_size"])
    with tempfile.TemporaryDirectory() as tmp:
        enc = _session(graphs["encoder"], threads, tmp)
        gen = _session(graphs["generator"], threads, tmp)
        l_norm = np.random.default_rng(0).uniform(-1, 1, (1, 1, size, size)).astype(np.float32)
        init = np.arange(8, dtype=np.int64)[None]
        names = [o.name for o in enc.get_outputs()]

        def one(rows: int) -> tuple[float, float]:
            t0 = time.perf_counter()
            out = dict(zip(names, enc.run(None, {"l_norm": l_norm, "init_idx": init}), strict=True))
            t1 = time.perf_counter()
            feeds = {
                "l_norm": l_norm, "affinity": out["affinity"], "tokens": out["tokens"],
                "hint_mask": out["hint_mask"].astype(np.float32),
                "hint_bins": out["sampled_bins"][:, 0].reshape(1, -1).astype(np.int64),
            }  # fmt: skip
            gen.run(None, {k: np.repeat(v, rows, 0) for k, v in feeds.items()})
            return t1 - t0, time.perf_counter() - t1

        one(1)  # warm-up
        for rows in (1, 3):
            times = [one(rows) for _ in range(rounds)]
            print(f"encoder {1e3 * statistics.median(t[0] for t in times):.0f} ms, "
                  f"generator x{rows} {1e3 * statistics.median(t[1] for t in times):.0f} ms "
                  f"(median of {rounds}, {threads} threads)")  # fmt: skip
        for name, session in (("encoder", enc), ("generator", gen)):
            profile = session.end_profiling()
            shares, modules = _node_shares(profile), _node_shares(profile, depth=1)
            total = sum(shares.values())
            print(f"{name}: " + ", ".join(
                f"{m} {100 * us / total:.0f} %" for m, us in modules.most_common(4)
            ) + "; top nodes by kernel time:")  # fmt: skip
            for node, us in shares.most_common(top):
                print(f"  {100 * us / total:5.1f} %  {node}")


def profile_handler(model_dir: Path, threads: int, size: str) -> None:
    from service.batch_handler import ColorizeHandler
    from service.engine.onnx import OnnxEngine
    from service.queue.jobs import JobDef

    w, h = (int(v) for v in size.lower().split("x"))
    buf = io.BytesIO()
    Image.open(SAMPLE).convert("L").resize((w, h)).save(buf, "JPEG", quality=90)
    handler = ColorizeHandler(OnnxEngine(model_dir, intra_op_threads=threads), max_pixels=w * h)
    job = JobDef.create("colorize", buf.getvalue(), params={"seed": 1})
    handler.process([job])  # warm-up
    t0 = time.perf_counter()
    (result,) = handler.process([job])
    total = time.perf_counter() - t0
    stages = ", ".join(f"{k[:-2]} {1e3 * v:.0f}" for k, v in result.meta["timings"].items())
    print(f"handler, one {w}x{h} photo: {1e3 * total:.0f} ms ({stages} ms; decode the rest)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir", type=Path)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--photo-size", help="also time the worker's stages on a WxH photo")
    args = p.parse_args()
    profile_graphs(args.model_dir, args.threads, args.rounds, args.top)
    if args.photo_size:
        profile_handler(args.model_dir, args.threads, args.photo_size)


if __name__ == "__main__":
    main()

"""Diverse K results against one, end to end through `service.pipeline.run` + PNG encode, with
the per-output compose it replaced and with today's per-job compose, in the same rounds.

    python tools/bench_diverse.py REPO [--engine openvino] [--rounds 5] [--widths 256 1024]

REPO is a model repository (`disco export`; the full-size seed-0 one of tools/bench_openvino.py
for issue 16's target). "before" swaps in the frozen pre-speed-up compose of
tests/test_colorspace_fast.py (full-resolution L, upsampler guide and Lab conversion once per
OUTPUT); "now" is `pipeline.compose_many` (once per job). Rows alternate order each round;
figures are medians, with the stage timer's split.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import test_colorspace_fast as before  # noqa: E402

from service import pipeline  # noqa: E402
from service.batch_handler import encode_image  # noqa: E402
from service.engine.factory import open_engine  # noqa: E402
from service.params import ImageFormat  # noqa: E402

PHOTO = ROOT / "tests" / "data" / "photos" / "chelsea.jpg"
NOW = pipeline.compose_many


def _old_compose_many(job: pipeline.Job, l_norm: np.ndarray, ab: np.ndarray) -> list[np.ndarray]:
    return [before._old_compose(job, l_norm, a) for a in ab]


def _run(engine, job: pipeline.Job, compose) -> tuple[float, dict[str, float]]:
    pipeline.compose_many = compose  # the module global `run` calls
    timer = pipeline.Timer()
    start = time.perf_counter()
    (outs,) = pipeline.run(engine, [job], timer)
    with timer("png"):
        for o in outs:
            encode_image(o.image, ImageFormat.png, None)
    return time.perf_counter() - start, timer.seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("repo", type=Path)
    ap.add_argument("--engine", default="openvino")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--count", type=int, default=3)
    ap.add_argument("--widths", type=int, nargs="+", default=[256, 1024])
    args = ap.parse_args()
    engine = open_engine(args.engine, args.repo, args.threads)
    print(f"engine: {getattr(engine, 'info', engine.name)}")
    photo = Image.open(PHOTO).convert("RGB")
    cases = {}
    for w in args.widths:
        rgb = np.asarray(photo.resize((w, round(w * photo.height / photo.width)), Image.BICUBIC))
        for compose, tag in ((_old_compose_many, "before"), (NOW, "now")):
            cases[(w, tag, 1)] = (pipeline.Job(rgb), compose)
            cases[(w, tag, args.count)] = (pipeline.Job(rgb, count=args.count), compose)
    for job, compose in cases.values():  # warm-up
        _run(engine, job, compose)
    totals: dict[tuple, list[float]] = {k: [] for k in cases}
    stages: dict[tuple, list[dict[str, float]]] = {k: [] for k in cases}
    keys = list(cases)
    for r in range(args.rounds):
        for key in keys if r % 2 == 0 else keys[::-1]:
            took, split = _run(engine, *cases[key])
            totals[key].append(took)
            stages[key].append(split)
        print(f"round {r + 1}/{args.rounds}", flush=True)
    pipeline.compose_many = NOW
    med = {k: statistics.median(v) for k, v in totals.items()}
    print("\n| input | compose | K | ms | vs K=1 | encoder | generator | compose | png |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for w, tag, n in keys:
        h = cases[(w, tag, n)][0].rgb.shape[0]
        split = {s: 1e3 * statistics.median(x[s] for x in stages[(w, tag, n)])
                 for s in ("encoder", "generator", "compose", "png")}  # fmt: skip
        ratio = med[(w, tag, n)] / med[(w, tag, 1)]
        print(f"| {w} x {h} | {tag} | {n} | {1e3 * med[(w, tag, n)]:.0f} | {ratio:.2f}x | "
              f"{split['encoder']:.0f} | {split['generator']:.0f} | {split['compose']:.1f} | "
              f"{split['png']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()

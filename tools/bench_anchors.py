"""Time the anchor k-means: the reference (service.anchors) against service.anchors_xp.

Random tokens (N, 64, 256), K=8, the default 20 iterations; prints the median of --runs runs per
batch and checks the two give identical anchors and labels. With --vectors DIR (the conformance
vectors, real encoder features): anchors_xp with and without the early stop, per image. Usage:
    .venv/bin/python tools/bench_anchors.py --batch 32 64 --runs 5
    .venv/bin/python tools/bench_anchors.py --vectors ../shared/reference/vectors --runs 50
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from service.anchors import init_indices, kmeans, locate_anchors
from service.anchors_xp import locate_anchors_xp


def _median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--vectors", type=Path, default=None)
    args = ap.parse_args()
    if args.vectors:
        _vectors(args.vectors, args.runs)
        return
    rng = np.random.default_rng(0)
    for n in args.batch:
        enc_out = rng.normal(size=(n, 64, 256)).astype(np.float32)
        sizes = (rng.integers(0, 9, (n, 256)) / 4.0).astype(np.float32)
        init = np.stack([init_indices(s, args.k) for s in range(n)])
        inputs = (enc_out, sizes, init)
        ref, new = locate_anchors(*inputs), locate_anchors_xp(*inputs, xp=np)
        same = all(np.array_equal(a, b) for a, b in zip(ref, new, strict=True))
        ref_ms = _median_ms(lambda a=inputs: locate_anchors(*a), args.runs)
        xp_ms = _median_ms(lambda a=inputs: locate_anchors_xp(*a, xp=np), args.runs)
        print(
            f"batch {n:3d} K={args.k}: reference {ref_ms:7.1f} ms  anchors_xp {xp_ms:7.1f} ms  "
            f"ratio {ref_ms / xp_ms:4.2f}x  identical={same}"
        )


def _vectors(folder: Path, runs: int) -> None:
    for path in sorted(folder.glob("*_kmeans_*.npz")):
        v = np.load(path)
        enc_out, sizes, init = v["enc_out"], v["spixel_sizes"], v["kmeans_init_idx"][None]
        x = enc_out.transpose(0, 2, 1)
        want = kmeans(x, init)
        stable = next(i for i in range(1, 21) if np.array_equal(kmeans(x, init, i), want))
        same = all(
            np.array_equal(a, b)
            for a, b in zip(
                locate_anchors(enc_out, sizes, init),
                locate_anchors_xp(enc_out, sizes, init, early_stop=True),
                strict=True,
            )
        )
        args = (enc_out, sizes, init)
        full, early = [], []
        for _ in range(runs):  # alternate the two
            full.append(_median_ms(lambda a=args: locate_anchors_xp(*a, early_stop=False), 1))
            early.append(_median_ms(lambda a=args: locate_anchors_xp(*a, early_stop=True), 1))
        f, e = statistics.median(full), statistics.median(early)
        print(
            f"{path.name}: labels final after {stable} of 20 iterations; 20 iterations {f:.2f} ms, "
            f"early stop {e:.2f} ms ({f / e:.2f}x), identical={same}"
        )


if __name__ == "__main__":
    main()

"""Time the anchor k-means: the reference (service.anchors) against service.anchors_xp.

Random tokens (N, 64, 256), K=8, the default 20 iterations; prints the median of --runs runs per
batch and checks the two give identical anchors and labels. Usage:
    .venv/bin/python tools/bench_anchors.py --batch 32 64 --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from service.anchors import init_indices, locate_anchors
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
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()

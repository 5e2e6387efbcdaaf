"""Time the colour paths against the implementation they replaced (bit-identical results).

    python tools/bench_colorspace.py [--rounds 7] [--widths 256 1024 2048]

Per width: `srgb_to_lab`, `lab_to_srgb_uint8`, `compose` of one result and `compose_many` of a
diverse K=3 job, each against the frozen pre-speed-up copy in tests/test_colorspace_fast.py,
on the test photo resized to that width and trained-model-like ab (smoothed, |ab| ~ 40);
alternating rounds, medians, and an equality check of every output.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import test_colorspace_fast as before  # noqa: E402

from service import colorspace as cs  # noqa: E402
from service import pipeline  # noqa: E402

PHOTO = ROOT / "tests" / "data" / "photos" / "chelsea.jpg"


def _cases(rgb: np.ndarray, ab: np.ndarray) -> dict[str, tuple[Callable[[], Any], ...]]:
    job, diverse = pipeline.Job(rgb), pipeline.Job(rgb, count=3)
    l_norm = cs.preprocess(rgb)[0]
    l_full = cs.lightness(rgb)
    ab_full = cs.upsample_ab(ab[0] * np.float32(cs.AB_SCALE), l_full)
    return {
        "srgb_to_lab": (lambda: before._old_srgb_to_lab(rgb), lambda: cs.srgb_to_lab(rgb)),
        "lab_to_srgb_uint8": (
            lambda: before._old_lab_to_srgb_uint8(l_full, ab_full),
            lambda: cs.lab_to_srgb_uint8(l_full, ab_full),
        ),
        "compose, 1 result": (
            lambda: [before._old_compose(job, l_norm, ab[0])],
            lambda: pipeline.compose_many(job, l_norm, ab[:1]),
        ),
        "compose, diverse K=3": (
            lambda: [before._old_compose(diverse, l_norm, a) for a in ab],
            lambda: pipeline.compose_many(diverse, l_norm, ab),
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--widths", type=int, nargs="+", default=[256, 1024, 2048])
    args = ap.parse_args()
    photo = Image.open(PHOTO).convert("RGB")
    rng = np.random.default_rng(0)
    ab = rng.normal(0, 1.0, (3, 256, 256, 2)).astype(np.float32)
    ab = np.stack([cv2.GaussianBlur(a, (0, 0), 6).transpose(2, 0, 1) for a in ab])
    ab = np.tanh(ab * np.float32(40 / 110 / ab.std())).astype(np.float32)
    print("| width x height | step | before (ms) | now (ms) | speed-up | identical |")
    print("|---|---|---:|---:|---:|---|")
    for width in args.widths:
        height = round(width * photo.height / photo.width)
        rgb = np.asarray(photo.resize((width, height), Image.BICUBIC))
        cases = _cases(rgb, ab)
        for name, (old, new) in cases.items():
            same = all(
                np.array_equal(a, b)
                for a, b in zip(np.atleast_1d(old()), np.atleast_1d(new()), strict=True)
            )
            times: dict[str, list[float]] = {"old": [], "new": []}
            for r in range(args.rounds):
                for key, fn in (
                    (("old", old), ("new", new)) if r % 2 == 0 else (("new", new), ("old", old))
                ):
                    start = time.perf_counter()
                    fn()
                    times[key].append(time.perf_counter() - start)
            o, n = (1e3 * statistics.median(times[k]) for k in ("old", "new"))
            print(f"| {width} x {height} | {name} | {o:.1f} | {n:.1f} | {o / n:.2f}x | {same} |")


if __name__ == "__main__":
    main()

"""Score ab upsamplers on colour photos: how well is full-resolution colour recovered from the
model's 256x256 ab grid when the full-resolution L is known?

For each photo: true Lab (float path) -> true ab shrunk to 256x256 with INTER_AREA (the model's
output grid, aspect ratio not kept) -> upsampled back by each method -> compared with the true
ab: ab PSNR (peak 220, both channels) and mean CIEDE2000 of (true L, upsampled ab) vs true Lab.

    python tools/measure_upsampler.py [PHOTO_DIR] [--radius R] [--eps E] [--back-projections N]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from service.colorspace import (
    GUIDED_BACK_PROJECTIONS,
    GUIDED_EPS,
    GUIDED_RADIUS,
    MODEL_SIZE,
    ab_psnr,
    ciede2000,
    srgb_to_lab,
    upsample_ab,
    upsample_ab_bicubic,
    upsample_ab_bilinear,
)
from service.imageio import read_image

DEFAULT_PHOTOS = Path(__file__).resolve().parents[1] / "tests" / "data" / "photos"
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}

Upsampler = Callable[[np.ndarray, np.ndarray], np.ndarray]


def measure(rgb: np.ndarray, methods: dict[str, Upsampler]) -> dict[str, tuple[float, float]]:
    """{method: (ab PSNR dB, mean CIEDE2000)} for one (H, W, 3) uint8 photo."""
    lab = srgb_to_lab(rgb)
    l_full = np.ascontiguousarray(lab[:, :, 0])
    ab_true = np.ascontiguousarray(lab[:, :, 1:].transpose(2, 0, 1))
    small = cv2.resize(lab[:, :, 1:], (MODEL_SIZE, MODEL_SIZE), interpolation=cv2.INTER_AREA)
    ab_small = np.ascontiguousarray(small.transpose(2, 0, 1))
    scores = {}
    for name, upsample in methods.items():
        ab_up = upsample(ab_small, l_full)
        lab_up = np.dstack([l_full, ab_up[0], ab_up[1]])
        scores[name] = (ab_psnr(ab_true, ab_up), float(ciede2000(lab, lab_up).mean()))
    return scores


def default_methods(
    radius: int = GUIDED_RADIUS,
    eps: float = GUIDED_EPS,
    back_projections: int = GUIDED_BACK_PROJECTIONS,
) -> dict[str, Upsampler]:
    guided = partial(upsample_ab, radius=radius, eps=eps, back_projections=back_projections)
    return {"bilinear": upsample_ab_bilinear, "bicubic": upsample_ab_bicubic, "guided": guided}


def list_photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="?", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--radius", type=int, default=GUIDED_RADIUS, help="guided box radius")
    parser.add_argument("--eps", type=float, default=GUIDED_EPS, help="guided eps, L units^2")
    parser.add_argument("--back-projections", type=int, default=GUIDED_BACK_PROJECTIONS)
    args = parser.parse_args(argv)

    methods = default_methods(args.radius, args.eps, args.back_projections)
    paths = list_photos(args.photos)
    if not paths:
        parser.error(f"no photos in {args.photos}")
    print(
        f"guided: radius={args.radius} eps={args.eps:g} back_projections={args.back_projections}"
        "; PSNR in dB (peak 220), dE = mean CIEDE2000"
    )
    header = f"{'image':<22}{'size':>10}" + "".join(
        f"{name + ' PSNR':>15}{name + ' dE':>13}" for name in methods
    )
    print(header)
    rows = []
    for path in paths:
        rgb = read_image(path)
        scores = measure(rgb, methods)
        rows.append([v for name in methods for v in scores[name]])
        size = f"{rgb.shape[1]}x{rgb.shape[0]}"
        cells = "".join(f"{p:>15.2f}{d:>13.3f}" for p, d in scores.values())
        print(f"{path.name:<22}{size:>10}{cells}")
    mean = np.mean(rows, axis=0)
    cells = "".join(f"{p:>15.2f}{d:>13.3f}" for p, d in zip(mean[::2], mean[1::2], strict=True))
    print(f"{'mean':<22}{'':>10}{cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

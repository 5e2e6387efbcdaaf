"""Weight-free colorization metrics and the two trivial baselines (torch-free).

* `colorfulness`: Hasler & Suesstrunk (2003) M3 on 8-bit sRGB, the original formula (no
  absolute values): rg = R - G, yb = (R + G) / 2 - B,
  M3 = sqrt(std_rg^2 + std_yb^2) + 0.3 * sqrt(mean_rg^2 + mean_yb^2) (population std).
* `score`: a colorized image against its ground truth: ab PSNR (peak 220) and mean CIEDE2000,
  both in CIELAB from the same sRGB -> Lab path the service uses, plus the prediction's
  colorfulness.
* `gray_baseline` / `constant_baseline`: the ground truth's own L with ab = 0, or with one
  constant ab everywhere, rendered through the same L-preserving Lab -> sRGB conversion.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from service import colorspace

__all__ = [
    "colorfulness",
    "constant_baseline",
    "gray_baseline",
    "mean_ab",
    "mean_ciede2000",
    "score",
    "summarize",
]


def colorfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk M3 of an (H, W, 3) sRGB image in 0..255 units (uint8 or float)."""
    x = np.asarray(rgb, dtype=np.float64)
    if x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) RGB, got {x.shape}")
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    rg = r - g
    yb = 0.5 * (r + g) - b
    std = np.sqrt(rg.std() ** 2 + yb.std() ** 2)
    mean = np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    return float(std + 0.3 * mean)


def mean_ciede2000(lab_true: np.ndarray, lab_test: np.ndarray) -> float:
    """Mean per-pixel CIEDE2000 between two (H, W, 3) Lab images."""
    return float(np.mean(colorspace.ciede2000(lab_true, lab_test)))


def score(gt_rgb: np.ndarray, pred_rgb: np.ndarray) -> dict[str, float]:
    """Metrics of one colorized image against its colour original (same size, uint8 sRGB)."""
    if gt_rgb.shape != pred_rgb.shape:
        raise ValueError(f"size mismatch: ground truth {gt_rgb.shape}, prediction {pred_rgb.shape}")
    lab_gt = colorspace.srgb_to_lab(gt_rgb)
    lab_pred = colorspace.srgb_to_lab(pred_rgb)
    return {
        "colorfulness": colorfulness(pred_rgb),
        "ab_psnr": colorspace.ab_psnr(lab_gt[..., 1:], lab_pred[..., 1:]),
        "ciede2000": mean_ciede2000(lab_gt, lab_pred),
    }


def gray_baseline(gt_rgb: np.ndarray) -> np.ndarray:
    """The ground truth's L with ab = 0 (what a grayscale photo looks like)."""
    l_full = colorspace.lightness(gt_rgb)
    return colorspace.lab_to_srgb_uint8(l_full, np.zeros((2, *l_full.shape), np.float32))


def constant_baseline(gt_rgb: np.ndarray, ab: tuple[float, float]) -> np.ndarray:
    """The ground truth's L with one constant (a, b) everywhere (e.g. the training-set mean)."""
    l_full = colorspace.lightness(gt_rgb)
    plane = np.empty((2, *l_full.shape), np.float32)
    plane[0], plane[1] = ab
    return colorspace.lab_to_srgb_uint8(l_full, plane)


def mean_ab(images: Iterable[np.ndarray]) -> tuple[float, float]:
    """Pixel-weighted mean (a, b) over sRGB images: the constant-mean baseline's colour."""
    total = np.zeros(2)
    count = 0
    for rgb in images:
        lab = colorspace.srgb_to_lab(rgb)
        total += lab[..., 1:].reshape(-1, 2).sum(0, dtype=np.float64)
        count += lab.shape[0] * lab.shape[1]
    if count == 0:
        raise ValueError("no images")
    return float(total[0] / count), float(total[1] / count)


def summarize(rows: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over images (finite values; an identical image has PSNR inf)."""
    rows = list(rows)
    keys = rows[0].keys() if rows else ()
    out = {}
    for k in keys:
        vals = np.array([r[k] for r in rows], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        out[k] = float(vals.mean()) if vals.size else float("inf")
    return out

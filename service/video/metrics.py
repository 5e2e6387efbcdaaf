"""Temporal flicker and colourfulness of a colorized clip."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service import colorspace
from service.video.flow import flow, reliable, warp


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler-Suesstrunk colourfulness of an sRGB uint8 image."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def flicker(frames: Sequence[np.ndarray]) -> dict[str, float]:
    """Mean |d ab| between consecutive frames after flow warping, on forward-backward-consistent
    pixels; plus mean colourfulness. Frames: (H, W, 3) uint8 sRGB."""
    labs = [colorspace.srgb_to_lab(f) for f in frames]
    grays = [np.clip(lab[..., 0] * 2.55, 0, 255).astype(np.uint8) for lab in labs]
    diffs, fractions = [], []
    for t in range(len(frames) - 1):
        fwd, bwd = flow(grays[t], grays[t + 1]), flow(grays[t + 1], grays[t])
        ok = reliable(fwd, bwd)
        fractions.append(float(ok.mean()))
        if not ok.any():
            continue
        nxt = warp(np.ascontiguousarray(labs[t + 1][..., 1:]), fwd)
        d = np.linalg.norm(nxt - labs[t][..., 1:], axis=-1)
        diffs.append(float(d[ok].mean()))
    return {
        "flicker_ab": float(np.mean(diffs)) if diffs else 0.0,
        "reliable_fraction": float(np.mean(fractions)) if fractions else 0.0,
        "colourfulness": float(np.mean([colourfulness(f) for f in frames])),
    }

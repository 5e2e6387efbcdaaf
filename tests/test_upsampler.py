"""The edge-aware ab upsampler must beat plain interpolation on real photos.

Same protocol as tools/measure_upsampler.py: true ab shrunk to the model's 256x256 grid
(INTER_AREA), upsampled back, compared with the truth by ab PSNR and mean CIEDE2000.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from service.colorspace import (
    MODEL_SIZE,
    ab_psnr,
    ciede2000,
    srgb_to_lab,
    upsample_ab,
    upsample_ab_bicubic,
    upsample_ab_bilinear,
)
from service.imageio import read_image

METHODS = {"bilinear": upsample_ab_bilinear, "bicubic": upsample_ab_bicubic, "guided": upsample_ab}


@pytest.fixture(scope="module")
def scores(photos_dir: Path) -> dict[str, tuple[float, float]]:
    """{method: (mean ab PSNR, mean CIEDE2000)} over the test photos."""
    paths = sorted(photos_dir.glob("*.jpg"))
    assert len(paths) >= 4, f"test photos missing in {photos_dir}"
    per_method: dict[str, list[tuple[float, float]]] = {name: [] for name in METHODS}
    for path in paths:
        lab = srgb_to_lab(read_image(path))
        l_full = np.ascontiguousarray(lab[:, :, 0])
        ab_true = lab[:, :, 1:].transpose(2, 0, 1)
        small = cv2.resize(lab[:, :, 1:], (MODEL_SIZE, MODEL_SIZE), interpolation=cv2.INTER_AREA)
        ab_small = np.ascontiguousarray(small.transpose(2, 0, 1))
        for name, upsample in METHODS.items():
            ab_up = upsample(ab_small, l_full)
            d_e = ciede2000(lab, np.dstack([l_full, ab_up[0], ab_up[1]])).mean()
            per_method[name].append((ab_psnr(ab_true, ab_up), float(d_e)))
    return {name: tuple(np.mean(v, axis=0)) for name, v in per_method.items()}


def test_guided_beats_bicubic_on_psnr_and_ciede2000(scores) -> None:
    psnr_g, de_g = scores["guided"]
    psnr_c, de_c = scores["bicubic"]
    assert psnr_g > psnr_c, scores
    assert de_g < de_c, scores


def test_bicubic_beats_bilinear_on_psnr(scores) -> None:
    assert scores["bicubic"][0] > scores["bilinear"][0], scores

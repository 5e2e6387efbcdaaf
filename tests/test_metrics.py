"""service.metrics: colorfulness on images whose M3 is derived by hand, ab PSNR / CIEDE2000
against ground truth, the gray and constant-mean baselines, and `disco eval` (baselines only)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service import metrics
from service.colorspace import srgb_to_lab


def _solid(rgb: tuple[int, int, int], h: int = 8, w: int = 8) -> np.ndarray:
    return np.full((h, w, 3), rgb, dtype=np.uint8)


# --- colorfulness (Hasler & Suesstrunk M3, no absolute values) ---------------------------------


def test_colorfulness_of_gray_is_zero():
    ramp = np.repeat(np.linspace(0, 255, 16).astype(np.uint8)[None, :, None], 3, 2)
    assert metrics.colorfulness(np.repeat(ramp, 4, 0)) == 0.0


def test_colorfulness_of_a_solid_colour():
    # rg = 200 - 100 = 100, yb = 150 - 50 = 100, no spread: M3 = 0.3 * sqrt(100^2 + 100^2)
    got = metrics.colorfulness(_solid((200, 100, 50)))
    assert got == pytest.approx(0.3 * math.sqrt(2) * 100)


def test_colorfulness_signed_opponents():
    # half pure red, half pure green: rg = +-255 (mean 0, std 255), yb = 127.5 (std 0)
    # M3 = 255 + 0.3 * 127.5 = 293.25; with |R - G| it would be 0.3 * sqrt(255^2 + 127.5^2)
    img = np.concatenate([_solid((255, 0, 0)), _solid((0, 255, 0))], 1)
    assert metrics.colorfulness(img) == pytest.approx(293.25)


def test_colorfulness_blue_yellow_checker():
    # blue (0,0,255): rg 0, yb -255; yellow (255,255,0): rg 0, yb 255 -> std_yb 255, means 0
    img = _solid((0, 0, 255), 4, 4)
    img[::2, ::2] = img[1::2, 1::2] = (255, 255, 0)
    assert metrics.colorfulness(img) == pytest.approx(255.0)


def test_colorfulness_rejects_non_rgb():
    with pytest.raises(ValueError):
        metrics.colorfulness(np.zeros((4, 4), np.uint8))


# --- scores against ground truth ---------------------------------------------------------------


def test_identical_images_score_perfectly():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    s = metrics.score(img, img)
    assert s["ab_psnr"] == math.inf
    assert s["ciede2000"] == 0.0
    assert s["colorfulness"] == pytest.approx(metrics.colorfulness(img))


def test_gray_baseline_psnr_matches_hand_computation():
    gt = _solid((40, 120, 200))
    a, b = srgb_to_lab(gt)[0, 0, 1:]
    s = metrics.score(gt, metrics.gray_baseline(gt))
    mse = (a * a + b * b) / 2.0  # the baseline's ab is 0 (up to 8-bit rounding)
    assert s["ab_psnr"] == pytest.approx(10 * math.log10(220.0**2 / mse), abs=0.1)
    assert s["colorfulness"] < 1.0
    assert s["ciede2000"] > 10.0


def test_constant_baseline_with_the_true_colour_is_nearly_exact():
    gt = _solid((180, 90, 60))
    ab = tuple(float(v) for v in srgb_to_lab(gt)[0, 0, 1:])
    assert metrics.mean_ab([gt]) == pytest.approx(ab, abs=1e-4)
    s = metrics.score(gt, metrics.constant_baseline(gt, ab))
    assert s["ciede2000"] < 1.0
    assert s["ab_psnr"] > 40.0


def test_score_rejects_size_mismatch():
    with pytest.raises(ValueError):
        metrics.score(_solid((1, 2, 3)), _solid((1, 2, 3), 4, 4))


def test_summarize_skips_infinite_psnr():
    rows = [{"ab_psnr": math.inf, "x": 1.0}, {"ab_psnr": 30.0, "x": 3.0}]
    assert metrics.summarize(rows) == {"ab_psnr": 30.0, "x": 2.0}


# --- disco eval (baselines only: no torch) -----------------------------------------------------


def test_eval_command_baselines(tmp_path: Path):
    from typer.testing import CliRunner

    from service.cli import app

    for i, rgb in enumerate([(200, 30, 30), (30, 160, 40)]):
        img = _solid(rgb, 32, 48)
        img[:, :24] //= 2
        Image.fromarray(img).save(tmp_path / f"p{i}.png")
    res = CliRunner().invoke(app, ["eval", str(tmp_path), "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "gray (ab = 0)" in res.output and "constant mean ab" in res.output
    assert (tmp_path / "out" / "metrics.json").is_file()
    assert len(list((tmp_path / "out" / "method0").glob("*.png"))) == 2

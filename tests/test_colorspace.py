"""service.colorspace: official pre/post-processing against the conformance vectors, the
L-preserving Lab -> sRGB conversion, ab upsampling shapes and edges, CIEDE2000 and hex colours."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from service.colorspace import (
    MODEL_SIZE,
    ab_psnr,
    ciede2000,
    hex_to_lab,
    lab_to_srgb_uint8,
    lightness,
    official_postprocess,
    preprocess,
    srgb_to_lab,
    upsample_ab,
    upsample_ab_bicubic,
    upsample_ab_bilinear,
)
from service.imageio import read_image

IMAGES = ["astronaut", "coffee"]


def _fixed(vectors_dir: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(vectors_dir / f"{name}_seed0_fixed.npz", allow_pickle=False) as z:
        return {k: z[k] for k in ("input_L", "final_ab", "final_rgb_uint8")}


def _read_like_official(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


# --- official preprocessing / postprocessing ------------------------------------------------


@pytest.mark.parametrize("name", IMAGES)
def test_preprocess_reproduces_reference_input_l(vectors_dir: Path, name: str) -> None:
    ref = _fixed(vectors_dir, name)["input_L"]
    png = vectors_dir / f"{name}_gray256.png"
    for rgb in (_read_like_official(png), read_image(png)):
        l_norm = preprocess(rgb)
        assert l_norm.shape == (1, 1, MODEL_SIZE, MODEL_SIZE)
        assert l_norm.dtype == np.float32
        np.testing.assert_allclose(l_norm, ref, rtol=0, atol=1e-6)


def test_preprocess_resizes_any_input_to_model_size() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (123, 301, 3), dtype=np.uint8)
    l_norm = preprocess(rgb)
    assert l_norm.shape == (1, 1, MODEL_SIZE, MODEL_SIZE)
    assert l_norm.min() >= -1.0 and l_norm.max() <= 1.0


@pytest.mark.parametrize("name", IMAGES)
def test_official_postprocess_reproduces_reference_rgb(vectors_dir: Path, name: str) -> None:
    ref = _fixed(vectors_dir, name)
    rgb = official_postprocess(ref["input_L"], ref["final_ab"])
    assert rgb.shape == (MODEL_SIZE, MODEL_SIZE, 3) and rgb.dtype == np.uint8
    diff = np.abs(rgb.astype(np.int16) - ref["final_rgb_uint8"][0].astype(np.int16))
    assert diff.max() <= 1
    # The same result from unbatched (H, W) / (2, H, W) arrays.
    np.testing.assert_array_equal(
        official_postprocess(ref["input_L"][0, 0], ref["final_ab"][0]), rgb
    )


@pytest.mark.parametrize("bad", [np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8)])
def test_rgb_input_must_be_hw3_uint8(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8"):
        preprocess(bad)
    with pytest.raises(ValueError, match="uint8"):
        lightness(bad)


def test_lightness_is_full_resolution_lab_l() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    rgb[0, 0], rgb[0, 1] = 0, 255
    l = lightness(rgb)
    assert l.shape == (37, 53) and l.dtype == np.float32
    np.testing.assert_array_equal(l, srgb_to_lab(rgb)[:, :, 0])
    assert l[0, 0] == pytest.approx(0.0, abs=1e-4)
    assert l[0, 1] == pytest.approx(100.0, abs=1e-3)


# --- Lab -> sRGB keeping L ------------------------------------------------------------------


@pytest.mark.parametrize("l_range", [(0.0, 100.0), (0.0, 3.0), (97.0, 100.0)])
def test_lab_to_srgb_keeps_l_for_wild_ab(l_range: tuple[float, float]) -> None:
    rng = np.random.default_rng(2)
    l = rng.uniform(*l_range, (128, 160)).astype(np.float32)
    ab = rng.uniform(-128, 128, (2, 128, 160)).astype(np.float32)
    rgb = lab_to_srgb_uint8(l, ab)
    assert rgb.shape == (128, 160, 3) and rgb.dtype == np.uint8
    d_l = np.abs(srgb_to_lab(rgb)[:, :, 0] - l)
    assert d_l.max() <= 1.0  # measured max ~0.36: 8-bit rounding only
    # Per-channel clipping, what cv2 does, would not keep L: that is the point of the function.
    clipped = np.rint(cv2.cvtColor(np.dstack([l, ab[0], ab[1]]), cv2.COLOR_LAB2RGB) * 255)
    if l_range == (0.0, 100.0):
        assert np.abs(srgb_to_lab(clipped.astype(np.uint8))[:, :, 0] - l).max() > 10


def test_lab_to_srgb_keeps_hue_and_only_reduces_chroma() -> None:
    rng = np.random.default_rng(3)
    l = rng.uniform(30, 80, (64, 64)).astype(np.float32)
    ab = rng.uniform(-128, 128, (2, 64, 64)).astype(np.float32)
    lab = srgb_to_lab(lab_to_srgb_uint8(l, ab))
    chroma_in, chroma_out = np.hypot(ab[0], ab[1]), np.hypot(lab[:, :, 1], lab[:, :, 2])
    assert (chroma_out <= chroma_in + 2.0).all()
    hue_diff = np.angle(
        np.exp(1j * (np.arctan2(lab[:, :, 2], lab[:, :, 1]) - np.arctan2(ab[1], ab[0])))
    )
    assert np.degrees(np.abs(hue_diff[chroma_out > 20])).max() < 5.0


def test_lab_to_srgb_round_trips_8bit_colours() -> None:
    rgb = np.random.default_rng(4).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    primaries = [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]
    secondaries = [[255, 255, 0], [0, 255, 255], [255, 0, 255]]
    rgb[0, :8] = [*primaries, *secondaries]
    lab = srgb_to_lab(rgb)
    out = lab_to_srgb_uint8(lab[:, :, 0], lab[:, :, 1:].transpose(2, 0, 1))
    assert np.abs(out.astype(np.int16) - rgb).max() <= 1  # cv2's a, b come in 1/64 steps
    np.testing.assert_array_equal(out[0, :8], rgb[0, :8])


def test_lab_to_srgb_neutral_is_gray_and_clips_l() -> None:
    l = np.array([[-5.0, 0.0, 50.0, 100.0, 120.0]], np.float32)
    rgb = lab_to_srgb_uint8(l, np.zeros((2, *l.shape), np.float32))
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    assert rgb[0, :, 0].tolist() == [0, 0, 119, 255, 255]


def test_lab_to_srgb_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="expected"):
        lab_to_srgb_uint8(np.zeros((4, 5), np.float32), np.zeros((2, 5, 4), np.float32))


# --- ab upsampling --------------------------------------------------------------------------

UPSAMPLERS = [upsample_ab, upsample_ab_bicubic, upsample_ab_bilinear]


@pytest.mark.parametrize("upsample", UPSAMPLERS)
@pytest.mark.parametrize(
    "size", [(256, 256), (512, 512), (300, 451), (1000, 200), (100, 80), (64, 700), (257, 255)]
)
def test_upsample_shapes(upsample, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(5)
    ab = rng.normal(0, 20, (2, MODEL_SIZE, MODEL_SIZE)).astype(np.float32)
    l_full = rng.uniform(0, 100, size).astype(np.float32)
    out = upsample(ab, l_full)
    assert out.shape == (2, *size) and out.dtype == np.float32
    assert out.flags.c_contiguous and np.isfinite(out).all()


def test_upsample_same_size_is_identity_and_constant_stays_constant() -> None:
    rng = np.random.default_rng(6)
    ab = rng.normal(0, 20, (2, 32, 48)).astype(np.float32)
    np.testing.assert_array_equal(upsample_ab(ab, rng.uniform(0, 100, (32, 48))), ab)
    const = np.stack([np.full((32, 48), 12.5), np.full((32, 48), -40.0)]).astype(np.float32)
    out = upsample_ab(const, rng.uniform(0, 100, (97, 131)).astype(np.float32))
    np.testing.assert_allclose(out[0], 12.5, atol=1e-3)
    np.testing.assert_allclose(out[1], -40.0, atol=1e-3)


def test_upsample_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="expected"):
        upsample_ab(np.zeros((3, 8, 8), np.float32), np.zeros((16, 16), np.float32))
    with pytest.raises(ValueError, match="expected"):
        upsample_ab(np.zeros((2, 8, 8), np.float32), np.zeros((16, 16, 1), np.float32))


def test_guided_upsampling_follows_l_edges_better_than_bicubic() -> None:
    """A colour edge that coincides with an L edge off the coarse grid: guided must be sharper."""
    big, small = 256, 64
    yy, xx = np.mgrid[0:big, 0:big]
    edge = (xx + 0.6 * yy) > 157.3  # oblique, not aligned with the 4x grid
    l_full = np.where(edge, 70.0, 35.0).astype(np.float32)
    ab_true = np.stack([np.where(edge, 40.0, -20.0), np.where(edge, 10.0, 50.0)])
    ab_true = ab_true.astype(np.float32)
    hwc = np.ascontiguousarray(ab_true.transpose(1, 2, 0))
    ab_small = cv2.resize(hwc, (small, small), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
    err_guided = np.abs(upsample_ab(ab_small, l_full) - ab_true).mean()
    err_bicubic = np.abs(upsample_ab_bicubic(ab_small, l_full) - ab_true).mean()
    assert err_guided < 0.5 * err_bicubic


# --- metrics --------------------------------------------------------------------------------

# Sharma, Wu & Dalal (2005), Table 1: (Lab1, Lab2, dE00), pair numbers as published.
SHARMA = [
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),  # 1
    ((50.0, 3.1571, -77.2803), (50.0, 0.0, -82.7485), 2.8615),  # 2
    ((50.0, 2.8361, -74.0200), (50.0, 0.0, -82.7485), 3.4412),  # 3
    ((50.0, -1.3802, -84.2814), (50.0, 0.0, -82.7485), 1.0000),  # 4
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),  # 7
    ((50.0, 2.4900, -0.0010), (50.0, -2.4900, 0.0009), 7.1792),  # 9: hue wrap-around
    ((50.0, 2.4900, -0.0010), (50.0, -2.4900, 0.0011), 7.2195),  # 11
    ((50.0, -0.0010, 2.4900), (50.0, 0.0011, -2.4900), 4.7461),  # 15
    ((50.0, 2.5, 0.0), (50.0, 0.0, -2.5), 4.3065),  # 16
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),  # 17
    ((50.0, 2.5, 0.0), (61.0, -5.0, 29.0), 22.8977),  # 18
    ((50.0, 2.5, 0.0), (50.0, 3.1736, 0.5854), 1.0000),  # 21
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),  # 25
]


def test_ciede2000_matches_sharma_pairs() -> None:
    lab1 = np.array([p[0] for p in SHARMA])
    lab2 = np.array([p[1] for p in SHARMA])
    expected = np.array([p[2] for p in SHARMA])
    np.testing.assert_allclose(ciede2000(lab1, lab2), expected, atol=1e-4)
    np.testing.assert_allclose(ciede2000(lab2, lab1), expected, atol=1e-4)  # symmetric


def test_ciede2000_is_per_pixel_and_zero_on_identity() -> None:
    lab = srgb_to_lab(np.random.default_rng(7).integers(0, 256, (5, 7, 3), dtype=np.uint8))
    d = ciede2000(lab, lab)
    assert d.shape == (5, 7)
    np.testing.assert_allclose(d, 0.0, atol=1e-9)


def test_ab_psnr() -> None:
    ab = np.zeros((2, 4, 4), np.float32)
    assert ab_psnr(ab, ab) == float("inf")
    assert ab_psnr(ab, ab + 2.2) == pytest.approx(40.0)  # MSE 2.2^2 -> 10 log10(100^2)


# --- hex colours ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hex_color", "lab"),
    [
        ("#ffffff", (100.0, 0.0, 0.0)),
        ("000", (0.0, 0.0, 0.0)),
        ("#FF0000", (53.24, 80.09, 67.20)),
        ("  #0000ff ", (32.30, 79.19, -107.86)),
    ],
)
def test_hex_to_lab(hex_color: str, lab: tuple[float, float, float]) -> None:
    got = hex_to_lab(hex_color)
    assert all(isinstance(v, float) for v in got)
    np.testing.assert_allclose(got, lab, atol=0.05)


@pytest.mark.parametrize("bad", ["", "#12345", "#gg0000", "red", "#1234567"])
def test_hex_to_lab_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError, match="hex"):
        hex_to_lab(bad)

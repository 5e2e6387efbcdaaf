"""The fast colour paths equal the implementation they replaced, bit for bit.

`_Old*` below are verbatim copies of service/colorspace.py before the speed-up (commit 03ca86b):
the per-pixel float64 ``/255.``, the stacked-RGB gamut test with a (lo, hi) bisection, and the
one-call ``upsample_ab``. Random images of many shapes (band splits, odd sizes, up- and
downscaled sides) and colour ranges must give exactly the same arrays; the official
conformance vectors stay in tests/test_colorspace.py.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from service import colorspace as cs
from service import pipeline

# ---------------------------------------------------------------- the replaced implementation


def _old_srgb_to_lab(rgb_uint8: np.ndarray) -> np.ndarray:
    rgb_f = (rgb_uint8 / 255.0).astype(np.float32)
    return cv2.cvtColor(rgb_f, cv2.COLOR_RGB2LAB)


def _old_f_inv(t: np.ndarray) -> np.ndarray:
    return np.where(t > np.float32(0.206893), t**3, (t - np.float32(16.0 / 116.0)) / 7.787)


def _old_linear_rgb(fy, y, a, b):
    x = _old_f_inv(fy + a / np.float32(500.0)) * cs._WHITE_D65[0]
    z = _old_f_inv(fy - b / np.float32(200.0)) * cs._WHITE_D65[2]
    m = cs._XYZ_TO_RGB
    return np.stack([m[i, 0] * x + m[i, 1] * y + m[i, 2] * z for i in range(3)])


def _old_in_gamut(rgb_lin, y):
    lo = y * np.float32(-cs._GAMUT_LO_REL)
    return np.all((rgb_lin >= lo) & (rgb_lin <= np.float32(cs._GAMUT_HI)), axis=0)


def _old_band(l, ab):
    l = np.clip(l, 0.0, 100.0)
    ab = np.array(ab, dtype=np.float32)
    fy, y = cs._f_y(l)
    out = ~_old_in_gamut(_old_linear_rgb(fy, y, ab[0], ab[1]), y)
    if out.any():
        o_fy, o_y, o_a, o_b = fy[out], y[out], ab[0][out], ab[1][out]
        lo = np.zeros(o_fy.shape, dtype=np.float32)
        hi = np.ones(o_fy.shape, dtype=np.float32)
        for _ in range(cs._BISECTION_STEPS):
            mid = (lo + hi) * np.float32(0.5)
            ok = _old_in_gamut(_old_linear_rgb(o_fy, o_y, mid * o_a, mid * o_b), o_y)
            lo = np.where(ok, mid, lo)
            hi = np.where(ok, hi, mid)
        ab[0][out] = lo * o_a
        ab[1][out] = lo * o_b
    rgb = cv2.cvtColor(np.dstack([l, ab[0], ab[1]]), cv2.COLOR_LAB2RGB)
    return np.rint(rgb * np.float32(255.0)).astype(np.uint8)


def _old_lab_to_srgb_uint8(l, ab):
    l = np.asarray(l, dtype=np.float32)
    ab = np.asarray(ab, dtype=np.float32)
    out = np.empty((*l.shape, 3), np.uint8)
    rows = max(1, cs._BAND_PIXELS // max(1, l.shape[1]))
    for top in range(0, l.shape[0], rows):
        band = slice(top, top + rows)
        out[band] = _old_band(l[band], ab[:, band])
    return out


def _old_upsample_ab(ab_small, l_full, radius=1, eps=32.0, back_projections=1):
    src = np.ascontiguousarray(np.asarray(ab_small, dtype=np.float32).transpose(1, 2, 0))
    l_full = np.ascontiguousarray(l_full, dtype=np.float32)
    big_h, big_w = l_full.shape
    h, w = src.shape[:2]
    if (h, w) == (big_h, big_w):
        return np.ascontiguousarray(src.transpose(2, 0, 1))
    if big_h < h or big_w < w:
        h, w = min(h, big_h), min(w, big_w)
        src = cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA)
        if (h, w) == (big_h, big_w):
            return np.ascontiguousarray(src.transpose(2, 0, 1))
    guide = cv2.resize(l_full, (w, h), interpolation=cv2.INTER_AREA)[:, :, None]
    ksize = (2 * radius + 1, 2 * radius + 1)

    def box(x):
        out = cv2.boxFilter(x, -1, ksize, borderType=cv2.BORDER_REFLECT)
        return out if out.ndim == 3 else out[:, :, None]

    mean_i = box(guide)
    var_i = box(guide * guide) - mean_i * mean_i
    cov_ip = box(guide * src) - mean_i * box(src)
    slope = box(cov_ip / (var_i + np.float32(eps)))
    size = (big_w, big_h)
    l_detail = l_full - cv2.resize(guide, size, interpolation=cv2.INTER_CUBIC)
    out = cv2.resize(src, size, interpolation=cv2.INTER_CUBIC)
    out += cv2.resize(slope, size, interpolation=cv2.INTER_LINEAR) * l_detail[:, :, None]
    for _ in range(back_projections):
        residual = src - cv2.resize(out, (w, h), interpolation=cv2.INTER_AREA)
        out += cv2.resize(residual, size, interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def _old_compose(job: pipeline.Job, l_norm: np.ndarray, ab_norm: np.ndarray) -> np.ndarray:
    if job.size == "model":
        return cs.official_postprocess(l_norm, ab_norm)
    l_full = np.ascontiguousarray(_old_srgb_to_lab(job.rgb)[:, :, 0])
    ab_full = _old_upsample_ab(ab_norm * np.float32(cs.AB_SCALE), l_full)
    return _old_lab_to_srgb_uint8(l_full, ab_full)


# ---------------------------------------------------------------- cases

SHAPES = [(1, 1), (1, 300), (7, 5), (64, 64), (170, 256), (256, 256), (301, 517), (600, 400)]


def _assert_equal(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", SHAPES)
def test_srgb_to_lab_and_lightness_bit_identical(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    want = _old_srgb_to_lab(rgb)
    _assert_equal(cs.srgb_to_lab(rgb), want)
    _assert_equal(cs.lightness(rgb), np.ascontiguousarray(want[:, :, 0]))
    _assert_equal(cs.srgb_to_lab(rgb[::-1, ::2]), _old_srgb_to_lab(rgb[::-1, ::2]))


def test_srgb_to_lab_all_256_levels() -> None:
    rgb = np.stack(np.meshgrid(np.arange(256), np.arange(256), [0, 17, 128, 255]), -1)
    rgb = rgb.reshape(256, -1, 3).astype(np.uint8)
    _assert_equal(cs.srgb_to_lab(rgb), _old_srgb_to_lab(rgb))


@pytest.mark.parametrize("case", range(24))
def test_lab_to_srgb_bit_identical(case: int) -> None:
    """L in and out of [0, 100], chroma from near-gray to far outside the gamut."""
    rng = np.random.default_rng(100 + case)
    shape = SHAPES[case % len(SHAPES)]
    sigma = [5.0, 20.0, 40.0, 80.0, 130.0, 200.0][case % 6]
    l = rng.uniform(-10.0, 110.0, shape).astype(np.float32)
    if case % 4 == 0:  # smooth photo-like planes rather than noise
        l = cv2.GaussianBlur(l, (0, 0), 3) if min(shape) > 1 else l
    ab = rng.normal(0.0, sigma, (2, *shape)).astype(np.float32)
    _assert_equal(cs.lab_to_srgb_uint8(l, ab), _old_lab_to_srgb_uint8(l, ab))


def test_lab_to_srgb_band_split_and_views() -> None:
    """More than one band (> 65536 px), and non-contiguous inputs (transposed views)."""
    rng = np.random.default_rng(5)
    l = rng.uniform(0.0, 100.0, (420, 333)).astype(np.float32)
    ab = rng.normal(0.0, 60.0, (2, 420, 333)).astype(np.float32)
    _assert_equal(cs.lab_to_srgb_uint8(l, ab), _old_lab_to_srgb_uint8(l, ab))
    lt, abt = l.T, ab.transpose(0, 2, 1)
    _assert_equal(cs.lab_to_srgb_uint8(lt, abt), _old_lab_to_srgb_uint8(lt, abt))


def test_lab_to_srgb_many_equals_one_by_one() -> None:
    rng = np.random.default_rng(8)
    l = rng.uniform(0.0, 100.0, (300, 250)).astype(np.float32)
    planes = [rng.normal(0.0, s, (2, 300, 250)).astype(np.float32) for s in (10, 50, 120)]
    got = cs.lab_to_srgb_uint8_many(l, planes)
    assert len(got) == 3
    for g, ab in zip(got, planes, strict=True):
        _assert_equal(g, _old_lab_to_srgb_uint8(l, ab))
    assert not np.array_equal(got[0], got[2])  # distinct inputs, distinct images


@pytest.mark.parametrize(
    "big", [(256, 256), (170, 256), (681, 1024), (300, 451), (100, 90), (1, 1), (512, 200)]
)
def test_upsample_ab_bit_identical(big: tuple[int, int]) -> None:
    rng = np.random.default_rng(big[0] + 7 * big[1])
    l_full = cv2.GaussianBlur(rng.uniform(0, 100, big).astype(np.float32), (0, 0), 2)
    ab = cv2.GaussianBlur(rng.normal(0, 40, (256, 256, 2)).astype(np.float32), (0, 0), 3)
    ab = ab.transpose(2, 0, 1)
    want = _old_upsample_ab(ab, l_full)
    _assert_equal(cs.upsample_ab(ab, l_full), want)
    up = cs.AbUpsampler(l_full, ab.shape[1:])
    _assert_equal(up(ab), want)
    _assert_equal(up(ab * 0.5), _old_upsample_ab(ab * 0.5, l_full))  # reused for a 2nd plane


@pytest.mark.parametrize("size", ["original", "model"])
@pytest.mark.parametrize("shape", [(170, 256), (451, 300), (256, 256), (97, 131)])
def test_compose_many_equals_old_compose(shape: tuple[int, int], size: str) -> None:
    rng = np.random.default_rng(shape[0])
    rgb = cv2.GaussianBlur(rng.integers(0, 256, (*shape, 3), dtype=np.uint8), (0, 0), 2)
    job = pipeline.Job(rgb, size=size)  # type: ignore[arg-type]
    l_norm = cs.preprocess(rgb)[0]
    ab = np.tanh(rng.normal(0, 0.5, (3, 2, 256, 256))).astype(np.float32)
    ab = np.stack([cv2.GaussianBlur(a.transpose(1, 2, 0), (0, 0), 4) for a in ab]).transpose(
        0, 3, 1, 2
    )
    got = pipeline.compose_many(job, l_norm, ab)
    for k in range(3):
        want = _old_compose(job, l_norm, ab[k])
        _assert_equal(got[k], want)
        _assert_equal(pipeline.compose(job, l_norm, ab[k]), want)


def test_compose_many_in_groups_equals_all_at_once(monkeypatch) -> None:
    """A small plane budget (one plane per group) gives the same images as one group."""
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (90, 140, 3), dtype=np.uint8)
    job = pipeline.Job(rgb, count=4)
    l_norm = cs.preprocess(rgb)[0]
    ab = np.tanh(rng.normal(0, 0.5, (4, 2, 256, 256))).astype(np.float32)
    together = pipeline.compose_many(job, l_norm, ab)
    monkeypatch.setattr(pipeline, "COMPOSE_PLANE_BYTES", 8 * 90 * 140 * 2)  # groups of 2
    pairs = pipeline.compose_many(job, l_norm, ab)
    monkeypatch.setattr(pipeline, "COMPOSE_PLANE_BYTES", 1)  # one at a time
    single = pipeline.compose_many(job, l_norm, ab)
    assert len(together) == len(pairs) == len(single) == 4
    for a, b, c, k in zip(together, pairs, single, range(4), strict=True):
        _assert_equal(b, a)
        _assert_equal(c, a)
        _assert_equal(a, _old_compose(job, l_norm, ab[k]))

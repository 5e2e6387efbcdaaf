"""All colour math of the service: sRGB <-> CIELAB, model pre/post-processing, ab upsampling.

Torch-free, float32 NumPy. Where the official DISCO code used OpenCV (preprocessing and its
256x256 postprocessing) we call the same OpenCV functions so the results match bit for bit;
everything the official code does not do (full-resolution output) is our own and tested here.

Units: L in [0, 100], a/b in Lab units (not offset by 128). The network sees L_norm = (L-50)/50
and predicts ab_norm = ab/110.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import cv2
import numpy as np

__all__ = [
    "AB_SCALE",
    "MODEL_SIZE",
    "AbUpsampler",
    "ab_psnr",
    "ciede2000",
    "hex_to_lab",
    "lab_to_srgb_uint8",
    "lab_to_srgb_uint8_many",
    "lightness",
    "official_postprocess",
    "preprocess",
    "srgb_to_lab",
    "upsample_ab",
    "upsample_ab_bicubic",
    "upsample_ab_bilinear",
]

MODEL_SIZE = 256  # the official script resizes every input to 256x256 (aspect ratio not kept)
AB_SCALE = 110.0  # ab_norm = ab / 110 in the official code

# upsample_ab (guided detail transfer) parameters, tuned with tools/measure_upsampler.py.
GUIDED_RADIUS = 1  # box radius of the local L -> ab fit, in model-grid pixels (3x3 window)
GUIDED_EPS = 32.0  # L units^2: L variation below ~6 units is not trusted to carry colour edges
GUIDED_BACK_PROJECTIONS = 1  # a second round gains < 0.1 dB

# OpenCV's constants (color_lab.cpp), so our Lab -> RGB inverts cv2's RGB -> Lab.
_WHITE_D65 = np.array([0.950456, 1.0, 1.088754], dtype=np.float32)
_XYZ_TO_RGB = np.array(
    [
        [3.240479, -1.53715, -0.498535],
        [-0.969256, 1.875991, 0.041556],
        [0.055648, -0.204043, 1.057311],
    ],
    dtype=np.float32,
)
# Linear-RGB slack of the gamut test. cv2's RGB2LAB (a, b in 1/64 steps) puts 8-bit colours with
# a channel at 0 or 255 up to ~3e-4 outside [0, 1]; with this slack they survive a round trip and
# cv2's final clip moves L by < 0.1. Below 0 the slack is relative to Y since L = 903*Y near black.
_GAMUT_HI = 1.0 + 2e-3
_GAMUT_LO_REL = 1e-3
_BISECTION_STEPS = 10  # chroma scale resolution 2**-10: < 0.2 ab units, invisible
_BAND_PIXELS = 1 << 16  # pixels per band of lab_to_srgb_uint8 (~256 KB per float32 temporary)

# uint8 -> float32 of the float64 quotient v / 255. (the official ``/255.`` then the cast): a
# table lookup gives the same 256 values bit for bit, ~8x faster than dividing every pixel.
_U8_TO_UNIT = (np.arange(256) / 255.0).astype(np.float32)

_HEX_RE = re.compile(r"#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})")


# --------------------------------------------------------------------------------------------
# sRGB -> Lab (OpenCV float path, as the official code)


def _check_rgb_uint8(rgb: np.ndarray) -> None:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")


def srgb_to_lab(rgb_uint8: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 sRGB -> (H, W, 3) float32 Lab via OpenCV's float path.

    ``/255.`` is done in float64 then cast, as the official ``fetch_data`` does, so L matches
    the reference bit for bit.
    """
    _check_rgb_uint8(rgb_uint8)
    rgb_f = cv2.LUT(np.ascontiguousarray(rgb_uint8), _U8_TO_UNIT)  # == (rgb / 255.).astype(f32)
    return cv2.cvtColor(rgb_f, cv2.COLOR_RGB2LAB)


def preprocess(rgb_uint8: np.ndarray) -> np.ndarray:
    """Official preprocessing: (H, W, 3) uint8 RGB -> L_norm float32 (1, 1, 256, 256).

    The uint8 resize (INTER_LINEAR, no anti-aliasing) happens before the Lab conversion,
    exactly as the official ``fetch_data``; changing the order changes the network input.
    """
    _check_rgb_uint8(rgb_uint8)
    small = cv2.resize(rgb_uint8, (MODEL_SIZE, MODEL_SIZE), interpolation=cv2.INTER_LINEAR)
    lab = srgb_to_lab(small)
    l_norm = (lab[:, :, 0] - np.float32(50.0)) / np.float32(50.0)
    return l_norm[None, None].astype(np.float32, copy=False)


def lightness(rgb_uint8: np.ndarray) -> np.ndarray:
    """Full-resolution L (H, W) float32 in Lab units; the guide and output L of the service."""
    return np.ascontiguousarray(srgb_to_lab(rgb_uint8)[:, :, 0])


def hex_to_lab(hex_color: str) -> tuple[float, float, float]:
    """``"#RRGGBB"`` / ``"RGB"`` -> (L, a, b), same float path as the image, for colour hints."""
    match = _HEX_RE.fullmatch(hex_color.strip())
    if match is None:
        raise ValueError(f"not a hex colour: {hex_color!r}")
    digits = match.group(1)
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    rgb = np.array([[[int(digits[i : i + 2], 16) for i in (0, 2, 4)]]], dtype=np.uint8)
    lab = srgb_to_lab(rgb)[0, 0]
    return float(lab[0]), float(lab[1]), float(lab[2])


# --------------------------------------------------------------------------------------------
# Lab -> sRGB


def official_postprocess(l_norm: np.ndarray, ab_norm: np.ndarray) -> np.ndarray:
    """The official output: Lab(L_norm*50+50, ab_norm*110) -> cv2 LAB2RGB -> x255 truncated.

    Accepts (1, 1, H, W) / (H, W) and (1, 2, H, W) / (2, H, W); returns (H, W, 3) uint8.
    Kept for conformance tests; the service uses :func:`lab_to_srgb_uint8`.
    """
    l_plane = np.asarray(l_norm, dtype=np.float32).reshape(np.shape(l_norm)[-2:])
    ab = np.asarray(ab_norm, dtype=np.float32).reshape((2, *np.shape(ab_norm)[-2:]))
    lab = np.stack([l_plane * 50.0 + 50.0, ab[0] * AB_SCALE, ab[1] * AB_SCALE], axis=-1)
    rgb = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB)  # clips to [0, 1]
    return (rgb * 255).astype(np.uint8)


def _f_y(l: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """f(Y) and Y of OpenCV's Lab -> XYZ; they depend on L only, so bisection reuses them."""
    small_l = l <= np.float32(0.008856 * 903.3)
    fy = (l + np.float32(16.0)) / np.float32(116.0)
    y = np.where(small_l, l / np.float32(903.3), fy**3)
    fy = np.where(small_l, np.float32(7.787) * y + np.float32(16.0 / 116.0), fy)
    return fy, y


def _f_inv(t: np.ndarray) -> np.ndarray:
    lin = t - np.float32(16.0 / 116.0)
    lin /= 7.787
    return np.where(t > np.float32(0.206893), t**3, lin)


class _LightnessBand:
    """What the gamut test needs from L alone (clipped L, f(Y), m_i1 * Y, the low bound), so
    the K diverse results of one image share it."""

    def __init__(self, l: np.ndarray) -> None:
        self.l = np.ascontiguousarray(np.clip(l, 0.0, 100.0))
        self.fy, y = _f_y(self.l)
        self.my = [_XYZ_TO_RGB[i, 1] * y for i in range(3)]
        self.lo = y * np.float32(-_GAMUT_LO_REL)


def _gamut_ok(
    fy: np.ndarray, my: list[np.ndarray], lo: np.ndarray, a: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """Is the unclipped linear sRGB of (L, a, b) inside [lo, _GAMUT_HI]? OpenCV's Lab -> XYZ ->
    RGB formulas (cv2 itself clips, hiding the gamut), channel by channel in float32, with
    m_i1 * Y precomputed per image: m_i0 x + m_i1 y + m_i2 z in that order."""
    m = _XYZ_TO_RGB
    x = _f_inv(fy + a / np.float32(500.0))
    x *= _WHITE_D65[0]
    z = _f_inv(fy - b / np.float32(200.0))
    z *= _WHITE_D65[2]
    ok: np.ndarray | None = None
    for i in range(3):
        c = m[i, 0] * x
        c += my[i]
        c += m[i, 2] * z
        inside = c >= lo
        inside &= c <= np.float32(_GAMUT_HI)
        if ok is None:
            ok = inside
        else:
            ok &= inside
    assert ok is not None
    return ok


def _check_lab(l: np.ndarray, ab: np.ndarray) -> None:
    if l.ndim != 2 or ab.shape != (2, *l.shape):
        raise ValueError(f"expected l (H, W) and ab (2, H, W), got {l.shape} and {ab.shape}")


def lab_to_srgb_uint8(l: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """L (H, W) + ab (2, H, W) in Lab units -> (H, W, 3) uint8 sRGB that keeps L.

    Per-channel clipping of out-of-gamut colours changes L (a saturated red clipped at 1 gets
    darker), which shows as blotches in a colourised photo. Instead the chroma of each
    out-of-gamut pixel is scaled down at constant L and hue (bisection on the scale), so the
    output L equals the input L up to 8-bit rounding (rounded, not truncated).

    Works in bands of rows: the dozen float32 temporaries of a band stay in the CPU caches,
    where whole-image temporaries of a 12 MP photo (48 MB each) made it ~3x slower.
    """
    return lab_to_srgb_uint8_many(l, [ab])[0]


def lab_to_srgb_uint8_many(l: np.ndarray, abs_: Sequence[np.ndarray]) -> list[np.ndarray]:
    """:func:`lab_to_srgb_uint8` for several ab planes (2, H, W) over ONE L (H, W), e.g. the K
    diverse results of an image: the L-only part of each band is computed once. Each image
    equals ``lab_to_srgb_uint8(l, ab)`` bit for bit."""
    l = np.asarray(l, dtype=np.float32)
    planes = [np.asarray(ab, dtype=np.float32) for ab in abs_]
    for ab in planes:
        _check_lab(l, ab)
    outs = [np.empty((*l.shape, 3), np.uint8) for _ in planes]
    rows = max(1, _BAND_PIXELS // max(1, l.shape[1]))
    for top in range(0, l.shape[0], rows):
        band = slice(top, top + rows)
        lb = _LightnessBand(l[band])
        for out, ab in zip(outs, planes, strict=True):
            out[band] = _lab_to_srgb_band(lb, ab[0, band], ab[1, band])
    return outs


def _lab_to_srgb_band(lb: _LightnessBand, a_band: np.ndarray, b_band: np.ndarray) -> np.ndarray:
    a = np.array(a_band, dtype=np.float32, order="C")  # copies: chroma is reduced in place
    b = np.array(b_band, dtype=np.float32, order="C")
    idx = np.flatnonzero(~_gamut_ok(lb.fy, lb.my, lb.lo, a, b))
    if idx.size:
        af, bf = a.reshape(-1), b.reshape(-1)
        o_fy, o_lo, o_a, o_b = lb.fy.reshape(-1)[idx], lb.lo.reshape(-1)[idx], af[idx], bf[idx]
        o_my = [v.reshape(-1)[idx] for v in lb.my]
        # Bisection on the chroma scale (0, gray, is always in gamut): the scale and the step
        # are multiples of 2**-steps, so scale + step is exactly the (lo + hi) / 2 midpoint.
        scale = np.zeros(idx.size, dtype=np.float32)
        step = np.float32(0.5)
        for _ in range(_BISECTION_STEPS):
            mid = scale + step
            scale = np.where(_gamut_ok(o_fy, o_my, o_lo, mid * o_a, mid * o_b), mid, scale)
            step = step * np.float32(0.5)
        af[idx] = scale * o_a
        bf[idx] = scale * o_b
    # Everything is in gamut now, so cv2's clipping is a no-op and its fast path is exact enough.
    rgb: np.ndarray = cv2.cvtColor(cv2.merge([lb.l, a, b]), cv2.COLOR_LAB2RGB)
    rgb *= np.float32(255.0)
    np.rint(rgb, out=rgb)
    return rgb.astype(np.uint8)


# --------------------------------------------------------------------------------------------
# ab upsampling: model grid (h, w) -> original image (H, W)


def _resize_ab(ab: np.ndarray, size_hw: tuple[int, int], interpolation: int) -> np.ndarray:
    hwc = np.ascontiguousarray(np.asarray(ab, dtype=np.float32).transpose(1, 2, 0))
    out = cv2.resize(hwc, (size_hw[1], size_hw[0]), interpolation=interpolation)
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def _check_ab_l(ab_small: np.ndarray, l_full: np.ndarray) -> None:
    if np.ndim(ab_small) != 3 or np.shape(ab_small)[0] != 2 or np.ndim(l_full) != 2:
        raise ValueError(
            f"expected ab (2, h, w) and l (H, W), got {np.shape(ab_small)} and {np.shape(l_full)}"
        )


def upsample_ab_bilinear(ab_small: np.ndarray, l_full: np.ndarray) -> np.ndarray:
    """Baseline: cv2 INTER_LINEAR to ``l_full``'s size (L itself is not used)."""
    _check_ab_l(ab_small, l_full)
    return _resize_ab(ab_small, np.shape(l_full), cv2.INTER_LINEAR)


def upsample_ab_bicubic(ab_small: np.ndarray, l_full: np.ndarray) -> np.ndarray:
    """Baseline: cv2 INTER_CUBIC to ``l_full``'s size (L itself is not used)."""
    _check_ab_l(ab_small, l_full)
    return _resize_ab(ab_small, np.shape(l_full), cv2.INTER_CUBIC)


def upsample_ab(
    ab_small: np.ndarray,
    l_full: np.ndarray,
    *,
    radius: int = GUIDED_RADIUS,
    eps: float = GUIDED_EPS,
    back_projections: int = GUIDED_BACK_PROJECTIONS,
) -> np.ndarray:
    """ab (2, h, w) -> (2, H, W), colour edges taken from the full-resolution L (H, W).

    Guided detail transfer: a local linear fit ab ~ a*L + c on the model grid (the guided
    filter's ``a`` of He & Sun 2015, box ``radius``, ``eps`` in L units^2) says how strongly
    colour follows lightness there; the L detail lost by the downscale, times that slope, is
    added to the bicubic upsampling. Where L and ab are unrelated a ~ 0 and this is bicubic;
    smoothing guided filters lose too much of the already-coarse ab to win. Then
    ``back_projections`` rounds of iterative back-projection make the INTER_AREA downscale of
    the result match ``ab_small`` again. Parameters tuned with tools/measure_upsampler.py.
    Several ab planes over one L (diverse results): :class:`AbUpsampler`, same result.
    """
    _check_ab_l(ab_small, l_full)
    up = AbUpsampler(
        l_full, np.shape(ab_small)[1:], radius=radius, eps=eps, back_projections=back_projections
    )
    return up(ab_small)


class AbUpsampler:
    """:func:`upsample_ab` split at the guide: everything that depends on L and the sizes only
    (the area-downscaled guide, its box mean and variance, the full-resolution L detail) is
    computed once here, so the K diverse results of an image pay it once. ``up(ab_small)``
    equals ``upsample_ab(ab_small, l_full)`` bit for bit (the same float32 operations)."""

    def __init__(
        self,
        l_full: np.ndarray,
        small_hw: tuple[int, ...],
        *,
        radius: int = GUIDED_RADIUS,
        eps: float = GUIDED_EPS,
        back_projections: int = GUIDED_BACK_PROJECTIONS,
    ) -> None:
        if np.ndim(l_full) != 2 or len(small_hw) != 2:
            raise ValueError(f"expected l (H, W) and a (h, w) size, got {np.shape(l_full)}")
        self.l_full = np.ascontiguousarray(l_full, dtype=np.float32)
        big_h, big_w = self.l_full.shape
        self.small_hw = (int(small_hw[0]), int(small_hw[1]))
        h, w = self.small_hw
        # Downscaled sides need no guide: the ab is area-averaged to (h, w) first.
        self.grid_hw = (min(h, big_h), min(w, big_w))
        self.identity = self.grid_hw == (big_h, big_w)
        self.ksize = (2 * radius + 1, 2 * radius + 1)
        self.eps = np.float32(eps)
        self.back_projections = back_projections
        if self.identity:
            return
        h, w = self.grid_hw
        self.size = (big_w, big_h)
        guide = cv2.resize(self.l_full, (w, h), interpolation=cv2.INTER_AREA)[:, :, None]
        self.guide = guide
        self.mean_i = self._box(guide)
        self.var_eps = (self._box(guide * guide) - self.mean_i * self.mean_i) + self.eps
        l_up = cv2.resize(guide, self.size, interpolation=cv2.INTER_CUBIC)
        self.l_detail = (self.l_full - l_up)[:, :, None]

    def _box(self, x: np.ndarray) -> np.ndarray:
        out = cv2.boxFilter(x, -1, self.ksize, borderType=cv2.BORDER_REFLECT)
        return out if out.ndim == 3 else out[:, :, None]

    def __call__(self, ab_small: np.ndarray) -> np.ndarray:
        if np.shape(ab_small) != (2, *self.small_hw):
            raise ValueError(f"expected ab (2, {self.small_hw}), got {np.shape(ab_small)}")
        src: np.ndarray = np.ascontiguousarray(
            np.asarray(ab_small, dtype=np.float32).transpose(1, 2, 0)
        )
        if self.grid_hw != self.small_hw:
            h, w = self.grid_hw
            src = cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA)
        if self.identity:
            return np.ascontiguousarray(src.transpose(2, 0, 1))
        h, w = self.grid_hw
        box = self._box
        cov_ip = box(self.guide * src) - self.mean_i * box(src)
        slope = box(cov_ip / self.var_eps)  # (h, w, 2)
        out: np.ndarray = cv2.resize(src, self.size, interpolation=cv2.INTER_CUBIC)
        out += cv2.resize(slope, self.size, interpolation=cv2.INTER_LINEAR) * self.l_detail
        for _ in range(self.back_projections):
            residual = src - cv2.resize(out, (w, h), interpolation=cv2.INTER_AREA)
            out += cv2.resize(residual, self.size, interpolation=cv2.INTER_CUBIC)
        return np.ascontiguousarray(out.transpose(2, 0, 1))


# --------------------------------------------------------------------------------------------
# Quality metrics


def ab_psnr(ab_true: np.ndarray, ab_test: np.ndarray, peak: float = 220.0) -> float:
    """PSNR of ab planes over both channels, peak 220 (the +-110 range the model predicts)."""
    diff = np.asarray(ab_true, dtype=np.float64) - np.asarray(ab_test, dtype=np.float64)
    mse = float(np.mean(diff * diff))
    return float("inf") if mse == 0.0 else 10.0 * float(np.log10(peak * peak / mse))


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """Per-pixel CIEDE2000 between (..., 3) Lab arrays (Sharma, Wu & Dalal 2005), float64.

    Used to score upsamplers in perceptual units (1 ~ just noticeable).
    """
    lab1 = np.asarray(lab1, dtype=np.float64)
    lab2 = np.asarray(lab2, dtype=np.float64)
    l1, a1, b1 = lab1[..., 0], lab1[..., 1], lab1[..., 2]
    l2, a2, b2 = lab2[..., 0], lab2[..., 1], lab2[..., 2]

    c_bar = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2.0
    c_bar7 = c_bar**7
    g = 0.5 * (1.0 - np.sqrt(c_bar7 / (c_bar7 + 25.0**7)))
    a1p, a2p = (1.0 + g) * a1, (1.0 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360.0  # atan2(0, 0) = 0, as the formula wants
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360.0
    cc = c1p * c2p
    zero_c = cc == 0

    d_lp = l2 - l1
    d_cp = c2p - c1p
    dhp = h2p - h1p
    dhp = np.where(dhp > 180.0, dhp - 360.0, np.where(dhp < -180.0, dhp + 360.0, dhp))
    dhp = np.where(zero_c, 0.0, dhp)
    d_hp = 2.0 * np.sqrt(cc) * np.sin(np.radians(dhp) / 2.0)

    l_bar = (l1 + l2) / 2.0
    c_barp = (c1p + c2p) / 2.0
    h_sum = h1p + h2p
    h_barp = np.where(
        np.abs(h1p - h2p) <= 180.0,
        h_sum / 2.0,
        np.where(h_sum < 360.0, (h_sum + 360.0) / 2.0, (h_sum - 360.0) / 2.0),
    )
    h_barp = np.where(zero_c, h_sum, h_barp)

    t = (
        1.0
        - 0.17 * np.cos(np.radians(h_barp - 30.0))
        + 0.24 * np.cos(np.radians(2.0 * h_barp))
        + 0.32 * np.cos(np.radians(3.0 * h_barp + 6.0))
        - 0.20 * np.cos(np.radians(4.0 * h_barp - 63.0))
    )
    d_theta = 30.0 * np.exp(-(((h_barp - 275.0) / 25.0) ** 2))
    c_barp7 = c_barp**7
    r_c = 2.0 * np.sqrt(c_barp7 / (c_barp7 + 25.0**7))
    l50 = (l_bar - 50.0) ** 2
    s_l = 1.0 + 0.015 * l50 / np.sqrt(20.0 + l50)
    s_c = 1.0 + 0.045 * c_barp
    s_h = 1.0 + 0.015 * c_barp * t
    r_t = -np.sin(np.radians(2.0 * d_theta)) * r_c

    tl, tc, th = d_lp / s_l, d_cp / s_c, d_hp / s_h
    delta_e: np.ndarray = np.sqrt(tl**2 + tc**2 + th**2 + r_t * tc * th)
    return delta_e

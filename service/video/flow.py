"""Dense optical flow (OpenCV DIS) on lightness, and the forward-backward reliability check."""

from __future__ import annotations

import cv2
import numpy as np


def to_gray(l_norm: np.ndarray) -> np.ndarray:
    """Model L (-1..1, (S, S)) -> uint8 image for the flow estimator."""
    return np.clip((l_norm + 1.0) * 127.5, 0, 255).astype(np.uint8)


_DIS = None


def flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Flow (H, W, 2) from uint8 gray `a` to `b`: a[y, x] ~ b[y + f_y, x + f_x]."""
    global _DIS
    if _DIS is None:
        _DIS = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return _DIS.calc(a, b, None)


def warp(img: np.ndarray, fwd: np.ndarray) -> np.ndarray:
    """Sample `img` (frame t+1, (H, W[, C])) at x + flow: aligned with frame t."""
    h, w = fwd.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(img, gx + fwd[..., 0], gy + fwd[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)  # fmt: skip


def reliable(fwd: np.ndarray, bwd: np.ndarray, tol: float = 1.0) -> np.ndarray:
    """Pixels whose forward flow the backward flow undoes (within `tol` px), staying inside."""
    h, w = fwd.shape[:2]
    back = warp(bwd, fwd)
    err = np.linalg.norm(fwd + back, axis=-1)
    gx, gy = np.meshgrid(np.arange(w), np.arange(h))
    inside = (gx + fwd[..., 0] >= 0) & (gx + fwd[..., 0] <= w - 1)
    inside &= (gy + fwd[..., 1] >= 0) & (gy + fwd[..., 1] <= h - 1)
    return (err < tol) & inside

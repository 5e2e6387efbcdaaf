"""The 313 quantised ab bins of DISCO (architecture doc, sec. 7.1).

The official code rebuilds the bin centres from a 23x23 grid; that construction equals
``gamut_pts.npy`` cast to float32 in the same order, so the packaged file is the single source.
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np

NUM_BINS = 313
"""Number of in-gamut 10x10 ab bins (the classifier width of pal/ref logits)."""

AB_SCALE = 110.0
"""Lab a,b are divided by this to get the network's normalised ab."""

_CHUNK = 4096  # rows per block in nearest_bin: bounds the (rows, 313) temporary to ~10 MB


@functools.cache
def q_to_ab() -> np.ndarray:
    """Bin centres (313, 2) float32 in Lab a,b units; loaded lazily, read-only, cached."""
    ref = resources.files("service") / "data" / "gamut_pts.npy"
    with resources.as_file(ref) as path:
        pts = np.load(path, allow_pickle=False)
    if pts.shape != (NUM_BINS, 2):
        raise ValueError(f"gamut_pts.npy: expected shape ({NUM_BINS}, 2), got {pts.shape}")
    out = pts.astype(np.float32)
    out.flags.writeable = False
    return out


def nearest_bin(ab: np.ndarray) -> np.ndarray:
    """Index of the nearest bin centre for Lab ab of shape (..., 2) -> int64 (...).

    Squared Euclidean distance in float64 (user colours are arbitrary floats; exact ties such
    as a point halfway between two centres resolve to the first index, as argmin does). The model
    never needs this for its own sampled colours: they carry their bin index (sec. 7.2).
    """
    ab = np.asarray(ab, dtype=np.float64)
    if ab.ndim < 1 or ab.shape[-1] != 2:
        raise ValueError(f"nearest_bin: expected shape (..., 2), got {ab.shape}")
    centres = q_to_ab().astype(np.float64)
    flat = ab.reshape(-1, 2)
    out = np.empty(flat.shape[0], dtype=np.int64)
    for start in range(0, flat.shape[0], _CHUNK):
        block = flat[start : start + _CHUNK]
        d = (block[:, None, 0] - centres[None, :, 0]) ** 2 + (
            block[:, None, 1] - centres[None, :, 1]
        ) ** 2
        out[start : start + _CHUNK] = np.argmin(d, axis=1)
    return out.reshape(ab.shape[:-1])

"""Synthetic test clips with known motion: pans and zooms over a still photo, written by PyAV."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np


def pan_frames(photo: np.ndarray, n: int = 24, size: int = 96, step: float = 2.0,
               zoom: float = 0.0, width: int | None = None) -> list[np.ndarray]:  # fmt: skip
    """Crops of `photo` moving right by `step` px per frame (and zooming in by `zoom` per frame),
    `size` high and `width` (default `size`) wide."""
    h, w = photo.shape[:2]
    out_w = width or size
    aspect = out_w / size
    base = min(h, w / aspect) * 0.6
    out = []
    for t in range(n):
        side = base * (1.0 - zoom * t)
        x0 = (w - base * aspect) * 0.2 + step * t
        y0 = (h - side) / 2
        crop = photo[int(y0) : int(y0 + side), int(x0) : int(x0 + side * aspect)]
        out.append(cv2.resize(crop, (out_w, size), interpolation=cv2.INTER_AREA))
    return out


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 12, gray: bool = True) -> Path:
    with av.open(str(path), "w", format="mp4") as out:
        s = out.add_stream("libx264", rate=fps)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        for f in frames:
            if gray:
                f = np.repeat(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path

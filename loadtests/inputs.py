"""The load tests' inputs: deterministic grayscale photos-to-be, made at start (no files).

A smooth gradient with a low-frequency pattern and mild Gaussian noise, saved as a grayscale
JPEG (quality 90): about 18 KB at 256x256 and 3.2 MB at 4000x3000 (12 MP). The same bytes for
the same (size, seed) on every run, so runs compare; several seeds give the same cost without
identical uploads. Pillow and numpy only (the locust process and the engine-only baseline both
import this).
"""

from __future__ import annotations

import io
from functools import cache

import numpy as np
from PIL import Image

SMALL = (256, 256)  # the model's own input size
LARGE = (4000, 3000)  # 12 MP


def gray(width: int, height: int, seed: int = 0) -> np.ndarray:
    """uint8 (height, width): gradient + a soft pattern + noise, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    g = 40 + 170 * (0.6 * x / width + 0.4 * y / height)
    g += 25 * np.sin(x / (width / 7.3) + seed) * np.cos(y / (height / 5.1))
    g += rng.normal(0.0, 6.0, (height, width)).astype(np.float32)
    return np.clip(g, 0, 255).astype(np.uint8)


@cache
def jpeg(width: int, height: int, seed: int = 0, quality: int = 90) -> bytes:
    """`gray(width, height, seed)` as a grayscale JPEG (cached per process)."""
    buf = io.BytesIO()
    Image.fromarray(gray(width, height, seed), "L").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def pool(size: tuple[int, int], n: int) -> list[bytes]:
    """`n` different JPEGs of one size (seeds 0..n-1)."""
    return [jpeg(size[0], size[1], seed) for seed in range(n)]

"""Colorization pipeline: image -> L -> engine encode -> anchors -> engine generate -> image.

Everything around the network that is not the network: preprocessing, anchor selection (k-means
or user hints), diverse colour sampling, batching encoder and generator rows, and composing the
output at the input's own resolution. Torch-free; the engine is anything with `encode` and
`generate` (see `service.engine.base.Engine`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from service import colorspace
from service.anchors import init_indices
from service.engine.base import Encoded, Engine
from service.gamut import AB_SCALE, q_to_ab
from service.hints import Hint, hints_to_arrays

Size = Literal["original", "model"]
MAX_ANCHORS = 64
MAX_DIVERSE = 10  # the sampler draws from the top-10 bins per token


def seed_from_bytes(data: bytes) -> int:
    """Default k-means seed: a function of the image bytes, so equal requests agree."""
    return int.from_bytes(hashlib.sha256(data).digest()[:4], "little")


@dataclass(frozen=True)
class Job:
    """One image to colorize and how. `count` > 1 asks for diverse results (T = 0..count-1)."""

    rgb: np.ndarray  # (H, W, 3) uint8 sRGB, orientation already applied
    seed: int = 0
    anchors: int = 8
    count: int = 1
    hints: Sequence[Hint] | None = None
    size: Size = "original"

    def __post_init__(self) -> None:
        if not 1 <= self.anchors <= MAX_ANCHORS:
            raise ValueError(f"anchors must be in 1..{MAX_ANCHORS}, got {self.anchors}")
        if not 1 <= self.count <= MAX_DIVERSE:
            raise ValueError(f"count must be in 1..{MAX_DIVERSE}, got {self.count}")
        if self.hints and self.count > 1:
            raise ValueError("user hints fix the anchor colours: diverse results need no hints")
        if self.size not in ("original", "model"):
            raise ValueError(f"size must be 'original' or 'model', got {self.size!r}")
        if self.rgb.ndim != 3 or self.rgb.shape[2] != 3 or self.rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be (H, W, 3) uint8, got {self.rgb.shape} {self.rgb.dtype}")


@dataclass(frozen=True)
class Anchor:
    token: int
    row: int
    col: int
    bin: int
    ab: tuple[float, float]  # Lab a, b of the bin centre


@dataclass
class Output:
    """One colorized result: the image, the raw model ab and the anchors that produced it."""

    image: np.ndarray  # (H, W, 3) uint8 sRGB (original size) or (S, S, 3) for size="model"
    ab_norm: np.ndarray  # (2, S, S) float32 model output, ab / 110
    anchors: list[Anchor] = field(default_factory=list)


def init_rows(jobs: Sequence[Job], n_tokens: int) -> np.ndarray:
    """k-means init indices (N, K_max) for a batch; -1 pads jobs that want fewer anchors.

    Jobs with user hints need no k-means; they get a one-cluster init whose result is unused.
    """
    k_max = max(1 if j.hints else j.anchors for j in jobs)
    init = np.full((len(jobs), k_max), -1, dtype=np.int64)
    for i, job in enumerate(jobs):
        k = 1 if job.hints else job.anchors
        init[i, :k] = init_indices(job.seed, k, n_tokens)
    return init


def anchor_rows(enc: Encoded, i: int, job: Job) -> tuple[np.ndarray, np.ndarray]:
    """Hint masks and colour bins (count, L) for image i of an encoder batch."""
    if job.hints:
        grid = round(enc.spixel_sizes.shape[1] ** 0.5)
        mask, bins = hints_to_arrays(list(job.hints), grid=grid)
        return mask[None], bins[None]
    bins = enc.sampled_bins[i, : job.count]
    return np.repeat(enc.hint_mask[i : i + 1], job.count, axis=0), bins


def describe_anchors(mask: np.ndarray, bins: np.ndarray) -> list[Anchor]:
    grid = round(mask.shape[0] ** 0.5)
    q = q_to_ab()
    return [
        Anchor(
            int(t),
            int(t) // grid,
            int(t) % grid,
            int(bins[t]),
            (float(q[bins[t], 0]), float(q[bins[t], 1])),
        )
        for t in np.flatnonzero(mask)
    ]


def compose(job: Job, l_norm: np.ndarray, ab_norm: np.ndarray) -> np.ndarray:
    """Model ab -> sRGB image: the input's full-res L + edge-aware upsampled ab, or official 256."""
    if job.size == "model":
        return colorspace.official_postprocess(l_norm, ab_norm)
    l_full = colorspace.lightness(job.rgb)
    ab_full = colorspace.upsample_ab(ab_norm * np.float32(AB_SCALE), l_full)
    return colorspace.lab_to_srgb_uint8(l_full, ab_full)


def run(engine: Engine, jobs: Sequence[Job]) -> list[list[Output]]:
    """Colorize a batch: one encoder row per job, `count` generator rows per job."""
    if not jobs:
        return []
    l_norm = np.concatenate([colorspace.preprocess(j.rgb) for j in jobs])
    n_tokens = (l_norm.shape[-1] // 16) ** 2
    enc = engine.encode(l_norm, init_rows(jobs, n_tokens))
    if len(enc) != len(jobs):
        raise RuntimeError(f"engine returned {len(enc)} encoder rows for {len(jobs)} images")
    rows: list[int] = []
    masks, bins = [], []
    for i, job in enumerate(jobs):
        m, b = anchor_rows(enc, i, job)
        rows += [i] * len(m)
        masks.append(m)
        bins.append(b)
    mask_rows = np.concatenate(masks).astype(np.float32)
    bin_rows = np.concatenate(bins).astype(np.int64)
    take = np.asarray(rows)
    ab = engine.generate(l_norm[take], enc.affinity[take], enc.tokens[take], mask_rows, bin_rows)
    if ab.shape[0] != len(rows):
        raise RuntimeError(f"engine returned {ab.shape[0]} generator rows for {len(rows)}")
    results: list[list[Output]] = [[] for _ in jobs]
    for r, i in enumerate(rows):
        job = jobs[i]
        image = compose(job, l_norm[i], ab[r])
        results[i].append(Output(image, ab[r], describe_anchors(mask_rows[r], bin_rows[r])))
    return results

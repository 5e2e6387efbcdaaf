"""Colorization pipeline: image -> L -> engine encode -> anchors -> engine generate -> image.

Everything around the network that is not the network: preprocessing, anchor selection (k-means
or user hints), diverse colour sampling, batching encoder and generator rows, and composing the
output at the input's own resolution. Torch-free; the engine is anything with `encode` and
`generate` (see `service.engine.base.Engine`).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from service import colorspace
from service.anchors import init_indices
from service.engine.base import Encoded, Engine
from service.engine.plugin import KMEANS_ITERS, KMEANS_TOL, kmeans_anchors
from service.gamut import AB_SCALE, q_to_ab
from service.hints import Hint, hints_to_arrays
from service.params import MAX_ANCHORS, MAX_DIVERSE

Size = Literal["original", "model"]
COMPOSE_PLANE_BYTES = 128 << 20  # full-resolution ab planes compose_many holds at once


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
    return compose_many(job, l_norm, ab_norm[None])[0]


def compose_many(job: Job, l_norm: np.ndarray, ab_norm: np.ndarray) -> list[np.ndarray]:
    """:func:`compose` for the K results (K, 2, S, S) of one job: the per-image work (the
    full-resolution L, the upsampler's guide, the L-only part of Lab -> sRGB) is done once,
    not once per result; each image equals ``compose(job, l_norm, ab_norm[k])``."""
    if job.size == "model":
        return [colorspace.official_postprocess(l_norm, ab) for ab in ab_norm]
    l_full = colorspace.lightness(job.rgb)
    up = colorspace.AbUpsampler(l_full, ab_norm.shape[-2:])
    scale = np.float32(AB_SCALE)
    # Full-resolution ab planes (8 bytes a pixel) go to the Lab -> sRGB conversion a group at
    # a time, so K = 10 results of a 40 MP photo never hold 10 of them at once.
    group = max(1, COMPOSE_PLANE_BYTES // (8 * l_full.size))
    images: list[np.ndarray] = []
    for k in range(0, len(ab_norm), group):
        planes = [up(ab * scale) for ab in ab_norm[k : k + group]]
        images += colorspace.lab_to_srgb_uint8_many(l_full, planes)
    return images


class Timer:
    """Accumulates wall time per stage (seconds), for Server-Timing and metrics."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


def encode_batch(engine: Engine, jobs: Sequence[Job], timer: Timer) -> tuple[np.ndarray, Encoded]:
    with timer("preprocess"):
        l_norm = np.concatenate([colorspace.preprocess(j.rgb) for j in jobs])
    n_tokens = (l_norm.shape[-1] // 16) ** 2
    with timer("encoder"):
        enc = engine.encode(l_norm, init_rows(jobs, n_tokens))
    if len(enc) != len(jobs):
        raise RuntimeError(f"engine returned {len(enc)} encoder rows for {len(jobs)} images")
    return l_norm, enc


def run(engine: Engine, jobs: Sequence[Job], timer: Timer | None = None) -> list[list[Output]]:
    """Colorize a batch: one encoder row per job, `count` generator rows per job."""
    if not jobs:
        return []
    timer = timer or Timer()
    l_norm, enc = encode_batch(engine, jobs, timer)
    anchor_sets = [anchor_rows(enc, i, job) for i, job in enumerate(jobs)]
    return _generate(engine, jobs, l_norm, enc, list(range(len(jobs))), anchor_sets, timer)


def run_encoded(
    engine: Engine, jobs: Sequence[Job], l_norm: np.ndarray, enc: Encoded, image: int,
    timer: Timer | None = None,
) -> list[list[Output]]:  # fmt: skip
    """:func:`run` for jobs on image `image` of an earlier `encode_batch`, without encoding it
    again: each job's k-means anchors are drawn anew from the stored encoder features, for its
    own seed and anchor count (the numpy reference the engines' k-means are held to), so that
    several draws on one frame (the video keyframe's candidates) cost one encoder pass."""
    if not jobs:
        return []
    timer = timer or Timer()
    n = len(jobs)
    with timer("anchors"):
        enc_out = np.repeat(np.asarray(enc.enc_out[image : image + 1]), n, axis=0)
        sizes = np.repeat(np.asarray(enc.spixel_sizes[image : image + 1]), n, axis=0)
        init = init_rows(jobs, enc_out.shape[-1])
        hint_mask, _ = kmeans_anchors(enc_out, sizes, init, KMEANS_ITERS, KMEANS_TOL)
    anchor_sets = []
    for j, job in enumerate(jobs):
        if job.hints:
            anchor_sets.append(anchor_rows(enc, image, job))
        else:
            anchor_sets.append((np.repeat(hint_mask[j : j + 1], job.count, axis=0),
                                enc.sampled_bins[image, : job.count]))  # fmt: skip
    return _generate(engine, jobs, l_norm, enc, [image] * n, anchor_sets, timer)


def _generate(
    engine: Engine, jobs: Sequence[Job], l_norm: np.ndarray, enc: Encoded, images: list[int],
    anchor_sets: list[tuple[np.ndarray, np.ndarray]], timer: Timer,
) -> list[list[Output]]:  # fmt: skip
    """Generator rows for every job's anchor sets (job j on encoder row images[j]), composed."""
    rows = [images[j] for j, (m, _) in enumerate(anchor_sets) for _ in range(len(m))]
    mask_rows = np.concatenate([m for m, _ in anchor_sets]).astype(np.float32)
    bin_rows = np.concatenate([b for _, b in anchor_sets]).astype(np.int64)
    take = np.asarray(rows)
    with timer("generator"):
        ab = engine.generate(
            l_norm[take], enc.affinity[take], enc.tokens[take], mask_rows, bin_rows
        )
    if ab.shape[0] != len(rows):
        raise RuntimeError(f"engine returned {ab.shape[0]} generator rows for {len(rows)}")
    results: list[list[Output]] = [[] for _ in jobs]
    with timer("compose"):
        first = 0
        for j, job in enumerate(jobs):  # a job's rows are consecutive
            n = len(anchor_sets[j][0])
            composed = compose_many(job, l_norm[images[j]], ab[first : first + n])
            for r, image in zip(range(first, first + n), composed, strict=True):
                anchors = describe_anchors(mask_rows[r], bin_rows[r])
                results[j].append(Output(image, ab[r], anchors))
            first += n
    return results


def automatic_anchors(
    engine: Engine, jobs: Sequence[Job], timer: Timer | None = None, top: int = 5
) -> list[list[dict[str, Any]]]:
    """The k-means anchors of each image with their top colour candidates, to edit as hints.

    Per anchor: token, row/col, x/y (fractions of width/height, cell centre), superpixel size
    (pixels / 256), and the `top` most probable bins with their probabilities.
    """
    timer = timer or Timer()
    _, enc = encode_batch(engine, jobs, timer)
    q = q_to_ab()
    grid = round(enc.spixel_sizes.shape[1] ** 0.5)
    out = []
    for i in range(len(jobs)):
        logit = enc.pal_logit[i].astype(np.float64)  # (313, L)
        prob = np.exp(logit - logit.max(0))
        prob /= prob.sum(0)
        anchors = []
        for t in np.flatnonzero(enc.hint_mask[i]):
            best = np.argsort(-prob[:, t], kind="stable")[:top]
            r, c = divmod(int(t), grid)
            anchors.append({
                "token": int(t), "row": r, "col": c,
                "x": (c + 0.5) / grid, "y": (r + 0.5) / grid,
                "superpixel_size": float(enc.spixel_sizes[i, t]),
                "candidates": [
                    {"bin": int(b), "ab": [float(q[b, 0]), float(q[b, 1])],
                     "color": ab_to_hex(float(q[b, 0]), float(q[b, 1])),
                     "probability": float(prob[b, t])}
                    for b in best
                ],
            })  # fmt: skip
        out.append(anchors)
    return out


def ab_to_hex(a: float, b: float, lightness: float = 60.0) -> str:
    """A displayable sRGB hex for an ab bin (at a mid lightness; hints only use its a, b)."""
    px = colorspace.lab_to_srgb_uint8(np.full((1, 1), lightness, np.float32),
                                      np.array([[[a]], [[b]]], np.float32))[0, 0]  # fmt: skip
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in px))

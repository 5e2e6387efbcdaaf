"""Anchored video colorization: k-means anchors on each shot's keyframe, then the same anchors,
moved by optical flow, go in as hints with the keyframe's colours on the following frames."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from service import colorspace
from service.engine.base import Engine
from service.pipeline import Job, Timer, compose, encode_batch, run
from service.video.flow import flow, to_gray

CELL = 16  # pixels per token at model resolution


def is_cut(prev_l: np.ndarray, cur_l: np.ndarray, threshold: float = 0.5) -> bool:
    """Shot cut: L histograms (32 bins) differ by more than `threshold` in total variation."""
    h0 = np.histogram(prev_l, 32, (-1.0, 1.0))[0] / prev_l.size
    h1 = np.histogram(cur_l, 32, (-1.0, 1.0))[0] / cur_l.size
    return float(0.5 * np.abs(h0 - h1).sum()) > threshold


def _move(points: np.ndarray, fwd: np.ndarray) -> np.ndarray:
    """Move (N, 2) x, y points by the flow sampled at their nearest pixel."""
    h, w = fwd.shape[:2]
    xi = np.clip(np.round(points[:, 0]).astype(int), 0, w - 1)
    yi = np.clip(np.round(points[:, 1]).astype(int), 0, h - 1)
    return points + fwd[yi, xi]


class AnchoredColorizer:
    """Streams frames through the engine in batches with temporally tracked anchors."""

    def __init__(self, engine: Engine, anchors: int = 8, batch_size: int = 8, seed: int = 0):
        self.engine, self.anchors, self.batch_size, self.seed = engine, anchors, batch_size, seed
        self._gray: np.ndarray | None = None
        self._l: np.ndarray | None = None
        self._points = np.zeros((0, 2), np.float32)
        self._bins = np.zeros(0, np.int64)

    def _keyframe(self, job: Job, l_norm: np.ndarray) -> np.ndarray:
        out = run(self.engine, [job])[0][0]
        self._points = np.array([[(a.col + 0.5) * CELL, (a.row + 0.5) * CELL] for a in out.anchors],
                                np.float32).reshape(-1, 2)  # fmt: skip
        self._bins = np.array([a.bin for a in out.anchors], np.int64)
        return out.image

    def _hint_rows(self, grid: int) -> tuple[np.ndarray, np.ndarray]:
        mask = np.zeros(grid * grid, np.float32)
        bins = np.zeros(grid * grid, np.int64)
        for (x, y), b in zip(self._points, self._bins, strict=True):
            c, r = int(x // CELL), int(y // CELL)
            if 0 <= r < grid and 0 <= c < grid and not mask[r * grid + c]:
                mask[r * grid + c], bins[r * grid + c] = 1.0, b
        return mask, bins

    def _batch(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        jobs = [Job(f, seed=self.seed, anchors=self.anchors) for f in frames]
        l_all = np.concatenate([colorspace.preprocess(f) for f in frames])
        images: list[np.ndarray | None] = [None] * len(frames)
        rows: list[int] = []
        masks, bins = [], []
        grid = l_all.shape[-1] // CELL
        for i, job in enumerate(jobs):
            gray = to_gray(l_all[i, 0])
            if self._l is None or is_cut(self._l, l_all[i, 0]) or not len(self._points):
                images[i] = self._keyframe(job, l_all[i])
            else:
                self._points = _move(self._points, flow(self._gray, gray))
                m, b = self._hint_rows(grid)
                if not m.any():  # every anchor left the frame: start a new shot
                    images[i] = self._keyframe(job, l_all[i])
                else:
                    rows.append(i)
                    masks.append(m)
                    bins.append(b)
            self._gray, self._l = gray, l_all[i, 0]
        if rows:
            sub = [jobs[i] for i in rows]
            l_norm, enc = encode_batch(self.engine, [Job(j.rgb, anchors=1) for j in sub], Timer())
            ab = self.engine.generate(l_norm, enc.affinity, enc.tokens,
                                      np.stack(masks), np.stack(bins))  # fmt: skip
            for r, i in enumerate(rows):
                images[i] = compose(jobs[i], l_norm[r], ab[r])
        return [im for im in images if im is not None]

    def colorize(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        batch: list[np.ndarray] = []
        for f in frames:
            batch.append(f)
            if len(batch) == self.batch_size:
                yield from self._batch(batch)
                batch = []
        if batch:
            yield from self._batch(batch)


def colorize_independent(
    engine: Engine, frames: Iterable[np.ndarray], anchors: int = 8, batch_size: int = 8
) -> Iterator[np.ndarray]:
    """Baseline: every frame colorized on its own (its own k-means), for the flicker comparison."""
    batch: list[np.ndarray] = []
    for f in frames:
        batch.append(f)
        if len(batch) == batch_size:
            yield from (o[0].image for o in run(engine, [Job(x, anchors=anchors) for x in batch]))
            batch = []
    if batch:
        yield from (o[0].image for o in run(engine, [Job(x, anchors=anchors) for x in batch]))

"""Anchored video colorization: k-means anchors on each shot's keyframe, then the same anchors,
moved by optical flow, go in as hints with the keyframe's colours on the following frames."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from service.engine.base import Encoded, Engine
from service.hints import Hint
from service.pipeline import Job, Output, Timer, compose, encode_batch, run, run_encoded
from service.video.flow import flow, reliable, to_gray, warp
from service.video.metrics import colourfulness

CELL = 16  # pixels per token at model resolution
Frame = tuple[Job, np.ndarray, Encoded, int]  # a frame's job, its batch's L and encoding, its row


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
    """Streams frames through the engine in batches with temporally tracked anchors.

    Per shot: the keyframe's automatic anchors (the most colourful of `candidates` k-means
    draws) are moved by optical flow and go in as hints with the keyframe's colours. The model
    ab of each hinted frame is then blended with the previous frame's, warped by the flow, on
    pixels where the flow is forward-backward consistent (weight `carry`). A hinted frame whose
    colourfulness fell below `fade` x its keyframe's (the anchors that carried the shot's colour
    have left, as in a pan) becomes a keyframe itself. Every `refresh` hinted frames the
    candidates are drawn again on the current frame and taken only if `rise` x more colourful
    (new content came into view): one deliberate change instead of per-frame churn.
    """

    def __init__(self, engine: Engine, anchors: int = 8, batch_size: int = 8, seed: int = 0,
                 candidates: int = 4, fade: float = 0.9, carry: float = 0.5,
                 hints: Sequence[Hint] | None = None, refresh: int = 8,
                 rise: float = 1.1):  # fmt: skip
        self.engine, self.anchors, self.batch_size, self.seed = engine, anchors, batch_size, seed
        self.candidates, self.fade, self.carry = candidates, fade, carry
        self.hints = list(hints) if hints else None  # the user's anchors for the first shot
        self.keyframes, self.refresh, self.rise, self._since = 0, refresh, rise, 0
        self._users = False  # the current anchors are the user's hints
        self._gray: np.ndarray | None = None  # previous frame: flow input, L, model ab
        self._l: np.ndarray | None = None
        self._ab: np.ndarray | None = None
        self._points = np.zeros((0, 2), np.float32)  # tracked anchors: x, y at model scale
        self._bins = np.zeros(0, np.int64)
        self._n_key, self._key_colour = 0, 0.0

    def _best(self, frame: Frame) -> tuple[Output, float]:
        """The shot's colours: of `candidates` automatic results (k-means seeds seed, seed+1, ..,
        one generator batch on the frame's stored encoding), the most colourful. Per-frame
        results swing widely as k-means moves its sites; the first frame's alone would lock a
        shot to whatever that draw gave. The user's hints, when given, are the first shot's
        anchors instead."""
        job, l_all, enc, i = frame
        if self.hints and not self.keyframes:
            jobs = [Job(job.rgb, hints=self.hints)]
        else:
            seeds = range(self.seed, self.seed + self.candidates)
            jobs = [Job(job.rgb, seed=s, anchors=self.anchors) for s in seeds]
        outs = run_encoded(self.engine, jobs, l_all, enc, i)
        scored = [(o[0], colourfulness(o[0].image)) for o in outs]
        return max(scored, key=lambda oc: oc[1])

    def _lock(self, best: tuple[Output, float], users: bool = False) -> Output:
        """Make `best` (a result and its colourfulness) the keyframe: its anchors are tracked
        from here on. The user's anchors (`users`) are never replaced for being dull: only a
        cut, or their leaving the frame, ends them."""
        out, self._key_colour = best
        self.keyframes += 1
        self._users = users
        self._since = 0
        self._points = np.array([[(a.col + 0.5) * CELL, (a.row + 0.5) * CELL] for a in out.anchors],
                                np.float32).reshape(-1, 2)  # fmt: skip
        self._bins = np.array([a.bin for a in out.anchors], np.int64)
        self._n_key = len(self._bins)
        return out

    def _keyframe(self, frame: Frame) -> Output:
        return self._lock(self._best(frame), users=bool(self.hints) and not self.keyframes)

    def _rekey(self, frame: Frame, colour: float) -> Output | None:
        """A new keyframe for a hinted frame of colourfulness `colour`, or None: when it fell
        below `fade` x the keyframe's, or, every `refresh` frames, when fresh candidates are
        `rise` x more colourful."""
        if colour < self.fade * self._key_colour:
            return self._keyframe(frame)
        if self.refresh and self._since >= self.refresh:
            self._since = 0
            fresh = self._best(frame)
            if fresh[1] > self.rise * colour:
                return self._lock(fresh)
        return None

    def _hint_rows(self, grid: int) -> tuple[np.ndarray, np.ndarray]:
        """Tracked anchors -> (mask, bins) over the token grid; anchors that left the frame or
        landed in an already taken cell are dropped for good (the shot keeps the first)."""
        mask = np.zeros(grid * grid, np.float32)
        bins = np.zeros(grid * grid, np.int64)
        keep = np.zeros(len(self._points), bool)
        for j, ((x, y), b) in enumerate(zip(self._points, self._bins, strict=True)):
            c, r = int(x // CELL), int(y // CELL)
            if 0 <= r < grid and 0 <= c < grid and not mask[r * grid + c]:
                mask[r * grid + c], bins[r * grid + c], keep[j] = 1.0, b, True
        self._points, self._bins = self._points[keep], self._bins[keep]
        return mask, bins

    def _carry(self, ab: np.ndarray, prev_ab: np.ndarray, fwd: np.ndarray, bwd: np.ndarray):
        """Blend model ab (2, S, S) with the previous frame's, warped into this frame."""
        ok = reliable(bwd, fwd)  # bwd: this frame -> previous
        warped = warp(np.ascontiguousarray(prev_ab.transpose(1, 2, 0)), bwd).transpose(2, 0, 1)
        return np.where(ok, self.carry * warped + (1.0 - self.carry) * ab, ab).astype(ab.dtype)

    def _batch(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        jobs = [Job(f, seed=self.seed, anchors=1) for f in frames]  # hint rows need no k-means
        l_all, enc = encode_batch(self.engine, jobs, Timer())
        images: list[np.ndarray | None] = [None] * len(frames)
        start = 0
        while start < len(frames):
            start = self._span(jobs, l_all, enc, images, start)
        return [im for im in images if im is not None]

    def _span(self, jobs: list[Job], l_all: np.ndarray, enc: Encoded,
              images: list[np.ndarray | None], start: int) -> int:  # fmt: skip
        """Frames start.. of a batch: keyframes where a shot starts, the others as one
        generator batch of tracked hints; returns the frame to continue from (after a fade)."""
        rows: list[int] = []
        masks, bins = [], []
        flows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        abs_: dict[int, np.ndarray | None] = {start - 1: self._ab}
        grid = l_all.shape[-1] // CELL
        for i in range(start, len(jobs)):
            gray = to_gray(l_all[i, 0])
            cut = self._l is None or is_cut(self._l, l_all[i, 0]) or not len(self._points)
            if not cut:
                assert self._gray is not None
                fwd = flow(self._gray, gray)
                self._points = _move(self._points, fwd)
                m, b = self._hint_rows(grid)
                cut = len(self._points) * 2 < self._n_key  # content moved on: decide anew
            if cut:
                out = self._keyframe((jobs[i], l_all, enc, i))
                images[i], abs_[i] = out.image, out.ab_norm
            else:
                rows.append(i)
                masks.append(m)
                bins.append(b)
                flows[i] = fwd, flow(gray, self._gray)
            self._gray, self._l = gray, l_all[i, 0]
        if rows:
            take = np.asarray(rows)
            ab = self.engine.generate(l_all[take], enc.affinity[take], enc.tokens[take],
                                      np.stack(masks), np.stack(bins))  # fmt: skip
            for r, i in enumerate(rows):
                prev = abs_.get(i - 1)
                abs_[i] = ab[r] if prev is None else self._carry(ab[r], prev, *flows[i])
                images[i] = compose(jobs[i], l_all[i], abs_[i])
                self._since += 1
                colour = colourfulness(images[i])
                out = None if self._users else self._rekey((jobs[i], l_all, enc, i), colour)
                if out is not None:
                    images[i], abs_[i] = out.image, out.ab_norm
                    self._gray, self._l, self._ab = to_gray(l_all[i, 0]), l_all[i, 0], abs_[i]
                    for j in range(i + 1, len(jobs)):
                        images[j] = None
                    return i + 1
        self._ab = abs_[len(jobs) - 1]
        return len(jobs)

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

"""Does the model use its anchors? Oracle-anchor gain, diverse spread and hint response.

All three go through the service pipeline (`service.pipeline.run` with `Job` hints / `count`), so
they measure what a user of `/colorize`, `/colorize/diverse` and hints gets:

* oracle-anchor gain: ab-PSNR with oracle hints (the photo's TRUE mean ab over the superpixel
  of each automatic anchor token) minus ab-PSNR of the automatic result (dB, full resolution);
* diverse spread: K diverse results, the minimum over pairs of the mean per-pixel ab distance at
  full resolution (Lab units);
* hint response: for random single hints, the fraction of the way the hinted superpixel's mean
  ab (model resolution) moves from the automatic result toward the hint colour (1 = reaches it).

Torch-free: the engine is anything the pipeline accepts.
"""

from __future__ import annotations

from itertools import combinations

import cv2
import numpy as np

from service import colorspace, metrics
from service.engine.base import Engine
from service.gamut import AB_SCALE, q_to_ab
from service.hints import Hint
from service.pipeline import Job, Timer, encode_batch, run

# (dy, dx) of the 9 affinity slots, row-major (as export/model/superpixel.py)
_SLOTS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def superpixel_labels(affinity: np.ndarray, cell: int = 16) -> np.ndarray:
    """Hard superpixel map (S, S) of token indices from one affinity map (9, S, S)."""
    _, hh, ww = affinity.shape
    h, w = hh // cell, ww // cell
    k = affinity.argmax(0)
    rows = np.arange(hh)[:, None] // cell + np.asarray(_SLOTS)[k][..., 0]
    cols = np.arange(ww)[None, :] // cell + np.asarray(_SLOTS)[k][..., 1]
    rows, cols = np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)
    return rows * w + cols


def _region_mean(ab: np.ndarray, labels: np.ndarray, token: int) -> np.ndarray:
    """Mean ab (2,) of ab (2, S, S) over the pixels of `token` (its own cell if it has none)."""
    sel = labels == token
    if not sel.any():
        grid = round(np.sqrt(labels.max() + 1))
        cell = labels.shape[0] // grid
        sel = np.zeros_like(sel)
        r, c = divmod(token, grid)
        sel[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = True
    return ab[:, sel].mean(1)


def _full_ab(rgb: np.ndarray) -> np.ndarray:
    return np.moveaxis(colorspace.srgb_to_lab(rgb)[..., 1:], -1, 0)


def image_scores(
    engine: Engine,
    rgb: np.ndarray,
    *,
    seed: int = 0,
    anchors: int = 8,
    count: int = 3,
    n_hints: int = 4,
    hint_rng: np.random.Generator | None = None,
) -> dict[str, float | list[float]]:
    """The three anchor metrics (+ the ab-PSNRs behind the gain) of one photo."""
    rng = hint_rng if hint_rng is not None else np.random.default_rng(seed)
    job = Job(rgb, seed=seed, anchors=anchors)
    _, enc = encode_batch(engine, [job], Timer())
    labels = superpixel_labels(enc.affinity[0])
    auto = run(engine, [job])[0][0]
    psnr_auto = metrics.score(rgb, auto.image)["ab_psnr"]

    # oracle: the true colour of each automatic anchor's superpixel, at the model's resolution
    small = cv2.resize(rgb, labels.shape[::-1], interpolation=cv2.INTER_AREA)
    true_ab = _full_ab(small)
    hints = [
        Hint(token=a.token, ab=tuple(float(v) for v in _region_mean(true_ab, labels, a.token)))
        for a in auto.anchors
    ]
    oracle = run(engine, [Job(rgb, seed=seed, hints=hints)])[0][0]
    psnr_oracle = metrics.score(rgb, oracle.image)["ab_psnr"]

    diverse = run(engine, [Job(rgb, seed=seed, anchors=anchors, count=count)])[0]
    abs_ = [_full_ab(o.image) for o in diverse]
    spread = min(
        float(np.linalg.norm(abs_[i] - abs_[j], axis=0).mean())
        for i, j in combinations(range(len(abs_)), 2)
    )

    q = q_to_ab()
    auto_ab = auto.ab_norm * np.float32(AB_SCALE)
    responses = []
    for _ in range(n_hints):
        token = int(rng.integers(labels.max() + 1))
        before = _region_mean(auto_ab, labels, token)
        far = np.flatnonzero(np.linalg.norm(q - before, axis=1) >= 30.0)
        target = q[int(rng.choice(far))].astype(np.float64)
        hinted = run(engine, [Job(rgb, seed=seed, hints=[Hint(token=token, ab=tuple(target))])])
        after = _region_mean(hinted[0][0].ab_norm * np.float32(AB_SCALE), labels, token)
        d = target - before
        responses.append(float(np.dot(after - before, d) / np.dot(d, d)))
    return {
        "ab_psnr_auto": psnr_auto,
        "ab_psnr_oracle": psnr_oracle,
        "oracle_gain": psnr_oracle - psnr_auto,
        "diverse_spread": spread,
        "hint_responses": responses,
        "hint_response": float(np.median(responses)),
    }


def summarize(rows: list[dict[str, float | list[float]]]) -> dict[str, float]:
    """Means of the gains and spreads, the median of all hint responses."""
    all_resp = [r for row in rows for r in row["hint_responses"]]  # type: ignore[union-attr]
    return {
        "oracle_gain": float(np.mean([r["oracle_gain"] for r in rows])),
        "diverse_spread": float(np.mean([r["diverse_spread"] for r in rows])),
        "hint_response": float(np.median(all_resp)),
        "ab_psnr_auto": float(np.mean([r["ab_psnr_auto"] for r in rows])),
        "ab_psnr_oracle": float(np.mean([r["ab_psnr_oracle"] for r in rows])),
    }

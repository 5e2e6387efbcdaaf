"""Torch-free anchor locator and anchor colour sampling (architecture doc, sec. 6 and 7.3).

Everything is batched and static-shaped so that the torch mirror in ``export/model/anchors.py``
(and an ONNX graph) can follow the same formulas step by step:

* k-means runs a fixed number of iterations with a per-image "done" flag instead of the official
  data-dependent ``while`` loop; labels and centres freeze once the tolerance stop would have fired.
* Documented deviation: an empty cluster keeps its previous centre (the official code re-seeds it
  from a random token with torch's global RNG, which no deterministic service can reproduce).
* The init indices are an input; :func:`init_indices` reproduces the official NumPy draw.
* Rows of a batch may ask for different K: pad ``init_idx`` with -1. A -1 slot is an inactive
  cluster (never assigned, no anchor), so one batched call serves mixed requests.

Layouts: N batch, L tokens (256 = 16x16, token t = row*16 + col), C feature channels, K clusters.
"""

from __future__ import annotations

import numpy as np

from service.gamut import AB_SCALE, NUM_BINS, q_to_ab

MAX_CLUSTERS = 64
"""Upper bound on K accepted by :func:`init_indices` (the official default is 8)."""


def init_indices(seed: int, k: int, n_tokens: int = 256) -> np.ndarray:
    """k distinct token indices (k,) int64 drawn like the official ``np.random.choice``.

    Uses a private ``RandomState`` so the service's draw depends only on ``seed``, not on how many
    images came before (the official script uses the global RNG, sec. 13.1). Seed 130 gives the
    official first-image draw.
    """
    if not 1 <= k <= MAX_CLUSTERS:
        raise ValueError(f"k must be in [1, {MAX_CLUSTERS}], got {k}")
    if k > n_tokens:
        raise ValueError(f"k={k} exceeds the number of tokens {n_tokens}")
    rng = np.random.RandomState(seed)
    return rng.choice(n_tokens, k, replace=False).astype(np.int64)


def kmeans(x: np.ndarray, init_idx: np.ndarray, iters: int = 20, tol: float = 1e-4) -> np.ndarray:
    """Batched k-means labels (N, L) int64 for tokens x (N, L, C) and init rows (N, K).

    Returned labels come from the last assignment step before the stop, i.e. computed with the
    centres from before the final update, as in the official kmeans_pytorch variant.
    """
    x = np.asarray(x, dtype=np.float32)
    init_idx = np.asarray(init_idx, dtype=np.int64)
    if x.ndim != 3:
        raise ValueError(f"kmeans: x must be (N, L, C), got {x.shape}")
    n, l, _ = x.shape
    if init_idx.ndim != 2 or init_idx.shape[0] != n:
        raise ValueError(f"kmeans: init_idx must be (N={n}, K), got {init_idx.shape}")
    if init_idx.size and (init_idx.min() < -1 or init_idx.max() >= l):
        raise ValueError(f"kmeans: init indices must lie in [0, {l}) (or -1 for padding)")
    active = init_idx >= 0  # (N, K); -1 pads rows that asked for fewer clusters
    if not active.any(axis=1).all():
        raise ValueError("kmeans: every row needs at least one init index")
    k = init_idx.shape[1]
    tol32 = np.float32(tol)

    centres = np.take_along_axis(x, np.maximum(init_idx, 0)[:, :, None], axis=1)  # (N, K, C)
    done = np.zeros(n, dtype=bool)
    out = np.zeros((n, l), dtype=np.int64)
    ks = np.arange(k)
    for _ in range(iters):
        d = ((x[:, :, None, :] - centres[:, None, :, :]) ** 2).sum(-1)  # (N, L, K)
        d = np.where(active[:, None, :], d, np.float32(np.inf))
        lab = np.argmin(d, axis=-1)  # first index on ties
        out = np.where(done[:, None], out, lab)
        onehot = (lab[..., None] == ks).astype(np.float32)  # (N, L, K)
        count = onehot.sum(axis=1)  # (N, K)
        sums = np.einsum("nlk,nlc->nkc", onehot, x)  # (N, K, C)
        new = sums / np.maximum(count, np.float32(1))[..., None]
        new = np.where(count[..., None] > 0, new, centres)  # empty cluster keeps its centre
        shift = np.sqrt(((new - centres) ** 2).sum(-1)).sum(-1)  # (N,)
        centres = np.where(done[:, None, None], centres, new)
        done = done | (shift**2 < tol32)
    return out


def pick_anchors(
    labels: np.ndarray, spixel_sizes: np.ndarray, k: int, active: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Anchor per cluster: its member token with the largest superpixel (lowest index on ties).

    labels (N, L) int64, spixel_sizes (N, L) float32 -> hint_mask (N, L) float32, anchor_idx
    (N, K) int64 (-1 for clusters that ``active`` (N, K) bool marks inactive, i.e. padding).
    An empty cluster falls back to the globally largest superpixel, so the mask may
    hold 2 where two clusters pick the same token; kept unclipped, as the official code does.
    """
    labels = np.asarray(labels, dtype=np.int64)
    z = np.asarray(spixel_sizes, dtype=np.float32)
    if labels.ndim != 2 or z.shape != labels.shape:
        raise ValueError(
            f"pick_anchors: labels and spixel_sizes must both be (N, L), got {labels.shape}, "
            f"{z.shape}"
        )
    l = labels.shape[1]
    onehot = (labels[:, None, :] == np.arange(k)[None, :, None]).astype(np.float32)  # (N, K, L)
    score = onehot + np.float32(0.01) * z[:, None, :]
    anchor_idx = np.argmax(score, axis=-1).astype(np.int64)  # (N, K), first max
    if active is not None:
        anchor_idx = np.where(active, anchor_idx, -1)
    hint_mask = (anchor_idx[:, :, None] == np.arange(l)).sum(axis=1).astype(np.float32)
    return hint_mask, anchor_idx


def locate_anchors(
    enc_out: np.ndarray,
    spixel_sizes: np.ndarray,
    init_idx: np.ndarray,
    iters: int = 20,
    tol: float = 1e-4,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-means on encoder tokens + anchor pick; enc_out is the model's (N, C, L) layout.

    spixel_sizes (N, L) (any shape reshaping to it, e.g. (N,1,16,16)), init_idx (N, K) ->
    hint_mask (N, L) float32, anchor_idx (N, K) int64, labels (N, L) int64.
    """
    enc_out = np.asarray(enc_out, dtype=np.float32)
    if enc_out.ndim != 3:
        raise ValueError(f"locate_anchors: enc_out must be (N, C, L), got {enc_out.shape}")
    n, _, l = enc_out.shape
    z = np.asarray(spixel_sizes, dtype=np.float32).reshape(n, l)
    init_idx = np.asarray(init_idx, dtype=np.int64)
    labels = kmeans(enc_out.transpose(0, 2, 1), init_idx, iters=iters, tol=tol)
    hint_mask, anchor_idx = pick_anchors(labels, z, init_idx.shape[1], init_idx >= 0)
    return hint_mask, anchor_idx, labels


def _softmax(logit: np.ndarray, axis: int) -> np.ndarray:
    """Numerically stable float32 softmax."""
    e = np.exp(logit - logit.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def sample_anchor_bins(pal_logit: np.ndarray, t: int, topk: int = 10) -> np.ndarray:
    """Bin index (N, L) int64 of the T-th diverse anchor colour per token, from (N, 313, L) logits.

    Among the top-``topk`` bins (descending probability, lower index first on ties) greedily pick
    the candidate farthest (sum of L2 distances in ab/110) from those already chosen, starting
    from the most probable one. T=0,1,2 is exactly the official rule; larger T extends it.
    """
    if not 0 <= t < topk:
        raise ValueError(f"t must be in [0, {topk}), got {t}")
    logit = np.asarray(pal_logit, dtype=np.float32)
    if logit.ndim != 3 or logit.shape[1] != NUM_BINS:
        raise ValueError(f"pal_logit must be (N, {NUM_BINS}, L), got {logit.shape}")
    if topk > NUM_BINS:
        raise ValueError(f"topk must be <= {NUM_BINS}, got {topk}")
    prob = _softmax(logit, axis=1)
    top = np.argsort(-prob, axis=1, kind="stable")[:, :topk, :].transpose(0, 2, 1)  # (N, L, k)
    if t == 0:
        return np.ascontiguousarray(top[..., 0]).astype(np.int64)
    # Distances in integer Lab units: the bin centres lie on a 10-unit grid, so squared
    # distances are exact and every runtime (numpy, torch, ONNX) breaks ties identically, in
    # probability order; the official /110 scale does not change any argmax but true ties.
    cand = q_to_ab()[top]  # (N, L, k, 2)
    chosen = np.zeros(top.shape[:2], dtype=np.int64)  # (N, L): index into the k candidates
    score = np.zeros(top.shape, dtype=np.float32)
    for _ in range(t):
        last = np.take_along_axis(cand, chosen[:, :, None, None], axis=2)  # (N, L, 1, 2)
        score = score + np.sqrt(((cand - last) ** 2).sum(-1))
        chosen = np.argmax(score, axis=-1)  # first on ties = more probable
    return np.take_along_axis(top, chosen[..., None], axis=-1)[..., 0].astype(np.int64)


def sample_anchor_ab(pal_logit: np.ndarray, t: int) -> np.ndarray:
    """Anchor colours (N, 2, L) float32 in normalised ab (bin centre / 110) for diverse index t."""
    bins = sample_anchor_bins(pal_logit, t)
    return (q_to_ab()[bins] / np.float32(AB_SCALE)).transpose(0, 2, 1)

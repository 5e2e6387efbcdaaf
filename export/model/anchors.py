"""Anchor locator and anchor colour sampling in torch (batched, static shapes, exportable).

Rows may ask for different K: `init_idx` is padded with -1 (inactive clusters, no anchor).
A mirror of the torch-free reference in `service/anchors.py` (same formulas, same float32
arithmetic); tests hold the two equal. The official k-means runs a Python `while` loop per image
with a data-dependent stop; here all images run 20 fixed iterations and a per-image `done` flag
freezes centres and labels once the official stop rule (shift^2 < tol) fires, which yields the
same labels. An empty cluster keeps its centre (the official code re-seeds it from torch's
global RNG, which no service can reproduce; documented deviation).
"""

from __future__ import annotations

import torch


def _sqrt32(x: torch.Tensor) -> torch.Tensor:
    """Correctly rounded float32 sqrt. torch's CPU float32 sqrt is not (it differs from numpy
    and ONNX Runtime in the last bit for ~17 % of inputs), and these square roots feed argmax
    and stop decisions that must agree exactly across runtimes; going through float64 does."""
    return x.double().sqrt().to(x.dtype)


def kmeans(
    x: torch.Tensor, init_idx: torch.Tensor, iters: int = 20, tol: float = 1e-4
) -> torch.Tensor:
    """x (N, L, C) float, init_idx (N, K) int64 -> labels (N, L) int64 of the last live step."""
    n, length, c = x.shape
    k = init_idx.shape[1]
    active = init_idx >= 0  # -1 pads rows that asked for fewer clusters
    centres = torch.gather(x, 1, init_idx.clamp(min=0)[..., None].expand(n, k, c))
    done = torch.zeros(n, dtype=torch.bool, device=x.device)
    labels = torch.zeros(n, length, dtype=torch.int64, device=x.device)
    cluster_ids = torch.arange(k, device=x.device)
    for _ in range(iters):
        dist = ((x[:, :, None, :] - centres[:, None, :, :]) ** 2).sum(-1)  # (N, L, K)
        dist = torch.where(active[:, None, :], dist, torch.full_like(dist, float("inf")))
        step = dist.argmin(-1)
        labels = torch.where(done[:, None], labels, step)
        onehot = (step[..., None] == cluster_ids).to(x.dtype)  # (N, L, K)
        count = onehot.sum(1)  # (N, K)
        means = torch.bmm(onehot.transpose(1, 2), x) / count.clamp(min=1)[..., None]
        new = torch.where(count[..., None] > 0, means, centres)
        shift = _sqrt32(((new - centres) ** 2).sum(-1)).sum(-1)  # (N,)
        centres = torch.where(done[:, None, None], centres, new)
        done = done | (shift**2 < tol)
    return labels


def pick_anchors(
    labels: torch.Tensor, spixel_sizes: torch.Tensor, k: int, active: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per cluster, the member token with the largest superpixel (lowest index on ties).

    labels (N, L), spixel_sizes (N, L) -> hint_mask (N, L) float, anchor_idx (N, K) int64.
    An empty cluster picks the globally largest superpixel; the mask can then hold 2 (official).
    """
    length = labels.shape[1]
    onehot = labels[:, None, :] == torch.arange(k, device=labels.device)[None, :, None]
    score = onehot.to(spixel_sizes.dtype) + 0.01 * spixel_sizes[:, None, :]  # (N, K, L)
    anchor_idx = score.argmax(-1)
    if active is not None:  # padded clusters (init index -1) pick nothing
        anchor_idx = torch.where(active, anchor_idx, torch.full_like(anchor_idx, -1))
    tokens = torch.arange(length, device=labels.device)
    hint_mask = (anchor_idx[..., None] == tokens).to(spixel_sizes.dtype).sum(1)
    return hint_mask, anchor_idx


def locate_anchors(
    enc_out: torch.Tensor, spixel_sizes: torch.Tensor, init_idx: torch.Tensor, iters: int = 20
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """enc_out (N, C, L) -> hint_mask (N, L), anchor_idx (N, K), labels (N, L)."""
    labels = kmeans(enc_out.transpose(1, 2), init_idx, iters)
    hint_mask, anchor_idx = pick_anchors(labels, spixel_sizes, init_idx.shape[1], init_idx >= 0)
    return hint_mask, anchor_idx, labels


def sample_anchor_levels(
    pal_logit: torch.Tensor, q_to_ab: torch.Tensor, levels: int, topk: int = 10
) -> torch.Tensor:
    """Colour bin per token for diversity levels T = 0..levels-1 (official `_sample_anchor_colors`).

    Among the top-10 bins, T=0 takes the most probable; each further level takes the candidate
    with the largest summed distance to the ones already chosen (T=1: farthest from the best,
    T=2: farthest from both), in Lab units (exact on the 10-unit bin grid, so ties break in
    probability order in every runtime). pal_logit (N, 313, L) -> bins (N, levels, L) int64.
    """
    assert 1 <= levels <= topk, f"levels={levels} must be in [1, {topk}]"
    prob = torch.softmax(pal_logit, 1)
    top = prob.topk(topk, dim=1).indices  # (N, topk, L), descending probability
    cand = q_to_ab.to(prob.dtype)[top]  # (N, topk, L, 2)
    chosen = [torch.zeros_like(top[:, 0])]  # index into the candidates, (N, L)
    score = torch.zeros_like(cand[..., 0])
    for _ in range(levels - 1):
        last = torch.gather(cand, 1, chosen[-1][:, None, :, None].expand(-1, 1, -1, 2))
        score = score + _sqrt32(((cand - last) ** 2).sum(-1))
        chosen.append(score.argmax(1))
    return torch.gather(top, 1, torch.stack(chosen, 1))


def sample_anchor_bins(
    pal_logit: torch.Tensor, q_to_ab: torch.Tensor, t: int, topk: int = 10
) -> torch.Tensor:
    """Bins (N, L) of diversity level T = t (see `sample_anchor_levels`)."""
    assert 0 <= t < topk, f"T={t} must be in [0, {topk})"
    return sample_anchor_levels(pal_logit, q_to_ab, t + 1, topk)[:, t]

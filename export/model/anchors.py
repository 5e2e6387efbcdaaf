"""Anchor locator and anchor colour sampling in torch (batched, static shapes, exportable).

A mirror of the torch-free reference in `service/anchors.py` (same formulas, same float32
arithmetic); tests hold the two equal. The official k-means runs a Python `while` loop per image
with a data-dependent stop; here all images run 20 fixed iterations and a per-image `done` flag
freezes centres and labels once the official stop rule (shift^2 < tol) fires, which yields the
same labels. An empty cluster keeps its centre (the official code re-seeds it from torch's
global RNG, which no service can reproduce; documented deviation).
"""

from __future__ import annotations

import torch


def kmeans(
    x: torch.Tensor, init_idx: torch.Tensor, iters: int = 20, tol: float = 1e-4
) -> torch.Tensor:
    """x (N, L, C) float, init_idx (N, K) int64 -> labels (N, L) int64 of the last live step."""
    n, length, c = x.shape
    k = init_idx.shape[1]
    centres = torch.gather(x, 1, init_idx[..., None].expand(n, k, c))
    done = torch.zeros(n, dtype=torch.bool, device=x.device)
    labels = torch.zeros(n, length, dtype=torch.int64, device=x.device)
    cluster_ids = torch.arange(k, device=x.device)
    for _ in range(iters):
        dist = ((x[:, :, None, :] - centres[:, None, :, :]) ** 2).sum(-1)  # (N, L, K)
        step = dist.argmin(-1)
        labels = torch.where(done[:, None], labels, step)
        onehot = (step[..., None] == cluster_ids).to(x.dtype)  # (N, L, K)
        count = onehot.sum(1)  # (N, K)
        means = torch.bmm(onehot.transpose(1, 2), x) / count.clamp(min=1)[..., None]
        new = torch.where(count[..., None] > 0, means, centres)
        shift = ((new - centres) ** 2).sum(-1).sqrt().sum(-1)  # (N,)
        centres = torch.where(done[:, None, None], centres, new)
        done = done | (shift**2 < tol)
    return labels


def pick_anchors(
    labels: torch.Tensor, spixel_sizes: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per cluster, the member token with the largest superpixel (lowest index on ties).

    labels (N, L), spixel_sizes (N, L) -> hint_mask (N, L) float, anchor_idx (N, K) int64.
    An empty cluster picks the globally largest superpixel; the mask can then hold 2 (official).
    """
    length = labels.shape[1]
    onehot = labels[:, None, :] == torch.arange(k, device=labels.device)[None, :, None]
    score = onehot.to(spixel_sizes.dtype) + 0.01 * spixel_sizes[:, None, :]  # (N, K, L)
    anchor_idx = score.argmax(-1)
    tokens = torch.arange(length, device=labels.device)
    hint_mask = (anchor_idx[..., None] == tokens).to(spixel_sizes.dtype).sum(1)
    return hint_mask, anchor_idx


def locate_anchors(
    enc_out: torch.Tensor, spixel_sizes: torch.Tensor, init_idx: torch.Tensor, iters: int = 20
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """enc_out (N, C, L) -> hint_mask (N, L), anchor_idx (N, K), labels (N, L)."""
    labels = kmeans(enc_out.transpose(1, 2), init_idx, iters)
    hint_mask, anchor_idx = pick_anchors(labels, spixel_sizes, init_idx.shape[1])
    return hint_mask, anchor_idx, labels


def sample_anchor_bins(
    pal_logit: torch.Tensor, q_to_ab: torch.Tensor, t: int, topk: int = 10
) -> torch.Tensor:
    """Colour bin per token for diversity level T (official `_sample_anchor_colors`).

    Among the top-10 bins, T=0 takes the most probable; each further level takes the candidate
    with the largest summed distance to the ones already chosen (T=1: farthest from the best,
    T=2: farthest from both), in Lab units (exact on the 10-unit bin grid, so ties break in
    probability order in every runtime). pal_logit (N, 313, L) -> bins (N, L) int64.
    """
    assert 0 <= t < topk, f"T={t} must be in [0, {topk})"
    prob = torch.softmax(pal_logit, 1)
    top = prob.topk(topk, dim=1).indices  # (N, topk, L), descending probability
    cand = q_to_ab.to(prob.dtype)[top]  # (N, topk, L, 2), integer Lab units: exact distances
    chosen = [torch.zeros_like(top[:, 0])]  # index into the candidates, (N, L)
    score = torch.zeros_like(cand[..., 0])
    for _ in range(t):
        last = torch.gather(cand, 1, chosen[-1][:, None, :, None].expand(-1, 1, -1, 2))
        score = score + ((cand - last) ** 2).sum(-1).sqrt()
        chosen.append(score.argmax(1))
    return torch.gather(top, 1, chosen[-1][:, None]).squeeze(1)

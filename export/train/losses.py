"""DISCO training objectives (training reference sec. 2 and 4, with the sec. 7 substitutions).

* `rebalance_weights`: class rebalancing of the 313 colour bins from the ab prior.
* `spixel_loss`: SpixelNet pre-training, L_spix = 10 * feat + 0.003 * pos.
* `weighted_ce`: the rebalanced cross-entropy of L_pal and L_ref (gradient of mean_t w_t CE_t).
* `laplacian_l1`: the official `--in_gradient` term (3x3 Laplacian, no padding, per channel).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from export.model.superpixel import sp_diffuse, sp_pool


def rebalance_weights(prior: np.ndarray, lam: float = 0.5) -> np.ndarray:
    """w = 1 / ((1 - lam) p + lam / Q), normalised so that sum(p * w) = 1 (Q = 313 bins).

    lam = 1 - colorfulness (official default colorfulness 0.5 -> lam 0.5, w in [0.0965, 6.17]).
    """
    p = np.asarray(prior, dtype=np.float64)
    assert p.ndim == 1 and (p >= 0).all(), "prior must be a 1-D probability vector"
    w = 1.0 / ((1.0 - lam) * p + lam / p.size)
    return (w / (p * w).sum()).astype(np.float32)


def nearest_bins(ab_norm_seq: torch.Tensor, bin_ab: torch.Tensor) -> torch.Tensor:
    """(N, L, 2) ab / 110 -> (N, L) index of the nearest bin centre (bin_ab (313, 2), Lab units)."""
    d = ((ab_norm_seq[:, :, None, :] * 110.0 - bin_ab) ** 2).sum(-1)
    return d.argmin(-1)


def weighted_ce(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mean_t(w[y_t] * CE_t); logits (N, L, Q), target (N, L). Same gradient as the official op."""
    ce = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none")
    return (weights[target.flatten()] * ce).mean()


_LAPLACIAN = torch.tensor([[1.0, 1.0, 1.0], [1.0, -8.0, 1.0], [1.0, 1.0, 1.0]])


def laplacian(x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    k = _LAPLACIAN.to(x)[None, None].expand(c, 1, 3, 3)
    return F.conv2d(x, k, groups=c)


def laplacian_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (laplacian(pred) - laplacian(target)).abs().mean()


def coordinate_grid(n: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """(N, 2, H, W) pixel coordinates: channel 0 = x (column), channel 1 = y (row)."""
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32, device=device),
        torch.arange(w, dtype=torch.float32, device=device),
        indexing="ij",
    )
    return torch.stack([xs, ys])[None].expand(n, -1, -1, -1)


def spixel_loss(
    affinity: torch.Tensor, ab_norm: torch.Tensor, s: int = 16
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Official L_spix: reconstruct [ab, x, y] through SP-pool -> SP-diffuse with A.

    Returns (loss, feat_loss, pos_loss); feat = mean ||D_ab||_2, pos = mean ||D_xy||_2 / s.
    """
    n, _, h, w = ab_norm.shape
    target = torch.cat([ab_norm, coordinate_grid(n, h, w, ab_norm.device)], 1)
    pooled, _ = sp_pool(target, affinity, s)
    recon = sp_diffuse(pooled, affinity, s)
    diff = recon - target
    feat = diff[:, :2].norm(dim=1).mean()
    pos = diff[:, 2:].norm(dim=1).mean() / s
    return 10.0 * feat + 0.003 * pos, feat, pos

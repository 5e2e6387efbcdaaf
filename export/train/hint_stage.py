"""Hint-path pre-training: teach the transformer that carries the anchors to propagate them.

Why: trained end to end on a few dozen photos, the hint path learns to predict colour from the
pooled L features and ignores its anchors (changing every anchor colour moved the other tokens'
features by ~1 %). Here only `trg_word_emb`, `hintpath` and `trg_word_prj` train, on cached
tokens (SpixelNet and repnet frozen, so a step is ~50x cheaper than a stage-2 step), with the
ab plane of most images rotated / rescaled at random: the rotated colours cannot be read off L,
so the only way to lower the L_ref cross-entropy is to read the anchors and spread their colour.
Mostly 8x8 token grids (8 anchors of 64 tokens: a strong signal to start from), some 16x16.

Measured by `anchor_use`: mean |expected ab - true ab| (Lab units) of the non-anchor tokens on
validation crops, with the anchors given and with them withheld. A hint path that ignores its
anchors has the same error both ways.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from export.model.anchors import kmeans, pick_anchors
from export.model.disco import Disco
from export.model.superpixel import sine_position_encoding, sp_pool, spixel_sizes

from . import data as tdata
from .losses import nearest_bins, weighted_ce
from .train import chroma_transform

HINT_MODULES = ("trg_word_emb", "hintpath", "trg_word_prj")


@dataclass
class TokenSet:
    """Cached, frozen-encoder tokens of random crops: pooled features, GT chroma, sizes."""

    tokens: torch.Tensor  # (N, d, h, w)
    chroma: torch.Tensor  # (N, L, 2) superpixel-mean ab / 110
    sizes: torch.Tensor  # (N, L)

    def take(self, idx: torch.Tensor) -> TokenSet:
        return TokenSet(self.tokens[idx], self.chroma[idx], self.sizes[idx])

    def __len__(self) -> int:
        return len(self.tokens)


@torch.no_grad()
def cache_tokens(
    model: Disco, photos: list[np.ndarray], crops: int, size: int, rng: np.random.Generator
) -> TokenSet:
    """`crops` random crops of `size` px per photo through SpixelNet + repnet (eval mode)."""
    was = model.training
    model.eval()
    s, d = model.cfg.sp_size, model.cfg.d_model
    parts = []
    for rgb in photos:
        lab = np.stack(
            [
                tdata.rgb_to_lab_norm(tdata.random_crop(rgb, size, rng, (size, size + size // 4)))
                for _ in range(crops)
            ]
        )
        lab_t = torch.from_numpy(lab).to(next(model.parameters()).device)
        affinity = model.segnet(lab_t[:, :1])
        pooled, _ = sp_pool(torch.cat([model.repnet(lab_t[:, :1]), lab_t[:, 1:]], 1), affinity, s)
        chroma = pooled[:, d:].flatten(2).transpose(1, 2)
        parts.append((pooled[:, :d], chroma, spixel_sizes(affinity, s).flatten(1)))
    model.train(was)
    return TokenSet(*(torch.cat([p[i] for p in parts]) for i in range(3)))


def rotate_chroma(chroma: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Per image, with probability p, rotate the ab plane by a random angle and scale it by a
    random saturation in [0.6, 1.6] (stage 2's chroma augmentation); (N, L, 2) ab / 110."""
    rot = chroma_transform(len(chroma), p, (0.6, 1.6), chroma.device, gen).to(chroma)
    return torch.einsum("nij,nlj->nli", rot, chroma).clamp(-1.0, 1.0)


def choose_anchors(
    batch: TokenSet, chroma: torch.Tensor, k: int, random_sites: bool, gen: torch.Generator
) -> torch.Tensor:
    """Training anchors (N, L) mask: k-means on the (rotated) GT chroma + largest superpixel per
    cluster as the official stage 2, or k random sites (DISCO-rand)."""
    n, length = chroma.shape[:2]
    init = torch.stack([torch.randperm(length, generator=gen)[:k] for _ in range(n)])
    init = init.to(chroma.device)
    if random_sites:
        return torch.zeros(n, length, device=chroma.device).scatter_(1, init, 1.0)
    return pick_anchors(kmeans(chroma, init), batch.sizes, k)[0]


def hint_forward(
    model: Disco, batch: TokenSet, labels: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Teacher-forced hint path (anchors `mask` carry their GT `labels`) -> ref_logit (N, L, Q)."""
    n = len(labels)
    h, w = batch.tokens.shape[2:]
    pos = sine_position_encoding(model.cfg.d_model, h, w).to(batch.tokens)
    pos = pos.flatten(2).transpose(1, 2).expand(n, -1, -1)
    return model.trg_word_prj(model.hintpath(model.hint_sequence(batch.tokens, mask, labels), pos))


@torch.no_grad()
def anchor_use(model: Disco, val: TokenSet, bin_ab: torch.Tensor, rotate: float) -> dict:
    """Error (Lab units) of the non-anchor tokens' expected colour, anchors given vs withheld,
    K = 8 k-means anchors; `rotate` = share of rotated images (1: only the anchors know)."""
    was = model.training
    model.eval()
    gen = torch.Generator().manual_seed(7)
    chroma = rotate_chroma(val.chroma, rotate, gen)
    labels = nearest_bins(chroma, bin_ab)
    mask = choose_anchors(val, chroma, 8, False, gen)
    off = (mask == 0).to(chroma.dtype)
    out = {}
    for name, m in (("with_anchors", mask), ("withheld", torch.zeros_like(mask))):
        ab = hint_forward(model, val, labels, m).softmax(-1) @ bin_ab
        out[name] = float(((ab - chroma * 110).norm(dim=-1) * off).sum() / off.sum())
    model.train(was)
    return out


def pretrain_hint_path(
    model: Disco,
    photos: list[np.ndarray],
    val_photos: list[np.ndarray],
    class_weights: torch.Tensor,
    bin_ab: torch.Tensor,
    *,
    steps: int,
    lr: float = 2e-3,
    rotate: float = 0.9,
    random_hint: float = 0.3,
    seed: int = 0,
    log: Callable[[str], None] = print,
    log_every: int = 250,
) -> list[dict]:
    """Train the hint path in place; returns the validation history (anchor_use per log)."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    t0 = time.time()
    small = cache_tokens(model, photos, 16, 128, rng)  # 8x8 tokens
    big = cache_tokens(model, photos, 4, 256, rng)  # 16x16, the serving grid
    val = cache_tokens(model, val_photos, 8, 256, np.random.default_rng(seed + 1))
    log(f"hint stage: cached {len(small)} + {len(big)} crops in {time.time() - t0:.0f} s")
    bin_ab, class_weights = bin_ab.to(device), class_weights.to(device)
    params = [p for name in HINT_MODULES for p in getattr(model, name).parameters()]
    frozen = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 - 0.95 * min(i, steps) / steps)
    history = [{"step": 0, **anchor_use(model, val, bin_ab, 1.0)}]
    log(f"hint stage step 0: {history[-1]}")
    model.train()
    t0 = time.time()
    for step in range(1, steps + 1):
        if torch.rand((), generator=gen) < 0.7:
            pool, n, k_max = small, 32, 12
        else:
            pool, n, k_max = big, 8, 16
        batch = pool.take(torch.randint(0, len(pool), (n,), generator=gen))
        chroma = rotate_chroma(batch.chroma, rotate, gen)
        k = int(torch.randint(4, k_max + 1, (), generator=gen))
        sites = bool(torch.rand((), generator=gen) < random_hint)
        labels = nearest_bins(chroma, bin_ab)
        mask = choose_anchors(batch, chroma, k, sites, gen)
        loss = weighted_ce(hint_forward(model, batch, labels, mask), labels, class_weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps:
            use = anchor_use(model, val, bin_ab, 1.0)
            value = float(loss.detach())
            history.append({"step": step, "loss": value, **use})
            log(
                f"hint stage step {step}/{steps}: loss {value:.3f}, non-anchor error "
                f"{use['with_anchors']:.1f} with anchors vs {use['withheld']:.1f} withheld "
                f"(Lab, rotated val crops) {(time.time() - t0) / step:.2f}s/step"
            )
    for p, flag in frozen.items():
        p.requires_grad_(flag)
    return history

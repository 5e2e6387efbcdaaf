"""Superpixel operations of DISCO: SP-pooling, SP-diffusion, spixel sizes, sine positions.

The affinity map A (N, 9, H, W) ties every pixel to the 9 grid cells around its own cell
(slot k = 3 * (dy + 1) + (dx + 1), row-major over the offsets). All three operations are written
as per-cell matrix products over (cell, pixel-in-cell, slot), so they run without Python loops
over pixels or batch and trace to a handful of static-shape ONNX ops.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# (dy, dx) offset of each of the 9 affinity slots; row-major from top-left.
SLOT_OFFSETS: tuple[tuple[int, int], ...] = tuple(
    (dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
)


def _cells(x: torch.Tensor, s: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, h, w, C, s*s): the pixels of each s x s cell, grouped per cell."""
    n, c, hh, ww = x.shape
    h, w = hh // s, ww // s
    return x.reshape(n, c, h, s, w, s).permute(0, 2, 4, 1, 3, 5).reshape(n, h, w, c, s * s)


def _uncells(x: torch.Tensor, s: int) -> torch.Tensor:
    """Inverse of `_cells`: (N, h, w, C, s*s) -> (N, C, h*s, w*s)."""
    n, h, w, c, _ = x.shape
    return x.reshape(n, h, w, c, s, s).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h * s, w * s)


def _gather_from_neighbours(per_slot: torch.Tensor) -> torch.Tensor:
    """Push slot k's value of cell c into cell c + offset_k and sum over slots.

    per_slot (N, C, 9, h, w) -> (N, C, h, w); contributions leaving the grid are dropped.
    """
    h, w = per_slot.shape[-2:]
    padded = F.pad(per_slot, (1, 1, 1, 1))
    acc = None
    for k, (dy, dx) in enumerate(SLOT_OFFSETS):
        # cell j receives P_k[j - offset_k], i.e. padded[j + 1 - offset_k]
        part = padded[:, :, k, 1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]
        acc = part if acc is None else acc + part
    assert acc is not None
    return acc


def _cell_slot_means(x: torch.Tensor, affinity: torch.Tensor, s: int) -> torch.Tensor:
    """Per cell and slot, mean over the cell's pixels of x * A_k: (N, C, 9, h, w)."""
    xc = _cells(x, s)  # (N, h, w, C, s*s)
    ac = _cells(affinity, s).transpose(-1, -2)  # (N, h, w, s*s, 9)
    means = torch.matmul(xc, ac) / float(s * s)  # (N, h, w, C, 9)
    return means.permute(0, 3, 4, 1, 2)


def sp_pool(
    x: torch.Tensor, affinity: torch.Tensor, s: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft superpixel pooling: affinity-weighted mean of x per grid cell.

    Returns (pooled (N, C, h, w), conf_sum (N, 1, h, w)); conf_sum is the total weight a cell
    received, in units of s*s pixels, as the official `poolfeat` reports it.
    """
    n, c, hh, ww = x.shape
    assert affinity.shape == (n, 9, hh, ww), (
        f"affinity {tuple(affinity.shape)} vs x {tuple(x.shape)}"
    )
    assert hh % s == 0 and ww % s == 0, f"input {hh}x{ww} is not a multiple of the cell size {s}"
    ones = torch.ones_like(x[:, :1])
    acc = _gather_from_neighbours(_cell_slot_means(torch.cat([x, ones], 1), affinity, s))
    conf = acc[:, c:]
    return acc[:, :c] / (conf + 1e-8), conf


def sp_diffuse(tokens: torch.Tensor, affinity: torch.Tensor, s: int = 16) -> torch.Tensor:
    """Soft superpixel upsampling: pixel p in cell c gets sum_k A_k(p) * T[c + offset_k]."""
    n, _, h, w = tokens.shape
    assert affinity.shape == (n, 9, h * s, w * s), (
        f"affinity {tuple(affinity.shape)} does not match a {h}x{w} token grid at cell {s}"
    )
    padded = F.pad(tokens, (1, 1, 1, 1))
    shifted = torch.stack(
        [padded[:, :, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in SLOT_OFFSETS], -1
    )  # (N, C, h, w, 9)
    ac = _cells(affinity, s)  # (N, h, w, 9, s*s)
    out = torch.matmul(shifted.permute(0, 2, 3, 1, 4), ac)  # (N, h, w, C, s*s)
    return _uncells(out, s)


def spixel_sizes(affinity: torch.Tensor, s: int = 16) -> torch.Tensor:
    """Pixels hard-assigned to each cell / s^2 (N, 1, h, w); ties count for every tied slot."""
    hard = (affinity == affinity.amax(1, keepdim=True)).to(affinity.dtype)
    n, _, hh, ww = hard.shape
    h, w = hh // s, ww // s
    per_slot = F.avg_pool2d(hard, s, s).reshape(n, 1, 9, h, w)
    return _gather_from_neighbours(per_slot)


def sine_position_encoding(d_model: int, h: int, w: int) -> torch.Tensor:
    """DETR-style normalised sine encoding of an h x w grid: (1, d_model, h, w) constant.

    Channels 0..d/2-1 encode the row, d/2..d-1 the column; even channels sin, odd cos.
    """
    npf = d_model // 2
    scale = 2 * math.pi
    y = torch.arange(1, h + 1, dtype=torch.float32)[:, None].expand(h, w)
    x = torch.arange(1, w + 1, dtype=torch.float32)[None, :].expand(h, w)
    y = y / (h + 1e-6) * scale
    x = x / (w + 1e-6) * scale
    dim_t = torch.arange(npf, dtype=torch.float32)
    dim_t = 10000 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / npf)
    pe_x = x[..., None] / dim_t
    pe_y = y[..., None] / dim_t
    pe_x = torch.stack((pe_x[..., 0::2].sin(), pe_x[..., 1::2].cos()), dim=3).flatten(2)
    pe_y = torch.stack((pe_y[..., 0::2].sin(), pe_y[..., 1::2].cos()), dim=3).flatten(2)
    return torch.cat((pe_y, pe_x), dim=2).permute(2, 0, 1)[None].contiguous()

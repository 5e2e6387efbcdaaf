"""The exportable graphs: the network split at the anchors, plus the anchor locator.

* `EncoderGraph`: l_norm -> affinity, tokens, enc_out, pal_logit, spixel sizes and the anchor
  colour bins of every diversity level (T = 0..9). Runs once per image.
* `KMeansGraph`: the anchor locator (k-means on enc_out + superpixel tie-break), inline form.
  By default the exporter replaces it by ONE custom-domain node (the plugin, see `plugin.py`).
* `GeneratorGraph`: l_norm, affinity, tokens, hint mask and bins -> ab. Runs once per anchor set.

Why this split: a diverse request needs one encoder row and K generator rows, and a request with
user anchors needs no k-means; neither re-runs segnet/repnet/wildpath. Measured (ONNX Runtime
fp32, 2 cores, 256 px, ORT profiler): encoder 336 ms, generator 288 ms per row, 95 % of it the
full-resolution enhanceNet hourglass, so K diverse results cost ~(0.54 + 0.46 K) x one result.
The sampled bins of all levels cost microseconds, so the encoder always emits them.
"""

from __future__ import annotations

import torch
from torch import nn

from service.gamut import q_to_ab

from .model.anchors import locate_anchors, sample_anchor_levels
from .model.disco import Disco

DIVERSE_LEVELS = 10  # top-10 candidate bins per token -> at most 10 distinct levels
KMEANS_ITERS = 20
KMEANS_TOL = 1e-4


class EncoderGraph(nn.Module):
    def __init__(self, model: Disco, levels: int = DIVERSE_LEVELS):
        super().__init__()
        self.model = model
        self.levels = levels
        self.register_buffer("q_to_ab", torch.tensor(q_to_ab()), persistent=False)

    def forward(self, l_norm: torch.Tensor) -> tuple[torch.Tensor, ...]:
        enc = self.model.encode(l_norm)
        bins = sample_anchor_levels(enc.pal_logit, self.q_to_ab, self.levels)
        return enc.affinity, enc.tokens, enc.enc_out, enc.pal_logit, enc.spixel_sizes, bins


class KMeansGraph(nn.Module):
    """enc_out (N, C, L), spixel_sizes (N, L), init_idx (N, K; -1 pads) -> hint_mask, anchor_idx."""

    def __init__(self, iters: int = KMEANS_ITERS):
        super().__init__()
        self.iters = iters

    def forward(
        self, enc_out: torch.Tensor, spixel_sizes: torch.Tensor, init_idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hint_mask, anchor_idx, _ = locate_anchors(enc_out, spixel_sizes, init_idx, self.iters)
        return hint_mask, anchor_idx


class GeneratorGraph(nn.Module):
    def __init__(self, model: Disco):
        super().__init__()
        self.model = model

    def forward(
        self,
        l_norm: torch.Tensor,
        affinity: torch.Tensor,
        tokens: torch.Tensor,
        hint_mask: torch.Tensor,
        hint_bins: torch.Tensor,
    ) -> torch.Tensor:
        return self.model.generate(l_norm, affinity, tokens, hint_mask, hint_bins)


ENCODER_INPUTS = ["l_norm"]
ENCODER_OUTPUTS = ["affinity", "tokens", "enc_out", "pal_logit", "spixel_sizes", "sampled_bins"]
KMEANS_INPUTS = ["enc_out", "spixel_sizes", "init_idx"]
KMEANS_OUTPUTS = ["hint_mask", "anchor_idx"]
GENERATOR_INPUTS = ["l_norm", "affinity", "tokens", "hint_mask", "hint_bins"]
GENERATOR_OUTPUTS = ["ab"]

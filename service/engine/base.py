"""The engine protocol: the network split at the anchors, as numpy in and numpy out.

`encode` runs once per image (the expensive trunks and the colour modeler); `generate` runs once
per anchor set, so a diverse request costs one encoder row plus K generator rows, and a request
with user anchors never needs k-means. Engines never see HTTP, queues or image files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Encoded:
    """One encoder pass over N images (float32 arrays, batch first).

    GPU engines may leave the large fields (affinity, tokens, enc_out, pal_logit, spixel_sizes)
    on the device (`ort_binding.DeviceTensor`, `tensorrt_buffers.DeviceRows`): those have
    `.shape`, answer an integer row index (`enc.affinity[take]`) without leaving the device,
    and become numpy through `np.asarray` or any other indexing. hint_mask and sampled_bins are
    always numpy. Hand them back to the same engine's `generate`.
    """

    affinity: np.ndarray  # (N, 9, H, W) soft superpixel association
    tokens: np.ndarray  # (N, C, h, w) pooled feature tokens
    enc_out: np.ndarray  # (N, C, L) colour-modeler features (k-means input)
    pal_logit: np.ndarray  # (N, 313, L) colour-bin logits per token
    spixel_sizes: np.ndarray  # (N, L) hard superpixel sizes / s^2
    hint_mask: np.ndarray  # (N, L) k-means anchors for the given init indices (0/1, rarely 2)
    sampled_bins: np.ndarray  # (N, levels, L) anchor colour bin per token, diversity T = 0..9

    def __post_init__(self) -> None:
        n = self.affinity.shape[0]
        for name in ("tokens", "enc_out", "pal_logit", "spixel_sizes", "hint_mask", "sampled_bins"):
            got = getattr(self, name).shape[0]
            if got != n:
                raise ValueError(f"encoder output {name} has batch {got}, affinity has {n}")

    def __len__(self) -> int:
        return int(self.affinity.shape[0])

    def take(self, rows: np.ndarray | list[int]) -> Encoded:
        """Rows of the batch, e.g. one image repeated K times for K diverse results."""
        idx = np.asarray(rows, dtype=np.int64)
        return Encoded(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))


class Engine(Protocol):
    """What the pipeline needs from a runtime. One output row per input row."""

    name: str  # "torch", "onnx", "tensorrt"
    input_size: int  # square model input, pixels (256)

    def encode(self, l_norm: np.ndarray, init_idx: np.ndarray) -> Encoded:
        """l_norm (N, 1, S, S) float32, k-means init token indices (N, K) int64 (-1 pads rows
        that want fewer anchors) -> encoder outputs and anchors for the N images."""
        ...

    def generate(
        self,
        l_norm: np.ndarray,
        affinity: np.ndarray,
        tokens: np.ndarray,
        hint_mask: np.ndarray,
        hint_bins: np.ndarray,
    ) -> np.ndarray:
        """Anchors (hint_mask (N, L) float32, hint_bins (N, L) int64) -> ab / 110 (N, 2, S, S)."""
        ...


def generator_feeds(
    l_norm: np.ndarray,
    affinity: np.ndarray,
    tokens: np.ndarray,
    hint_mask: np.ndarray,
    hint_bins: np.ndarray,
) -> dict[str, np.ndarray]:
    """The generator graph's inputs, contiguous and in the dtypes the exported graph declares:
    one definition for every engine that feeds `generator.onnx`."""
    return {
        "l_norm": np.ascontiguousarray(l_norm, np.float32),
        "affinity": np.ascontiguousarray(affinity, np.float32),
        "tokens": np.ascontiguousarray(tokens, np.float32),
        "hint_mask": np.ascontiguousarray(hint_mask, np.float32),
        "hint_bins": np.ascontiguousarray(hint_bins, np.int64),
    }

"""The in-repo reference engine: the PyTorch model behind the torch-free `Engine` protocol.

Used by `disco colorize --engine torch`, by the exporter's parity checks and as the baseline in
benchmarks. Serving never imports it (workers run ONNX Runtime / TensorRT).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from service.engine.base import Encoded
from service.gamut import q_to_ab

from .graphs import DIVERSE_LEVELS
from .model.anchors import locate_anchors, sample_anchor_levels
from .model.checkpoint import load_checkpoint, test_weights_model
from .model.disco import Disco


class TorchEngine:
    name = "torch"

    def __init__(
        self,
        model: Disco,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        autocast: torch.dtype | None = None,
    ):
        self.device = torch.device(device)
        self.dtype = dtype
        self.autocast = autocast  # e.g. torch.bfloat16: mixed precision on AVX512-BF16 / AMX
        self.model = model.to(self.device, dtype).eval()
        self.input_size = model.cfg.img_size
        if autocast is not None:
            self.name = f"torch-{str(autocast).removeprefix('torch.')}"

    def _amp(self) -> torch.autocast:
        return torch.autocast(
            self.device.type, dtype=self.autocast, enabled=self.autocast is not None
        )

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> TorchEngine:
        return cls(load_checkpoint(path), device)

    @classmethod
    def test_weights(cls, seed: int = 0, device: str = "cpu") -> TorchEngine:
        """Deterministic random weights: they exercise the code, they do not colorize."""
        return cls(test_weights_model(seed), device)

    def _t(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        return t.to(self.dtype) if t.is_floating_point() else t

    @staticmethod
    def _np(t: torch.Tensor) -> np.ndarray:
        return t.detach().float().cpu().numpy()

    @torch.inference_mode()
    def encode(self, l_norm: np.ndarray, init_idx: np.ndarray) -> Encoded:
        with self._amp():
            enc = self.model.encode(self._t(l_norm))
        enc = type(enc)(*(t.float() for t in enc))
        hint_mask, _, _ = locate_anchors(enc.enc_out, enc.spixel_sizes, self._t(init_idx))
        q = torch.tensor(q_to_ab(), device=self.device, dtype=self.dtype)
        bins = sample_anchor_levels(enc.pal_logit, q, DIVERSE_LEVELS)
        return Encoded(*(self._np(t) for t in enc), self._np(hint_mask), bins.cpu().numpy())

    @torch.inference_mode()
    def generate(
        self,
        l_norm: np.ndarray,
        affinity: np.ndarray,
        tokens: np.ndarray,
        hint_mask: np.ndarray,
        hint_bins: np.ndarray,
    ) -> np.ndarray:
        with self._amp():
            ab = self.model.generate(
                self._t(l_norm),
                self._t(affinity),
                self._t(tokens),
                self._t(hint_mask),
                self._t(hint_bins),
            )
        return self._np(ab)


def open_torch_engine(checkpoint: str | Path | None, device: str = "cpu") -> TorchEngine:
    """The `disco.engines` entry point `torch`: a checkpoint, or the seed-0 test weights."""
    if checkpoint is None:
        return TorchEngine.test_weights(0, device)
    return TorchEngine.from_checkpoint(checkpoint, device)

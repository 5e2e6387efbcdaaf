"""The in-repo reference engine: the PyTorch model behind the torch-free `Engine` protocol.

Used by `disco colorize --engine torch`, by the exporter's parity checks and as the baseline in
benchmarks. Serving never imports it (workers run ONNX Runtime / TensorRT); on a lent GPU image
(PyTorch with CUDA, CuPy, a CPU-only ONNX Runtime, no TensorRT) it is the one backend that runs,
so it has opt-in speed options, `TorchOptions` (all off by default: the default engine is the
fp32 eager reference the parity checks compare against):

* ``autocast`` ``"bf16"`` (CPU with AVX512-BF16/AMX, or CUDA) / ``"fp16"`` (CUDA only): mixed
  precision for the encoder trunks and the generator; k-means and colour sampling stay fp32.
* ``cuda_graphs`` (CUDA only): one ``torch.cuda.CUDAGraph`` per batch shape for the encoder and
  for the generator, captured on first use with static input buffers (inputs are copied in,
  outputs copied out, one graph memory pool); autocast runs with its weight cache off, as
  capture requires.
* ``compile``: ``torch.compile`` of the two forwards (mode ``compile_mode``, default
  ``"default"``); the first call per shape compiles (tens of seconds).
* ``kmeans``: ``"auto"`` (default) runs `service.anchors_xp` on the device through DLPack ->
  CuPy when the engine is on CUDA and CuPy is importable, else the torch `locate_anchors`;
  ``"torch"`` / ``"cupy"`` force one (``"cupy"`` without CuPy or CUDA raises), ``"numpy"`` runs
  the xp code on the host through the same DLPack bridge (CPU tests).

Options parse from a comma list, e.g. ``DISCO_TORCH_OPTIONS="bf16,cuda-graphs,kmeans=cupy"``
(`TorchOptions.parse`); asking for a CUDA-only option on a CPU engine raises `OptionUnavailable`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.anchors_xp import locate_anchors_xp
from service.engine.base import Encoded
from service.gamut import q_to_ab

from .graphs import DIVERSE_LEVELS
from .model.anchors import locate_anchors, sample_anchor_levels
from .model.checkpoint import load_checkpoint, test_weights_model
from .model.disco import Disco

AUTOCAST = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
KMEANS = ("auto", "torch", "cupy", "numpy")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class OptionUnavailable(ValueError):
    """A torch engine option this device or install cannot run (e.g. CUDA graphs on CPU)."""


@dataclass(frozen=True)
class TorchOptions:
    """Speed options of `TorchEngine`; the defaults are the fp32 eager reference."""

    autocast: str = "none"  # none | bf16 | fp16 (fp16: CUDA only)
    cuda_graphs: bool = False  # CUDA only: a CUDAGraph per batch shape, static input buffers
    compile: bool = False  # torch.compile the encoder / generator forwards
    compile_mode: str = "default"  # torch.compile mode (COMPILE_MODES)
    kmeans: str = "auto"  # auto | torch | cupy | numpy (see the module docstring)

    def __post_init__(self) -> None:
        if self.autocast not in AUTOCAST:
            raise ValueError(f"autocast must be one of {sorted(AUTOCAST)}, got {self.autocast!r}")
        if self.kmeans not in KMEANS:
            raise ValueError(f"kmeans must be one of {KMEANS}, got {self.kmeans!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(
                f"compile_mode must be one of {COMPILE_MODES}, got {self.compile_mode!r}"
            )

    @classmethod
    def parse(cls, spec: str | None) -> TorchOptions:
        """ "bf16,cuda-graphs,compile=max-autotune,kmeans=cupy" -> options ("" -> defaults)."""
        opts = cls()
        for raw in (spec or "").split(","):
            item = raw.strip().lower().replace("_", "-")
            if not item:
                continue
            key, _, value = item.partition("=")
            if key in ("bf16", "fp16", "fp32", "none") and not value:
                opts = replace(opts, autocast="none" if key == "fp32" else key)
            elif key == "autocast":
                opts = replace(opts, autocast="none" if value == "fp32" else value)
            elif key in ("cuda-graphs", "graphs"):
                opts = replace(opts, cuda_graphs=_flag(key, value))
            elif key == "compile":
                if value in ("", "1", "true", "on"):
                    opts = replace(opts, compile=True)
                elif value in ("0", "false", "off"):
                    opts = replace(opts, compile=False)
                else:
                    opts = replace(opts, compile=True, compile_mode=value)
            elif key == "kmeans":
                opts = replace(opts, kmeans=value)
            else:
                raise ValueError(
                    f"unknown torch engine option {raw.strip()!r}: use bf16, fp16, cuda-graphs, "
                    "compile[=MODE], kmeans=auto|torch|cupy|numpy"
                )
        return opts

    def unavailable(self, device: torch.device) -> list[str]:
        """Why these options cannot run on `device` (empty when they can)."""
        problems = []
        cuda = device.type == "cuda"
        if self.autocast == "fp16" and not cuda:
            problems.append("fp16 autocast needs CUDA (on CPU use bf16)")
        if self.cuda_graphs and not cuda:
            problems.append("CUDA graphs need a CUDA device")
        if self.kmeans == "cupy" and not cuda:
            problems.append("kmeans=cupy needs a CUDA device")
        if self.kmeans == "cupy" and importlib.util.find_spec("cupy") is None:
            problems.append("kmeans=cupy needs CuPy (pip install cupy-cuda12x)")
        return problems

    @property
    def suffix(self) -> str:
        """The engine name's suffix: "" for the defaults, e.g. "-bf16-graphs"."""
        parts = [self.autocast] if self.autocast != "none" else []
        parts += ["graphs"] if self.cuda_graphs else []
        parts += ["compile"] if self.compile else []
        return "".join(f"-{p}" for p in parts)


def _flag(key: str, value: str) -> bool:
    if value in ("", "1", "true", "on"):
        return True
    if value in ("0", "false", "off"):
        return False
    raise ValueError(f"option {key}: expected on/off, got {value!r}")


class _CudaGraphs:
    """`fn(*tensors) -> tuple of tensors` replayed from one CUDAGraph per input signature.

    The first call with a new signature warms `fn` up on a side stream and captures it with
    static input tensors; later calls copy their inputs into those and replay. The outputs are
    the graph's static tensors: the caller reads (copies) them before the next call.
    """

    def __init__(self, fn: Callable[..., tuple[torch.Tensor, ...]], warmup: int = 2):
        self.fn = fn
        self.warmup = warmup
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[tuple[Any, ...], tuple[Any, list[torch.Tensor], Any]] = {}

    def __call__(self, *inputs: torch.Tensor) -> Any:
        key = tuple((tuple(t.shape), t.dtype) for t in inputs)
        if key not in self.graphs:
            static = [t.clone() for t in inputs]
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(self.warmup):
                    self.fn(*static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                out = self.fn(*static)
            self.graphs[key] = (graph, static, out)
        graph, static, out = self.graphs[key]
        for dst, src in zip(static, inputs, strict=True):
            dst.copy_(src)
        graph.replay()
        return out


class TorchEngine:
    name = "torch"

    def __init__(
        self,
        model: Disco,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        autocast: torch.dtype | None = None,
        options: TorchOptions | str | None = None,
    ):
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        opts = TorchOptions.parse(options) if isinstance(options, str | None) else options
        if autocast is not None:  # the older keyword: a dtype
            names = {v: k for k, v in AUTOCAST.items()}
            opts = replace(opts, autocast=names[autocast])
        problems = opts.unavailable(self.device)
        if problems:
            raise OptionUnavailable(f"torch engine on {self.device}: " + "; ".join(problems))
        self.options = opts
        self.dtype = dtype
        self.autocast = AUTOCAST[opts.autocast]  # e.g. bf16: AVX512-BF16 / AMX, or CUDA
        self.model = model.to(self.device, dtype).eval()
        self.input_size = model.cfg.img_size
        self.name = f"torch{opts.suffix}"
        self.kmeans = self._kmeans_backend()
        self._encode_fn: Callable[..., Any] = self._encode_forward
        self._generate_fn: Callable[..., Any] = self._generate_forward
        if opts.compile:
            self._encode_fn = torch.compile(self._encode_fn, mode=opts.compile_mode)
            self._generate_fn = torch.compile(self._generate_fn, mode=opts.compile_mode)
        if opts.cuda_graphs:
            self._encode_fn = _CudaGraphs(self._encode_fn)
            self._generate_fn = _CudaGraphs(self._generate_fn)
        self._q = torch.tensor(q_to_ab(), device=self.device, dtype=self.dtype)

    def _kmeans_backend(self) -> str:
        k = self.options.kmeans
        if k == "auto":
            cupy = importlib.util.find_spec("cupy") is not None
            return "cupy" if self.device.type == "cuda" and cupy else "torch"
        return k

    def _amp(self) -> Any:
        if self.autocast is None:
            return contextlib.nullcontext()
        # CUDA graph capture needs the autocast weight cache off (casts must be in the graph)
        return torch.autocast(
            self.device.type, dtype=self.autocast, cache_enabled=not self.options.cuda_graphs
        )

    def _encode_forward(self, l_norm: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with self._amp():
            enc = self.model.encode(l_norm)
        return tuple(t.float() for t in enc)

    def _generate_forward(self, *feeds: torch.Tensor) -> torch.Tensor:
        with self._amp():
            return self.model.generate(*feeds).float()

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str = "cpu", options: TorchOptions | str | None = None
    ) -> TorchEngine:
        return cls(load_checkpoint(path), device, options=options)

    @classmethod
    def test_weights(
        cls, seed: int = 0, device: str = "cpu", options: TorchOptions | str | None = None
    ) -> TorchEngine:
        """Deterministic random weights: they exercise the code, they do not colorize."""
        return cls(test_weights_model(seed), device, options=options)

    def _t(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        return t.to(self.dtype) if t.is_floating_point() else t

    @staticmethod
    def _np(t: torch.Tensor) -> np.ndarray:
        return t.detach().float().cpu().numpy()

    def locate_anchors(
        self, enc_out: torch.Tensor, spixel_sizes: torch.Tensor, init_idx: torch.Tensor
    ) -> torch.Tensor:
        """hint_mask (N, L) float32 by the configured k-means (see the module docstring)."""
        if self.kmeans == "torch":
            hint_mask, _, _ = locate_anchors(enc_out, spixel_sizes, init_idx)
            return hint_mask
        return kmeans_via_dlpack(self.kmeans, enc_out, spixel_sizes, init_idx)

    @torch.inference_mode()
    def encode(self, l_norm: np.ndarray, init_idx: np.ndarray) -> Encoded:
        enc = self._encode_fn(self._t(l_norm))  # static graph outputs with cuda_graphs: read now
        _, _, enc_out, pal_logit, sizes = enc
        hint_mask = self.locate_anchors(enc_out, sizes, self._t(init_idx))
        bins = sample_anchor_levels(pal_logit, self._q, DIVERSE_LEVELS)
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
        feeds = (l_norm, affinity, tokens, hint_mask, hint_bins)
        return self._np(self._generate_fn(*(self._t(x) for x in feeds)))


def kmeans_via_dlpack(
    backend: str, enc_out: torch.Tensor, spixel_sizes: torch.Tensor, init_idx: torch.Tensor
) -> torch.Tensor:
    """`service.anchors_xp.locate_anchors_xp` on torch tensors without a copy: DLPack to CuPy
    (on torch's current CUDA stream) or numpy (CPU tensors), hint_mask back as a torch tensor."""
    if backend == "cupy":
        import cupy as cp

        stream = cp.cuda.ExternalStream(torch.cuda.current_stream(enc_out.device).cuda_stream)
        with cp.cuda.Device(enc_out.device.index), stream:
            arrays = [cp.from_dlpack(t.contiguous()) for t in (enc_out, spixel_sizes, init_idx)]
            hint_mask, _, _ = locate_anchors_xp(*arrays, xp=cp)
            return torch.from_dlpack(hint_mask)
    if backend == "numpy":
        arrays = [
            np.from_dlpack(t.detach().cpu().contiguous()) for t in (enc_out, spixel_sizes, init_idx)
        ]
        hint_mask, _, _ = locate_anchors_xp(*arrays, xp=np)
        return torch.from_dlpack(np.ascontiguousarray(hint_mask)).to(enc_out.device)
    raise ValueError(f"unknown k-means backend {backend!r}")


def open_torch_engine(
    checkpoint: str | Path | None, device: str = "cpu", options: TorchOptions | str | None = None
) -> TorchEngine:
    """The `disco.engines` entry point `torch`: a checkpoint, or the seed-0 test weights.
    Options default to ``DISCO_TORCH_OPTIONS`` (empty: the fp32 eager reference)."""
    if options is None:
        options = os.environ.get("DISCO_TORCH_OPTIONS", "")
    if checkpoint is None:
        return TorchEngine.test_weights(0, device, options)
    return TorchEngine.from_checkpoint(checkpoint, device, options)


__all__ = [
    "OptionUnavailable",
    "TorchEngine",
    "TorchOptions",
    "kmeans_via_dlpack",
    "open_torch_engine",
]

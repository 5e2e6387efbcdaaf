"""Pick and build the engine the settings ask for (once, in a lifespan)."""

from __future__ import annotations

from pathlib import Path

from .base import Engine


def open_engine(kind: str, model_dir: Path, threads: int = 0, variant: str | None = None) -> Engine:
    """`onnx` (CPU or CUDA EP), `tensorrt` (GPU), or `torch` (the dev-only reference)."""
    if kind == "onnx":
        from .onnx import OnnxEngine

        return OnnxEngine(
            model_dir, providers=None, intra_op_threads=threads or None, variant=variant
        )
    if kind == "tensorrt":
        from .tensorrt import TensorRTEngine

        return TensorRTEngine(model_dir)
    if kind == "torch":  # dev only: needs the export extra; model_dir is a checkpoint file here
        from export.torch_engine import TorchEngine

        return TorchEngine.from_checkpoint(model_dir)
    raise ValueError(f"unknown engine {kind!r} (onnx, tensorrt or torch)")

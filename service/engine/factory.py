"""Pick and build the engine the settings ask for (once, in a lifespan)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .base import Engine


def engine_plugin(kind: str) -> Callable[..., Engine] | None:
    """An engine that another installed part provides through the `disco.engines` entry points
    (the torch reference engine lives in `export`, which the service never imports); None when
    no installed part provides `kind`."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="disco.engines", name=kind):
        try:
            return ep.load()
        except ImportError:
            return None
    return None


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
        open_torch = engine_plugin("torch")
        if open_torch is None:
            raise ValueError("engine 'torch' needs the export extra (torch), not installed here")
        return open_torch(model_dir)
    raise ValueError(f"unknown engine {kind!r} (onnx, tensorrt or torch)")

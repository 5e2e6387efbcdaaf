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


AUTO_MIN_BF16_DB = 45.0  # `auto` serves bf16 OpenVINO only when the export measured this much


def choose_engine(
    model_dir: Path, variant: str | None = None, has_bf16: Callable[[], bool] | None = None
) -> tuple[str, str | None, str]:
    """`auto`: (engine, precision, why). OpenVINO bf16 when OpenVINO is importable, the CPU has
    bf16 and the manifest records >= 45 dB ab-PSNR for OpenVINO bf16 vs fp32; else ONNX Runtime.
    `has_bf16` is injectable so the fallback can be tested on any CPU."""
    from .onnx import load_manifest

    if variant not in (None, "bf16"):
        return "onnx", variant, f"precision {variant!r} asked for: ONNX Runtime"
    try:
        from .openvino import cpu_has_bf16
    except ImportError:
        return "onnx", variant, "openvino is not installed: ONNX Runtime fp32"
    try:
        bf16 = (has_bf16 or cpu_has_bf16)()
    except Exception as e:  # a broken OpenVINO install must not stop the service
        return "onnx", variant, f"openvino unusable ({type(e).__name__}): ONNX Runtime fp32"
    if not bf16:
        return "onnx", variant, "CPU has no bf16 (AMX / AVX512_BF16): ONNX Runtime fp32"
    acc = load_manifest(model_dir).get("openvino", {}).get("bf16", {}).get("ab_psnr_db")
    if acc is None:
        return "onnx", variant, "manifest records no OpenVINO bf16 accuracy: ONNX Runtime fp32"
    if acc < AUTO_MIN_BF16_DB:
        why = f"OpenVINO bf16 is {acc:.1f} dB < {AUTO_MIN_BF16_DB:g} dB vs fp32: ONNX Runtime fp32"
        return "onnx", variant, why
    return "openvino", "bf16", f"CPU has bf16, OpenVINO bf16 {acc:.1f} dB vs fp32: OpenVINO bf16"


def open_engine(kind: str, model_dir: Path, threads: int = 0, variant: str | None = None) -> Engine:
    """`auto` (see `choose_engine`), `onnx` (CPU or CUDA EP), `openvino` (CPU, bf16 or f32),
    `tensorrt` (GPU), or `torch` (the dev-only reference)."""
    if kind == "auto":
        kind, variant, why = choose_engine(model_dir, variant)
        engine = open_engine(kind, model_dir, threads, variant)
        engine.selection = f"auto: {why}"  # type: ignore[attr-defined]
        return engine
    if kind == "openvino":
        from .openvino import OpenVinoEngine

        return OpenVinoEngine(model_dir, precision=variant, threads=threads or None)
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
    raise ValueError(f"unknown engine {kind!r} (auto, onnx, openvino, tensorrt or torch)")

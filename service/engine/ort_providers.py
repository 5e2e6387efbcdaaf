"""ONNX Runtime execution-provider selection and options, as a pure function (tested on CPU).

Defaults, and why:
* ``None`` (best available) means the CUDA EP, never TensorRT: a TensorRT EP without caches
  builds engines for minutes at start-up and again for every new batch shape. TensorRT is used
  only when asked for (``"tensorrt"``), and then with fp16, engine and timing caches kept in
  ``cache_dir``, and one shape profile per graph that covers batch 1..``max_batch``
  (``DISCO_MAX_BATCH``; opt = max, the batch a loaded worker runs).
* CUDA EP: ``cudnn_conv_algo_search=HEURISTIC`` (EXHAUSTIVE re-searches every new batch size,
  seconds each), the arena grows by what is requested (``kSameAsRequested``) so varying batch
  sizes do not double it, and the default stream is shared with copies.
* CPU is always last, so nodes no GPU EP takes (the k-means custom op) still run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
ANCHOR_RANGE = (1, 8, 64)
"""min/opt/max for the symbolic ``anchors`` dimension (K clusters; MAX_CLUSTERS is 64)."""


def cuda_options(device_id: int = 0) -> dict[str, str]:
    return {
        "device_id": str(device_id),
        "cudnn_conv_algo_search": "HEURISTIC",
        "arena_extend_strategy": "kSameAsRequested",
        "do_copy_in_default_stream": "1",
        "cudnn_conv_use_max_workspace": "1",
    }


def shape_profiles(inputs: Sequence[Mapping[str, Any]], max_batch: int) -> tuple[str, str, str]:
    """TensorRT EP min/opt/max shape strings ("name:1x1x256x256,...") from manifest inputs."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    ranges = {"batch": (1, max_batch, max_batch), "anchors": ANCHOR_RANGE}
    profiles: list[list[str]] = [[], [], []]
    for spec in inputs:
        dims: list[tuple[int, int, int]] = []
        for d in spec["shape"]:
            if isinstance(d, int):
                dims.append((d, d, d))
            elif d in ranges:
                dims.append(ranges[d])
            else:
                raise ValueError(f"input {spec['name']}: no profile for dimension {d!r}")
        for i in range(3):
            profiles[i].append(f"{spec['name']}:" + "x".join(str(r[i]) for r in dims))
    return tuple(",".join(p) for p in profiles)  # type: ignore[return-value]


def tensorrt_options(
    inputs: Sequence[Mapping[str, Any]],
    max_batch: int,
    cache_dir: str | Path,
    *,
    fp16: bool = True,
    device_id: int = 0,
) -> dict[str, str]:
    lo, opt, hi = shape_profiles(inputs, max_batch)
    cache = str(cache_dir)
    return {
        "device_id": str(device_id),
        "trt_fp16_enable": "1" if fp16 else "0",
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": "1",
        "trt_timing_cache_path": cache,
        "trt_builder_optimization_level": "3",
        "trt_profile_min_shapes": lo,
        "trt_profile_opt_shapes": opt,
        "trt_profile_max_shapes": hi,
    }


def provider_config(
    requested: str | None,
    available: Sequence[str],
    *,
    inputs: Sequence[Mapping[str, Any]] = (),
    max_batch: int = 8,
    cache_dir: str | Path = "",
    fp16: bool = True,
) -> list[tuple[str, dict[str, str]]]:
    """(provider, options) pairs for ``InferenceSession(providers=...)``.

    requested: "cpu", "cuda", "tensorrt", or None = CUDA when this onnxruntime has it, else CPU.
    An explicitly requested provider that is missing raises instead of silently running on CPU.
    """
    if requested not in (None, "cpu", "cuda", "tensorrt"):
        raise ValueError(f"unknown providers {requested!r}: use cpu, cuda or tensorrt")
    wanted = {
        None: [CUDA] if CUDA in available else [],
        "cpu": [],
        "cuda": [CUDA],
        "tensorrt": [TENSORRT, CUDA],
    }[requested]
    missing = [p for p in wanted if p not in available]
    if missing:
        raise RuntimeError(f"{missing[0]} is not available in this onnxruntime ({list(available)})")
    out: list[tuple[str, dict[str, str]]] = []
    for p in wanted:
        if p == TENSORRT:
            if not cache_dir:
                raise ValueError("the TensorRT EP needs a cache_dir for its engine/timing caches")
            out.append((p, tensorrt_options(inputs, max_batch, cache_dir, fp16=fp16)))
        else:
            out.append((p, cuda_options()))
    return [*out, (CPU, {})]

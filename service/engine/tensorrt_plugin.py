"""The anchor k-means node for TensorRT: a quickly deployable plugin (IPluginV3, TensorRT >= 10.7).

The exported encoder keeps the anchor locator as ONE custom node, `ai.onnx.contrib::
DiscoKMeansAnchors` (see `plugin.py`). TensorRT's ONNX parser imports a node it does not know as
the plugin whose *name* is the node's op_type and whose *namespace* is the node's string
attribute `plugin_namespace`; `export/tensorrt_build.py` adds that attribute to a copy of the
graph at build time (ONNX Runtime never sees it). This module registers the plugin under
`disco::DiscoKMeansAnchors` through `tensorrt.plugin`:

* `@trtp.register` describes the outputs: hint_mask is shaped like spixel_sizes (N, L) float32,
  anchor_idx like init_idx (N, K) int64, so both follow the dynamic batch and anchor dims.
* `@trtp.impl` is the JIT implementation, a Python callback TensorRT calls on its CUDA stream.
  It runs `service.anchors_xp.locate_anchors_xp` (the array-namespace k-means the ONNX Runtime
  plugin runs with numpy, tested bit-identical to the reference) with CuPy on the device, on
  TensorRT's stream, and writes both results into the output tensors: no host copy, no
  synchronisation (fixed iteration count; converged rows freeze through a device-side flag).

Registration is explicit (`register_plugin()`), idempotent, and imports tensorrt and CuPy lazily:
the module imports on machines without either. A process that deserializes an engine containing
the plugin must call `register_plugin()` first (`TensorRTEngine` does).

No `from __future__ import annotations` here on purpose: `tensorrt.plugin` inspects the
decorated functions' annotations as live classes (`issubclass(annotation, TensorDesc)`).
"""

import functools
from collections.abc import Sequence
from typing import Any

from service.anchors_xp import locate_anchors_xp

from .plugin import OP_TYPE

PLUGIN_NAMESPACE = "disco"  # tensorrt.plugin namespaces may not contain '.', unlike ONNX domains
PLUGIN_NAME = OP_TYPE  # the ONNX parser looks the plugin up by the node's op_type
PLUGIN_VERSION = "1"  # the version every quickly deployable plugin gets
PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{PLUGIN_NAME}"
MIN_TENSORRT = (10, 7)  # tensorrt.plugin with JIT impls and ONNX parser support


class TensorRTUnavailable(RuntimeError):
    """TensorRT (or CuPy, or a CUDA device) is missing on this machine."""


def _version_tuple(version: str) -> tuple[int, ...]:
    out = []
    for part in version.split(".")[:3]:
        digits = "".join(c for c in part if c.isdigit())
        out.append(int(digits or 0))
    return tuple(out)


def import_tensorrt() -> Any:
    """`import tensorrt`, or a `TensorRTUnavailable` that says what to install."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailable(
            "TensorRT is not installed: the TensorRT engine needs a CUDA GPU node with "
            "`pip install 'disco-serve[gpu]'` (tensorrt >= 10.7) and CuPy"
        ) from e
    if _version_tuple(trt.__version__) < MIN_TENSORRT:
        need = ".".join(map(str, MIN_TENSORRT))
        raise TensorRTUnavailable(
            f"TensorRT {trt.__version__} is too old: the k-means plugin needs tensorrt.plugin "
            f"(TensorRT >= {need})"
        )
    return trt


def import_cupy() -> Any:
    """`import cupy`, or a `TensorRTUnavailable` that says what to install."""
    try:
        import cupy
    except ImportError as e:
        raise TensorRTUnavailable(
            "CuPy is not installed: the TensorRT engine keeps its buffers in CuPy arrays "
            "(`pip install cupy-cuda12x` on a CUDA 12 node)"
        ) from e
    return cupy


def kmeans_on_stream(
    inputs: Sequence[Any],
    outputs: Sequence[Any],
    stream: int,
    *,
    iters: int,
    tol: float,
    cupy: Any = None,
) -> None:
    """The plugin's body: the k-means on the device, on `stream`, into the output tensors.

    inputs: enc_out (N, C, L) f32, spixel_sizes (N, L) f32, init_idx (N, K) i64; outputs:
    hint_mask (N, L) f32, anchor_idx (N, K) i64. Each is anything with `__cuda_array_interface__`
    (tensorrt.plugin.Tensor). `stream` is the raw cudaStream_t TensorRT enqueues on; every
    kernel and copy goes there and the call returns without waiting for them (TensorRT orders
    the next layers after them on the same stream).
    """
    cp = cupy if cupy is not None else import_cupy()
    with cp.cuda.ExternalStream(stream):
        enc_out, spixel_sizes, init_idx = (cp.asarray(t) for t in inputs)
        mask, idx, _ = locate_anchors_xp(
            enc_out, spixel_sizes, init_idx, iters=int(iters), tol=float(tol), xp=cp
        )
        for name, target, value in zip(
            ("hint_mask", "anchor_idx"), outputs, (mask, idx), strict=True
        ):
            dev = cp.asarray(target)
            if tuple(dev.shape) != tuple(value.shape):
                msg = f"{PLUGIN_ID}: {name} is {tuple(value.shape)}, the output buffer {dev.shape}"
                raise ValueError(msg)
            dev[...] = value.astype(dev.dtype, copy=False)


@functools.cache
def register_plugin() -> str:
    """Register `disco::DiscoKMeansAnchors` with TensorRT's plugin registry (once per process).

    Returns the plugin id. Raises `TensorRTUnavailable` without TensorRT >= 10.7.
    """
    import_tensorrt()
    import tensorrt.plugin as trtp

    @trtp.register(PLUGIN_ID)
    def _describe(
        enc_out: trtp.TensorDesc,
        spixel_sizes: trtp.TensorDesc,
        init_idx: trtp.TensorDesc,
        iters: int,
        tol: float,
    ) -> tuple[trtp.TensorDesc, trtp.TensorDesc]:
        # hint_mask (N, L) float32 like spixel_sizes; anchor_idx (N, K) int64 like init_idx
        return spixel_sizes.like(), init_idx.like()

    @trtp.impl(PLUGIN_ID)
    def _run(
        enc_out: trtp.Tensor,
        spixel_sizes: trtp.Tensor,
        init_idx: trtp.Tensor,
        iters: int,
        tol: float,
        outputs: tuple[trtp.Tensor, trtp.Tensor],
        stream: int,
    ) -> None:
        kmeans_on_stream((enc_out, spixel_sizes, init_idx), outputs, stream, iters=iters, tol=tol)

    return PLUGIN_ID

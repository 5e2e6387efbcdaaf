"""The anchor k-means plugin for ONNX Runtime: one custom-domain node, numpy inside.

The exported encoder keeps the k-means as a single `ai.onnx.contrib::DiscoKMeansAnchors` node
instead of 20 unrolled iterations of standard ops. Here that node is bound through
onnxruntime-extensions' Python custom ops to `service.anchors_xp`, the array-namespace version of
the torch-free reference (`service.anchors`), which tests hold bit-identical to it.
(TensorRT gets its own implementation of the same node,
`service/engine/tensorrt_plugin.py`.)
"""

from __future__ import annotations

import functools

import numpy as np

from service.anchors_xp import locate_anchors_xp

DOMAIN = "ai.onnx.contrib"  # the domain onnxruntime-extensions binds Python ops to
KMEANS_ITERS, KMEANS_TOL = 20, 1e-4  # the exported node's attributes (export/graphs.py)
OP_TYPE = "DiscoKMeansAnchors"
OP_VERSION = 1


def kmeans_anchors(
    enc_out: np.ndarray, spixel_sizes: np.ndarray, init_idx: np.ndarray, iters: int, tol: float
) -> tuple[np.ndarray, np.ndarray]:
    """The node's semantics: (N, C, L), (N, L), (N, K; -1 pads) -> hint_mask (N, L), anchors."""
    hint_mask, anchor_idx, _ = locate_anchors_xp(
        enc_out, spixel_sizes, init_idx, iters=iters, tol=tol, xp=np
    )
    return hint_mask.astype(np.float32), anchor_idx.astype(np.int64)


@functools.cache
def register() -> str:
    """Register the Python implementation once; returns the extensions library to load."""
    from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op

    @onnx_op(
        op_type=OP_TYPE,
        inputs=[PyCustomOpDef.dt_float, PyCustomOpDef.dt_float, PyCustomOpDef.dt_int64],
        outputs=[PyCustomOpDef.dt_float, PyCustomOpDef.dt_int64],
        attrs={"iters": PyCustomOpDef.dt_int64, "tol": PyCustomOpDef.dt_float},
    )
    def _disco_kmeans_anchors(enc_out, spixel_sizes, init_idx, **attrs):
        iters, tol = int(attrs.get("iters", 20)), float(attrs.get("tol", 1e-4))
        return kmeans_anchors(enc_out, spixel_sizes, init_idx, iters, tol)

    return get_library_path()

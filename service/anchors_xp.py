"""The anchor k-means as array-API code: one function for numpy (CPU) and CuPy (GPU).

`service.anchors` stays the definition (and the conformance vectors test it); this module is
the same algorithm written for speed and for any namespace ``xp`` with numpy's API, so the
TensorRT plugin and the CUDA paths can run it on the device, on the engine's stream, without a
host round trip. Three cheap wins over the reference, measured in BENCHMARKS.md:

* centre sums as a batched ``matmul`` of the one-hot assignment instead of ``einsum`` (BLAS
  instead of einsum's unoptimised loop);
* the (N, L, K) distances one cluster at a time, so the (N, L, K, C) broadcast is never built;
  each entry is the same float32 ``((x - c) ** 2).sum(-1)`` over C as in the reference;
* on the host, the loop ends once every row is done (converged rows are frozen in the
  reference, so its remaining iterations are no-ops; identical results, tested).

The expanded ``||x||^2 - 2 x.c + ||c||^2`` form is deliberately not used: it rounds differently
and flips labels on near-ties, and labels and anchors must equal the reference's exactly.
CuPy is never imported here; callers pass the namespace (``array_namespace`` picks it).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np


def array_namespace(*arrays: Any) -> ModuleType:
    """numpy for host arrays, cupy for device arrays (imported only when one is passed)."""
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            import cupy

            return cupy
    return np


def kmeans_xp(
    xp: ModuleType,
    x: Any,
    init_idx: Any,
    iters: int = 20,
    tol: float = 1e-4,
    early_stop: bool | None = None,
) -> Any:
    """Labels (N, L) int64 for tokens x (N, L, C) float32 and init rows (N, K) int64 (-1 pads).

    Same semantics as :func:`service.anchors.kmeans` (frozen rows, empty clusters keep their
    centre); validation is the caller's (the reference validates; device callers have shapes
    fixed by the graph).

    ``early_stop`` (default: on for numpy, off for device namespaces, where the test would cost
    a host sync per iteration) leaves the loop once every row is done. That is exact, not an
    approximation: a done row's labels and centres are frozen, so the remaining iterations of
    the reference change nothing. It also covers "labels no longer change": a row whose labels
    repeat gets the same centres again (shift 0 < tol) and is done in that same iteration.
    """
    if early_stop is None:
        early_stop = xp is np
    x = xp.ascontiguousarray(x, dtype=xp.float32)
    init_idx = xp.asarray(init_idx, dtype=xp.int64)
    n, l, _ = x.shape
    k = init_idx.shape[1]
    active = init_idx >= 0
    tol32 = xp.float32(tol)
    inf = xp.float32(np.inf)
    one = xp.float32(1)
    centres = xp.take_along_axis(x, xp.maximum(init_idx, 0)[:, :, None], axis=1)  # (N, K, C)
    done = xp.zeros(n, dtype=bool)
    out = xp.zeros((n, l), dtype=xp.int64)
    ks = xp.arange(k)
    d = xp.empty((n, l, k), dtype=xp.float32)
    for _ in range(iters):
        for j in range(k):
            d[:, :, j] = ((x - centres[:, None, j, :]) ** 2).sum(-1)
        d = xp.where(active[:, None, :], d, inf)
        lab = xp.argmin(d, axis=-1)
        out = xp.where(done[:, None], out, lab)
        onehot = (lab[..., None] == ks).astype(xp.float32)  # (N, L, K)
        count = onehot.sum(axis=1)  # (N, K)
        sums = xp.matmul(onehot.transpose(0, 2, 1), x)  # (N, K, C)
        new = sums / xp.maximum(count, one)[..., None]
        new = xp.where(count[..., None] > 0, new, centres)
        shift = xp.sqrt(((new - centres) ** 2).sum(-1)).sum(-1)
        centres = xp.where(done[:, None, None], centres, new)
        done = done | (shift**2 < tol32)
        if early_stop and bool(done.all()):
            break
    return out


def pick_anchors_xp(xp: ModuleType, labels: Any, spixel_sizes: Any, active: Any) -> tuple[Any, Any]:
    """hint_mask (N, L) float32, anchor_idx (N, K) int64, as `service.anchors.pick_anchors`."""
    l = labels.shape[1]
    k = active.shape[1]
    onehot = (labels[:, None, :] == xp.arange(k)[None, :, None]).astype(xp.float32)
    score = onehot + xp.float32(0.01) * spixel_sizes[:, None, :]
    anchor_idx = xp.argmax(score, axis=-1).astype(xp.int64)
    anchor_idx = xp.where(active, anchor_idx, -1)
    hint_mask = (anchor_idx[:, :, None] == xp.arange(l)).sum(axis=1).astype(xp.float32)
    return hint_mask, anchor_idx


def locate_anchors_xp(
    enc_out: Any,
    spixel_sizes: Any,
    init_idx: Any,
    iters: int = 20,
    tol: float = 1e-4,
    xp: ModuleType | None = None,
    early_stop: bool | None = None,
) -> tuple[Any, Any, Any]:
    """(N, C, L), (N, L), (N, K) -> hint_mask, anchor_idx, labels, in the inputs' namespace."""
    xp = xp or array_namespace(enc_out, spixel_sizes, init_idx)
    enc_out = xp.asarray(enc_out, dtype=xp.float32)
    n, _, l = enc_out.shape
    z = xp.asarray(spixel_sizes, dtype=xp.float32).reshape(n, l)
    init_idx = xp.asarray(init_idx, dtype=xp.int64)
    labels = kmeans_xp(
        xp, enc_out.transpose(0, 2, 1), init_idx, iters=iters, tol=tol, early_stop=early_stop
    )
    hint_mask, anchor_idx = pick_anchors_xp(xp, labels, z, init_idx >= 0)
    return hint_mask, anchor_idx, labels

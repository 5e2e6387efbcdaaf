"""The array-namespace k-means (numpy here, CuPy on a GPU) equals the reference exactly."""

from __future__ import annotations

import numpy as np
import pytest

from service import anchors as ref
from service.anchors_xp import array_namespace, locate_anchors_xp
from service.engine.plugin import kmeans_anchors


def _clustered(rng: np.random.Generator, n: int, length: int = 256, c: int = 64):
    """Clustered tokens like real encoder features, (N, C, L), plus superpixel sizes (N, L)."""
    k_true = rng.integers(2, 12)
    centres = rng.normal(0, 3, (n, k_true, c))
    member = rng.integers(0, k_true, (n, length))
    x = np.take_along_axis(centres, member[..., None], 1) + rng.normal(0, 1, (n, length, c))
    sizes = rng.integers(0, 9, (n, length)) / 4.0
    return x.transpose(0, 2, 1).astype(np.float32).copy(), sizes.astype(np.float32)


def _assert_same(got, want) -> None:
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("case", range(40))
def test_matches_reference_clustered(case: int) -> None:
    rng = np.random.default_rng(5000 + case)
    enc_out, sizes = _clustered(rng, 3)
    k = int(rng.choice([1, 3, 8, 16, 64]))
    init = np.stack([ref.init_indices(int(s), k) for s in rng.integers(0, 2**31, 3)])
    _assert_same(locate_anchors_xp(enc_out, sizes, init), ref.locate_anchors(enc_out, sizes, init))


@pytest.mark.parametrize("seed", range(3))
def test_matches_reference_random_tokens_batch32(seed: int) -> None:
    """Unclustered tokens (the benchmark's input): many near-ties, still bit-identical."""
    rng = np.random.default_rng(seed)
    enc_out = rng.normal(size=(32, 64, 256)).astype(np.float32)
    sizes = (rng.integers(0, 9, (32, 256)) / 4.0).astype(np.float32)
    init = np.stack([ref.init_indices(s, 8) for s in range(32)])
    _assert_same(locate_anchors_xp(enc_out, sizes, init), ref.locate_anchors(enc_out, sizes, init))


def test_mixed_k_padding_matches_reference() -> None:
    rng = np.random.default_rng(7)
    enc_out, sizes = _clustered(rng, 4)
    init = np.full((4, 8), -1, np.int64)
    for row, k in enumerate((1, 3, 8, 5)):
        init[row, :k] = ref.init_indices(row, k)
    got = locate_anchors_xp(enc_out, sizes, init)
    _assert_same(got, ref.locate_anchors(enc_out, sizes, init))
    assert (got[1][0, 1:] == -1).all()


def test_converged_rows_freeze_like_reference() -> None:
    """Few iterations and a loose tolerance exercise the per-row done flag."""
    rng = np.random.default_rng(3)
    enc_out, sizes = _clustered(rng, 5)
    init = np.stack([ref.init_indices(s, 8) for s in range(5)])
    for iters, tol in ((1, 1e-4), (3, 10.0), (20, 1e3)):
        _assert_same(
            locate_anchors_xp(enc_out, sizes, init, iters=iters, tol=tol),
            ref.locate_anchors(enc_out, sizes, init, iters=iters, tol=tol),
        )


@pytest.mark.parametrize("image", ["astronaut", "coffee"])
def test_conformance_vectors(vectors_dir, image: str) -> None:
    v = np.load(vectors_dir / f"{image}_seed0_kmeans_rng130.npz", allow_pickle=False)
    init = v["kmeans_init_idx"][None]
    got = locate_anchors_xp(v["enc_out"], v["spixel_sizes"], init)
    _assert_same(got, ref.locate_anchors(v["enc_out"], v["spixel_sizes"], init))
    # and the ONNX custom-op body (what the exported encoder runs) gives the same anchors
    mask, idx = kmeans_anchors(v["enc_out"], v["spixel_sizes"], init, 20, 1e-4)
    np.testing.assert_array_equal(mask, got[0])
    np.testing.assert_array_equal(idx, got[1])


def test_namespace_is_numpy_for_host_arrays() -> None:
    assert array_namespace(np.zeros(1), [1, 2]) is np


def test_cupy_matches_reference_on_gpu() -> None:
    """On a lent GPU: the same function on CuPy arrays; labels may differ only on near-ties."""
    cupy = pytest.importorskip("cupy")
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver / no device: skip, never fail
        pytest.skip(f"no CUDA device: {exc}")
    rng = np.random.default_rng(11)
    enc_out, sizes = _clustered(rng, 8)
    init = np.stack([ref.init_indices(s, 8) for s in range(8)])
    want = ref.locate_anchors(enc_out, sizes, init)
    got = locate_anchors_xp(cupy.asarray(enc_out), cupy.asarray(sizes), cupy.asarray(init))
    labels = cupy.asnumpy(got[2])
    assert (labels == want[2]).mean() > 0.99


def _reference_iterations(x: np.ndarray, init: np.ndarray, tol: float) -> int:
    """Fewest iterations after which the reference's labels stop changing (<= 20)."""
    want = ref.kmeans(x, init, iters=20, tol=tol)
    return next(i for i in range(1, 21) if np.array_equal(ref.kmeans(x, init, i, tol), want))


@pytest.mark.parametrize("case", range(60))
def test_early_stop_equals_reference(case: int) -> None:
    """The host early stop (all rows done) against the reference's full 20 iterations: clustered
    and unclustered tokens, batches 1..6, K 1..64, mixed K padding, tol 1e-4 and looser."""
    rng = np.random.default_rng(9000 + case)
    n = int(rng.integers(1, 7))
    if case % 3 == 2:
        enc_out = rng.normal(size=(n, 64, 256)).astype(np.float32)
        sizes = (rng.integers(0, 9, (n, 256)) / 4.0).astype(np.float32)
    else:
        enc_out, sizes = _clustered(rng, n)
    k = int(rng.choice([1, 2, 3, 8, 16, 64]))
    init = np.full((n, k), -1, np.int64)
    for row in range(n):
        kr = k if case % 2 else int(rng.integers(1, k + 1))
        init[row, :kr] = ref.init_indices(int(rng.integers(0, 2**31)), kr)
    tol = float(rng.choice([1e-4, 1e-4, 1e-2, 1.0]))
    want = ref.locate_anchors(enc_out, sizes, init, iters=20, tol=tol)
    _assert_same(locate_anchors_xp(enc_out, sizes, init, tol=tol, early_stop=True), want)
    _assert_same(locate_anchors_xp(enc_out, sizes, init, tol=tol, early_stop=False), want)


def test_early_stop_is_exercised() -> None:
    """Clustered tokens converge well before 20 iterations, so the early exit is taken."""
    rng = np.random.default_rng(21)
    enc_out, sizes = _clustered(rng, 1)
    init = ref.init_indices(4, 8)[None]
    x = enc_out.transpose(0, 2, 1)
    assert _reference_iterations(x, init, 1e-4) < 20
    _assert_same(
        locate_anchors_xp(enc_out, sizes, init, early_stop=True),
        ref.locate_anchors(enc_out, sizes, init),
    )

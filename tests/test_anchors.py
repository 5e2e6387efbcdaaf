"""Anchor locator and colour sampling against the official conformance vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.anchors import (
    init_indices,
    kmeans,
    locate_anchors,
    pick_anchors,
    sample_anchor_ab,
    sample_anchor_bins,
)
from service.gamut import AB_SCALE, NUM_BINS, nearest_bin, q_to_ab

IMAGES = ["astronaut", "coffee"]
OFFICIAL_INIT_130 = [115, 152, 138, 47, 235, 251, 73, 166]
OFFICIAL_ANCHORS = {  # vectors/README.md, sorted token indices
    "astronaut": [29, 68, 97, 109, 113, 217, 227, 233],
    "coffee": [86, 99, 107, 130, 138, 174, 212, 229],
}


def _load(vectors_dir: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(vectors_dir / name) as z:
        return {k: z[k] for k in z.files}


# ---------------------------------------------------------------- gamut


def test_q_to_ab_matches_reference(reference_dir: Path) -> None:
    q = q_to_ab()
    assert q.shape == (NUM_BINS, 2) and q.dtype == np.float32
    np.testing.assert_array_equal(q, np.load(reference_dir / "gamut_pts.npy").astype(np.float32))
    assert q_to_ab() is q  # cached
    np.testing.assert_array_equal(q[0], [-90, 50])


def test_nearest_bin_centres_and_ties() -> None:
    q = q_to_ab()
    np.testing.assert_array_equal(nearest_bin(q), np.arange(NUM_BINS))
    np.testing.assert_array_equal(
        nearest_bin(q.reshape(1, NUM_BINS, 2) + 1.0), np.arange(313)[None]
    )
    # Halfway between (0, 0) and (0, 10) -> the first of the two (lower index).
    i0, i1 = nearest_bin(np.array([[0.0, 0.0], [0.0, 10.0]]))
    assert nearest_bin(np.array([0.0, 5.0])) == min(i0, i1)
    assert nearest_bin(np.zeros((0, 2))).shape == (0,)


# ---------------------------------------------------------------- sampling


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("t", [0, 1, 2])
def test_sampled_ab_matches_official(vectors_dir: Path, image: str, t: int) -> None:
    z = _load(vectors_dir, f"{image}_seed0_fixed.npz")
    got = sample_anchor_ab(z["pal_logit"].reshape(1, NUM_BINS, 256), t)
    assert got.shape == (1, 2, 256) and got.dtype == np.float32
    np.testing.assert_array_equal(got.reshape(1, 2, 16, 16), z[f"official_sampled_ab_T{t}"])


def test_sample_bins_consistent_with_ab(vectors_dir: Path) -> None:
    pal = _load(vectors_dir, "coffee_seed0_fixed.npz")["pal_logit"].reshape(1, NUM_BINS, 256)
    bins0 = sample_anchor_bins(pal, 0)
    np.testing.assert_array_equal(bins0, pal.argmax(1))
    for t in range(3):
        bins = sample_anchor_bins(pal, t)
        assert bins.dtype == np.int64 and bins.shape == (1, 256)
        ab = sample_anchor_ab(pal, t)
        np.testing.assert_array_equal(nearest_bin(ab.transpose(0, 2, 1) * AB_SCALE), bins)
    # Diverse colours differ from the most probable one.
    assert (sample_anchor_bins(pal, 1) != bins0).all()


def test_sample_ties_keep_probability_order() -> None:
    # Uniform logits: top-10 = bins 0..9 (stable order); T=1 = farthest from bin 0, first on ties.
    pal = np.zeros((1, NUM_BINS, 1), dtype=np.float32)
    assert sample_anchor_bins(pal, 0)[0, 0] == 0
    cand = q_to_ab()[:10] / np.float32(AB_SCALE)
    d = np.sqrt(((cand - cand[0]) ** 2).sum(-1))
    assert sample_anchor_bins(pal, 1)[0, 0] == int(np.argmax(d))


def test_sample_batch_equals_single(vectors_dir: Path) -> None:
    pals = [
        _load(vectors_dir, f"{im}_seed0_fixed.npz")["pal_logit"].reshape(1, NUM_BINS, 256)
        for im in IMAGES
    ]
    batch = np.concatenate([*pals, pals[0][..., ::-1]], axis=0)
    for t in (0, 1, 2, 5):
        got = sample_anchor_bins(batch, t)
        for i in range(3):
            np.testing.assert_array_equal(got[i : i + 1], sample_anchor_bins(batch[i : i + 1], t))


def test_sample_validates() -> None:
    pal = np.zeros((1, NUM_BINS, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="t must be"):
        sample_anchor_bins(pal, 10)
    with pytest.raises(ValueError, match="t must be"):
        sample_anchor_bins(pal, -1)
    with pytest.raises(ValueError, match="pal_logit"):
        sample_anchor_bins(np.zeros((1, 4, 313), dtype=np.float32), 0)


# ---------------------------------------------------------------- k-means + anchors


def test_init_indices_official_draw() -> None:
    idx = init_indices(130, 8)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, OFFICIAL_INIT_130)
    assert len(set(init_indices(0, 64).tolist())) == 64
    for bad in (0, 65):
        with pytest.raises(ValueError, match="k must be"):
            init_indices(0, bad)
    with pytest.raises(ValueError, match="exceeds"):
        init_indices(0, 8, n_tokens=4)


@pytest.mark.parametrize("image", IMAGES)
def test_kmeans_anchors_match_official(vectors_dir: Path, image: str) -> None:
    z = _load(vectors_dir, f"{image}_seed0_kmeans_rng130.npz")
    init = init_indices(130, 8)
    np.testing.assert_array_equal(init, z["kmeans_init_idx"])
    hint_mask, anchor_idx, labels = locate_anchors(z["enc_out"], z["spixel_sizes"], init[None])
    assert hint_mask.shape == (1, 256) and hint_mask.dtype == np.float32
    assert anchor_idx.shape == (1, 8) and anchor_idx.dtype == np.int64
    assert labels.shape == (1, 256) and labels.dtype == np.int64
    np.testing.assert_array_equal(labels[0], z["cluster_mask"].reshape(8, 256).argmax(0))
    np.testing.assert_array_equal(hint_mask, z["hint_mask"].reshape(1, 256))
    np.testing.assert_array_equal(np.sort(anchor_idx[0]), OFFICIAL_ANCHORS[image])
    # Each anchor is a member of its own cluster.
    np.testing.assert_array_equal(labels[0, anchor_idx[0]], np.arange(8))
    ab = sample_anchor_ab(z["pal_logit"].reshape(1, NUM_BINS, 256), 0)
    np.testing.assert_array_equal(ab, z["anchor_ab"].reshape(1, 2, 256))
    hinted = hint_mask[0] > 0
    np.testing.assert_array_equal(ab[0][:, hinted], z["anchor_ab"].reshape(2, 256)[:, hinted])


def test_kmeans_batch_equals_single(vectors_dir: Path) -> None:
    encs = [_load(vectors_dir, f"{im}_seed0_kmeans_rng130.npz")["enc_out"] for im in IMAGES]
    rng = np.random.default_rng(1)
    encs.append(rng.standard_normal((1, 64, 256), dtype=np.float32))
    x = np.concatenate(encs, axis=0).transpose(0, 2, 1)
    init = np.stack([init_indices(130, 8), init_indices(1, 8), init_indices(2, 8)])
    got = kmeans(x, init)
    for i in range(3):
        np.testing.assert_array_equal(got[i : i + 1], kmeans(x[i : i + 1], init[i : i + 1]))


def test_kmeans_freezes_after_convergence() -> None:
    # 1-D hand-worked case: labels [0,1,1,1,1,1] after the first assignment (centres 0 and 1),
    # then 5.4 -> [0,0,0,1,1,1] -> [0,0,0,0,1,1], which is stable.
    x = np.array([[[0.0], [1.0], [2.0], [3.0], [10.0], [11.0]]], dtype=np.float32)
    init = np.array([[0, 1]])
    first = kmeans(x, init, iters=1)
    np.testing.assert_array_equal(first, [[0, 1, 1, 1, 1, 1]])
    converged = kmeans(x, init)
    np.testing.assert_array_equal(converged, [[0, 0, 0, 0, 1, 1]])
    # The first shift is 4.4 (shift^2 = 19.36): tol=20 stops right after the first update, and
    # the labels stay those of the first assignment for the remaining 19 iterations.
    np.testing.assert_array_equal(kmeans(x, init, tol=20.0), first)
    # In a batch, the stopped image stays frozen while the other (scaled x1000) keeps iterating.
    got = kmeans(np.concatenate([x, x * 1000], axis=0), np.array([[0, 1], [0, 1]]), tol=20.0)
    np.testing.assert_array_equal(got, np.concatenate([first, converged]))


def test_kmeans_empty_cluster_keeps_centre() -> None:
    # Duplicate init: cluster 1 loses every tie in the first assignment and is empty. Keeping its
    # centre at 0 (while cluster 0 moves to 5) lets it win the zeros in the next step; a NaN
    # centre (0/0) or a random re-seed would give something else.
    x = np.array([[[0.0], [0.0], [0.0], [10.0], [10.0], [10.0]]], dtype=np.float32)
    np.testing.assert_array_equal(kmeans(x, np.array([[0, 0]]), iters=1), [[0] * 6])
    np.testing.assert_array_equal(kmeans(x, np.array([[0, 0]])), [[1, 1, 1, 0, 0, 0]])
    # Fully duplicated init on random data still gives finite, valid labels.
    rng = np.random.default_rng(0)
    xr = rng.standard_normal((1, 256, 16), dtype=np.float32)
    labels = kmeans(xr, np.array([[3, 3, 3, 3]]))
    assert labels.min() >= 0 and labels.max() < 4


def test_pick_anchors_empty_cluster_doubles_mask() -> None:
    # An empty cluster's score is 0.01*Z only: it picks the globally largest superpixel, which
    # here is also cluster 0's anchor -> mask value 2, kept as the official code does.
    labels = np.zeros((1, 6), dtype=np.int64)
    z = np.array([[0.1, 0.3, 0.9, 0.2, 0.9, 0.0]], dtype=np.float32)
    hint_mask, anchor_idx = pick_anchors(labels, z, 2)
    np.testing.assert_array_equal(anchor_idx, [[2, 2]])
    np.testing.assert_array_equal(hint_mask, [[0, 0, 2, 0, 0, 0]])
    assert hint_mask.sum() == 2


def test_pick_anchors_largest_superpixel_lowest_index() -> None:
    labels = np.array([[0, 0, 1, 1, 0, 1]])
    z = np.array([[0.5, 0.9, 0.9, 0.1, 0.9, 0.9]], dtype=np.float32)
    hint_mask, anchor_idx = pick_anchors(labels, z, 2)
    np.testing.assert_array_equal(anchor_idx, [[1, 2]])
    np.testing.assert_array_equal(hint_mask, [[0, 1, 1, 0, 0, 0]])


@pytest.mark.parametrize("k", [1, 8, 64])
def test_locate_anchors_any_k(k: int) -> None:
    rng = np.random.default_rng(k)
    enc = rng.standard_normal((2, 64, 256), dtype=np.float32)
    z = rng.integers(0, 24, (2, 1, 16, 16)).astype(np.float32) / 256
    init = np.stack([init_indices(s, k) for s in (0, 1)])
    hint_mask, anchor_idx, labels = locate_anchors(enc, z, init)
    assert hint_mask.shape == (2, 256) and anchor_idx.shape == (2, k)
    np.testing.assert_array_equal(hint_mask.sum(1), [k, k])
    assert labels.min() >= 0 and labels.max() < k
    if k == 1:
        assert (labels == 0).all()
        np.testing.assert_array_equal(anchor_idx[:, 0], z.reshape(2, 256).argmax(1))


def test_kmeans_validates() -> None:
    x = np.zeros((1, 4, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="init_idx"):
        kmeans(x, np.array([0, 1]))
    with pytest.raises(ValueError, match="init indices"):
        kmeans(x, np.array([[0, 4]]))

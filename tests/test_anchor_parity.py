"""The torch anchor locator and sampler equal the torch-free (numpy) reference exactly."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export.model import anchors as tanchors  # noqa: E402
from service import anchors as nanchors  # noqa: E402
from service.gamut import q_to_ab  # noqa: E402


def _random_tokens(rng: np.random.Generator, n: int, length: int = 256, c: int = 64):
    """Clustered token sets (like real encoder features) plus superpixel sizes."""
    k_true = rng.integers(2, 12)
    centres = rng.normal(0, 3, (n, k_true, c))
    member = rng.integers(0, k_true, (n, length))
    x = np.take_along_axis(centres, member[..., None], 1) + rng.normal(0, 1, (n, length, c))
    sizes = rng.integers(0, 9, (n, length)) / 4.0
    return x.astype(np.float32), sizes.astype(np.float32)


@pytest.mark.parametrize("case", range(50))
def test_kmeans_and_anchor_pick_match(case):
    rng = np.random.default_rng(1000 + case)
    n = 3
    x, sizes = _random_tokens(rng, n)
    k = int(rng.choice([1, 3, 8, 16, 64]))
    init = np.stack([nanchors.init_indices(int(s), k) for s in rng.integers(0, 2**31, n)])
    enc_out = x.transpose(0, 2, 1).copy()
    n_mask, n_idx, n_labels = nanchors.locate_anchors(enc_out, sizes, init)
    t_mask, t_idx, t_labels = tanchors.locate_anchors(
        torch.from_numpy(enc_out), torch.from_numpy(sizes), torch.from_numpy(init)
    )
    np.testing.assert_array_equal(t_labels.numpy(), n_labels)
    np.testing.assert_array_equal(t_idx.numpy(), n_idx)
    np.testing.assert_array_equal(t_mask.numpy(), n_mask)


@pytest.mark.parametrize("t", range(10))
def test_sampling_matches(t):
    rng = np.random.default_rng(t)
    logits = (rng.normal(0, 2, (4, 313, 256))).astype(np.float32)
    q = torch.tensor(q_to_ab())
    ours = tanchors.sample_anchor_bins(torch.from_numpy(logits), q, t).numpy()
    np.testing.assert_array_equal(ours, nanchors.sample_anchor_bins(logits, t))


@pytest.mark.parametrize("image", ["astronaut", "coffee"])
def test_parity_on_vectors(vectors_dir, image):
    v = np.load(vectors_dir / f"{image}_seed0_kmeans_rng130.npz", allow_pickle=False)
    init = v["kmeans_init_idx"][None]
    n_mask, n_idx, _ = nanchors.locate_anchors(v["enc_out"], v["spixel_sizes"], init)
    t_mask, t_idx, _ = tanchors.locate_anchors(
        torch.from_numpy(v["enc_out"]),
        torch.from_numpy(v["spixel_sizes"]).flatten(1),
        torch.from_numpy(init),
    )
    np.testing.assert_array_equal(t_idx.numpy(), n_idx)
    np.testing.assert_array_equal(t_mask.numpy(), n_mask)


def test_padded_init_rows_equal_unpadded_runs():
    """Rows asking for fewer clusters pad init_idx with -1: same anchors as their own run."""
    rng = np.random.default_rng(7)
    x, sizes = _random_tokens(rng, 3)
    enc_out = x.transpose(0, 2, 1).copy()
    ks = [8, 3, 1]
    init = np.full((3, 8), -1, dtype=np.int64)
    for i, k in enumerate(ks):
        init[i, :k] = nanchors.init_indices(i, k)
    n_mask, n_idx, _ = nanchors.locate_anchors(enc_out, sizes, init)
    t_mask, t_idx, _ = tanchors.locate_anchors(
        torch.from_numpy(enc_out), torch.from_numpy(sizes), torch.from_numpy(init)
    )
    np.testing.assert_array_equal(t_mask.numpy(), n_mask)
    np.testing.assert_array_equal(t_idx.numpy(), n_idx)
    for i, k in enumerate(ks):
        alone, idx, _ = nanchors.locate_anchors(
            enc_out[i : i + 1], sizes[i : i + 1], init[i : i + 1, :k]
        )
        np.testing.assert_array_equal(n_mask[i], alone[0])
        np.testing.assert_array_equal(n_idx[i, :k], idx[0])
        assert (n_idx[i, k:] == -1).all() and n_mask[i].sum() == k


def test_levels_are_consistent():
    rng = np.random.default_rng(3)
    logits = torch.from_numpy(rng.normal(0, 2, (2, 313, 256)).astype(np.float32))
    q = torch.tensor(q_to_ab())
    levels = tanchors.sample_anchor_levels(logits, q, 10)
    for t in range(10):
        np.testing.assert_array_equal(
            levels[:, t].numpy(), nanchors.sample_anchor_bins(logits.numpy(), t)
        )

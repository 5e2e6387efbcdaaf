"""The PyTorch network against the official layout, the seed-0 checksums and the vectors."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export.model import anchors as tanchors  # noqa: E402
from export.model.checkpoint import (  # noqa: E402
    make_test_checkpoint,
    official_layout,
    tensor_sha256_16,
)
from export.model.disco import Disco, DiscoConfig, disco, disco_demo  # noqa: E402
from export.model.superpixel import (  # noqa: E402
    sine_position_encoding,
    sp_diffuse,
    sp_pool,
    spixel_sizes,
)
from service.gamut import q_to_ab  # noqa: E402

IMAGES = ["astronaut", "coffee"]
# The vectors README: fixed anchors (token -> bin) of the *_fixed.npz files.
FIXED_TOKENS = [18, 29, 74, 87, 133, 154, 200, 237]
FIXED_BINS = [163, 73, 116, 219, 140, 100, 171, 127]
INTERMEDIATE_TOL = 1e-4


def _read_tsv(path):
    rows = [line.rstrip("\n").split("\t") for line in path.read_text().splitlines()]
    return rows[1:]


def _shape_str(shape):
    return "scalar" if shape == () else "x".join(map(str, shape))


def test_layout_matches_official_manifest(reference_dir):
    manifest = _read_tsv(reference_dir / "disco_state_dict.tsv")
    layout = official_layout(Disco())
    assert len(layout) == len(manifest) == 461
    for (key, shape, dtype), (mkey, mshape, mdtype, mnumel) in zip(layout, manifest, strict=True):
        assert key == mkey
        assert _shape_str(shape) == mshape, key
        assert str(dtype).removeprefix("torch.") == mdtype, key
        assert int(np.prod(shape)) == int(mnumel), key


def test_parameter_count_matches_official():
    model = Disco()
    assert sum(p.numel() for p in model.parameters()) == 43_063_739
    per_module = {n: sum(p.numel() for p in m.parameters()) for n, m in model.named_children()}
    assert per_module["segnet"] == 2_269_497
    assert per_module["repnet"] == 32_529_216
    assert per_module["enhanceNet"] == 7_600_962
    assert per_module["wildpath"] == per_module["hintpath"] == 299_904


def test_seed0_weights_match_checksums(vectors_dir):
    sd = make_test_checkpoint(0)["state_dict"]
    rows = _read_tsv(vectors_dir / "weights_seed0_checksums.tsv")
    assert len(rows) == len(sd) == 461
    for key, sha, total, abs_total, first in rows:
        t = sd[key]
        if key.endswith("weight_u"):  # float64 arithmetic: the last bit may differ
            assert float(t.double().sum()) == pytest.approx(float(total), rel=1e-6, abs=1e-6), key
        else:
            assert tensor_sha256_16(t) == sha, key
        assert float(t.double().abs().sum()) == pytest.approx(float(abs_total), rel=1e-6, abs=1e-6)
        assert float(t.flatten()[0]) == pytest.approx(float(first), rel=1e-6, abs=1e-9)


def test_spectral_norm_is_folded(seed0_model):
    # The test weights make u.(W v) == 2 exactly: a loader that forgot the fold is off by 2x.
    raw = make_test_checkpoint(0)["state_dict"]
    folded = seed0_model.state_dict()["repnet.conv4_3.2.weight"]
    torch.testing.assert_close(folded, raw["repnet.conv4_3.2.weight_orig"] / 2, rtol=1e-6, atol=0)


@pytest.fixture(scope="module", params=IMAGES)
def fixed_run(request, seed0_model, vectors_dir):
    """Run the fixed-anchor path step by step on one image and keep every intermediate."""
    v = dict(np.load(vectors_dir / f"{request.param}_seed0_fixed.npz", allow_pickle=False))
    m = seed0_model
    with torch.inference_mode():
        l_norm = torch.from_numpy(v["input_L"])
        enc = m.encode(l_norm)
        mask = torch.from_numpy(v["hint_mask"]).flatten(1)
        bins = torch.zeros(1, 256, dtype=torch.int64)
        bins[0, FIXED_TOKENS] = torch.tensor(FIXED_BINS)
        hint_seq = m.hint_sequence(enc.tokens, mask, bins)
        dec = m.decode(hint_seq)
        raw = m.enhance(l_norm, enc.affinity, dec)
        full = sp_diffuse(dec.transpose(1, 2).reshape(1, 64, 16, 16), enc.affinity)
        feats = m.repnet(l_norm)
        pooled_ab, conf = sp_pool(torch.from_numpy(v["input_ab"]), enc.affinity)
        seq = enc.tokens.flatten(2).transpose(1, 2)
        onehot = (bins[..., None] == torch.arange(313)).float() * mask[..., None]
        ours = {
            "affinity_map": enc.affinity,
            "spixel_sizes": enc.spixel_sizes,
            "pooled_tokens": enc.tokens,
            "pooled_ab": pooled_ab,
            "pool_conf_sum": conf,
            "pos_enc": sine_position_encoding(64, 16, 16),
            "enc_out": enc.enc_out,
            "pal_logit": enc.pal_logit,
            "hint_seq_in": torch.cat([seq, onehot, mask[..., None]], -1).transpose(1, 2),
            "dec_out": dec.transpose(1, 2),
            "ref_logit": m.ref_logit(dec),
            "full_feats_crop": full[:, :, :32, :32],
            "full_feats_chmean": full.mean((2, 3)),
            "repnet_out_crop": feats[:, :, :32, :32],
            "repnet_out_chmean": feats.mean((2, 3)),
            "enhance_raw": raw,
            "final_ab": torch.tanh(raw),
            "generate": m.generate(l_norm, enc.affinity, enc.tokens, mask, bins),
        }
    return v, {
        k: t.numpy().reshape(v["final_ab" if k == "generate" else k].shape) for k, t in ours.items()
    }


@pytest.mark.parametrize(
    "key",
    [
        "affinity_map", "pooled_tokens", "pooled_ab", "pool_conf_sum", "pos_enc", "enc_out",
        "pal_logit", "hint_seq_in", "dec_out", "ref_logit", "full_feats_crop",
        "full_feats_chmean", "repnet_out_crop", "repnet_out_chmean",
    ],
)  # fmt: skip
def test_fixed_intermediates(fixed_run, key):
    v, ours = fixed_run
    err = np.abs(ours[key] - v[key]).max()
    assert err <= INTERMEDIATE_TOL, f"{key}: max abs {err:.2e}"


def test_fixed_outputs(fixed_run):
    v, ours = fixed_run
    # The hard assignment is an argmax over 9 slots: exact on the reference affinity, and ours may
    # differ only at pixels whose top two slots tie within float noise (SIMD width changes the
    # last bits: AVX2 and AVX-512 CPUs flip 1-2 such pixels of 65536).
    ref_aff = v["affinity_map"]
    np.testing.assert_array_equal(spixel_sizes(torch.from_numpy(ref_aff)), v["spixel_sizes"])

    def hard(a):
        return a == a.max(1, keepdims=True)

    flipped = (hard(ours["affinity_map"]) != hard(ref_aff)).any(1)
    top2 = np.sort(ref_aff, axis=1)[:, -2:]
    gap = (top2[:, 1] - top2[:, 0])[flipped]
    assert gap.max(initial=0.0) <= 2 * INTERMEDIATE_TOL, f"{flipped.sum()} pixels, gap {gap.max()}"
    moved = np.abs(ours["spixel_sizes"] - v["spixel_sizes"]).sum() * 256
    assert moved <= 2 * flipped.sum(), f"sizes moved by {moved} pixels, {flipped.sum()} flipped"
    assert np.abs(ours["enhance_raw"] - v["enhance_raw"]).max() <= 1e-3
    for key in ("final_ab", "generate"):
        diff = np.abs(ours[key] - v["final_ab"])
        assert diff.max() <= 5e-4 and diff.mean() <= 1e-5, f"{key}: {diff.max():.2e}"
    for key in ("pal_logit", "ref_logit"):
        np.testing.assert_array_equal(ours[key].argmax(1), v[key].argmax(1))


def test_fixed_sampled_colours(fixed_run):
    v, ours = fixed_run
    q = torch.tensor(q_to_ab()).float()
    for t in range(3):
        bins = tanchors.sample_anchor_bins(torch.from_numpy(ours["pal_logit"]).flatten(2), q, t)
        ab = (q[bins] / 110).permute(0, 2, 1).reshape(1, 2, 16, 16).numpy()
        np.testing.assert_array_equal(ab, v[f"official_sampled_ab_T{t}"])


@pytest.mark.parametrize("image", IMAGES)
def test_kmeans_path_end_to_end(seed0_model, vectors_dir, image):
    """The official default path: k-means anchors from the official init draw, T=0 colours."""
    v = np.load(vectors_dir / f"{image}_seed0_kmeans_rng130.npz", allow_pickle=False)
    fixed = np.load(vectors_dir / f"{image}_seed0_fixed.npz", allow_pickle=False)
    m = seed0_model
    with torch.inference_mode():
        l_norm = torch.from_numpy(fixed["input_L"])
        enc = m.encode(l_norm)
        init = torch.from_numpy(v["kmeans_init_idx"])[None]
        mask, _, labels = tanchors.locate_anchors(enc.enc_out, enc.spixel_sizes, init)
        bins = tanchors.sample_anchor_bins(enc.pal_logit, torch.tensor(q_to_ab()), 0)
        ab = m.generate(l_norm, enc.affinity, enc.tokens, mask, bins).numpy()
    np.testing.assert_array_equal(labels.numpy(), v["cluster_mask"].reshape(1, 8, 256).argmax(1))
    np.testing.assert_array_equal(mask.numpy().reshape(v["hint_mask"].shape), v["hint_mask"])
    q = q_to_ab()
    np.testing.assert_array_equal(
        (q[bins.numpy()] / 110).transpose(0, 2, 1), v["anchor_ab"].reshape(1, 2, 256)
    )
    diff = np.abs(ab - v["final_ab"])
    assert diff.max() <= 5e-4 and diff.mean() <= 1e-5, f"final_ab max abs {diff.max():.2e}"


@pytest.mark.parametrize("builder", [disco, disco_demo])
def test_variants_forward_and_key_names(builder):
    """Every variant keeps the official key names; the demo only narrows channels."""
    torch.manual_seed(0)
    model = builder().eval()
    official = {k for k, *_ in official_layout(Disco())}
    ours = {k for k, *_ in official_layout(model)}
    assert ours <= official, sorted(ours - official)[:5]
    assert {k for k in official if ".layers." not in k} <= ours  # only transformer depth varies
    if builder is disco_demo:  # the full model's forward is covered by the vectors
        with torch.inference_mode():
            l_norm = torch.rand(2, 1, 256, 256) * 2 - 1
            mask = torch.zeros(2, 256)
            mask[:, [3, 100]] = 1
            ab = model(l_norm, mask, torch.full((2, 256), 150))
        assert ab.shape == (2, 2, 256, 256) and ab.abs().max() <= 1


def test_device_and_dtype_follow_the_caller():
    model = disco_demo(n_layers=1).eval().to(torch.float64)
    l_norm = torch.zeros(1, 1, 256, 256, dtype=torch.float64)
    with torch.inference_mode():
        enc = model.encode(l_norm)
        ab = model.generate(
            l_norm,
            enc.affinity,
            enc.tokens,
            torch.ones(1, 256),
            torch.zeros(1, 256, dtype=torch.int64),
        )
    assert enc.enc_out.dtype == ab.dtype == torch.float64


def test_wrong_input_size_is_a_clear_error():
    model = disco_demo(n_layers=1).eval()
    with pytest.raises(AssertionError, match="256x256"), torch.inference_mode():
        model.encode(torch.zeros(1, 1, 128, 128))


def test_config_roundtrip():
    cfg = DiscoConfig(width=0.25)
    assert DiscoConfig(**cfg.to_dict()) == cfg
    assert cfg.grid == 16 and cfg.n_tokens == 256

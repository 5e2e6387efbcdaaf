"""The training pipeline on a tiny model: class rebalancing, the losses, a smoke run that
writes official-format checkpoints which reload with `load_checkpoint`, and resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from export.model.checkpoint import load_checkpoint  # noqa: E402
from export.train import data as tdata  # noqa: E402
from export.train.losses import (  # noqa: E402
    laplacian,
    rebalance_weights,
    spixel_loss,
    weighted_ce,
)
from export.train.train import TrainConfig, ship_checkpoint, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "width": 0.0625,
    "segnet_width": 0.25,
    "n_layers": 1,
    "d_model": 16,
    "n_heads": 2,
    "ffn_dim": 32,
    "res_blocks": 1,
}


def _prior() -> np.ndarray:
    return np.load(ROOT / "service" / "data" / "gamut_probs.npy")


def test_rebalance_weights_formula():
    p = _prior()
    w = rebalance_weights(p, 0.5)
    expected = 1.0 / (0.5 * p + 0.5 / 313)
    expected /= (p * expected).sum()
    np.testing.assert_allclose(w, expected, rtol=1e-6)
    assert (p * w).sum() == pytest.approx(1.0, abs=1e-5)
    assert w.min() == pytest.approx(0.0965, abs=5e-4)
    assert w.max() == pytest.approx(6.17, abs=5e-3)
    pts = np.load(ROOT / "service" / "data" / "gamut_pts.npy")
    assert tuple(pts[w.argmin()]) == (0, 0)  # the gray bin is the most common, least weighted
    w8 = rebalance_weights(p, 0.8)
    assert w8.min() == pytest.approx(0.183, abs=1e-3) and w8.max() == pytest.approx(3.07, abs=1e-2)


def test_weighted_ce_is_the_weighted_mean():
    logits = torch.randn(2, 5, 313)
    target = torch.randint(0, 313, (2, 5))
    w = torch.rand(313)
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none")
    assert weighted_ce(logits, target, w) == pytest.approx(float((w[target.flatten()] * ce).mean()))


def test_spixel_loss_is_zero_for_constant_colour_and_hard_centre_assignment():
    # A = 1 on the centre slot: pooling is the cell mean, diffusion copies it back. A constant
    # ab is reconstructed exactly; positions are off by the distance to the cell centre.
    affinity = torch.zeros(1, 9, 32, 32)
    affinity[:, 4] = 1
    ab = torch.full((1, 2, 32, 32), 0.3)
    _, feat, pos = spixel_loss(affinity, ab, 16)
    assert float(feat) == pytest.approx(0.0, abs=1e-6)
    assert 0 < float(pos) < 1


def test_laplacian_of_a_linear_ramp_is_zero():
    x = torch.arange(10.0).repeat(10, 1)[None, None].repeat(1, 2, 1, 1)
    assert laplacian(x).abs().max() == 0 and laplacian(x).shape == (1, 2, 8, 8)


def _photos(folder: Path, n: int = 4, size: int = 72) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        t = (xx if i % 2 else yy)[..., None]
        img = (c0 * (1 - t) + c1 * t + rng.normal(0, 8, (size, size, 3))).clip(0, 255)
        Image.fromarray(img.astype(np.uint8)).save(folder / f"p{i}.png")
    return folder


def test_smoke_run_checkpoint_and_resume(tmp_path: Path):
    photos = _photos(tmp_path / "photos")
    tc = TrainConfig(
        data=str(photos),
        out=str(tmp_path / "run"),
        model=TINY,
        spix_steps=3,
        steps=4,
        batch=2,
        crop=64,
        big_crop=64,
        big_batch=1,
        big_fraction=0.5,
        val_every=2,
        sample_every=4,
        log_every=1,
        ckpt_every_s=1e9,
        threads=1,  # robust on a shared 2-core machine (2 threads stall under contention)
        chroma_aug=0.5,
        anchor_weight=1.0,
        hint_lr_mult=5.0,
    )
    summary = train(tc, progress=False)
    run = tmp_path / "run"
    assert summary["step"] == 7 and np.isfinite(summary["best_val_loss"])
    assert {"spixnet.pth.tar", "last.pth.tar", "best.pth.tar"} <= {p.name for p in run.iterdir()}
    assert list((run / "samples").glob("*.png"))

    last = torch.load(run / "last.pth.tar", map_location="cpu", weights_only=False)
    assert {"epoch", "state_dict", "best_loss", "optimizer", "config"} <= set(last)
    assert last["epoch"] == 7 and last["config"]["img_size"] == 256
    sd = last["state_dict"]
    assert any(k.endswith("weight_orig") for k in sd)  # official spectral-norm layout
    assert "repnet.conv1_2.0.weight_u" in sd and "repnet.conv1_2.0.weight" not in sd
    assert not any(k.startswith("module.") for k in sd)

    shipped = ship_checkpoint(run / "best.pth.tar", tmp_path / "ship" / "m.pth.tar")
    small = torch.load(shipped, map_location="cpu", weights_only=True)
    assert set(small) == {"epoch", "state_dict", "best_loss", "config"}
    model = load_checkpoint(shipped)
    assert model.cfg.d_model == 16 and model.cfg.img_size == 256
    with torch.no_grad():
        ab = model(torch.zeros(1, 1, 256, 256), torch.zeros(1, 256), torch.zeros(1, 256).long())
    assert ab.shape == (1, 2, 256, 256) and torch.isfinite(ab).all()

    history = [h for h in last["history"] if "loss" in h and h["stage"] == 2]
    assert all(np.isfinite(h["loss"]) for h in history)
    vals = [h["val"] for h in last["history"] if "val" in h]
    for key in ("anchor_oracle_gain", "anchor_diverse_spread", "anchor_hint_response"):
        assert np.isfinite(vals[-1][key])  # anchor use is watched during training

    tc.steps = 6  # two more stage-2 steps: resume continues the counter, not from 0
    summary = train(tc, resume=True, progress=False)
    assert summary["step"] == 9
    resumed = torch.load(run / "last.pth.tar", map_location="cpu", weights_only=False)
    steps = [h["step"] for h in resumed["history"] if "loss" in h]
    assert steps == list(range(1, 10))


def test_stage1_loss_decreases(tmp_path: Path):
    photos = _photos(tmp_path / "photos")
    tc = TrainConfig(
        data=str(photos),
        out=str(tmp_path / "run"),
        model=TINY,
        spix_steps=30,
        steps=0,
        batch=2,
        crop=64,
        log_every=10,
        ckpt_every_s=1e9,
        threads=1,  # robust on a shared 2-core machine (2 threads stall under contention)
        spix_lr=3e-3,
        lr_final=1.0,
    )
    train(tc, progress=False)
    last = torch.load(tmp_path / "run" / "last.pth.tar", map_location="cpu", weights_only=False)
    losses = [h["loss"] for h in last["history"] if "loss" in h]
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_random_crop_shapes():
    rng = np.random.default_rng(0)
    img = np.zeros((100, 150, 3), np.uint8)
    batch = tdata.sample_batch([img], 3, 64, rng, (72, 96))
    assert batch.shape == (3, 3, 64, 64) and batch.dtype == np.float32
    assert tdata.assign_splits([f"n{i}" for i in range(20)]) == tdata.assign_splits(
        [f"n{i}" for i in reversed(range(20))]
    )


def test_train_command_is_registered():
    from typer.testing import CliRunner

    from service.cli import app

    res = CliRunner().invoke(app, ["train", "--help"])
    assert res.exit_code == 0 and "--resume" in res.output


def test_chroma_transform_rotates_and_scales_or_is_identity():
    from export.train.train import chroma_transform

    torch.manual_seed(0)
    off = chroma_transform(4, 0.0, (0.6, 1.6), torch.device("cpu"))
    assert torch.allclose(off, torch.eye(2).expand(4, 2, 2))
    on = chroma_transform(64, 1.0, (0.6, 1.6), torch.device("cpu"))
    scale = torch.linalg.det(on).sqrt()  # rotation x scale: det = scale^2, columns orthogonal
    assert ((scale > 0.59) & (scale < 1.61)).all() and scale.std() > 0.1
    gram = on.transpose(1, 2) @ on
    assert torch.allclose(gram, scale[:, None, None] ** 2 * torch.eye(2), atol=1e-5)
    angles = torch.atan2(on[:, 1, 0], on[:, 0, 0])
    assert angles.std() > 1.0  # rotations all round the ab plane, not a small jitter


def test_anchor_consistency_is_zero_only_where_the_anchors_are_painted():
    """The superpixel mean of the prediction at each anchor vs the anchor's bin colour."""
    from export.model.disco import Disco, DiscoConfig
    from export.train.train import ColorizationLoss, TrainConfig

    bins = torch.from_numpy(np.load(ROOT / "service" / "data" / "gamut_pts.npy").astype(np.float32))
    model = Disco(DiscoConfig(**{**TINY, "img_size": 64}))
    crit = ColorizationLoss(model, torch.ones(313), bins, TrainConfig(data="", out=""))
    s = model.cfg.sp_size
    # Hard affinity: every pixel belongs to its own cell (slot 4 = the centre of the 3x3).
    affinity = torch.zeros(1, 9, 64, 64)
    affinity[:, 4] = 1.0
    labels = torch.randint(0, 313, (1, 16), generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 16)
    mask[0, [0, 5, 10]] = 1.0
    cell_ab = (bins[labels[0]] / 110.0).T.reshape(1, 2, 4, 4)
    painted = cell_ab.repeat_interleave(s, 2).repeat_interleave(s, 3)
    assert crit.anchor_consistency(painted, affinity, mask, labels) < 1e-6
    off = painted.clone()
    off[:, :, s : 2 * s, s : 2 * s] += 0.2  # the anchor at token 5 is 0.2 off in a and b
    assert abs(float(crit.anchor_consistency(off, affinity, mask, labels)) - 0.2 / 3) < 1e-5
    other = painted.clone()
    other[:, :, :s, s : 2 * s] += 0.2  # token 1: no anchor there, no loss
    assert crit.anchor_consistency(other, affinity, mask, labels) < 1e-6


def test_superpixel_labels_follow_the_affinity_slots():
    from export.train.anchor_metrics import superpixel_labels

    aff = np.zeros((9, 32, 32), np.float32)
    aff[4] = 1.0  # every pixel to its own cell
    lab = superpixel_labels(aff)
    assert lab[0, 0] == 0 and lab[0, 16] == 1 and lab[16, 0] == 2 and lab[31, 31] == 3
    aff[4, 16:, 16:] = 0.0
    aff[0, 16:, 16:] = 1.0  # the bottom-right cell's pixels go to the cell up-left of it
    assert (superpixel_labels(aff)[16:, 16:] == 0).all()


def test_hint_stage_trains_only_the_hint_path(tmp_path: Path):
    """The hint stage moves trg_word_emb / hintpath / trg_word_prj and nothing else, restores
    requires_grad, and records anchor use (non-anchor error with vs without the anchors)."""
    from export.model.disco import Disco, DiscoConfig
    from export.train.hint_stage import HINT_MODULES, pretrain_hint_path

    photos = tdata.load_photos(_photos(tmp_path / "photos", size=96))
    model = Disco(DiscoConfig(**{**TINY, "img_size": 64}))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bins = torch.from_numpy(np.load(ROOT / "service" / "data" / "gamut_pts.npy").astype(np.float32))
    quiet = {"steps": 3, "log_every": 3, "log": lambda m: None}
    hist = pretrain_hint_path(model, photos[:3], photos[3:], torch.ones(313), bins, **quiet)
    assert [h["step"] for h in hist] == [0, 3]
    assert all(np.isfinite(h["with_anchors"]) and np.isfinite(h["withheld"]) for h in hist)
    after = model.state_dict()
    moved = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert moved and moved <= set(HINT_MODULES), moved
    assert all(p.requires_grad for p in model.parameters())


def test_train_only_freezes_the_other_modules(tmp_path: Path):
    """--hint-steps then --train-only: stage 2 leaves repnet / wildpath as the hint stage left
    them and trains enhanceNet."""
    from export.model.disco import Disco
    from export.train.train import add_spectral_norm, build_config, init_weights, make_checkpoint

    # A random model whose spectral-norm vectors have converged, as in any trained checkpoint
    # (eval-mode SN with its initial random u gives unbounded features).
    model = add_spectral_norm(Disco(build_config(TrainConfig(data="", out="", model=TINY))))
    init_weights(model)
    with torch.no_grad():
        for _ in range(20):
            model.repnet(torch.zeros(1, 1, 64, 64))
            model.enhanceNet(torch.zeros(1, 1 + TINY["d_model"], 64, 64))
    torch.save(make_checkpoint(model, 0, 0.0, None), tmp_path / "init.pth.tar")
    tc = TrainConfig(
        init=str(tmp_path / "init.pth.tar"),
        data=str(_photos(tmp_path / "photos")),
        out=str(tmp_path / "run"),
        model=TINY,
        spix_steps=0,
        hint_steps=2,
        steps=2,
        batch=2,
        crop=64,
        big_crop=64,
        big_batch=1,
        val_every=2,
        sample_every=100,
        ckpt_every_s=1e9,
        threads=1,
        train_only=("enhanceNet", "hintpath", "trg_word_emb", "trg_word_prj"),
        val_anchor_metrics=False,
    )
    train(tc, progress=False)
    run = tmp_path / "run"
    hint = torch.load(run / "hint.pth.tar", map_location="cpu", weights_only=False)["state_dict"]
    last = torch.load(run / "last.pth.tar", map_location="cpu", weights_only=False)
    sd = last["state_dict"]
    for prefix, should_move in (("repnet.", False), ("wildpath.", False), ("enhanceNet.", True)):
        keys = [k for k in sd if k.startswith(prefix) and sd[k].is_floating_point()]
        moved = any(not torch.equal(sd[k], hint[k]) for k in keys)
        assert moved == should_move, prefix
    assert any("hint_stage" in h for h in last["history"])
    with pytest.raises(ValueError, match="no such module"):
        train(TrainConfig(data=tc.data, out=str(tmp_path / "x"), model=TINY, train_only=("nope",)))

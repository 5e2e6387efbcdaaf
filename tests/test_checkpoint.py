"""Loading official-format checkpoints from disk: the happy path and every way it can go wrong."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from export.model.checkpoint import (  # noqa: E402
    CheckpointError,
    load_checkpoint,
    make_test_checkpoint,
)
from export.model.disco import Disco, disco_demo  # noqa: E402


@pytest.fixture(scope="module")
def demo_ckpt():
    """A small architecture's official-format checkpoint (same key names, narrower)."""
    model = disco_demo(n_layers=1)
    return make_test_checkpoint(0, model), model.cfg


def _save(tmp_path, obj, name="model.pth.tar"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def test_official_format_loads_with_spectral_norm_folded(tmp_path, demo_ckpt):
    ckpt, cfg = demo_ckpt
    model = load_checkpoint(_save(tmp_path, ckpt))
    assert model.cfg == cfg and not model.training
    sd = ckpt["state_dict"]
    torch.testing.assert_close(
        model.state_dict()["enhanceNet.residual.1.conv.1.weight"],
        sd["enhanceNet.residual.1.conv.1.weight_orig"] / 2,
        rtol=1e-6,
        atol=0,
    )


def test_module_prefix_and_bare_state_dict_load(tmp_path, demo_ckpt):
    ckpt, cfg = demo_ckpt
    wrapped = {"module." + k: v for k, v in ckpt["state_dict"].items()}
    model = load_checkpoint(_save(tmp_path, {"state_dict": wrapped, "config": cfg.to_dict()}))
    reference = load_checkpoint(_save(tmp_path, ckpt, "ref.pth.tar"))
    for k, v in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0)
    # a bare state_dict (no wrapper dict) loads into a given model
    bare = load_checkpoint(
        _save(tmp_path, ckpt["state_dict"], "bare.pth"), model=disco_demo(n_layers=1)
    )
    assert bare.state_dict().keys() == model.state_dict().keys()


def test_full_size_official_checkpoint_without_config(tmp_path):
    """The official file has no 'config': the official architecture is assumed."""
    ckpt = make_test_checkpoint(0)
    del ckpt["config"]
    ckpt["optimizer"] = {"state": {}, "param_groups": [{"lr": 2e-4, "params": [0, 1]}]}
    model = load_checkpoint(_save(tmp_path, ckpt))
    assert sum(p.numel() for p in model.parameters()) == 43_063_739


def test_missing_and_unexpected_keys_are_named(tmp_path, demo_ckpt):
    ckpt, cfg = demo_ckpt
    sd = dict(ckpt["state_dict"])
    del sd["trg_word_prj.weight"]
    sd["extra_head.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(_save(tmp_path, {"state_dict": sd, "config": cfg.to_dict()}))
    msg = str(e.value)
    assert "1 missing: trg_word_prj.weight" in msg and "1 unexpected: extra_head.weight" in msg


def test_bad_shape_is_named(tmp_path, demo_ckpt):
    ckpt, _ = demo_ckpt
    # a narrow checkpoint into the full-size architecture: shapes differ, keys agree
    with pytest.raises(CheckpointError, match=r"bad shape: segnet\.net\.conv0a\.0\.weight"):
        load_checkpoint(_save(tmp_path, {"state_dict": ckpt["state_dict"]}), model=Disco())


def test_incomplete_spectral_norm_triplet(tmp_path, demo_ckpt):
    ckpt, cfg = demo_ckpt
    sd = {k: v for k, v in ckpt["state_dict"].items() if k != "repnet.conv1_2.0.weight_u"}
    with pytest.raises(
        CheckpointError, match=r"repnet\.conv1_2\.0 lacks repnet\.conv1_2\.0\.weight_u"
    ):
        load_checkpoint(_save(tmp_path, {"state_dict": sd, "config": cfg.to_dict()}))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "cannot read"),
        (b"this is not a checkpoint", "cannot read"),
    ],
)
def test_non_checkpoint_files(tmp_path, content, match):
    path = tmp_path / "junk.pth.tar"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_wrong_object_and_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not a DISCO checkpoint"):
        load_checkpoint(_save(tmp_path, {"epoch": 3, "weights": [1, 2]}))
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth.tar")

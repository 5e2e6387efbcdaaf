"""`disco colorize` end to end with the torch engine: files and folders in, images out."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("torch")

from service import colorspace
from service.cli import app

runner = CliRunner()
FIXED = [(18, (20, 60)), (29, (-30, 40)), (74, (0, -40)), (87, (50, 30)),
         (133, (10, 10)), (154, (-10, -20)), (200, (30, -50)), (237, (0, 70))]  # fmt: skip


def _colorize(*args):
    """The torch reference engine with the seed-0 test weights (what the vectors were made with)."""
    result = runner.invoke(app, ["colorize", "--engine", "torch", *map(str, args)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.mark.parametrize("image", ["astronaut", "coffee"])
def test_kmeans_path_reproduces_vectors(tmp_path, vectors_dir, image):
    """Seed 130 draws the official first-image k-means init: the final ab matches."""
    out = tmp_path / "out"
    _colorize(vectors_dir / f"{image}_gray256.png", "-o", out, "--seed", 130, "--save-ab")
    ab = np.load(out / f"{image}_gray256.ab.npy")
    ref = np.load(vectors_dir / f"{image}_seed0_kmeans_rng130.npz")["final_ab"]
    assert ab.shape == (1, 2, 256, 256) and ab.dtype == np.float32
    assert np.abs(ab - ref).max() <= 5e-4
    assert Image.open(out / f"{image}_gray256.png").size == (256, 256)


def test_hints_path_reproduces_fixed_vectors(tmp_path, vectors_dir):
    hints = tmp_path / "hints.json"
    hints.write_text(json.dumps([{"token": t, "ab": list(ab)} for t, ab in FIXED]))
    out = tmp_path / "out"
    _colorize(vectors_dir / "coffee_gray256.png", "-o", out, "--hints", hints, "--save-ab",
              "--size", "model")  # fmt: skip
    ref = np.load(vectors_dir / "coffee_seed0_fixed.npz")
    ab = np.load(out / "coffee_gray256.ab.npy")
    assert np.abs(ab - ref["final_ab"]).max() <= 5e-4
    rgb = np.asarray(Image.open(out / "coffee_gray256.png").convert("RGB"))
    assert np.abs(rgb.astype(int) - ref["final_rgb_uint8"][0].astype(int)).max() <= 1


def test_diverse_folder_and_original_size(tmp_path, photos_dir):
    src = tmp_path / "in"
    src.mkdir()
    gray = Image.open(photos_dir / "chelsea.jpg").convert("L").resize((300, 180))
    gray.save(src / "cat.png")
    out = tmp_path / "out"
    result = _colorize(src, "-o", out, "--diverse", 3, "--anchors", 5, "--save-ab")
    assert "colorized 1/1" in result.output
    ab = np.load(out / "cat.ab.npy")
    assert ab.shape == (3, 2, 256, 256)
    assert not np.array_equal(ab[0], ab[1]) and not np.array_equal(ab[1], ab[2])
    l_in = colorspace.lightness(np.asarray(gray.convert("RGB")))
    for k in range(3):
        img = np.asarray(Image.open(out / f"cat_c{k}.png").convert("RGB"))
        assert img.shape == (180, 300, 3)
        assert np.abs(colorspace.lightness(img) - l_in).max() <= 1.0
    # the first diverse result is the single result (T = 0)
    single = tmp_path / "single"
    _colorize(src / "cat.png", "-o", single, "--anchors", 5, "--save-ab")
    np.testing.assert_array_equal(np.load(single / "cat.ab.npy")[0], ab[0])


def test_bad_inputs_are_reported(tmp_path, vectors_dir):
    src = tmp_path / "in"
    src.mkdir()
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (src / "ok.png").write_bytes((vectors_dir / "coffee_gray256.png").read_bytes())
    result = runner.invoke(app, ["colorize", str(src), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "colorized 1/2" in result.output and "broken.png" in result.output
    assert (tmp_path / "out" / "ok.png").exists()

    bad_hints = tmp_path / "h.json"
    bad_hints.write_text('[{"token": 300, "ab": [0, 0]}]')
    result = runner.invoke(
        app, ["colorize", str(src / "ok.png"), "-o", str(tmp_path), "--hints", str(bad_hints)]
    )
    assert result.exit_code == 2 and "token" in result.output
    result = runner.invoke(app, ["colorize", str(tmp_path / "missing.png"), "-o", str(tmp_path)])
    assert result.exit_code == 2 and "no such file" in result.output

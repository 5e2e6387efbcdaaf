"""Video colorization: PyAV round trip through the anchored pipeline, flicker metric, bad input."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service import colorspace
from service.settings import BUNDLED_MODEL_DIR
from service.video import colorize, io, metrics, synthetic

PHOTO = Path(__file__).parent / "data" / "photos" / "astronaut.jpg"


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.asarray(Image.open(PHOTO).convert("RGB"))


def test_colorized_video_keeps_count_size_rate(tmp_path: Path, photo: np.ndarray) -> None:
    from service.engine.onnx import OnnxEngine

    src = synthetic.write_clip(tmp_path / "in.mp4", synthetic.pan_frames(photo, n=10, size=64))
    eng = OnnxEngine(BUNDLED_MODEL_DIR)
    rgb = colorize.AnchoredColorizer(eng, batch_size=4).colorize(io.frames(src))
    n = io.write(src, tmp_path / "out.mp4", rgb)
    decoded = list(io.frames(tmp_path / "out.mp4"))
    assert n == len(decoded) == 10
    assert decoded[0].shape == (64, 64, 3)
    assert io.probe(tmp_path / "out.mp4")[2] == Fraction(12)
    assert metrics.colourfulness(decoded[5]) > 1.0  # it is colour, not gray


def test_flicker_is_low_on_pure_motion_high_on_colour_noise(photo: np.ndarray) -> None:
    steady = synthetic.pan_frames(photo, n=6, size=96, step=2.0)
    rng = np.random.default_rng(0)
    flick = []
    for f in steady:  # same motion, hue shifted per frame
        shift = rng.integers(-40, 40, size=3)
        flick.append(np.clip(f.astype(int) + shift, 0, 255).astype(np.uint8))
    m_steady, m_flick = metrics.flicker(steady), metrics.flicker(flick)
    assert m_steady["reliable_fraction"] > 0.5
    assert m_steady["flicker_ab"] < 2.0
    assert m_flick["flicker_ab"] > 3 * m_steady["flicker_ab"]


def test_cut_detector(photo: np.ndarray) -> None:
    a, b = synthetic.pan_frames(photo, n=2, size=64)
    lab = [colorspace.preprocess(x)[0, 0] for x in (a, b)]
    assert not colorize.is_cut(lab[0], lab[1])
    assert colorize.is_cut(lab[0], -np.ones_like(lab[1]))


def test_bad_input_is_a_video_error(tmp_path: Path) -> None:
    junk = tmp_path / "x.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(io.VideoError):
        io.probe(junk)
    with pytest.raises(io.VideoError):
        list(io.frames(junk))


def test_anchored_flickers_less_than_per_frame_and_keeps_colour(tmp_path: Path, photo) -> None:
    """The issue's target on one synthetic pan (the full table: tools/video_flicker.py)."""
    from service.engine.onnx import OnnxEngine

    src = synthetic.write_clip(tmp_path / "pan.mp4", synthetic.pan_frames(photo, n=16, size=96))
    eng = OnnxEngine(BUNDLED_MODEL_DIR)
    ind = metrics.flicker(list(colorize.colorize_independent(eng, io.frames(src))))
    anc = metrics.flicker(list(colorize.AnchoredColorizer(eng).colorize(io.frames(src))))
    assert anc["flicker_ab"] < 0.6 * ind["flicker_ab"], (anc, ind)
    assert anc["colourfulness"] > 0.95 * ind["colourfulness"], (anc, ind)

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


def test_user_hints_set_the_first_shot_colours(tmp_path: Path, photo) -> None:
    """Hints for the first frame replace its k-means anchors and stay on the following frames:
    a blue hint grid gives bluer frames than an orange one, frame after frame."""
    from service.engine.onnx import OnnxEngine
    from service.hints import parse_hints

    src = synthetic.write_clip(tmp_path / "pan.mp4", synthetic.pan_frames(photo, n=10, size=64))
    eng = OnnxEngine(BUNDLED_MODEL_DIR)

    def mean_b(color: str) -> np.ndarray:
        hints = parse_hints([{"token": t, "color": color} for t in range(0, 256, 5)])
        frames = colorize.AnchoredColorizer(eng, batch_size=4, hints=hints).colorize(io.frames(src))
        return np.array([colorspace.srgb_to_lab(f)[..., 2].mean() for f in frames])

    blue, orange = mean_b("#2050e0"), mean_b("#e07020")
    assert len(blue) == len(orange) == 10
    assert (orange - blue > 10.0).all(), (orange, blue)


def test_cli_colorize_video_with_hints(tmp_path: Path, photo) -> None:
    """`disco colorize-video IN -o OUT --hints FILE` as a user runs it: a progress bar on
    stderr, an MP4 that decodes to the input's frames; a bad hints file is a usage error."""
    import subprocess
    import sys

    disco = Path(sys.executable).with_name("disco")
    src = synthetic.write_clip(tmp_path / "in.mp4", synthetic.pan_frames(photo, n=6, size=48))
    good, bad = tmp_path / "hints.json", tmp_path / "bad.json"
    good.write_text('[{"x": 0.5, "y": 0.5, "color": "#2050e0"}]')
    bad.write_text('[{"x": 0.5}]')
    out = tmp_path / "out.mp4"
    run = subprocess.run([str(disco), "colorize-video", str(src), "-o", str(out),
                          "--hints", str(good)], capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "6/6" in run.stderr and "6 frames" in run.stdout
    assert len(list(io.frames(out))) == 6
    run = subprocess.run([str(disco), "colorize-video", str(src), "-o", str(tmp_path / "x.mp4"),
                          "--hints", str(bad)], capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 2 and "bad.json" in run.stderr, run.stderr


def test_refresh_takes_fresh_anchors_only_when_more_colourful(tmp_path: Path, photo) -> None:
    """Every `refresh` hinted frames new candidates are drawn; they replace the keyframe only
    above `rise` x the tracked frame's colourfulness (rise 0: always, rise 1e9: never)."""
    from service.engine.onnx import OnnxEngine

    frames = synthetic.pan_frames(photo, n=12, size=64, step=1.0)
    src = synthetic.write_clip(tmp_path / "pan.mp4", frames)
    eng = OnnxEngine(BUNDLED_MODEL_DIR)
    counts = {}
    for rise in (0.0, 1e9):
        c = colorize.AnchoredColorizer(eng, batch_size=4, refresh=4, rise=rise, fade=0.0)
        assert len(list(c.colorize(io.frames(src)))) == 12
        counts[rise] = c.keyframes
    assert counts[1e9] == 1  # the first frame only
    assert counts[0.0] == 3  # + a fresh keyframe after every 4 hinted frames (frames 5 and 10)


def _clip_with_audio(path: Path, frames: list[np.ndarray], fps: int = 12) -> np.ndarray:
    """A gray H.264 clip with a 440 Hz AAC tone as long as the video; returns the tone."""
    import av

    rate, seconds = 16000, len(frames) / fps
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate)).astype("f4")
    with av.open(str(path), "w", format="mp4") as out:
        v = out.add_stream("libx264", rate=fps)
        v.height, v.width, v.pix_fmt = *frames[0].shape[:2], "yuv420p"
        a = out.add_stream("aac", rate=rate, layout="mono")
        for f in frames:
            gray = np.repeat(f.mean(-1, keepdims=True).astype(np.uint8), 3, axis=2)
            for p in v.encode(av.VideoFrame.from_ndarray(gray, format="rgb24")):
                out.mux(p)
        for p in v.encode():
            out.mux(p)
        for start in range(0, len(tone), 1024):
            chunk = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="fltp",
                                               layout="mono")  # fmt: skip
            chunk.sample_rate, chunk.pts = rate, start
            for p in a.encode(chunk):
                out.mux(p)
        for p in a.encode():
            out.mux(p)
    return tone


def test_audio_is_kept(tmp_path: Path, photo) -> None:
    """The input's audio track comes out unchanged (copied, not re-encoded) beside the colour."""
    import av

    from service.engine.onnx import OnnxEngine

    src = tmp_path / "in.mp4"
    _clip_with_audio(src, synthetic.pan_frames(photo, n=12, size=48))
    eng = OnnxEngine(BUNDLED_MODEL_DIR)
    out = tmp_path / "out.mp4"
    assert io.write(src, out, colorize.AnchoredColorizer(eng).colorize(io.frames(src))) == 12

    def audio(path: Path) -> tuple[str, int, list[bytes], np.ndarray]:
        with av.open(str(path)) as c:
            s = c.streams.audio[0]
            packets = [bytes(p) for p in c.demux(s) if p.size]
        with av.open(str(path)) as c:
            pcm = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])
        return s.codec_context.name, s.codec_context.sample_rate, packets, pcm

    name_in, rate_in, packets_in, pcm_in = audio(src)
    name_out, rate_out, packets_out, pcm_out = audio(out)
    assert (name_out, rate_out) == (name_in, rate_in) == ("aac", 16000)
    assert packets_out == packets_in and len(pcm_out) == len(pcm_in)  # a stream copy
    spectrum = np.abs(np.fft.rfft(pcm_out))
    assert np.argmax(spectrum) * 16000 / len(pcm_out) == pytest.approx(440, abs=5)


def test_disco_eval_video_scores_flicker_on_pans_and_a_real_clip(tmp_path: Path) -> None:
    """`disco eval --video --clips`: the flicker table for a checkpoint, pans/zooms over the
    photos plus a real clip (OpenCV's vtest.avi excerpt, tests/data/clips); on the real clip the
    anchored pipeline flickers less than per-frame colorization."""
    import json
    import shutil

    from typer.testing import CliRunner

    from service.cli import app

    root = Path(__file__).resolve().parents[1]
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(PHOTO, photos / PHOTO.name)
    ckpt, clip = root / "models/disco-demo/disco-demo.pth.tar", PHOTO.parents[1] / "clips/vtest.mp4"
    args = ["eval", str(photos), "--checkpoint", str(ckpt), "--no-anchor-metrics", "--video",
            "--video-frames", "6", "--clips", str(clip), "-o", str(tmp_path / "o")]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "| astronaut pan | 6 |" in res.output and "| vtest.mp4 | 30 |" in res.output
    video = {
        v["clip"]: v for v in json.loads((tmp_path / "o" / "metrics.json").read_text())["video"]
    }
    assert set(video) == {"astronaut pan", "astronaut zoom", "vtest.mp4"}
    real = video["vtest.mp4"]
    assert real["flicker_anchored"] < 0.5 * real["flicker_per_frame"], real
    assert real["flicker_original"] < real["flicker_anchored"]
    no_model = CliRunner().invoke(app, ["eval", str(photos), "--video"])
    assert no_model.exit_code == 2 and "--checkpoint" in no_model.output


def test_user_hints_hold_for_the_whole_shot() -> None:
    """A refresh or a fade never replaces the user's anchors with automatic ones: on the real
    vtest clip (one shot, fixed camera) a green hint on the lawn keeps it green on every frame,
    where the automatic anchors paint it red."""
    from service.engine.onnx import OnnxEngine
    from service.hints import parse_hints

    clip = PHOTO.parents[1] / "clips" / "vtest.mp4"
    eng = OnnxEngine(BUNDLED_MODEL_DIR)
    hints = parse_hints([{"x": 0.5, "y": 0.8, "color": "#30a030"}])

    def lawn_a(**kw) -> np.ndarray:  # mean Lab a of the lawn (bottom left), per frame
        frames = colorize.AnchoredColorizer(eng, **kw).colorize(io.frames(clip))
        return np.array([colorspace.srgb_to_lab(f)[110:, :80, 1].mean() for f in frames])

    hinted, auto = lawn_a(hints=hints), lawn_a()
    assert len(hinted) == 30
    assert (hinted < -5).all(), hinted.round(1)
    assert (auto > 5).all(), auto.round(1)  # without the hint the lawn is red: the hint matters


class _CountingEngine:
    """A real engine that counts the rows it is asked to encode and generate."""

    def __init__(self, engine) -> None:
        self.engine, self.encoded, self.generated = engine, 0, 0

    def encode(self, l_norm, init_idx):
        self.encoded += len(l_norm)
        return self.engine.encode(l_norm, init_idx)

    def generate(self, l_norm, *rest):
        self.generated += len(l_norm)
        return self.engine.generate(l_norm, *rest)


def test_keyframe_candidates_reuse_the_frames_encoding(photo) -> None:
    """Each frame goes through the encoder once: the keyframe's candidates and the refresh
    draws are k-means runs on the batch's stored encoding, not encoder passes of their own."""
    from service.engine.onnx import OnnxEngine

    frames = synthetic.pan_frames(photo, n=12, size=64, step=1.0)
    eng = _CountingEngine(OnnxEngine(BUNDLED_MODEL_DIR))
    c = colorize.AnchoredColorizer(eng, batch_size=4, refresh=4, rise=0.0, fade=0.0)
    assert len(list(c.colorize(frames))) == 12
    assert c.keyframes == 3  # the first frame, then a refresh after every 4 hinted frames
    assert eng.encoded == 12  # was 24: 4 more encoder rows per keyframe
    assert eng.generated >= 12 + c.candidates * c.keyframes


def test_run_encoded_equals_run(photo) -> None:
    """Drawing the anchors again on a stored encoding gives what a fresh `run` gives: the same
    anchors, the same images, for every seed, anchor count and diverse count."""
    from service.engine.onnx import OnnxEngine
    from service.hints import parse_hints
    from service.pipeline import Job, Timer, encode_batch, run, run_encoded

    eng = OnnxEngine(BUNDLED_MODEL_DIR)
    rgb = np.ascontiguousarray(photo[:96, :128])
    jobs = [Job(rgb, seed=s, anchors=k, count=n) for s, k, n in [(0, 8, 1), (5, 3, 1), (9, 8, 3)]]
    jobs.append(Job(rgb, hints=parse_hints('[{"x": 0.5, "y": 0.5, "color": "#20c020"}]')))
    l_norm, enc = encode_batch(eng, [Job(np.zeros((40, 30, 3), np.uint8)), Job(rgb)], Timer())
    again = run_encoded(eng, jobs, l_norm, enc, 1)
    fresh = run(eng, jobs)
    for a, b in zip(again, fresh, strict=True):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert x.anchors == y.anchors
            np.testing.assert_array_equal(x.image, y.image)

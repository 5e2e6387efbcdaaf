"""Compare per-frame independent colorization with the anchored pipeline on synthetic clips.

Usage: .venv/bin/python tools/video_flicker.py [--frames 24] [--size 96]
    [--photos astronaut chelsea] [--candidates 4] [--fade 0.9] [--refresh 8] [--rise 1.1]

"colour original" is the flicker of the colour footage the gray clip was made from: what the
metric reads on a perfect result (resampling and compression, not colour changes).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from service.engine.onnx import OnnxEngine
from service.settings import BUNDLED_MODEL_DIR
from service.video import colorize, io, metrics, synthetic

PHOTOS = Path(__file__).resolve().parents[1] / "tests" / "data" / "photos"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--candidates", type=int, default=4, help="keyframe candidates per shot")
    ap.add_argument(
        "--photos", nargs="*", default=["astronaut", "chelsea"], help="tests/data/photos stems"
    )
    ap.add_argument("--fade", type=float, default=0.9, help="re-key below this x key colour")
    ap.add_argument("--refresh", type=int, default=8, help="try fresh anchors every N frames")
    ap.add_argument("--rise", type=float, default=1.1, help="... and take them above this x")
    args = ap.parse_args()
    eng = OnnxEngine(BUNDLED_MODEL_DIR)
    with tempfile.TemporaryDirectory() as tmp:
        for photo_path in (PHOTOS / f"{stem}.jpg" for stem in args.photos):
            photo = np.asarray(Image.open(photo_path).convert("RGB"))
            for name, kw in (("pan", {"step": 2.0}), ("zoom", {"step": 0.0, "zoom": 0.01})):
                clip = synthetic.pan_frames(photo, n=args.frames, size=args.size, **kw)
                truth = metrics.flicker(clip)  # the colour footage itself: the metric's floor
                src = synthetic.write_clip(Path(tmp) / "c.mp4", clip)
                ind = metrics.flicker(list(colorize.colorize_independent(eng, io.frames(src))))
                anc = metrics.flicker(
                    list(
                        colorize.AnchoredColorizer(
                            eng,
                            candidates=args.candidates,
                            fade=args.fade,
                            refresh=args.refresh,
                            rise=args.rise,
                        ).colorize(io.frames(src))
                    )
                )
                ratio = anc["flicker_ab"] / ind["flicker_ab"]
                print(f"{photo_path.stem:10s} {name:4s} flicker per-frame {ind['flicker_ab']:.3f} "
                      f"anchored {anc['flicker_ab']:.3f} (x{ratio:.2f}); colourfulness "
                      f"{ind['colourfulness']:.1f} -> {anc['colourfulness']:.1f}; colour original: "
                      f"flicker {truth['flicker_ab']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()

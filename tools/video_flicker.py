"""Compare per-frame independent colorization with the anchored pipeline on synthetic clips
(pans and zooms over tests/data/photos) and the real clips of tests/data/clips, bundled model,
ONNX Runtime on the CPU. `disco eval --video` runs the same comparison for any checkpoint.

Usage: .venv/bin/python tools/video_flicker.py [--frames 24] [--size 96]
    [--photos astronaut chelsea] [--clips tests/data/clips] [--candidates 4] [--fade 0.9]
    [--refresh 8] [--rise 1.1]

"flicker colour original" is the flicker of the colour footage the gray clip was made from:
what the metric reads on a perfect result (resampling and compression, not colour changes).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from service.engine.onnx import OnnxEngine
from service.settings import BUNDLED_MODEL_DIR
from service.video import evaluate

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--candidates", type=int, default=4, help="keyframe candidates per shot")
    ap.add_argument(
        "--photos", nargs="*", default=["astronaut", "chelsea"], help="tests/data/photos stems"
    )
    ap.add_argument("--clips", type=Path, nargs="*", default=[DATA / "clips"], help="real clips")
    ap.add_argument("--fade", type=float, default=0.9, help="re-key below this x key colour")
    ap.add_argument("--refresh", type=int, default=8, help="try fresh anchors every N frames")
    ap.add_argument("--rise", type=float, default=1.1, help="... and take them above this x")
    args = ap.parse_args()
    photos = {s: np.asarray(Image.open(DATA / "photos" / f"{s}.jpg").convert("RGB"))
              for s in args.photos}  # fmt: skip
    clips = [c for folder in args.clips for c in evaluate.video_files(folder)]
    scores = evaluate.score_all(
        OnnxEngine(BUNDLED_MODEL_DIR), photos, clips, args.frames, args.size,
        candidates=args.candidates, fade=args.fade, refresh=args.refresh, rise=args.rise,
    )  # fmt: skip
    print(evaluate.table(scores))


if __name__ == "__main__":
    main()

"""Cut the real test clips in tests/data/clips/ out of Debian's opencv-doc (OpenCV sample data,
Apache-2.0 AND BSD-3-Clause): a few seconds each, downscaled, re-encoded as H.264 in colour (the
colour original is the flicker metric's floor; the pipeline only sees its lightness).

    python tools/make_test_clips.py [--out tests/data/clips]   # needs `apt-get update` once
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import av
import cv2

ROOT = Path(__file__).resolve().parents[1]
DATA = "usr/share/doc/opencv-doc/examples/data"
# name: (source file, first frame, frames, width, height)
CLIPS = {
    "vtest": ("vtest.avi", 0, 30, 192, 144),  # fixed camera, pedestrians on a lawn and a road
    "tree": ("tree.avi", 30, 30, 160, 120),  # hand-held, a tree against the sky, a hand enters
}


def cut(src: Path, dst: Path, first: int, count: int, width: int, height: int) -> int:
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4") as out:
        rate = inp.streams.video[0].average_rate
        v = out.add_stream("libx264", rate=rate, options={"crf": "20"})
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        n = 0
        for i, frame in enumerate(inp.decode(video=0)):
            if i < first:
                continue
            if n == count:
                break
            rgb = cv2.resize(frame.to_ndarray(format="rgb24"), (width, height),
                             interpolation=cv2.INTER_AREA)  # fmt: skip
            for p in v.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(p)
            n += 1
        for p in v.encode():
            out.mux(p)
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "clips")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", "opencv-doc"], cwd=tmp, check=True)
        deb = next(Path(tmp).glob("opencv-doc_*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(Path(tmp) / "x")], check=True)
        for name, (file, first, count, w, h) in CLIPS.items():
            n = cut(Path(tmp) / "x" / DATA / file, args.out / f"{name}.mp4", first, count, w, h)
            print(f"{name}.mp4: {n} frames {w}x{h} from {deb.name}:{DATA}/{file} (frame {first})")


if __name__ == "__main__":
    main()

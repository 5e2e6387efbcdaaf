"""Video decode/encode with PyAV: keep frame rate, size and audio; write H.264 MP4."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


class VideoError(ValueError):
    """The input is not a decodable video."""


def probe(path: Path) -> tuple[int, int, Fraction, int]:
    """(width, height, frame rate, frame count estimate) or VideoError."""
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise VideoError("no video stream")
            s = c.streams.video[0]
            rate = s.average_rate or s.guessed_rate or Fraction(25)
            return s.codec_context.width, s.codec_context.height, Fraction(rate), s.frames or 0
    except av.error.FFmpegError as e:
        raise VideoError(f"not a readable video: {e}") from e


def frames(path: Path) -> Iterator[np.ndarray]:
    try:
        with av.open(str(path)) as c:
            for fr in c.decode(video=0):
                yield fr.to_ndarray(format="rgb24")
    except av.error.FFmpegError as e:
        raise VideoError(f"corrupt video: {e}") from e


def write(
    src: Path, dst: Path, rgb: Iterable[np.ndarray], on_frame: Callable[[], None] | None = None
) -> int:
    """Encode frames as H.264 at the source's rate and size, copying the source's audio."""
    width, height, rate, _ = probe(src)
    n = 0
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4") as out:
        v = out.add_stream("libx264", rate=rate)
        v.width, v.height, v.pix_fmt = width + width % 2, height + height % 2, "yuv420p"
        audio_in = inp.streams.audio[0] if inp.streams.audio else None
        audio_out = out.add_stream_from_template(audio_in) if audio_in is not None else None
        for img in rgb:
            if img.shape[0] != v.height or img.shape[1] != v.width:
                img = np.pad(
                    img,
                    ((0, v.height - img.shape[0]), (0, v.width - img.shape[1]), (0, 0)),
                    mode="edge",
                )
            for p in v.encode(
                av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            ):
                out.mux(p)
            n += 1
            if on_frame:
                on_frame()
        for p in v.encode():
            out.mux(p)
        if audio_in is not None:
            for p in inp.demux(audio_in):
                if p.dts is None:
                    continue
                p.stream = audio_out
                out.mux(p)
    return n

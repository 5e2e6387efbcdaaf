"""Container metadata of an uploaded video and the admission limits, checked before any frame is
decoded: the API refuses what the worker could not (or should not) process with a clear 4xx."""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import av

# PyAV reads at most this much to find the streams (FFmpeg's default is 5 MB / 5 s)
_PROBE_OPTIONS = {"probesize": str(2 * 1024 * 1024), "analyzeduration": "2000000"}


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frames: int  # the container's count, else duration x rate
    duration_s: float
    has_audio: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class VideoRejected(ValueError):
    """An upload the service refuses: `status` (HTTP) and a stable `code`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def probe_bytes(data: bytes) -> VideoInfo:
    """Stream metadata from the container header (no frame decoded), or VideoRejected."""
    try:
        with av.open(io.BytesIO(data), options=_PROBE_OPTIONS) as c:
            if not c.streams.video:
                raise VideoRejected(415, "unsupported_video", "the file has no video stream")
            if c.format.name == "image2" or c.format.name.endswith("_pipe"):
                raise VideoRejected(
                    415, "unsupported_video", f"a still image ({c.format.name}), not a video"
                )
            s = c.streams.video[0]
            rate = s.average_rate or s.guessed_rate or s.base_rate
            fps = float(Fraction(rate)) if rate else 0.0
            if s.duration is not None and s.time_base is not None:
                duration = float(s.duration * s.time_base)
            elif c.duration is not None:
                duration = c.duration / av.time_base
            else:
                duration = 0.0
            frames = int(s.frames or 0) or round(duration * fps)
            width, height = s.codec_context.width, s.codec_context.height
            has_audio = bool(c.streams.audio)
    except VideoRejected:
        raise
    except (av.error.FFmpegError, OSError, ValueError, EOFError, ZeroDivisionError) as e:
        raise VideoRejected(
            415, "unsupported_video", f"not a readable video (corrupt or not a video): {e}"
        ) from e
    if width <= 0 or height <= 0:
        raise VideoRejected(400, "bad_video", f"the video declares an empty size {width}x{height}")
    if frames <= 0:
        raise VideoRejected(400, "empty_video", "the video has no frames")
    return VideoInfo(width, height, fps, frames, duration, has_audio)


def check_limits(
    info: VideoInfo, *, max_seconds: float, max_frames: int, max_pixel_frames: int, max_pixels: int
) -> None:
    """413 for a clip over any of the limits (the message says which and by how much)."""
    if info.duration_s > max_seconds:
        raise VideoRejected(
            413, "video_too_long", f"the video lasts {info.duration_s:.1f} s; the limit is "
            f"{max_seconds:g} s",
        )  # fmt: skip
    if info.frames > max_frames:
        raise VideoRejected(
            413, "video_too_many_frames", f"the video has {info.frames} frames; the limit is "
            f"{max_frames}",
        )  # fmt: skip
    if info.width * info.height > max_pixels:
        raise VideoRejected(
            413, "video_too_large", f"frames of {info.width}x{info.height} exceed the limit of "
            f"{max_pixels} pixels",
        )  # fmt: skip
    budget = info.width * info.height * info.frames
    if budget > max_pixel_frames:
        raise VideoRejected(
            413, "video_too_large", f"{info.width}x{info.height} x {info.frames} frames = "
            f"{budget} pixel-frames exceeds the limit of {max_pixel_frames}",
        )  # fmt: skip

"""A video job on the worker: uploaded bytes -> anchored colorization -> H.264 MP4 bytes.

Runs in a worker thread. Frames go through the worker's engine in batches of `batch_size` (the
encoder and generator batch dimension). Progress is published through `Progress`, which the
worker's event loop reads and writes to the job record; the same object carries a stop request
(cancelled by the client, or the delivery was taken over by another worker) back to the thread,
which gives up between frames. A redelivered job starts again from frame 0: its result is only
stored by the queue's completion, whose first writer wins, so a job never has two outputs.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.engine.base import Engine
from service.hints import MAX_HINTS, Hint, hints_field
from service.video import colorize as vc
from service.video import io as vio

ERR_CORRUPT = "corrupt_video"
ERR_EMPTY = "empty_video"


class VideoParams(BaseModel):
    """Options of a video job (query or form fields; re-validated by the worker)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    anchors: int = Field(8, ge=1, le=64, description="Anchors per shot keyframe.")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="k-means seed of the keyframes.")
    frames: int = Field(0, ge=0, description="Frame count from the probe (progress total).")
    hints: list[Hint] | None = Field(
        None, max_length=MAX_HINTS, description="User anchors for the first shot's first frame."
    )

    _hints_json = field_validator("hints", mode="before")(hints_field)


@dataclass
class Progress:
    total: int
    done: int = 0
    stop: str | None = None  # "cancel" or "superseded", set by the event loop


class VideoCancelled(Exception):
    """The client cancelled the running job."""


class Superseded(Exception):
    """Another delivery of the job took over (this worker's lease was lost): stop, store nothing."""


def colorize_bytes(
    engine: Engine, payload: bytes, params: VideoParams, batch_size: int, progress: Progress
) -> tuple[bytes, dict[str, Any]]:
    """The MP4 bytes and meta (width, height, fps, frames). Raises VideoError on corrupt input,
    VideoCancelled / Superseded when `progress.stop` is set."""

    def step() -> None:
        progress.done += 1
        if progress.stop == "cancel":
            raise VideoCancelled("cancelled while running")
        if progress.stop:
            raise Superseded("another delivery of this job took over")

    with tempfile.TemporaryDirectory(prefix="disco-video-") as tmp:
        src, dst = Path(tmp) / "in", Path(tmp) / "out.mp4"
        src.write_bytes(payload)
        width, height, rate, count = vio.probe(src)
        progress.total = count or progress.total
        colorizer = vc.AnchoredColorizer(
            engine, params.anchors, batch_size, params.seed, hints=params.hints
        )
        n = vio.write(src, dst, colorizer.colorize(vio.frames(src)), on_frame=step)
        if n == 0:
            raise vio.VideoError("the video has no decodable frames")
        progress.total = n
        meta = {
            "content_type": "video/mp4",
            "width": width + width % 2,
            "height": height + height % 2,
            "fps": float(rate),
            "frames": n,
        }
        return dst.read_bytes(), meta

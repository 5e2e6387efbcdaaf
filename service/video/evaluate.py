"""Flicker evaluation: per-frame independent colorization vs the anchored pipeline, same clip,
same engine; with the flicker of the colour original itself, which is what the metric reads on
a perfect result (resampling, compression and new pixels entering, not colour changes).

Used by `disco eval --video` and tools/video_flicker.py. Clips are either made by code (pans and
zooms over a photo: known motion) or real ones (tests/data/clips, from Debian's opencv-doc);
either way the pipeline only sees the lightness of an H.264 gray re-encode.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.engine.base import Engine
from service.video import colorize, io, metrics, synthetic

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")


@dataclass(frozen=True)
class ClipScore:
    clip: str
    frames: int
    flicker_per_frame: float
    flicker_anchored: float
    flicker_original: float
    colour_per_frame: float
    colour_anchored: float
    colour_original: float

    @property
    def ratio(self) -> float:
        return self.flicker_anchored / max(self.flicker_per_frame, 1e-9)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def synthetic_clips(photo: np.ndarray, frames: int = 24, size: int = 96) -> dict[str, list]:
    """A pan (2 px / frame to the right) and a zoom (1 % / frame) over a still photo."""
    return {
        "pan": synthetic.pan_frames(photo, n=frames, size=size, step=2.0),
        "zoom": synthetic.pan_frames(photo, n=frames, size=size, step=0.0, zoom=0.01),
    }


def video_files(folder: Path) -> list[Path]:
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)


def score_clip(engine: Engine, name: str, colour: list[np.ndarray], **anchored: Any) -> ClipScore:
    """Colorize the gray version of `colour` (RGB frames) both ways; `anchored` are
    `AnchoredColorizer` options (candidates, fade, refresh, ...)."""
    with tempfile.TemporaryDirectory(prefix="disco-flicker-") as tmp:
        src = synthetic.write_clip(Path(tmp) / "gray.mp4", colour, gray=True)
        ind = metrics.flicker(list(colorize.colorize_independent(engine, io.frames(src))))
        anc = metrics.flicker(
            list(colorize.AnchoredColorizer(engine, **anchored).colorize(io.frames(src)))
        )
    truth = metrics.flicker(colour)
    return ClipScore(
        name, len(colour), ind["flicker_ab"], anc["flicker_ab"], truth["flicker_ab"],
        ind["colourfulness"], anc["colourfulness"], truth["colourfulness"],
    )  # fmt: skip


def score_all(
    engine: Engine,
    photos: dict[str, np.ndarray],
    clips: list[Path],
    frames: int = 24,
    size: int = 96,
    **anchored: Any,
) -> list[ClipScore]:
    """Pan and zoom clips over each photo, then each real clip (its frames as they are)."""
    scores = []
    for stem, photo in photos.items():
        for kind, colour in synthetic_clips(photo, frames, size).items():
            scores.append(score_clip(engine, f"{stem} {kind}", colour, **anchored))
    for path in clips:
        scores.append(score_clip(engine, path.name, list(io.frames(path)), **anchored))
    return scores


def table(scores: list[ClipScore]) -> str:
    lines = [
        "| clip | frames | flicker per-frame | flicker anchored | ratio | flicker colour original "
        "| M3 per-frame | M3 anchored |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in scores:
        lines.append(
            f"| {s.clip} | {s.frames} | {s.flicker_per_frame:.3f} | {s.flicker_anchored:.3f} "
            f"| x{s.ratio:.2f} | {s.flicker_original:.3f} | {s.colour_per_frame:.1f} "
            f"| {s.colour_anchored:.1f} |"
        )
    return "\n".join(lines)

"""`disco eval`: score a checkpoint (and the gray / constant-mean baselines) on colour photos.

Each photo's lightness goes through the same pipeline as `disco colorize` (the network only ever
sees L); the result is compared with the photo itself. The metrics live in `service.metrics`;
this module only runs the methods and writes the table. torch is imported only when a
checkpoint is scored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service import metrics
from service.imageio import decode_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass
class EvalResult:
    images: list[str]
    per_image: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    summary: dict[str, dict[str, float]] = field(default_factory=dict)
    mean_ab: tuple[float, float] = (0.0, 0.0)
    mean_ab_source: str = ""
    ground_truth_colorfulness: float = 0.0
    anchor_per_image: list[dict[str, Any]] = field(default_factory=list)
    anchor_summary: dict[str, float] = field(default_factory=dict)
    video: list[Any] = field(default_factory=list)  # service.video.evaluate.ClipScore

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "summary": self.summary,
            "per_image": self.per_image,
            "constant_ab": list(self.mean_ab),
            "constant_ab_source": self.mean_ab_source,
            "ground_truth_colorfulness": self.ground_truth_colorfulness,
            "anchor_summary": self.anchor_summary,
            "anchor_per_image": self.anchor_per_image,
            "video": [v.to_dict() for v in self.video],
        }

    def table(self) -> str:
        """A Markdown table, one row per method."""
        lines = [
            "| method | colorfulness (M3) | ab PSNR (dB) | CIEDE2000 |",
            "|---|---:|---:|---:|",
        ]
        for name, s in self.summary.items():
            lines.append(
                f"| {name} | {s['colorfulness']:.1f} | {s['ab_psnr']:.2f} | {s['ciede2000']:.2f} |"
            )
        lines.append(f"| ground truth | {self.ground_truth_colorfulness:.1f} | - | - |")
        if self.anchor_summary:
            a = self.anchor_summary
            lines += [
                "",
                "| anchor metric | value |",
                "|---|---:|",
                f"| oracle-anchor gain (dB, mean) | {a['oracle_gain']:+.2f} |",
                f"| diverse spread (K=3, Lab units, mean) | {a['diverse_spread']:.2f} |",
                f"| hint response (median) | {a['hint_response']:.2f} |",
            ]
        if self.video:
            from service.video.evaluate import table

            lines += ["", "Video: per-frame vs anchored (flicker = mean |d ab| after flow "
                      "warping; M3 = colourfulness)", "", table(self.video)]  # fmt: skip
        return "\n".join(lines)


def list_images(folder: Path) -> list[Path]:
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def read_folder(folder: Path) -> tuple[list[Path], list[np.ndarray]]:
    files = list_images(folder)
    if not files:
        raise FileNotFoundError(f"no images under {folder}")
    return files, [decode_image(f.read_bytes()) for f in files]


def evaluate_folder(
    data: Path,
    checkpoint: Path | None = None,
    *,
    name: str = "model",
    anchors: int = 8,
    seed: int | None = None,
    constant_ab: tuple[float, float] | None = None,
    constant_from: Path | None = None,
    out: Path | None = None,
    device: str = "cpu",
    anchor_metrics: bool = True,
    hints_per_image: int = 4,
    video: bool = False,
    clips: list[Path] | None = None,
    video_frames: int = 24,
) -> EvalResult:
    """Score the gray and constant-mean baselines, and `checkpoint` if given, on `data`.

    The constant colour is `constant_ab`, else the mean ab of the photos in `constant_from`
    (e.g. the training set), else the mean ab of the evaluated photos themselves (an oracle,
    i.e. optimistic for the baseline). `out` receives the predicted images and metrics.json.
    With a checkpoint and `anchor_metrics`, also the oracle-anchor gain, diverse spread and hint
    response (`export.train.anchor_metrics`; hint sites and colours from a fixed seed).
    With a checkpoint and `video`, also the video flicker of per-frame vs anchored colorization
    (`service.video.evaluate`) on a pan and a zoom over each photo and on the `clips`.
    """
    files, gts = read_folder(data)
    if constant_ab is not None:
        const, source = constant_ab, "given"
    elif constant_from is not None:
        const, source = metrics.mean_ab(read_folder(constant_from)[1]), str(constant_from)
    else:
        const, source = metrics.mean_ab(gts), "the evaluated photos (oracle)"
    result = EvalResult([f.name for f in files], mean_ab=const, mean_ab_source=source)
    result.ground_truth_colorfulness = float(np.mean([metrics.colorfulness(g) for g in gts]))
    methods: dict[str, list[np.ndarray]] = {
        "gray (ab = 0)": [metrics.gray_baseline(g) for g in gts],
        f"constant mean ab ({const[0]:.1f}, {const[1]:.1f})": [
            metrics.constant_baseline(g, const) for g in gts
        ],
    }
    if checkpoint is not None:
        methods[name] = colorize_images(checkpoint, files, gts, anchors, seed, device)
        if anchor_metrics:
            from export.torch_engine import TorchEngine
            from export.train import anchor_metrics as am
            from service.pipeline import seed_from_bytes

            engine = TorchEngine.from_checkpoint(checkpoint, device)
            rng = np.random.default_rng(2022)
            for f, g in zip(files, gts, strict=True):
                s = seed_from_bytes(f.read_bytes()) if seed is None else seed
                row = am.image_scores(
                    engine, g, seed=s, anchors=anchors, n_hints=hints_per_image, hint_rng=rng
                )
                result.anchor_per_image.append({"image": f.name, **row})
            result.anchor_summary = am.summarize(result.anchor_per_image)
        if video or clips:
            from export.torch_engine import TorchEngine
            from service.video import evaluate as video_eval

            engine = TorchEngine.from_checkpoint(checkpoint, device)
            photos = dict(zip((f.stem for f in files), gts, strict=True)) if video else {}
            found = [c for path in clips or [] for c in video_eval.video_files(path)]
            result.video = video_eval.score_all(engine, photos, found, frames=video_frames)
    for method, preds in methods.items():
        rows = [metrics.score(g, p) for g, p in zip(gts, preds, strict=True)]
        result.per_image[method] = rows
        result.summary[method] = metrics.summarize(rows)
    if out is not None:
        write_outputs(Path(out), files, gts, methods, result)
    return result


def colorize_images(
    checkpoint: Path,
    files: list[Path],
    gts: list[np.ndarray],
    anchors: int = 8,
    seed: int | None = None,
    device: str = "cpu",
) -> list[np.ndarray]:
    """The `disco colorize` result (original size) of each photo's lightness."""
    from export.torch_engine import TorchEngine
    from service.pipeline import Job, run, seed_from_bytes

    engine = TorchEngine.from_checkpoint(checkpoint, device)
    preds = []
    for f, rgb in zip(files, gts, strict=True):
        s = seed_from_bytes(f.read_bytes()) if seed is None else seed
        preds.append(run(engine, [Job(rgb, seed=s, anchors=anchors)])[0][0].image)
    return preds


def write_outputs(
    out: Path,
    files: list[Path],
    gts: list[np.ndarray],
    methods: dict[str, list[np.ndarray]],
    result: EvalResult,
) -> None:
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    for i, (method, preds) in enumerate(methods.items()):
        folder = out / f"method{i}"
        folder.mkdir(exist_ok=True)
        (folder / "NAME.txt").write_text(method + "\n")
        for f, p in zip(files, preds, strict=True):
            Image.fromarray(p).save(folder / f"{f.stem}.png")
    (out / "metrics.json").write_text(json.dumps(result.to_dict(), indent=1))
    (out / "metrics.md").write_text(result.table() + "\n")

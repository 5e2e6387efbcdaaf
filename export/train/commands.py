"""Typer commands `disco train` and `disco eval` (registered in `service/cli.py`).

Nothing heavy is imported at module level: `disco --help` stays instant and torch-free, and
`disco eval` without `--checkpoint` (the baselines only) never loads torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def train(
    data: Annotated[Path, typer.Argument(help="Folder of colour photos (recursively).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Run folder: checkpoints, samples.")],
    steps: Annotated[int, typer.Option(min=0, help="Stage-2 (colorization) steps.")] = 6000,
    spix_steps: Annotated[int, typer.Option(min=0, help="Stage-1 (SpixelNet) steps.")] = 1200,
    val: Annotated[
        Path | None, typer.Option(help="Validation photos (checkpoint selection).")
    ] = None,
    variant: Annotated[str, typer.Option(help="Architecture variant.")] = "disco_demo",
    width: Annotated[
        float | None, typer.Option(help="Override the channel multiplier of the variant.")
    ] = None,
    segnet_width: Annotated[float | None, typer.Option(help="Override SpixelNet's width.")] = None,
    n_layers: Annotated[int | None, typer.Option(help="Override transformer depth.")] = None,
    batch: Annotated[int, typer.Option(min=1, help="Batch per process (128 px crops).")] = 8,
    crop: Annotated[int, typer.Option(help="Training crop (multiple of 16).")] = 128,
    big_fraction: Annotated[
        float, typer.Option(help="Fraction of stage-2 steps on 256 px crops (batch 2).")
    ] = 0.25,
    lr: Annotated[float, typer.Option(help="Adam learning rate of stage 2.")] = 3e-4,
    spix_lr: Annotated[float, typer.Option(help="Adam learning rate of stage 1.")] = 5e-4,
    lam: Annotated[float, typer.Option(help="Class-rebalancing lambda (1 - colorfulness).")] = 0.5,
    val_every: Annotated[int, typer.Option(help="Validate every N steps.")] = 250,
    sample_every: Annotated[int, typer.Option(help="Write sample images every N steps.")] = 500,
    ckpt_every_s: Annotated[
        float, typer.Option(help="Rewrite last.pth.tar every S seconds.")
    ] = 240,
    max_minutes: Annotated[
        float, typer.Option(help="Stop (and save) after this many minutes; 0 = no limit.")
    ] = 0.0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1.")] = "auto",
    threads: Annotated[
        int,
        typer.Option(
            help="torch CPU threads per process; 1 is far faster when other jobs share the cores."
        ),
    ] = 2,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from OUT/last.pth.tar.")
    ] = False,
    chroma_aug: Annotated[
        float,
        typer.Option(
            help="Probability per image of rotating/rescaling the ab plane for the generator "
            "branch (stage 2), so that it must follow its anchors."
        ),
    ] = 0.0,
    random_hint: Annotated[
        float, typer.Option(help="Fraction of stage-2 batches with random anchor sites.")
    ] = 0.2,
    anchor_weight: Annotated[
        float,
        typer.Option(
            help="Weight of the anchor-consistency L1 (superpixel mean ab vs the anchor colour)."
        ),
    ] = 0.0,
    hint_lr_mult: Annotated[
        float, typer.Option(help="Learning-rate multiplier of the hint embedding.")
    ] = 1.0,
    hint_steps: Annotated[
        int,
        typer.Option(
            min=0,
            help="Hint-path pre-training steps before stage 2 (only the anchor transformer "
            "trains, on cached tokens with rotated chroma, so that it spreads its anchors).",
        ),
    ] = 0,
    hint_lr: Annotated[float, typer.Option(help="Adam learning rate of the hint stage.")] = 2e-3,
    train_only: Annotated[
        str,
        typer.Option(
            help="Stage 2 trains only these comma-separated top-level modules (e.g. "
            "enhanceNet,hintpath,trg_word_emb,trg_word_prj); default: all but segnet."
        ),
    ] = "",
    init: Annotated[
        Path | None, typer.Option(help="Fine-tune from this checkpoint's weights.")
    ] = None,
    ship: Annotated[
        Path | None,
        typer.Option(help="Also write OUT/best.pth.tar without optimizer state to this path."),
    ] = None,
) -> None:
    """Train DISCO (stage 1 SpixelNet, stage 2 the rest) on a folder of colour photos.

    Single process by default; under `torchrun --nproc_per_node N` it runs DDP (NCCL on CUDA,
    gloo on CPU). Resumable: `--resume` continues the step counter from OUT/last.pth.tar.
    """
    from export.train.train import TrainConfig, ship_checkpoint
    from export.train.train import train as run_training

    overrides = {
        k: v
        for k, v in {"width": width, "segnet_width": segnet_width, "n_layers": n_layers}.items()
        if v is not None
    }
    tc = TrainConfig(
        data=str(data),
        out=str(out),
        val=str(val) if val else None,
        variant=variant,
        model=overrides,
        spix_steps=spix_steps,
        steps=steps,
        batch=batch,
        crop=crop,
        big_fraction=big_fraction,
        lr=lr,
        spix_lr=spix_lr,
        lam=lam,
        val_every=val_every,
        sample_every=sample_every,
        ckpt_every_s=ckpt_every_s,
        max_minutes=max_minutes,
        device=device,
        threads=threads,
        seed=seed,
        chroma_aug=chroma_aug,
        random_hint=random_hint,
        anchor_weight=anchor_weight,
        hint_lr_mult=hint_lr_mult,
        hint_steps=hint_steps,
        hint_lr=hint_lr,
        train_only=tuple(m for m in train_only.split(",") if m),
        init=str(init) if init else None,
    )
    summary = run_training(tc, resume=resume)
    if ship is not None and (out / "best.pth.tar").is_file():
        ship_checkpoint(out / "best.pth.tar", ship)
        summary["shipped"] = str(ship)
    typer.echo(json.dumps(summary, default=str))


def evaluate(
    data: Annotated[Path, typer.Argument(help="Folder of colour photos (the ground truth).")],
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Checkpoint to score (official or `disco train`); else baselines only."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("-o", "--out", help="Write predictions, metrics.json, metrics.md here."),
    ] = None,
    name: Annotated[str, typer.Option(help="Row name of the checkpoint in the table.")] = "model",
    anchors: Annotated[int, typer.Option(min=1, max=64, help="k-means anchors.")] = 8,
    seed: Annotated[
        int | None, typer.Option(help="k-means seed; default: from the image bytes.")
    ] = None,
    constant_from: Annotated[
        Path | None,
        typer.Option(
            help="Photos whose mean ab is the constant baseline's colour (e.g. the training "
            "set); default: the evaluated photos themselves (an oracle)."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="torch device for the checkpoint.")] = "cpu",
    anchor_metrics: Annotated[
        bool,
        typer.Option(
            help="Also measure anchor use: oracle-anchor gain, diverse spread, hint response."
        ),
    ] = True,
    hints_per_image: Annotated[
        int, typer.Option(min=1, help="Random single hints per photo (hint response).")
    ] = 4,
    video: Annotated[
        bool,
        typer.Option(
            "--video",
            help="Also score video flicker, per-frame vs anchored, on a pan and a zoom over "
            "each photo (needs --checkpoint).",
        ),
    ] = False,
    clips: Annotated[
        list[Path] | None,
        typer.Option(help="Real clips (files or folders) to score the same way."),
    ] = None,
    video_frames: Annotated[
        int, typer.Option(min=2, help="Frames of each synthetic pan / zoom clip.")
    ] = 24,
) -> None:
    """Score colorization on colour photos: colorfulness (Hasler-Suesstrunk M3), ab PSNR (peak
    220) and mean CIEDE2000 against the originals, for the gray and constant-mean baselines and
    the checkpoint. Only each photo's lightness is colorized. With a checkpoint it also
    measures whether the model follows its anchors (oracle-anchor gain, diverse spread, hint
    response), through the service pipeline. `--video` / `--clips` add temporal flicker: per-frame
    vs anchored colorization of the same clip (mean |d ab| between flow-warped frames)."""
    from export.train.evaluate import evaluate_folder

    if not data.exists():
        raise typer.BadParameter(f"no such file or folder: {data}", param_hint="DATA")
    if (video or clips) and checkpoint is None:
        raise typer.BadParameter(
            "video flicker scores a model: give --checkpoint", param_hint="--video"
        )
    for c in clips or []:
        if not c.exists():
            raise typer.BadParameter(f"no such file or folder: {c}", param_hint="--clips")
    result = evaluate_folder(
        data,
        checkpoint,
        name=name,
        anchors=anchors,
        seed=seed,
        constant_from=constant_from,
        out=out,
        device=device,
        anchor_metrics=anchor_metrics,
        hints_per_image=hints_per_image,
        video=video,
        clips=clips,
        video_frames=video_frames,
    )
    typer.echo(f"{len(result.images)} images from {data}")
    typer.echo(result.table())

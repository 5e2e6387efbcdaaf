"""Ship the bundled demo model: checkpoint, held-out evaluation, contact sheet, model card.

    .venv/bin/python -m export.train.model_card [--run artifacts/train] [--photos artifacts/photos]
        [--dest models/disco-demo]

1. strips `RUN/best.pth.tar` (the best validation checkpoint) of optimizer and resume state and
   writes DEST/disco-demo.pth.tar (official format, <= 25 MB), then reloads it strictly;
2. scores it with `disco eval` against the gray and constant-mean baselines on the held-out
   photos (the constant is the training set's mean ab), predictions under RUN/eval;
3. writes DEST/contact_sheet.jpg (gray input | demo model | ground truth per held-out photo),
   DEST/anchor_sheet.jpg (input | 3 diverse results | oracle-hinted | ground truth) and
   DEST/MODEL_CARD.md (data, training, metrics, anchor metrics, limits).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw

from export.model.checkpoint import load_checkpoint
from export.torch_engine import TorchEngine
from export.train.evaluate import EvalResult, evaluate_folder, read_folder
from export.train.train import ship_checkpoint
from service.metrics import gray_baseline

CHECKPOINT_NAME = "disco-demo.pth.tar"
MAX_BYTES = 25 * 1024 * 1024


def contact_sheet(
    files: list[Path],
    gts: list[np.ndarray],
    preds: list[np.ndarray],
    rows: list[dict[str, float]],
    path: Path,
    height: int = 200,
) -> Path:
    """One row per photo: gray input | demo model | ground truth, with the photo's scores."""
    tiles = []
    for f, gt, pred, r in zip(files, gts, preds, rows, strict=True):
        w = round(gt.shape[1] * height / gt.shape[0])
        row = [
            Image.fromarray(x).resize((w, height), Image.Resampling.LANCZOS)
            for x in (gray_baseline(gt), pred, gt)
        ]
        canvas = Image.new("RGB", (3 * w + 8, height + 18), "white")
        for i, im in enumerate(row):
            canvas.paste(im, (i * (w + 4), 0))
        ImageDraw.Draw(canvas).text(
            (4, height + 3),
            f"{f.stem}: input (L only) | demo model (CIEDE2000 {r['ciede2000']:.1f}, "
            f"ab PSNR {r['ab_psnr']:.1f} dB) | ground truth",
            fill="black",
        )
        tiles.append(canvas)
    width = max(t.width for t in tiles)
    sheet = Image.new("RGB", (width, sum(t.height for t in tiles)), "white")
    y = 0
    for t in tiles:
        sheet.paste(t, (0, y))
        y += t.height
    sheet.save(path, quality=85, optimize=True)
    return path


def _training_facts(run: Path) -> dict[str, Any]:
    last = torch.load(run / "last.pth.tar", map_location="cpu", weights_only=False)
    best = torch.load(run / "best.pth.tar", map_location="cpu", weights_only=False)
    hist = last.get("history", [])
    train_rows = [h for h in hist if "loss" in h]
    val_rows = [h for h in hist if "val" in h]
    tc = last.get("train_config", {})
    log_every = tc.get("log_every", 25)
    seconds = sum(h["s_per_step"] * log_every for h in train_rows)
    return {
        "train_config": tc,
        "steps_done": int(last["step"]),
        "best_step": int(best["step"]),
        "best_val": best.get("history", [{}])[-1].get("val", {}),
        "train_minutes": seconds / 60,
        "val_curve": [(h["step"], h["val"]["loss"]) for h in val_rows],
        "last_train": train_rows[-1] if train_rows else {},
        "config": best["config"],
        "hint_stage": next((h["hint_stage"] for h in hist if "hint_stage" in h), []),
    }


def _manifest_table(manifest: dict[str, Any]) -> str:
    by_source: dict[tuple[str, str, str], dict[str, int]] = {}
    for p in manifest["photos"]:
        key = (p["source"], unquote(p["version"]), p["license"])
        by_source.setdefault(key, {"train": 0, "val": 0, "heldout": 0})[p["split"]] += 1
    lines = [
        "| source (package, version) | licence | train | val | held-out |",
        "|---|---|---:|---:|---:|",
    ]
    for (src, ver, lic), c in sorted(by_source.items()):
        lines.append(f"| {src} {ver} | {lic} | {c['train']} | {c['val']} | {c['heldout']} |")
    c = manifest["counts"]
    lines.append(f"| **total** | | **{c['train']}** | **{c['val']}** | **{c['heldout']}** |")
    return "\n".join(lines)


def _anchor_training(tc: dict[str, Any], hint_stage: list[dict[str, Any]] = ()) -> str:
    """The card's lines on what made the generator follow its anchors (empty if not used)."""
    lines = []
    if tc.get("init"):
        lines.append(f"Fine-tuned from `{tc['init']}` (the earlier demo weights).")
    if tc.get("hint_steps"):
        first, last = (hint_stage[0], hint_stage[-1]) if hint_stage else ({}, {})
        measured = (
            f" Non-anchor token error on rotated validation crops (Lab units): "
            f"{first['with_anchors']:.1f} with the anchors vs {first['withheld']:.1f} withheld "
            f"before, {last['with_anchors']:.1f} vs {last['withheld']:.1f} after."
            if last
            else ""
        )
        lines.append(
            f"Hint-path pre-training (`export/train/hint_stage.py`), before stage 2: "
            f"{tc['hint_steps']} steps in which only `trg_word_emb`, `hintpath` and `trg_word_prj` "
            f"train (Adam {tc.get('hint_lr')}), on cached SpixelNet + repnet tokens of random "
            "crops with the ab plane of 90% of the images rotated, so the cross-entropy can only "
            "fall by reading the anchors." + measured
        )
    if tc.get("train_only"):
        names = ", ".join(f"`{m}`" for m in tc["train_only"])
        lines.append(f"Stage 2 trains only {names}; the other modules stay frozen.")
    if tc.get("chroma_aug"):
        lo, hi = tc.get("sat_range", (0.6, 1.6))
        lines.append(
            f"Chroma augmentation for the generator branch: for {100 * tc['chroma_aug']:.0f}% "
            f"of the images the ab targets and the anchor colours are rotated by a random angle "
            f"and scaled by {lo}..{hi} (the colour modeler keeps the true colours), so colour "
            "cannot be read off L and only the anchors tell the generator what to paint."
        )
    if tc.get("anchor_weight"):
        lines.append(
            f"Anchor consistency: + {tc['anchor_weight']} * L1 between the mean predicted ab "
            "over each anchor's superpixel and the anchor's colour."
        )
    if tc.get("hint_lr_mult", 1.0) != 1.0:
        lines.append(
            f"The hint embedding (`trg_word_emb`) learns at {tc['hint_lr_mult']}x the rate."
        )
    return "".join(f"\n* {line}" for line in lines)


def write_card(
    dest: Path,
    ckpt_path: Path,
    facts: dict[str, Any],
    result: EvalResult,
    manifest: dict[str, Any],
    model_name: str,
) -> Path:
    tc, cfg = facts["train_config"], facts["config"]
    heldout = ", ".join(Path(n).stem for n in result.images)
    rejected = "; ".join(f"{r['name']} ({r['reason']})" for r in manifest.get("rejected", []))
    size_mb = ckpt_path.stat().st_size / 1e6
    val = facts["best_val"]
    ckpt = ckpt_path.as_posix()
    facts_rows = [
        (
            "file",
            f"`{ckpt_path.name}` ({size_mb:.1f} MB), official checkpoint format: `epoch`, "
            "`state_dict` (spectral-norm convs as `weight_orig/_u/_v`), `best_loss`, + `config`",
        ),
        (
            "architecture",
            f"DISCO (`AnchorColorProb`), variant `{tc.get('variant', 'disco_demo')}`:"
            f" width {cfg['width']} (repnet, enhanceNet), segnet_width {cfg['segnet_width']}, "
            f"d_model {cfg['d_model']}, {cfg['n_layers']} layers per transformer, "
            f"{cfg['res_blocks']} residual blocks",
        ),
        (
            "input / output",
            "L of a 256x256 image / ab, as the official model "
            f"(`config.img_size` = {cfg['img_size']})",
        ),
        (
            "load",
            f'`export.model.checkpoint.load_checkpoint("{ckpt}")`; '
            f"`disco colorize IMG -o OUT --checkpoint {ckpt}`",
        ),
        (
            "licence",
            "MIT for the weights as trained here; the training photos keep their own "
            "licences (below) and are not redistributed",
        ),
        ("produced", f"{time.strftime('%Y-%m-%d')} by `export/train/model_card.py`"),
    ]
    methods = list(result.per_image)
    short = ["gray", "constant", model_name] if len(methods) == 3 else methods
    per_photo = "\n".join(
        [
            "| photo | " + " | ".join(short) + " |",
            "|---|" + "---:|" * len(methods),
            *(
                f"| {Path(n).stem} | "
                + " | ".join(f"{result.per_image[m][i]['ciede2000']:.1f}" for m in methods)
                + " |"
                for i, n in enumerate(result.images)
            ),
        ]
    )
    header = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in facts_rows)
    if tc.get("spix_steps"):
        stage1 = (
            f"SpixelNet alone, {tc.get('spix_steps')} steps, official L_spix (10 * ab + 0.003 * "
            f"position reconstruction), Adam {tc.get('spix_lr')} with linear decay."
        )
    else:
        stage1 = "none in this run: SpixelNet comes with the initial weights."
    only = tc.get("train_only") or ()
    stage2_trains = "only " + ", ".join(f"`{m}`" for m in only) if only else "everything else"
    lineage = f"{facts['lineage']}\n\n" if facts.get("lineage") else ""
    text = f"""# disco-demo: the bundled, width-reduced DISCO model

A small DISCO colorization model trained **on this project's 2-core CPU in a few hours**
from {manifest["counts"]["train"]} photographs. It exists so that `make serve` and the demo
colorize out of the box without downloading anything. It is **not** the paper's model: for
production quality use the official `disco-beta.pth.tar` (see the README).

{header}

## Training data

Photographs from Debian packages and Python wheels only (the build machine reaches nothing
else), assembled by `python -m export.train.data fetch --out artifacts/photos` (re-runnable on a
fresh machine; the data set itself stays out of git). Photos only, picked by name from each
package (no illustrations, abstract art or logos); near-gray images (mean chroma < 5) and images
with very few colours (< 30 distinct 4-bit colours) are rejected. Short side resized to 384.
Split by name hash: train / val (checkpoint selection) / held-out (the numbers below; never used
in training or selection).

{_manifest_table(manifest)}

Rejected by the filters: {rejected or "none"}.
Held-out photos: {heldout}.

## Training

`{facts.get("command", "disco train")}`

{lineage}* Stage 1: {stage1}
* Stage 2: SpixelNet frozen; {stage2_trains} trained with the paper's objective, teacher-forced
  as the official code: anchors from k-means over the ground-truth superpixel chroma tokens
  (K = {tc.get("k_min")}..{tc.get("k_max")} per 128 px batch, up to {2 * tc.get("k_max", 8)} on
  256 px batches; {int(100 * tc.get("random_hint", 0))}% of batches with random anchor sites),
  loss = L_pal + L_ref (cross-entropy over the 313 ab bins, class-rebalanced from
  `gamut_probs.npy` with lambda {tc.get("lam")}) + {tc.get("l1_weight")} * L1(ab) +
  {tc.get("lap_weight")} * Laplacian L1 (the official VGG perceptual term needs ImageNet VGG19
  weights this project cannot download). {tc.get("steps")} steps planned, Adam {tc.get("lr")},
  linear decay, grad-norm clip {tc.get("clip")}, batch {tc.get("batch")} x {tc.get("crop")} px
  random crops ({int(100 * tc.get("big_fraction", 0))}% of the steps: batch
  {tc.get("big_batch")} x {tc.get("big_crop")} px, the serving token grid), random rescale and
  horizontal flips.{_anchor_training(tc, facts.get("hint_stage", []))}
* Ran {facts["steps_done"]} steps in total (both stages) in about
  {facts["train_minutes"]:.0f} minutes of wall time on the 2-core CPU, shared with other jobs
  ({tc.get("threads")} torch threads);
  the shipped weights are from step {facts["best_step"]}, the best validation loss
  ({val.get("loss", float("nan")):.3f}; pal CE {val.get("ce_pal", float("nan")):.3f},
  token accuracy {val.get("acc_pal", float("nan")):.3f}, ab L1 {val.get("l1", float("nan")):.4f}).

## Held-out results ({len(result.images)} photos, full resolution, 8 anchors, default seeds)

Each photo's lightness goes through exactly the `disco colorize` pipeline; the result is compared
with the original (`disco eval artifacts/photos/heldout --checkpoint {ckpt_path.as_posix()}
--constant-from artifacts/photos/train`). Colorfulness is Hasler & Suesstrunk's M3 (higher =
more colourful; the originals average {result.ground_truth_colorfulness:.1f}); ab PSNR has peak
220; CIEDE2000 is the mean per-pixel colour difference (lower is better). The constant baseline
paints every pixel the training set's mean ab ({result.mean_ab[0]:.1f}, {result.mean_ab[1]:.1f}).

{result.table().replace("| model |", f"| {model_name} |")}

Per photo, CIEDE2000 (lower is better):

{per_photo}

![contact sheet](contact_sheet.jpg)

`contact_sheet.jpg`: per held-out photo, the input (its lightness only), the demo model's
result, and the original.

### Does it use its anchors?

The anchor metrics above: **oracle-anchor gain** is the ab-PSNR of the result when the hints are
the photo's true colours at the automatic anchor tokens, minus that of the automatic result;
**diverse spread** is the smallest pairwise mean |d ab| (Lab units, full resolution) among the
three results of `/colorize/diverse` (count=3); **hint response** is, for random single hints,
the fraction of the way the hinted superpixel's mean ab moves toward the hint colour (median).

![anchor contact sheet](anchor_sheet.jpg)

`anchor_sheet.jpg`: per held-out photo, the input, the three diverse results (count=3), the
result with the true colours as hints at the automatic anchors, and the original.

## Limits

* Trained on {manifest["counts"]["train"]} photos for a few CPU hours. It has learnt broad
  priors (warm fur, skin and wood; blue dusk skies and water), not object semantics: it is
  right on some photos and confidently wrong on others (orange where the truth is blue, a lime
  patch on a blurred background), and colour bleeds across borders. The pixel metrics reward
  the gray guess, which is never far off: a colourful answer that is wrong costs more than no
  colour. Read the per-photo table together with the contact sheet.
* Roughly 1/12 of the official model's parameters (width x{cfg["width"]}); trained at 128 px crops
  (and partly 256 px), served at 256x256 like the official model.
* No perceptual (VGG) loss, so results are less vivid than the paper's; the class rebalancing is
  what keeps them from being sepia.
* The held-out set is tiny ({len(result.images)} photos); the numbers are a sanity check, not a
  benchmark.
* Small, sometimes copyleft-licensed (CC-BY-SA, GPL-2+) training photos: check whether your
  use of the weights needs their attribution.
"""
    path = dest / "MODEL_CARD.md"
    path.write_text(text)
    return path


def anchor_contact_sheet(
    engine: Any, files: list[Path], gts: list[np.ndarray], path: Path, height: int = 160
) -> Path:
    """One row per photo: input | 3 diverse results | oracle-hinted result | ground truth.

    The diverse results are `/colorize/diverse` with count=3; the hinted one gets the photo's
    true colours at the automatic anchor tokens as hints (what a user who paints the right
    colours gets). Shows at a glance whether the anchors steer the model.
    """
    from export.train.anchor_metrics import _full_ab, _region_mean, superpixel_labels
    from service.hints import Hint
    from service.pipeline import Job, Timer, encode_batch, run, seed_from_bytes

    tiles = []
    for f, gt in zip(files, gts, strict=True):
        seed = seed_from_bytes(f.read_bytes())
        job = Job(gt, seed=seed)
        _, enc = encode_batch(engine, [job], Timer())
        labels = superpixel_labels(enc.affinity[0])
        auto = run(engine, [job])[0][0]

        true_ab = _full_ab(cv2.resize(gt, labels.shape[::-1], interpolation=cv2.INTER_AREA))
        hints = [
            Hint(token=a.token, ab=tuple(float(v) for v in _region_mean(true_ab, labels, a.token)))
            for a in auto.anchors
        ]
        hinted = run(engine, [Job(gt, seed=seed, hints=hints)])[0][0].image
        diverse = [o.image for o in run(engine, [Job(gt, seed=seed, count=3)])[0]]
        w = round(gt.shape[1] * height / gt.shape[0])
        row = [gray_baseline(gt), *diverse, hinted, gt]
        canvas = Image.new("RGB", (len(row) * (w + 4), height + 18), "white")
        for i, im in enumerate(row):
            canvas.paste(Image.fromarray(im).resize((w, height), Image.Resampling.LANCZOS),
                         (i * (w + 4), 0))  # fmt: skip
        ImageDraw.Draw(canvas).text(
            (4, height + 3),
            f"{f.stem}: input | diverse #1 | #2 | #3 | oracle hints | ground truth",
            fill="black",
        )
        tiles.append(canvas)
    width = max(t.width for t in tiles)
    sheet = Image.new("RGB", (width, sum(t.height for t in tiles)), "white")
    y = 0
    for t in tiles:
        sheet.paste(t, (0, y))
        y += t.height
    sheet.save(path, quality=85, optimize=True)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=Path("artifacts/train"))
    ap.add_argument("--photos", type=Path, default=Path("artifacts/photos"))
    ap.add_argument("--dest", type=Path, default=Path("models/disco-demo"))
    ap.add_argument("--checkpoint", default="best.pth.tar", help="file in RUN to ship")
    ap.add_argument("--command", default=None, help="training command line for the card")
    ap.add_argument("--lineage", default=None, help="where the --init weights came from")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)

    dest: Path = args.dest
    ckpt_path = ship_checkpoint(args.run / args.checkpoint, dest / CHECKPOINT_NAME)
    size = ckpt_path.stat().st_size
    assert size <= MAX_BYTES, f"{ckpt_path} is {size / 1e6:.1f} MB > 25 MB"
    load_checkpoint(ckpt_path)  # strict: fails loudly on any key or shape mismatch
    print(f"wrote {ckpt_path} ({size / 1e6:.1f} MB); reloads strictly")

    name = "disco-demo"
    result = evaluate_folder(
        args.photos / "heldout",
        ckpt_path,
        name=name,
        constant_from=args.photos / "train",
        out=args.run / "eval",
    )
    print(result.table())
    files, gts = read_folder(args.photos / "heldout")
    preds = [np.asarray(Image.open(args.run / "eval" / "method2" / f"{f.stem}.png")) for f in files]
    contact_sheet(files, gts, preds, result.per_image[name], dest / "contact_sheet.jpg")
    anchor_contact_sheet(
        TorchEngine(load_checkpoint(ckpt_path)), files, gts, dest / "anchor_sheet.jpg"
    )

    facts = _training_facts(args.run)
    facts["command"] = args.command or (
        "disco train artifacts/photos/train -o artifacts/train --val artifacts/photos/val "
        f"--spix-steps {facts['train_config'].get('spix_steps')} "
        f"--steps {facts['train_config'].get('steps')}"
    )
    facts["lineage"] = args.lineage
    manifest = json.loads((args.photos / "manifest.json").read_text())
    card = write_card(dest, ckpt_path, facts, result, manifest, name)
    (dest / "metrics.json").write_text(json.dumps(result.to_dict(), indent=1))
    print(f"wrote {card}, {dest / 'contact_sheet.jpg'}, {dest / 'metrics.json'}")


if __name__ == "__main__":
    main()

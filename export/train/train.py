"""`disco train`: the two-stage DISCO training loop (CPU or CUDA, single process or DDP).

Stage 1 trains SpixelNet (`segnet`) alone with the official L_spix. Stage 2 freezes it and trains
everything else with the paper's objective, teacher-forced as the official code: anchors come
from k-means on the ground-truth superpixel chroma tokens (K drawn per batch), their labels are
the GT bins; loss = L_pal + L_ref (CE over the 313 bins, class-rebalanced from the ab prior)
+ 10 * L1(ab) + Laplacian L1 (training reference sec. 7: the VGG perceptual term needs weights
this project cannot download). Crops are mostly 128x128 (8x8 tokens); a fraction of the steps
use 256x256 crops (16x16 tokens, the serving grid) so that the transformers see both grid sizes.

Checkpoints use the official dict (`epoch`, `state_dict` with spectral-norm keys, `best_loss`,
`optimizer`) plus `config` and the resume state; `last.pth.tar` is rewritten every few minutes,
`best.pth.tar` whenever the validation loss improves. Under torchrun (RANK / WORLD_SIZE set) the
step runs under DistributedDataParallel; rank 0 writes files.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from export.model.anchors import kmeans, pick_anchors
from export.model.checkpoint import checkpoint_filter_fn, load_state
from export.model.disco import VARIANT_CONFIGS, Disco, DiscoConfig, SpectralConv2d
from export.model.superpixel import sine_position_encoding, sp_diffuse, sp_pool, spixel_sizes

from . import data as tdata
from .losses import laplacian_l1, nearest_bins, rebalance_weights, spixel_loss, weighted_ce

SERVE_SIZE = 256  # the size the service runs the network at (the saved config's img_size)


@dataclass
class TrainConfig:
    data: str
    out: str
    val: str | None = None  # validation photos; default: every 8th training photo (also trained)
    variant: str = "disco_demo"
    model: dict[str, Any] = field(default_factory=dict)  # DiscoConfig overrides
    spix_steps: int = 1500  # stage 1 (SpixelNet); 0 = keep the segnet of --init / random
    steps: int = 4000  # stage 2
    batch: int = 8
    crop: int = 128
    big_crop: int = 256  # crop of the "serving grid" steps
    big_batch: int = 2
    big_fraction: float = 0.25  # fraction of stage-2 steps at big_crop
    lr: float = 3e-4
    spix_lr: float = 5e-4
    lr_final: float = 0.01  # linear decay to this fraction of lr
    clip: float = 5.0
    lam: float = 0.5  # rebalancing lambda = 1 - colorfulness
    k_min: int = 4
    k_max: int = 8
    random_hint: float = 0.2  # fraction of batches with random anchor sites (DISCO-rand style)
    l1_weight: float = 10.0
    lap_weight: float = 1.0
    val_every: int = 250
    sample_every: int = 500
    ckpt_every_s: float = 240.0
    seed: int = 0
    device: str = "auto"
    threads: int = 2
    log_every: int = 25
    max_minutes: float = 0.0  # stop (and save) after this much wall time; 0 = no limit
    # Chroma augmentation of the generator branch (stage 2): with this probability per image the
    # ab targets and the anchor colours of the hint path are rotated / rescaled in the ab plane,
    # so colour cannot be read off L and only the anchors disambiguate. The colour modeler (pal)
    # keeps the real colours, so the automatic result stays plausible.
    chroma_aug: float = 0.0
    sat_range: tuple[float, float] = (0.6, 1.6)
    # Anchor consistency: L1 between the mean predicted ab over each anchor's superpixel and the
    # colour the anchor asked for (its bin centre), so the output at an anchor must follow it.
    anchor_weight: float = 0.0
    # Learning-rate multiplier of the hint embedding (trg_word_emb): its colour columns start
    # out tiny next to the token features, and a model trained without chroma_aug ignores them.
    hint_lr_mult: float = 1.0
    # Hint-path pre-training before stage 2 (export/train/hint_stage.py): only the anchor
    # transformer trains, on cached tokens with rotated chroma, until it spreads its anchors.
    hint_steps: int = 0
    hint_lr: float = 2e-3
    # Stage 2 trains only these top-level modules (e.g. enhanceNet + the hint path); empty: all
    # but segnet. Frozen modules stay in eval mode (their BatchNorm statistics are kept).
    train_only: tuple[str, ...] = ()
    val_anchor_metrics: bool = True  # oracle gain / diverse spread / hint response at each val
    init: str | None = None  # fine-tune from this checkpoint (weights only; step counter from 0)


# ------------------------------------------------------------------------------------------------
# Distributed helpers
# ------------------------------------------------------------------------------------------------
def _dist_env() -> tuple[int, int, int]:
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    return 0, 1, 0


def _pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and torch.cuda.device_count() > 1:
        name = f"cuda:{local_rank}"
    return torch.device(name)


# ------------------------------------------------------------------------------------------------
# Model set-up
# ------------------------------------------------------------------------------------------------
def build_config(tc: TrainConfig) -> DiscoConfig:
    base = VARIANT_CONFIGS[tc.variant].to_dict()
    return DiscoConfig(**{**base, **tc.model, "img_size": tc.crop})


def add_spectral_norm(model: Disco) -> Disco:
    """Wrap the official spectral-norm convs so the state_dict has weight_orig / _u / _v."""
    for m in model.modules():
        if isinstance(m, SpectralConv2d):
            nn.utils.spectral_norm(m)
    return model


def init_weights(model: Disco) -> None:
    """Official init: SpixelNet kaiming (a=0.1) / BN 1,0; the rest xavier-uniform (dim >= 2)."""
    for m in model.segnet.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.kaiming_normal_(m.weight, a=0.1, mode="fan_in")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for name, p in model.named_parameters():
        if not name.startswith("segnet.") and p.dim() >= 2:
            nn.init.xavier_uniform_(p)


def serving_config(cfg: DiscoConfig) -> DiscoConfig:
    return replace(cfg, img_size=SERVE_SIZE)


def inference_model(train_model: Disco, size: int = SERVE_SIZE) -> Disco:
    """A plain (SN-folded) eval copy at `size`, loaded through the official loading path."""
    model = Disco(replace(train_model.cfg, img_size=size))
    sd = {k: v.detach().cpu() for k, v in train_model.state_dict().items()}
    return load_state(model, {"state_dict": sd})


# ------------------------------------------------------------------------------------------------
# The stage-2 step as a module (so DDP sees one forward)
# ------------------------------------------------------------------------------------------------
def chroma_transform(
    n: int,
    p: float,
    sat_range: tuple[float, float],
    device: torch.device,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-image 2x2 ab maps: with probability p a random rotation times a saturation scale,
    else the identity (N, 2, 2)."""

    def rand() -> torch.Tensor:
        return (
            torch.rand(n, generator=generator).to(device)
            if generator is not None
            else torch.rand(n, device=device)
        )

    theta = rand() * 2 * math.pi
    lo, hi = sat_range
    scale = lo + (hi - lo) * rand()
    on = (rand() < p).float()
    theta, scale = theta * on, scale * on + (1 - on)
    c, s_ = torch.cos(theta) * scale, torch.sin(theta) * scale
    return torch.stack([torch.stack([c, -s_], -1), torch.stack([s_, c], -1)], -2)


class ColorizationLoss(nn.Module):
    """Teacher-forced DISCO forward on a Lab batch -> the loss terms."""

    def __init__(self, model: Disco, class_weights: torch.Tensor, bin_ab: torch.Tensor, tc):
        super().__init__()
        self.model = model
        self.tc = tc
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.register_buffer("bin_ab", bin_ab, persistent=False)

    def forward(
        self, lab: torch.Tensor, k: int, random_sites: bool, init: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        m, s = self.model, self.model.cfg.sp_size
        l_norm, ab = lab[:, :1], lab[:, 1:]
        n, _, hh, ww = lab.shape
        h, w = hh // s, ww // s
        pos = sine_position_encoding(m.cfg.d_model, h, w).to(lab).flatten(2).transpose(1, 2)
        pos = pos.expand(n, -1, -1)
        with torch.no_grad():
            affinity = m.segnet(l_norm)
            sizes = spixel_sizes(affinity, s).flatten(1)
        feats = m.repnet(l_norm)
        pooled, _ = sp_pool(torch.cat([feats, ab], 1), affinity, s)
        d = m.cfg.d_model
        tokens = pooled[:, :d]
        gt_tokens = pooled[:, d:].flatten(2).transpose(1, 2).detach()  # (N, L, 2) ab / 110
        labels = nearest_bins(gt_tokens, self.bin_ab)
        hint_labels, ab_target = labels, ab
        if self.model.training and self.tc.chroma_aug > 0:
            rot = chroma_transform(n, self.tc.chroma_aug, self.tc.sat_range, lab.device)
            ab_target = torch.einsum("nij,njhw->nihw", rot, ab).clamp(-1.0, 1.0)
            aug_tokens = torch.einsum("nij,nlj->nli", rot, gt_tokens).clamp(-1.0, 1.0)
            hint_labels = nearest_bins(aug_tokens, self.bin_ab)
        seq = tokens.flatten(2).transpose(1, 2)
        enc_out = m.wildpath(seq, pos)
        pal_logit = m.mid_word_prj(enc_out)
        with torch.no_grad():
            if random_sites:
                hint_mask = torch.zeros(n, h * w, device=lab.device)
                hint_mask.scatter_(1, init, 1.0)
            else:
                clusters = kmeans(gt_tokens, init)
                hint_mask, _ = pick_anchors(clusters, sizes, k)
        dec_out = m.hintpath(m.hint_sequence(tokens, hint_mask, hint_labels), pos)
        ref_logit = m.trg_word_prj(dec_out)
        grid = dec_out.transpose(1, 2).reshape(n, d, h, w)
        full = sp_diffuse(grid, affinity, s)
        ab_pred = torch.tanh(m.enhanceNet(torch.cat([l_norm, full], 1)))
        l_pal = weighted_ce(pal_logit, labels, self.class_weights)
        l_ref = weighted_ce(ref_logit, hint_labels, self.class_weights)
        l1 = (ab_pred - ab_target).abs().mean()
        lap = laplacian_l1(ab_pred, ab_target)
        loss = l_pal + l_ref + self.tc.l1_weight * l1 + self.tc.lap_weight * lap
        l_anchor = self.anchor_consistency(ab_pred, affinity, hint_mask, hint_labels)
        if self.tc.anchor_weight > 0:
            loss = loss + self.tc.anchor_weight * l_anchor
        with torch.no_grad():
            ce_pal = F.cross_entropy(pal_logit.flatten(0, 1), labels.flatten())
            acc = (pal_logit.argmax(-1) == labels).float().mean()
        return {
            "loss": loss,
            "pal": l_pal.detach(),
            "ref": l_ref.detach(),
            "l1": l1.detach(),
            "lap": lap.detach(),
            "anchor": l_anchor.detach(),
            "ce_pal": ce_pal,
            "acc_pal": acc,
        }

    def anchor_consistency(
        self,
        ab_pred: torch.Tensor,
        affinity: torch.Tensor,
        hint_mask: torch.Tensor,
        hint_labels: torch.Tensor,
    ) -> torch.Tensor:
        """Mean |superpixel mean of ab_pred - the anchor's bin colour| over the anchors (ab/110)."""
        pooled, _ = sp_pool(ab_pred, affinity, self.model.cfg.sp_size)
        pred = pooled.flatten(2).transpose(1, 2)  # (N, L, 2)
        want = self.bin_ab[hint_labels] / 110.0
        on = (hint_mask > 0).to(pred.dtype)[..., None]
        return ((pred - want).abs() * on).sum() / (2 * on.sum()).clamp_min(1.0)


class SpixelLoss(nn.Module):
    def __init__(self, model: Disco):
        super().__init__()
        self.segnet = model.segnet
        self.s = model.cfg.sp_size

    def forward(self, lab: torch.Tensor) -> dict[str, torch.Tensor]:
        loss, feat, pos = spixel_loss(self.segnet(lab[:, :1]), lab[:, 1:], self.s)
        return {"loss": loss, "feat": feat.detach(), "pos": pos.detach()}


# ------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------
def make_checkpoint(
    model: Disco,
    step: int,
    best_loss: float,
    optimizer: torch.optim.Optimizer | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The official checkpoint dict (+ `config` with the serving img_size, + resume state)."""
    ckpt: dict[str, Any] = {
        "epoch": step,  # we count optimisation steps, not epochs
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "best_loss": float(best_loss),
        "config": serving_config(model.cfg).to_dict(),
    }
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
    if extra:
        ckpt.update(extra)
    return ckpt


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def ship_checkpoint(src: Path, dst: Path) -> Path:
    """Strip the optimizer and resume state: the small official-format file to bundle."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    keep = {k: ckpt[k] for k in ("epoch", "state_dict", "best_loss", "config")}
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(keep, dst)
    return dst


# ------------------------------------------------------------------------------------------------
# Validation and samples
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def validate(crit: ColorizationLoss, val_lab: torch.Tensor, k: int = 8) -> dict[str, float]:
    model = crit.model
    was = model.training
    model.eval()
    s = model.cfg.sp_size
    n_tok = (val_lab.shape[2] // s) * (val_lab.shape[3] // s)
    g = torch.Generator().manual_seed(1234)
    init = torch.stack([torch.randperm(n_tok, generator=g)[:k] for _ in range(len(val_lab))])
    out: dict[str, float] = {}
    for i in range(len(val_lab)):
        r = crit(val_lab[i : i + 1], k, False, init[i : i + 1].to(val_lab.device))
        for key, v in r.items():
            out[key] = out.get(key, 0.0) + float(v) / len(val_lab)
    model.train(was)
    model.segnet.eval()
    return out


def validate_anchors(model: Disco, photos: list[np.ndarray], size: int = SERVE_SIZE) -> dict:
    """Anchor use on the validation photos (256 px crops): oracle gain, diverse spread, hint
    response, through the serving pipeline, so that a generator that ignores its anchors shows
    during training."""
    from export.torch_engine import TorchEngine
    from export.train import anchor_metrics as am

    eng = TorchEngine(inference_model(model, size))
    rng = np.random.default_rng(1234)
    rows = [
        am.image_scores(eng, tdata.center_crop_rgb(rgb, size), n_hints=2, hint_rng=rng)
        for rgb in photos
    ]
    return am.summarize(rows)


def write_samples(model: Disco, photos: list[np.ndarray], path: Path, size: int = SERVE_SIZE):
    """A strip per photo: gray input | k-means anchors (serving path) | ground truth."""
    from PIL import Image

    from export.torch_engine import TorchEngine
    from service.colorspace import lab_to_srgb_uint8, lightness
    from service.pipeline import Job, run

    eng = TorchEngine(inference_model(model, size))
    rows = []
    for rgb in photos:
        rgb = tdata.center_crop_rgb(rgb, size)
        out = run(eng, [Job(rgb, seed=0, size="model")])[0][0].image
        l_full = lightness(rgb)
        gray = lab_to_srgb_uint8(l_full, np.zeros((2, *l_full.shape), np.float32))
        rows.append(np.concatenate([gray, out, rgb], 1))
    Image.fromarray(np.concatenate(rows, 0)).save(path)


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------
def _lr_lambda(total: int, final: float) -> Callable[[int], float]:
    return lambda i: 1.0 - (1.0 - final) * min(i, total) / max(total, 1)


def train(tc: TrainConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) training; returns a summary. Files go under tc.out."""
    rank, world, local_rank = _dist_env()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = _pick_device(tc.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed + rank)
    rng = np.random.default_rng(tc.seed + 1000 * rank)
    out = Path(tc.out)
    is_main = rank == 0
    if is_main:
        (out / "samples").mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        if is_main:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    photos = tdata.load_photos(Path(tc.data))
    val_photos = (
        tdata.load_photos(Path(tc.val)) if tc.val else [p for p in photos[::8]][: max(1, 4)]
    )
    log(f"{len(photos)} training photos, {len(val_photos)} validation photos, device {device}")

    cfg = build_config(tc)
    model = add_spectral_norm(Disco(cfg))
    unknown = set(tc.train_only) - {name for name, _ in model.named_children()}
    if unknown:
        raise ValueError(f"--train-only: no such module {sorted(unknown)}")
    init_weights(model)
    prior = np.load(Path(__file__).resolve().parents[2] / "service" / "data" / "gamut_probs.npy")
    bins = np.load(Path(__file__).resolve().parents[2] / "service" / "data" / "gamut_pts.npy")
    weights = torch.from_numpy(rebalance_weights(prior, tc.lam))
    crit = ColorizationLoss(model, weights, torch.from_numpy(bins.astype(np.float32)), tc)
    spix = SpixelLoss(model)
    crit.to(device)

    step, best_loss, history = 0, math.inf, []
    state: dict[str, Any] | None = None
    last = out / "last.pth.tar"
    if resume and last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(state["state_dict"])
        step, best_loss = int(state["step"]), float(state["best_loss"])
        history = state.get("history", [])
        if "rng" in state:
            rng.bit_generator.state = state["rng"]
        log(f"resumed from {last} at step {step} (best val {best_loss:.4f})")
    if state is None and tc.init:
        init_ckpt = torch.load(tc.init, map_location="cpu", weights_only=True)
        model.load_state_dict(init_ckpt["state_dict"])
        log(f"fine-tuning from {tc.init}")
    total = tc.spix_steps + tc.steps

    val_lab = torch.from_numpy(tdata.center_batch(val_photos, SERVE_SIZE)).to(device)

    def make_opt(stage: int) -> tuple[torch.optim.Optimizer, Any, nn.Module]:
        if stage == 1:
            params = list(model.segnet.parameters())
            for p in model.parameters():
                p.requires_grad_(False)
            for p in params:
                p.requires_grad_(True)
            module: nn.Module = spix
            opt = torch.optim.Adam(params, lr=tc.spix_lr)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(tc.spix_steps, tc.lr_final))
        else:
            for name, child in model.named_children():
                on = name in tc.train_only if tc.train_only else name != "segnet"
                for p in child.parameters():
                    p.requires_grad_(on)
            module = crit
            hint_emb = list(model.trg_word_emb.parameters())
            hint_ids = {id(p) for p in hint_emb}
            rest = [p for p in model.parameters() if p.requires_grad and id(p) not in hint_ids]
            opt = torch.optim.Adam(
                [{"params": rest}, {"params": hint_emb, "lr": tc.lr * tc.hint_lr_mult}], lr=tc.lr
            )
            sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(tc.steps, tc.lr_final))
        if world > 1:
            if device.type == "cuda":
                module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
            module = nn.parallel.DistributedDataParallel(
                module,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=False,  # every trainable parameter feeds the loss
            )
        return opt, sched, module

    def set_modes(stage: int) -> None:
        """Train mode, except SpixelNet in stage 2 and the modules stage 2 does not train."""
        model.train()
        for name, child in model.named_children():
            frozen = name != "segnet" and tc.train_only and name not in tc.train_only
            if (name == "segnet" and stage == 2) or (stage == 2 and frozen):
                child.eval()

    def hint_stage() -> None:
        """Once, before the first stage-2 step (a resumed run has its result in the weights)."""
        if not tc.hint_steps or any("hint_stage" in h for h in history):
            return
        from .hint_stage import pretrain_hint_path

        if world > 1:
            raise SystemExit("--hint-steps runs in a single process; run it, then torchrun --init")
        hist = pretrain_hint_path(
            model, photos, val_photos, crit.class_weights, crit.bin_ab,
            steps=tc.hint_steps, lr=tc.hint_lr, rotate=max(tc.chroma_aug, 0.9),
            random_hint=tc.random_hint, seed=tc.seed, log=log,
        )  # fmt: skip
        history.append({"step": step, "hint_stage": hist})
        save(out / "hint.pth.tar", with_opt=False)

    stage = 1 if step < tc.spix_steps else 2
    opt, sched, module = make_opt(stage)
    if state is not None and state.get("stage") == stage and "optimizer" in state:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])

    def save(path: Path, with_opt: bool = True) -> None:
        if not is_main:
            return
        extra = {
            "step": step,
            "stage": stage,
            "rng": rng.bit_generator.state,
            "scheduler": sched.state_dict(),
            "history": history,
            "train_config": asdict(tc),
        }
        _atomic_save(
            make_checkpoint(model, step, best_loss, opt if with_opt else None, extra), path
        )

    from tqdm import tqdm

    bar = tqdm(
        total=total,
        initial=step,
        disable=not (is_main and progress),
        file=sys.stderr,
        mininterval=10.0,
        unit="step",
        dynamic_ncols=False,
    )
    t_start = last_ckpt = time.time()
    if stage == 2 and step == tc.spix_steps:
        hint_stage()
    set_modes(stage)
    running: dict[str, float] = {}
    n_running = 0
    t_log = time.time()
    while step < total:
        if stage == 1 and step >= tc.spix_steps:
            save(out / "spixnet.pth.tar", with_opt=False)
            stage = 2
            hint_stage()
            opt, sched, module = make_opt(stage)
            set_modes(stage)
            log("stage 1 done: SpixelNet frozen, stage 2 starts")
        if stage == 1:
            lab = torch.from_numpy(tdata.sample_batch(photos, tc.batch, tc.crop, rng)).to(device)
            r = module(lab)
        else:
            srng = np.random.default_rng([tc.seed, step])  # same choices on every rank
            big = srng.random() < tc.big_fraction
            crop, batch = (tc.big_crop, tc.big_batch) if big else (tc.crop, tc.batch)
            short = (crop + crop // 8, crop * 7 // 4)
            lab = tdata.sample_batch(photos, batch, crop, rng, short)
            n_tok = (crop // cfg.sp_size) ** 2
            # 4..8 anchors of 64 tokens; 4..16 of 256 (serving default: 8 of 256)
            k = int(srng.integers(tc.k_min, (2 * tc.k_max if big else tc.k_max) + 1))
            k = min(k, n_tok)
            random_sites = bool(srng.random() < tc.random_hint)
            init = torch.from_numpy(np.argsort(rng.random((batch, n_tok)), 1)[:, :k].copy())
            r = module(torch.from_numpy(lab).to(device), k, random_sites, init.to(device))
        opt.zero_grad(set_to_none=True)
        r["loss"].backward()
        gnorm = torch.nn.utils.clip_grad_norm_(
            [p for g in opt.param_groups for p in g["params"]], tc.clip
        )
        if not torch.isfinite(r["loss"]):
            raise FloatingPointError(f"non-finite loss at step {step}: {r}")
        opt.step()
        sched.step()
        step += 1
        bar.update(1)
        for key, v in r.items():
            running[key] = running.get(key, 0.0) + float(v.detach())
        running["gnorm"] = running.get("gnorm", 0.0) + float(gnorm)
        n_running += 1
        if step % tc.log_every == 0 or step == total:
            means = {k_: v / n_running for k_, v in running.items()}
            dt = (time.time() - t_log) / n_running
            history.append({"step": step, "stage": stage, "s_per_step": round(dt, 3), **means})
            log(
                f"step {step}/{total} stage {stage} "
                + " ".join(f"{k_} {v:.4f}" for k_, v in means.items())
                + f" lr {opt.param_groups[0]['lr']:.2e} {dt:.2f}s/step"
            )
            running, n_running, t_log = {}, 0, time.time()
        if stage == 2 and (step % tc.val_every == 0 or step == total):
            v = validate(crit, val_lab)
            if is_main and tc.val_anchor_metrics:
                v.update(
                    {f"anchor_{k_}": x for k_, x in validate_anchors(model, val_photos).items()}
                )
            set_modes(stage)
            history.append({"step": step, "val": v})
            improved = v["loss"] < best_loss
            if improved:
                best_loss = v["loss"]
                save(out / "best.pth.tar", with_opt=False)
            log(
                f"val step {step}: "
                + " ".join(f"{k_} {x:.4f}" for k_, x in v.items())
                + (" (best)" if improved else "")
            )
        if is_main and stage == 2 and (step % tc.sample_every == 0 or step == total):
            write_samples(model, val_photos, out / "samples" / f"step{step:06d}.png")
            set_modes(stage)
        if time.time() - last_ckpt > tc.ckpt_every_s or step == total:
            save(last)
            last_ckpt = time.time()
        if tc.max_minutes and (time.time() - t_start) / 60 > tc.max_minutes:
            log(f"time limit of {tc.max_minutes} min reached at step {step}")
            save(last)
            break
    bar.close()
    if stage == 2 and not (out / "best.pth.tar").exists():
        save(out / "best.pth.tar", with_opt=False)
    summary = {
        "step": step,
        "total": total,
        "best_val_loss": best_loss,
        "minutes": (time.time() - t_start) / 60,
    }
    if is_main:
        (out / "history.json").write_text(json.dumps(history, indent=0))
        log(f"done: {summary}")
    if world > 1:
        dist.barrier()
    return summary


__all__ = [
    "TrainConfig",
    "add_spectral_norm",
    "checkpoint_filter_fn",
    "inference_model",
    "make_checkpoint",
    "ship_checkpoint",
    "train",
]

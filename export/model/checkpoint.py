"""Official-checkpoint conversion and loading, and the deterministic seed-0 test weights.

The official state_dict stores 23 convs in spectral-norm form (`weight_orig`, `weight_u`,
`weight_v`); in eval mode the norm is the constant u . (W v), so we fold it once at load time
and the network runs plain convs. Loading is strict: a wrong file fails with the list of
missing / unexpected keys and bad shapes, never a silent partial load.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .disco import Disco, DiscoConfig, SpectralConv2d, build

SN_SUFFIXES = ("weight_orig", "weight_u", "weight_v")


class CheckpointError(ValueError):
    """The file is not a DISCO checkpoint this architecture can load."""


# ------------------------------------------------------------------------------------------------
# The official layout
# ------------------------------------------------------------------------------------------------
def official_layout(model: Disco) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """(key, shape, dtype) of the official state_dict for this architecture, in official order.

    Same as `model.state_dict()` except that spectral-norm convs appear as
    `bias, weight_orig, weight_u, weight_v` (the order `spectral_norm` registers them).
    """
    sn_prefixes = {f"{n}." for n, m in model.named_modules() if isinstance(m, SpectralConv2d)}
    out: list[tuple[str, tuple[int, ...], torch.dtype]] = []
    for key, t in model.state_dict().items():
        prefix, _, leaf = key.rpartition(".")
        prefix += "."
        if prefix not in sn_prefixes:
            out.append((key, tuple(t.shape), t.dtype))
        elif leaf == "bias":
            w = model.state_dict()[prefix + "weight"]
            out.append((key, tuple(t.shape), t.dtype))
            out.append((prefix + "weight_orig", tuple(w.shape), w.dtype))
            out.append((prefix + "weight_u", (w.shape[0],), w.dtype))
            out.append((prefix + "weight_v", (w[0].numel(),), w.dtype))
    return out


# ------------------------------------------------------------------------------------------------
# Conversion: official dict -> this model's dict
# ------------------------------------------------------------------------------------------------
def fold_spectral_norm(weight_orig: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Eval-mode spectral norm: weight_orig / (u . (W2d v)), with the stored u, v verbatim."""
    w2d = weight_orig.reshape(weight_orig.shape[0], -1)
    sigma = torch.dot(u, torch.mv(w2d, v))
    return weight_orig / sigma


def _unwrap(ckpt: Any) -> dict[str, torch.Tensor]:
    if isinstance(ckpt, Mapping):
        for key in ("state_dict", "model"):
            if key in ckpt and isinstance(ckpt[key], Mapping):
                return dict(ckpt[key])
        if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            return dict(ckpt)
    raise CheckpointError(
        "not a DISCO checkpoint: expected a dict with a 'state_dict' of tensors "
        f"(got {type(ckpt).__name__}"
        f"{' with keys ' + str(list(ckpt)[:8]) if isinstance(ckpt, Mapping) else ''})"
    )


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: Disco) -> dict[str, torch.Tensor]:
    """Official (or already native) state_dict -> this model's keys, SN folded. Pure."""
    sd = _unwrap(state_dict)
    sd = {re.sub(r"^(module\.)+", "", k): v for k, v in sd.items()}
    if not any(k.endswith("weight_orig") for k in sd):
        return sd  # already native (e.g. written by our own trainer after folding)
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.endswith(("weight_u", "weight_v")):
            continue
        if key.endswith("weight_orig"):
            prefix = key[: -len("weight_orig")]
            try:
                u, v = sd[prefix + "weight_u"], sd[prefix + "weight_v"]
            except KeyError as e:
                raise CheckpointError(f"spectral-norm conv {prefix[:-1]} lacks {e.args[0]}") from e
            out[prefix + "weight"] = fold_spectral_norm(value.float(), u.float(), v.float())
        else:
            out[key] = value
    return out


def check_state_dict(sd: Mapping[str, torch.Tensor], model: nn.Module) -> None:
    """Raise CheckpointError naming every missing / unexpected key and shape mismatch."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    bad = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in sd and tuple(sd[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or bad:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("bad shape", bad)):
            if items:
                more = f" ... (+{len(items) - 10} more)" if len(items) > 10 else ""
                parts.append(f"{len(items)} {title}: " + ", ".join(items[:10]) + more)
        raise CheckpointError(
            "checkpoint does not match the DISCO architecture; " + "; ".join(parts)
        )


def _read(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a non-checkpoint file
        raise CheckpointError(f"cannot read {path} as a torch checkpoint: {e}") from e


def config_from_checkpoint(ckpt: Any) -> DiscoConfig:
    """The architecture a checkpoint needs: its stored 'config', else the official one."""
    if isinstance(ckpt, Mapping) and isinstance(ckpt.get("config"), Mapping):
        known = set(DiscoConfig.__dataclass_fields__)
        return DiscoConfig(**{k: v for k, v in ckpt["config"].items() if k in known})
    return DiscoConfig()


def load_state(model: Disco, ckpt: Any) -> Disco:
    """Convert, check and load (strict) an in-memory checkpoint into `model`."""
    sd = checkpoint_filter_fn(ckpt, model)
    check_state_dict(sd, model)
    model.load_state_dict(sd, strict=True)
    return model.eval()


def load_checkpoint(path: str | Path, model: Disco | None = None) -> Disco:
    """Load an official DISCO checkpoint (`disco-beta.pth.tar`, DISCO-c0.2, DISCO-rand) as
    downloaded, or one written by `disco train`. Returns the model in eval mode on CPU."""
    ckpt = _read(path)
    if model is None:
        model = build(config_from_checkpoint(ckpt))
    try:
        return load_state(model, ckpt)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None


# ------------------------------------------------------------------------------------------------
# Deterministic test weights (architecture spec, sec. 11)
# ------------------------------------------------------------------------------------------------
SIGMA = 2.0


def _test_value(key: str, r: torch.Tensor) -> torch.Tensor:
    fan_in = r.numel() / r.shape[0] if r.dim() else 1.0
    if key.endswith("running_mean"):
        return 0.1 * r
    if key.endswith("running_var"):
        return 1 + 0.1 * r.abs()
    if key.endswith("weight_v"):
        return r / r.norm()
    if key.endswith("weight_orig") and r.dim() == 4:
        return SIGMA * r * (2 / fan_in) ** 0.5
    if r.dim() == 4:
        return r * (2 / fan_in) ** 0.5
    if r.dim() == 2:
        return r * (0.5 / fan_in**0.5)
    if r.dim() == 1 and key.endswith("weight"):
        return 1 + 0.1 * r
    if r.dim() == 1 and key.endswith("bias"):
        return 0.05 * r
    raise ValueError(f"no test-weight rule for {key} {tuple(r.shape)}")


def make_test_checkpoint(seed: int = 0, model: Disco | None = None) -> dict[str, Any]:
    """Seed-`seed` test weights in the official checkpoint format (never ship these).

    Entry i of the official layout draws torch.randn(shape, Generator().manual_seed(seed + i));
    then a per-key rule (BN stats, He scaling, unit v, u such that u . (W v) = SIGMA exactly).
    """
    model = model or Disco()
    layout = official_layout(model)
    sd: dict[str, torch.Tensor] = {}
    for i, (key, shape, _) in enumerate(layout):
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(0, dtype=torch.int64)
            continue
        g = torch.Generator().manual_seed(seed + i)
        r = torch.randn(shape, generator=g, dtype=torch.float32)
        sd[key] = r if key.endswith("weight_u") else _test_value(key, r)
    for key, *_ in layout:
        if key.endswith("weight_u"):
            prefix = key[: -len("weight_u")]
            w2d = sd[prefix + "weight_orig"].double().reshape(sd[key].shape[0], -1)
            w = w2d @ sd[prefix + "weight_v"].double()
            sd[key] = (SIGMA * w / torch.dot(w, w)).float()
    return {"epoch": 0, "state_dict": sd, "best_loss": float("inf"), "config": model.cfg.to_dict()}


def save_test_checkpoint(path: str | Path, seed: int = 0) -> Path:
    """Write the full-size test weights as an official-format file (about 173 MB)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = make_test_checkpoint(seed)
    del ckpt["config"]  # exactly the official layout: the loader must cope without it
    torch.save(ckpt, path)
    return path


def tensor_sha256_16(t: torch.Tensor) -> str:
    """First 16 hex chars of sha256 over the raw little-endian bytes (the checksum table's)."""
    return hashlib.sha256(t.detach().contiguous().cpu().numpy().tobytes()).hexdigest()[:16]


def test_weights_model(seed: int = 0, cfg: DiscoConfig | None = None) -> Disco:
    """The seed-`seed` test model, loaded through the same path as an official checkpoint."""
    model = Disco(cfg)
    return load_state(model, make_test_checkpoint(seed, model))


test_weights_model.__test__ = False  # type: ignore[attr-defined]  # not a pytest test

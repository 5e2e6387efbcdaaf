"""DISCO: Disentangled Image Colorization via Global Anchors (Xia et al., SIGGRAPH Asia 2022).

A re-implementation of the official `AnchorColorProb` inference network, module for module, so
the official checkpoint loads by key (see `checkpoint.py`). Data flow at 256x256 (one image):

    L_norm -> segnet -> affinity A (9 slots)          L_norm -> repnet -> pixel features F
    SP-pool(F, A) -> feature tokens S (16x16)          wildpath(S + pos) -> enc_out -> pal_logit
    anchors (k-means on enc_out, or the user's) + sampled colours -> hint tokens
    hintpath(hint tokens + pos) -> dec_out -> SP-diffuse(dec_out, A) -> enhanceNet -> tanh -> ab

The network is split at the anchors on purpose: `encode` runs once per image, `generate` once per
anchor set, so diverse results and user hints never re-run the expensive trunks.
Device and dtype always come from the caller; shapes are static for a given input size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .superpixel import sine_position_encoding, sp_diffuse, sp_pool, spixel_sizes


@dataclass(frozen=True)
class DiscoConfig:
    in_chans: int = 1  # the network sees only L
    num_bins: int = 313  # in-gamut 10x10 ab bins (gamut_pts.npy)
    d_model: int = 64  # token width of both transformers
    n_heads: int = 8
    ffn_dim: int = 256
    n_layers: int = 6  # per transformer (wildpath, hintpath)
    sp_size: int = 16  # superpixel cell, pixels; 256 px input -> 16x16 tokens
    img_size: int = 256  # the size the network is traced and served at
    width: float = 1.0  # channel multiplier of repnet and enhanceNet (the demo model uses < 1)
    segnet_width: float = 1.0  # channel multiplier of SpixelNet
    n_clusters: int = 8  # default number of anchors (k-means K)
    res_blocks: int = 3  # residual blocks in enhanceNet

    @property
    def grid(self) -> int:
        return self.img_size // self.sp_size

    @property
    def n_tokens(self) -> int:
        return self.grid * self.grid

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ch(c: int, width: float) -> int:
    return max(4, round(c * width))


class SpectralConv2d(nn.Conv2d):
    """A conv the official checkpoint stores as spectral-norm (weight_orig, weight_u, weight_v).

    At inference the norm is a constant, so the loader folds it into a plain `weight`; this
    subclass only marks where the official state_dict layout differs.
    """


def _conv(cin: int, cout: int, stride: int = 1, spectral: bool = False) -> nn.Conv2d:
    cls = SpectralConv2d if spectral else nn.Conv2d
    return cls(cin, cout, 3, stride, 1)


# ------------------------------------------------------------------------------------------------
# segnet: SpixelNet, the superpixel affinity predictor
# ------------------------------------------------------------------------------------------------
def _cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1)
    )


def _deconv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.1))


class SpixelNet(nn.Module):
    """U-Net over 4 stride-2 levels predicting, per pixel, a softmax over the 9 nearby cells."""

    def __init__(self, in_chans: int = 1, width: float = 1.0):
        super().__init__()
        c0, c1, c2, c3, c4 = (_ch(c, width) for c in (16, 32, 64, 128, 256))
        self.conv0a, self.conv0b = _cbr(in_chans, c0), _cbr(c0, c0)
        self.conv1a, self.conv1b = _cbr(c0, c1, 2), _cbr(c1, c1)
        self.conv2a, self.conv2b = _cbr(c1, c2, 2), _cbr(c2, c2)
        self.conv3a, self.conv3b = _cbr(c2, c3, 2), _cbr(c3, c3)
        self.conv4a, self.conv4b = _cbr(c3, c4, 2), _cbr(c4, c4)
        self.deconv3, self.conv3_1 = _deconv(c4, c3), _cbr(2 * c3, c3)
        self.deconv2, self.conv2_1 = _deconv(c3, c2), _cbr(2 * c2, c2)
        self.deconv1, self.conv1_1 = _deconv(c2, c1), _cbr(2 * c1, c1)
        self.deconv0, self.conv0_1 = _deconv(c1, c0), _cbr(2 * c0, c0)
        self.pred_mask0 = nn.Conv2d(c0, 9, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv0b(self.conv0a(x))
        out2 = self.conv1b(self.conv1a(out1))
        out3 = self.conv2b(self.conv2a(out2))
        out4 = self.conv3b(self.conv3a(out3))
        out5 = self.conv4b(self.conv4a(out4))
        x = self.conv3_1(torch.cat([out4, self.deconv3(out5)], 1))  # skip first, then upsampled
        x = self.conv2_1(torch.cat([out3, self.deconv2(x)], 1))
        x = self.conv1_1(torch.cat([out2, self.deconv1(x)], 1))
        x = self.conv0_1(torch.cat([out1, self.deconv0(x)], 1))
        return torch.softmax(self.pred_mask0(x), 1)


class SpixelSeg(nn.Module):
    """Wrapper kept for the official key prefix `segnet.net.*`."""

    def __init__(self, in_chans: int = 1, width: float = 1.0):
        super().__init__()
        self.net = SpixelNet(in_chans, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# ------------------------------------------------------------------------------------------------
# repnet: ColorProbNet, the pixel feature trunk
# ------------------------------------------------------------------------------------------------
def _sn_block(cin: int, cout: int, n_convs: int, stride: int) -> nn.Sequential:
    """n spectral-norm convs, each + LeakyReLU(0.2), then BatchNorm (after the activation)."""
    layers: list[nn.Module] = []
    for i in range(n_convs):
        layers += [_conv(cin if i == 0 else cout, cout, stride if i == 0 else 1, True)]
        layers += [nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers, nn.BatchNorm2d(cout))


def _up_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _conv(cin, cout))


class ColorProbNet(nn.Module):
    """VGG-like encoder (32x32 bottleneck) + decoder back to full resolution; output >= 0."""

    def __init__(self, in_chans: int = 1, out_chans: int = 64, width: float = 1.0):
        super().__init__()
        c1, c2, c3, c4 = (_ch(c, width) for c in (64, 128, 256, 512))
        self.conv1_2 = _sn_block(in_chans, c1, 2, 1)
        self.conv2_3 = _sn_block(c1, c2, 3, 2)
        self.conv3_3 = _sn_block(c2, c3, 3, 2)
        self.conv4_3 = _sn_block(c3, c4, 3, 2)
        self.conv5_3 = _sn_block(c4, c4, 3, 1)
        self.conv6_3 = _sn_block(c4, c4, 3, 1)
        self.conv7_3 = _sn_block(c4, c4, 3, 1)
        self.conv8up = _up_conv(c4, c3)
        self.conv3short8 = nn.Sequential(_conv(c3, c3))
        self.conv8_3 = nn.Sequential(
            nn.ReLU(), _conv(c3, c3), nn.ReLU(), _conv(c3, c3), nn.ReLU(), nn.BatchNorm2d(c3)
        )
        self.conv9up = _up_conv(c3, c2)
        self.conv9_2 = nn.Sequential(_conv(c2, c2), nn.ReLU(), nn.BatchNorm2d(c2))
        self.conv10up = _up_conv(c2, out_chans)
        self.conv10_2 = nn.Sequential(nn.ReLU(), _conv(out_chans, out_chans), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f3 = self.conv3_3(self.conv2_3(self.conv1_2(x)))
        f7 = self.conv7_3(self.conv6_3(self.conv5_3(self.conv4_3(f3))))
        f8 = self.conv8_3(self.conv8up(f7) + self.conv3short8(f3))
        f9 = self.conv9_2(self.conv9up(f8))
        return self.conv10_2(self.conv10up(f9))


# ------------------------------------------------------------------------------------------------
# wildpath / hintpath: post-norm transformer encoders with dense (every-layer) positions
# ------------------------------------------------------------------------------------------------
class SelfAttention(nn.Module):
    """Multi-head self-attention with positions added to queries and keys only.

    Parameter names follow `nn.MultiheadAttention` (packed q/k/v `in_proj_*`), so the official
    weights load as they are; the computation is written out so it exports to plain ONNX ops.
    """

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        assert d_model % n_heads == 0, f"d_model {d_model} not divisible by {n_heads} heads"
        self.n_heads = n_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        n, length, d = x.shape
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3)
        qk_in = x + pos
        heads = (n, length, self.n_heads, d // self.n_heads)
        q = F.linear(qk_in, wq, bq).view(heads).transpose(1, 2)  # (N, H, L, hd)
        k = F.linear(qk_in, wk, bk).view(heads).transpose(1, 2)
        v = F.linear(x, wv, bv).view(heads).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(-2, -1) * (heads[-1] ** -0.5), -1)
        out = (att @ v).transpose(1, 2).reshape(n, length, d)
        return self.out_proj(out)


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, ffn_dim: int):
        super().__init__()
        self.self_attn = SelfAttention(d_model, n_heads)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.self_attn(x, pos))
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))


class TransformerEncoder(nn.Module):
    def __init__(self, d_model: int, n_heads: int, ffn_dim: int, n_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, n_heads, ffn_dim) for _ in range(n_layers)
        )

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x, pos: (N, L, C) batch-first token sequences."""
        for layer in self.layers:
            x = layer(x, pos)
        return x


# ------------------------------------------------------------------------------------------------
# enhanceNet: HourGlass2, the full-resolution ab generator
# ------------------------------------------------------------------------------------------------
class InConv(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.inConv = nn.Sequential(_conv(cin, cout), nn.ReLU())
        self.conv = nn.Sequential(_conv(cout, cout), nn.ReLU(), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.inConv(x))


class Down(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Sequential(
            _conv(cin, cout, 2), nn.ReLU(), _conv(cout, cout), nn.ReLU(), nn.BatchNorm2d(cout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ResidualBlock(nn.Module):
    """x + conv(SNconv(conv(x))) with one ReLU inside and one after the sum (official layout)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Sequential(
            _conv(ch, ch), _conv(ch, ch, spectral=True), nn.ReLU(), _conv(ch, ch)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv(x))


class Up(nn.Module):
    """conv at the coarse level, nearest x2, fuse with the skip, two more convs."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = _conv(cin, cout)
        self.combine = _conv(2 * cout, cout)
        self.conv2 = nn.Sequential(
            _conv(cout, cout), nn.ReLU(), _conv(cout, cout), nn.ReLU(), nn.BatchNorm2d(cout)
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(self.conv1(x), scale_factor=2.0, mode="nearest")
        return self.conv2(F.relu(self.combine(torch.cat([up, skip], 1))))


class HourGlass2(nn.Module):
    def __init__(self, in_chans: int, out_chans: int = 2, width: float = 1.0, res_blocks: int = 3):
        super().__init__()
        c1, c2, c3 = (_ch(c, width) for c in (64, 128, 256))
        self.inConv = InConv(in_chans, c1)
        self.down1 = Down(c1, c2)
        self.down2 = Down(c2, c3)
        self.residual = nn.Sequential(*(ResidualBlock(c3) for _ in range(res_blocks)))
        self.up2 = Up(c3, c2)
        self.up1 = Up(c2, c1)
        self.outConv = _conv(c1, out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1 = self.inConv(x)
        f2 = self.down1(f1)
        f3 = self.residual(self.down2(f2))
        return self.outConv(self.up1(self.up2(f3, f2), f1))


# ------------------------------------------------------------------------------------------------
# The whole network
# ------------------------------------------------------------------------------------------------
class Encoded(NamedTuple):
    """What one encoder pass yields; everything anchor selection and `generate` need."""

    affinity: torch.Tensor  # (N, 9, H, W) softmax over the 9 neighbouring cells
    tokens: torch.Tensor  # (N, C, h, w) SP-pooled pixel features S
    enc_out: torch.Tensor  # (N, C, L) wildpath output, the k-means features
    pal_logit: torch.Tensor  # (N, 313, L) colour-bin logits per token (anchor colour sampling)
    spixel_sizes: torch.Tensor  # (N, L) hard superpixel sizes / s^2 (anchor tie-break)


class Disco(nn.Module):
    """The DISCO inference network (official `AnchorColorProb`, inference defaults)."""

    def __init__(self, cfg: DiscoConfig | None = None):
        super().__init__()
        cfg = cfg or DiscoConfig()
        self.cfg = cfg
        d = cfg.d_model
        self.segnet = SpixelSeg(cfg.in_chans, cfg.segnet_width)
        self.repnet = ColorProbNet(cfg.in_chans, d, cfg.width)
        self.enhanceNet = HourGlass2(cfg.in_chans + d, 2, cfg.width, cfg.res_blocks)
        self.wildpath = TransformerEncoder(d, cfg.n_heads, cfg.ffn_dim, cfg.n_layers)
        self.hintpath = TransformerEncoder(d, cfg.n_heads, cfg.ffn_dim, cfg.n_layers)
        self.mid_word_prj = nn.Linear(d, cfg.num_bins, bias=False)
        self.trg_word_emb = nn.Linear(d + cfg.num_bins + 1, d, bias=False)
        self.trg_word_prj = nn.Linear(d, cfg.num_bins, bias=False)
        pos = sine_position_encoding(d, cfg.grid, cfg.grid).flatten(2).transpose(1, 2)
        self.register_buffer("pos", pos, persistent=False)  # (1, L, C), input independent

    # -- encoder side: once per image ----------------------------------------------------------
    def encode(self, l_norm: torch.Tensor) -> Encoded:
        """l_norm (N, 1, H, W) = (L - 50) / 50 -> affinity, tokens, enc_out, pal_logit, sizes."""
        s = self.cfg.sp_size
        assert l_norm.dim() == 4 and l_norm.shape[1] == self.cfg.in_chans, (
            f"expected (N, {self.cfg.in_chans}, H, W), got {tuple(l_norm.shape)}"
        )
        affinity = self.segnet(l_norm)
        feats = self.repnet(l_norm)
        tokens, _ = sp_pool(feats, affinity, s)
        seq = tokens.flatten(2).transpose(1, 2)  # (N, L, C), token t = row * w + col
        enc_out = self.wildpath(seq, self._pos(seq))
        pal_logit = self.mid_word_prj(enc_out).transpose(1, 2)
        sizes = spixel_sizes(affinity, s).flatten(1)
        return Encoded(affinity, tokens, enc_out.transpose(1, 2), pal_logit, sizes)

    # -- generator side: once per anchor set ----------------------------------------------------
    def hint_sequence(
        self, tokens: torch.Tensor, hint_mask: torch.Tensor, hint_bins: torch.Tensor
    ) -> torch.Tensor:
        """[S | mask * one-hot(bin) | mask] per token -> hint embedding (N, L, C).

        hint_mask (N, L) float (0/1; 2 where two clusters picked one token, as officially);
        hint_bins (N, L) int64 colour-bin index, only read where the mask is set.
        """
        seq = tokens.flatten(2).transpose(1, 2)
        bins = torch.arange(self.cfg.num_bins, device=hint_bins.device)
        onehot = (hint_bins[..., None] == bins).to(seq.dtype)
        mask = hint_mask[..., None].to(seq.dtype)
        return self.trg_word_emb(torch.cat([seq, mask * onehot, mask], -1))

    def decode(self, hint_seq: torch.Tensor) -> torch.Tensor:
        """hintpath: (N, L, C) -> dec_out (N, L, C)."""
        return self.hintpath(hint_seq, self._pos(hint_seq))

    def enhance(
        self, l_norm: torch.Tensor, affinity: torch.Tensor, dec_out: torch.Tensor
    ) -> torch.Tensor:
        """SP-diffuse the decoded tokens to pixels, refine with L: raw ab before tanh."""
        g = self.cfg.grid
        n, _, c = dec_out.shape
        grid_feats = dec_out.transpose(1, 2).reshape(n, c, g, g)
        full = sp_diffuse(grid_feats, affinity, self.cfg.sp_size)
        return self.enhanceNet(torch.cat([l_norm, full], 1))

    def generate(
        self,
        l_norm: torch.Tensor,
        affinity: torch.Tensor,
        tokens: torch.Tensor,
        hint_mask: torch.Tensor,
        hint_bins: torch.Tensor,
    ) -> torch.Tensor:
        """Anchors -> predicted ab / 110 in [-1, 1], (N, 2, H, W)."""
        dec_out = self.decode(self.hint_sequence(tokens, hint_mask, hint_bins))
        return torch.tanh(self.enhance(l_norm, affinity, dec_out))

    def ref_logit(self, dec_out: torch.Tensor) -> torch.Tensor:
        """Per-token colour logits of the hint branch (a by-product; not used for the image)."""
        return self.trg_word_prj(dec_out).transpose(1, 2)

    def forward(
        self, l_norm: torch.Tensor, hint_mask: torch.Tensor, hint_bins: torch.Tensor
    ) -> torch.Tensor:
        """Colorize with given anchors (N, L); anchor selection lives in `anchors.py`."""
        enc = self.encode(l_norm)
        return self.generate(l_norm, enc.affinity, enc.tokens, hint_mask, hint_bins)

    def _pos(self, seq: torch.Tensor) -> torch.Tensor:
        assert seq.shape[1] == self.pos.shape[1], (
            f"{seq.shape[1]} tokens but the position table has {self.pos.shape[1]}: "
            f"inputs must be {self.cfg.img_size}x{self.cfg.img_size}"
        )
        return self.pos.to(seq.dtype).expand(seq.shape[0], -1, -1)


# ------------------------------------------------------------------------------------------------
# Pretrained configurations (data, not code) and builders
# ------------------------------------------------------------------------------------------------
def _cfg(url: str = "", **kwargs: Any) -> dict[str, Any]:
    return {
        "url": url,
        "input_size": (1, 256, 256),
        "color_space": "CIELAB (OpenCV float path, D65)",
        "input": "L_norm = (L - 50) / 50",
        "output": "ab / 110, tanh range [-1, 1]",
        "num_bins": 313,
        "default_anchors": 8,
        **kwargs,
    }


_REPO = "https://github.com/MenghanXia/DisentangledColorization"

default_cfgs: dict[str, dict[str, Any]] = {
    "disco.beta": _cfg(
        url=_REPO + " (Google Drive: disco-beta.pth.tar)",
        license="see the official repository",
        notes="official release, colorfulness 0.5, clustering anchors",
    ),
    "disco.c0_2": _cfg(
        url=_REPO + " (Google Drive: DISCO-c0.2)",
        license="see the official repository",
        notes="official release, colorfulness 0.2 (less saturated)",
    ),
    "disco.rand": _cfg(
        url=_REPO + " (Google Drive: DISCO-rand)",
        license="see the official repository",
        notes="official release, random anchor sites in training",
    ),
    "disco.test_seed0": _cfg(
        license="test only: deterministic random weights, they do not colorize",
        notes="regenerated from the state-dict manifest (architecture spec sec. 11)",
    ),
    "disco_demo.bundled": _cfg(
        license="trained here from photos under CC-BY-SA / GPL-2+ / CC0 and others: see "
        "models/disco-demo/MODEL_CARD.md before redistributing",
        notes="width-reduced demo model bundled with the service",
        width=0.25,
    ),
}

VARIANT_CONFIGS: dict[str, DiscoConfig] = {
    "disco": DiscoConfig(),
    "disco_demo": DiscoConfig(width=0.25, segnet_width=0.5, n_layers=4),
}


def _create_disco(variant: str, **kwargs: Any) -> Disco:
    if variant not in VARIANT_CONFIGS:
        raise ValueError(f"unknown variant {variant!r}; known: {sorted(VARIANT_CONFIGS)}")
    cfg = DiscoConfig(**{**VARIANT_CONFIGS[variant].to_dict(), **kwargs})
    return Disco(cfg)


def disco(**kwargs: Any) -> Disco:
    """The full-size official architecture (43.06 M parameters)."""
    return _create_disco("disco", **kwargs)


def disco_demo(**kwargs: Any) -> Disco:
    """The width-reduced architecture of the bundled demo model (same key names)."""
    return _create_disco("disco_demo", **kwargs)


def build(cfg: DiscoConfig | dict[str, Any] | None = None) -> Disco:
    """Build from a config (as stored in checkpoints); default = the official architecture."""
    if isinstance(cfg, dict):
        known = set(DiscoConfig.__dataclass_fields__)
        cfg = DiscoConfig(**{k: v for k, v in cfg.items() if k in known})
    return Disco(cfg)


__all__ = ["Disco", "DiscoConfig", "Encoded", "build", "default_cfgs", "disco", "disco_demo"]

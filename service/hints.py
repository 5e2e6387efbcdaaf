"""User colour hints: validation and conversion to the model's hint inputs (arch. doc, sec. 8).

A hint places one anchor colour on one token of the 16x16 grid, replacing the k-means anchors.
The position is a token index or fractional image coordinates; the colour is Lab (a, b) or an
sRGB hex string. The model only sees the nearest of the 313 bins, so the colour is snapped here.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from service.gamut import nearest_bin

MAX_HINTS = 256
"""At most one hint per token of the 16x16 grid; more is certainly a client bug."""

GRID = 16
"""Default token grid side (256x256 input / 16-pixel cells)."""

_HEX_RE = re.compile(r"#?(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")

# Lab a,b of sRGB colours lie within about [-87, 99] x [-108, 95]; allow the full 8-bit Lab box.
ABValue = Annotated[float, Field(ge=-128.0, le=128.0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class Hint(BaseModel):
    """One user anchor: ``token`` xor (``x``, ``y``), and ``ab`` xor ``color``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token: Annotated[int, Field(ge=0, le=GRID * GRID - 1)] | None = None
    x: Fraction | None = None
    y: Fraction | None = None
    ab: tuple[ABValue, ABValue] | None = None
    color: str | None = None

    @field_validator("color")
    @classmethod
    def _check_hex(cls, v: str | None) -> str | None:
        if v is not None and not _HEX_RE.fullmatch(v):
            raise ValueError(f"color must be sRGB hex '#rrggbb', 'rrggbb' or '#rgb', got {v!r}")
        return v

    @model_validator(mode="after")
    def _exactly_one_of_each(self) -> Self:
        has_xy = self.x is not None or self.y is not None
        if self.token is not None and has_xy:
            raise ValueError("give either 'token' or 'x'/'y', not both")
        if self.token is None and not has_xy:
            raise ValueError("missing position: give 'token' (0..255) or 'x' and 'y' in [0, 1]")
        if has_xy and (self.x is None or self.y is None):
            raise ValueError("'x' and 'y' must be given together")
        if self.ab is not None and self.color is not None:
            raise ValueError("give either 'ab' or 'color', not both")
        if self.ab is None and self.color is None:
            raise ValueError("missing colour: give 'ab' (Lab a, b) or 'color' (sRGB hex)")
        return self

    def token_index(self, grid: int = GRID) -> int:
        """Token t = row*grid + col; x/y pick the cell containing that point (edge 1.0 -> last)."""
        if self.token is not None:
            if self.token >= grid * grid:
                raise ValueError(f"token {self.token} out of range for a {grid}x{grid} grid")
            return self.token
        assert self.x is not None and self.y is not None  # guaranteed by the validator
        col = min(int(self.x * grid), grid - 1)
        row = min(int(self.y * grid), grid - 1)
        return row * grid + col


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    """'#rrggbb' / 'rrggbb' / '#rgb' -> 8-bit (r, g, b)."""
    if not _HEX_RE.fullmatch(color):
        raise ValueError(f"invalid hex colour {color!r}")
    h = color.lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def _srgb_to_lab_numpy(rgb: np.ndarray) -> np.ndarray:
    """sRGB (..., 3) in [0, 1] -> Lab (..., 3), D65, OpenCV's constants (exact formulas).

    OpenCV's float path interpolates these same formulas from a table, so the two agree to
    about 0.2 in a, b; used only when cv2 is missing.
    """
    rgb = np.asarray(rgb, dtype=np.float64)
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array(
        [
            [0.412453, 0.357580, 0.180423],
            [0.212671, 0.715160, 0.072169],
            [0.019334, 0.119193, 0.950227],
        ]
    )
    xyz = lin @ m.T / np.array([0.950456, 1.0, 1.088754])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    y = xyz[..., 1]
    light = np.where(y > 0.008856, 116.0 * np.cbrt(y) - 16.0, 903.3 * y)
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return np.stack([light, a, b], axis=-1)


def hex_to_ab(colors: list[str]) -> np.ndarray:
    """sRGB hex strings -> Lab (a, b) (n, 2) float64, via OpenCV's float RGB2LAB like the model's
    preprocessing (so a hint colour means what the same colour in an input image would)."""
    if not colors:
        return np.zeros((0, 2), dtype=np.float64)
    rgb = np.array([hex_to_rgb(c) for c in colors], dtype=np.float32)[None] / np.float32(255)
    try:
        import cv2
    except ImportError:  # pragma: no cover - cv2 is a core dependency
        lab = _srgb_to_lab_numpy(rgb)
    else:
        lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    return np.asarray(lab[0, :, 1:], dtype=np.float64)


_HINT_LIST = TypeAdapter(list[Hint])


def _load_json(text: str | bytes) -> Any:
    """JSON text -> Python; one error message for the API's form fields and the CLI's files."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        where = f"line {e.lineno}, column {e.colno}"
        raise ValueError(f"hints are not valid JSON: {e.msg} ({where})") from e


def parse_hints(data: str | bytes | list[Any]) -> list[Hint]:
    """Validate hints from JSON text or an already-parsed list.

    Raises ValueError for malformed JSON, a non-list or too many hints, and pydantic's
    ValidationError (a ValueError) whose locations name the offending hint index and field.
    """
    if isinstance(data, str | bytes):
        data = _load_json(data)
    if not isinstance(data, list):
        raise ValueError(f"hints must be a JSON array of objects, got {type(data).__name__}")
    if len(data) > MAX_HINTS:
        raise ValueError(f"too many hints: {len(data)} > {MAX_HINTS}")
    return _HINT_LIST.validate_python(data)


def hints_field(v: Any) -> Any:
    """Before-validator of a `hints` option: JSON text (a form field, the CLI's --hints file)
    or an already-parsed list; blank text means none."""
    if isinstance(v, str | bytes):
        if not str(v).strip():
            return None
        return _load_json(v)
    return v


def hints_to_arrays(hints: list[Hint], grid: int = GRID) -> tuple[np.ndarray, np.ndarray]:
    """Hints -> hint_mask (L,) float32 and bins (L,) int64, L = grid*grid.

    The mask is 1 at hinted tokens; bins holds the nearest bin of the hint colour there and 0
    elsewhere (ignored under a zero mask). A later hint on the same token overrides an earlier one.
    """
    n_tokens = grid * grid
    mask = np.zeros(n_tokens, dtype=np.float32)
    bins = np.zeros(n_tokens, dtype=np.int64)
    if not hints:
        return mask, bins
    tokens = np.array([h.token_index(grid) for h in hints], dtype=np.int64)
    ab = np.zeros((len(hints), 2), dtype=np.float64)
    is_hex = np.array([h.color is not None for h in hints])
    if is_hex.any():
        ab[is_hex] = hex_to_ab([h.color for h in hints if h.color is not None])
    if (~is_hex).any():
        ab[~is_hex] = np.array([h.ab for h in hints if h.ab is not None], dtype=np.float64)
    hint_bins = nearest_bin(ab)
    # Keep the last hint per token explicitly (NumPy leaves repeated-index assignment order open).
    _, last_rev = np.unique(tokens[::-1], return_index=True)
    keep = len(tokens) - 1 - last_rev
    mask[tokens[keep]] = 1.0
    bins[tokens[keep]] = hint_bins[keep]
    return mask, bins

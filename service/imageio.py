"""Decode untrusted image bytes into (H, W, 3) uint8 sRGB arrays with Pillow.

Every decode goes through :func:`decode_image` so that one place owns orientation, mode
conversion, the pixel limit and the error type the API maps to an HTTP status.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = ["UPLOAD_FORMATS", "ImageDecodeError", "ImageTooLarge", "decode_image", "read_image"]

# The formats the service accepts from clients (Pillow plugin names; "JPEG" also opens the MPO
# multi-picture JPEGs that phones write). Pillow reads many more (PSD, EPS via Ghostscript, JPEG
# 2000, ICNS, ...): each is attack surface a colorization API does not need, so uploads are
# opened with this allowlist. The CLI still reads any format Pillow knows.
UPLOAD_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

# ``max_pixels`` below replaces Pillow's global bomb check (a warning above ~89 MP, an error
# above ~179 MP): one limit, one exception type, and no warning for images we reject anyway.
# Pillow reads this global at open time, so route every decode through this module.
Image.MAX_IMAGE_PIXELS = None

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_16BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


class ImageDecodeError(ValueError):
    """The bytes are not an image we can decode (corrupt, truncated or unsupported)."""


class ImageTooLarge(ImageDecodeError):
    """The declared pixel count exceeds the limit; raised before the pixels are decoded."""


def decode_image(
    data: bytes, *, max_pixels: int | None = None, formats: Sequence[str] | None = None
) -> np.ndarray:
    """Decode ``data`` to an (H, W, 3) uint8 sRGB array (EXIF orientation applied).

    ``max_pixels`` is checked against the size in the header, before any pixel is decoded,
    so a small file declaring a huge canvas costs nothing. Animated images give frame 0.
    ``formats`` restricts the Pillow formats tried (e.g. ``UPLOAD_FORMATS``); None: any.
    """
    if not data:
        raise ImageDecodeError("empty image data")
    try:
        with Image.open(io.BytesIO(data), formats=formats) as img:
            width, height = img.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLarge(
                    f"image is {width}x{height} = {width * height} pixels, limit is {max_pixels}"
                )
            img.seek(0)
            rgb = _to_rgb(ImageOps.exif_transpose(img))
    except ImageDecodeError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, EOFError, ...
        raise ImageDecodeError(f"cannot decode image: {exc}") from exc
    return rgb


def read_image(path: str | Path, *, max_pixels: int | None = None) -> np.ndarray:
    """Read and decode an image file (see :func:`decode_image`)."""
    return decode_image(Path(path).read_bytes(), max_pixels=max_pixels)


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to 8-bit RGB without clipping 16-bit gray or dropping alpha."""
    if img.mode in _16BIT_MODES:
        # Pillow's own I -> L conversion clips at 255; scale the 16-bit range instead.
        gray = np.asarray(img, dtype=np.float64)
        gray = np.rint(np.clip(gray, 0, 65535) * (255.0 / 65535.0)).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in _ALPHA_MODES:
        # Transparent pixels have arbitrary colour underneath: show them as white, like a viewer.
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    rgb = np.array(img.convert("RGB"), dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageDecodeError(f"unexpected decoded shape {rgb.shape} (mode {img.mode})")
    return rgb

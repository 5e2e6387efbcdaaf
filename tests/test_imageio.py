"""service.imageio: every Pillow mode we may be sent ends as (H, W, 3) uint8 sRGB, and bad or
oversized input raises the domain errors the API maps to HTTP statuses."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.imageio import ImageDecodeError, ImageTooLarge, decode_image, read_image


def _encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def _decode(data: bytes, **kwargs) -> np.ndarray:
    rgb = decode_image(data, **kwargs)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    return rgb


def test_rgb_png_is_lossless() -> None:
    arr = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    rgb = _decode(_encode(Image.fromarray(arr), "PNG"))
    np.testing.assert_array_equal(rgb, arr)
    assert rgb.flags.writeable


@pytest.mark.parametrize("mode", ["L", "1"])
def test_grayscale_becomes_three_equal_channels(mode: str) -> None:
    gray = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (4, 1))
    img = Image.fromarray(gray).convert(mode)
    rgb = _decode(_encode(img, "PNG"))
    assert rgb.shape == (4, 16, 3)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    if mode == "L":
        np.testing.assert_array_equal(rgb[..., 0], gray)


def test_cmyk_jpeg() -> None:
    img = Image.new("CMYK", (16, 8), (0, 255, 255, 0))  # pure red in CMYK
    rgb = _decode(_encode(img, "JPEG", quality=95))
    assert rgb.shape == (8, 16, 3)
    np.testing.assert_allclose(rgb.reshape(-1, 3).mean(axis=0), [255, 0, 0], atol=8)


def test_palette_png() -> None:
    img = Image.new("P", (4, 2))
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 - 3) * 3)
    img.putdata([0, 1, 2, 0, 2, 1, 0, 0])
    rgb = _decode(_encode(img, "PNG"))
    assert rgb[0].tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 0, 0]]


def test_palette_png_with_transparent_index_is_white() -> None:
    img = Image.new("P", (2, 1))
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 254 * 3)
    img.putdata([0, 1])
    rgb = _decode(_encode(img, "PNG", transparency=0))
    assert rgb[0].tolist() == [[255, 255, 255], [255, 0, 0]]


def test_rgba_png_is_composited_onto_white() -> None:
    arr = np.array([[[255, 0, 0, 255], [255, 0, 0, 128], [0, 0, 0, 0]]], dtype=np.uint8)
    rgb = _decode(_encode(Image.fromarray(arr, "RGBA"), "PNG"))
    assert rgb[0, 0].tolist() == [255, 0, 0]
    np.testing.assert_allclose(rgb[0, 1], [255, 127, 127], atol=1)
    assert rgb[0, 2].tolist() == [255, 255, 255]


def test_la_png_is_composited_onto_white() -> None:
    arr = np.array([[[0, 255], [0, 0], [100, 255]]], dtype=np.uint8)
    rgb = _decode(_encode(Image.fromarray(arr, "LA"), "PNG"))
    assert rgb[0].tolist() == [[0, 0, 0], [255, 255, 255], [100, 100, 100]]


def test_16bit_gray_png_is_scaled_not_clipped() -> None:
    arr = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    data = _encode(Image.fromarray(arr), "PNG")
    assert Image.open(io.BytesIO(data)).mode in {"I;16", "I"}
    rgb = _decode(data)
    assert rgb[0, :, 0].tolist() == [0, 4, 128, 255]
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_exif_orientation_is_applied() -> None:
    arr = np.zeros((20, 40, 3), dtype=np.uint8)  # stored landscape: H=20, W=40
    arr[:5, :5] = [255, 0, 0]  # red block at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    rgb = _decode(_encode(Image.fromarray(arr), "JPEG", quality=95, exif=exif))
    assert rgb.shape == (40, 20, 3)  # displayed portrait
    assert rgb[2, -3, 0] > 200 and rgb[2, 2, 0] < 50  # the block is now top-right


def test_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (6, 4), c) for c in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    rgb = _decode(data)
    assert rgb.shape == (4, 6, 3)
    assert (rgb.reshape(-1, 3) == [255, 0, 0]).all()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"definitely not an image",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 32,
    ],
    ids=["empty", "text", "png-magic-only"],
)
def test_garbage_raises_decode_error(data: bytes) -> None:
    with pytest.raises(ImageDecodeError):
        decode_image(data)


def test_truncated_image_raises_decode_error() -> None:
    arr = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for fmt in ("PNG", "JPEG"):
        data = _encode(Image.fromarray(arr), fmt)
        with pytest.raises(ImageDecodeError, match="cannot decode"):
            decode_image(data[: len(data) // 2])


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose IHDR declares width x height (the pixels are not there)."""
    data = bytearray(_encode(Image.new("RGB", (8, 8)), "PNG"))
    assert data[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def test_declared_huge_image_raises_too_large_before_decoding() -> None:
    data = _png_declaring(100_000, 100_000)  # 10 gigapixels, 30 GB if decoded
    assert len(data) < 200
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's own DecompressionBombWarning must not fire
        with pytest.raises(ImageTooLarge, match="100000x100000") as info:
            decode_image(data, max_pixels=50_000_000)
    assert isinstance(info.value, ImageDecodeError) and isinstance(info.value, ValueError)


def test_max_pixels_boundary() -> None:
    data = _encode(Image.new("RGB", (10, 10), (1, 2, 3)), "PNG")
    assert _decode(data, max_pixels=100).shape == (10, 10, 3)
    with pytest.raises(ImageTooLarge):
        decode_image(data, max_pixels=99)


def test_read_image(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    Image.new("RGB", (3, 2), (10, 20, 30)).save(path)
    rgb = read_image(path)
    assert rgb.shape == (2, 3, 3) and rgb[0, 0].tolist() == [10, 20, 30]
    with pytest.raises(ImageTooLarge):
        read_image(str(path), max_pixels=5)

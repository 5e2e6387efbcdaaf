"""The hostile-input corpus, generated (no opaque binaries in the repository).

    python tests/hardening/corpus.py OUTDIR     # writes every case to OUTDIR (and an index)

Each `Case` is a file under an image name plus what the service must answer: `expect="ok"` (a
2xx with an image of `size`, the input's displayed size) or `expect=4xx status` (a JSON error).
Never a 5xx, never a worker crash. `max_pixels` is the pixel limit the service runs with while
the corpus is sent (the stack test uses `CORPUS_MAX_PIXELS`), so the "just under / just over the
limit" bombs stay cheap enough for CI.
"""

from __future__ import annotations

import io
import json
import struct
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CORPUS_MAX_PIXELS = 4_000_000  # DISCO_MAX_PIXELS for the corpus run (production: 40 MP)


@dataclass(frozen=True)
class Case:
    name: str  # file name, always an image name, whatever the bytes are
    data: bytes
    expect: str | int  # "ok", the exact 4xx status, or "either" ("ok" or any 4xx)
    size: tuple[int, int] | None = None  # (width, height) of the answer when "ok"
    content_type: str = "application/octet-stream"  # multipart part type / raw body type
    note: str = ""


# -- helpers ----------------------------------------------------------------------------------


def _gradient(w: int, h: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A smooth, slightly noisy picture (compresses like a photo, not like a flat fill)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 127 + 100 * np.sin(x / max(w, 1) * 6.0) * np.cos(y / max(h, 1) * 4.0)
    rgb = np.stack([base, base[::-1] if h > 1 else base, 255 - base], axis=-1)
    rgb = np.clip(rgb + rng.normal(0, 6, rgb.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(rgb, "RGB").convert(mode)


def _enc(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_raw(w: int, h: int, depth: int, ctype: int, rows: bytes, extra: bytes = b"") -> bytes:
    """A PNG written by hand (16-bit and odd colour types Pillow will not write)."""
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + extra
        + _chunk(b"IDAT", zlib.compress(rows, 6))
        + _chunk(b"IEND", b"")
    )


def _png16(w: int, h: int, channels: int, ctype: int) -> bytes:
    rng = np.random.default_rng(channels)
    y, x = np.mgrid[0:h, 0:w]
    ramp = (x * 65535 // max(w - 1, 1) + y * 97) % 65536
    planes = [ramp, 65535 - ramp, (ramp * 3) % 65536, np.full_like(ramp, 50000)][:channels]
    arr = np.stack(planes, axis=-1).astype(np.int64) + rng.integers(0, 8, (h, w, channels))
    rows = np.clip(arr, 0, 65535).astype(">u2").reshape(h, w * channels)
    return _png_raw(w, h, 16, ctype, b"".join(b"\x00" + r.tobytes() for r in rows))


def _png_zero_bomb(w: int, h: int) -> bytes:
    """A real, complete 1-bit PNG of w x h zeros: kilobytes on the wire, w*h pixels decoded."""
    row = b"\x00" * (1 + (w + 7) // 8)
    co = zlib.compressobj(9)
    idat = b"".join(co.compress(row) for _ in range(h)) + co.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    chunks = _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def _jpeg_declaring(w: int, h: int) -> bytes:
    data = bytearray(_enc(Image.new("L", (16, 16), 128), "JPEG"))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, h, w)
    return bytes(data)


def _gif_declaring(w: int, h: int, frame: bool) -> bytes:
    data = bytearray(_enc(Image.new("P", (1, 1)), "GIF"))
    if frame:  # the image descriptor (0x2c) declares the huge frame
        desc = data.find(b"\x2c", 13)
        struct.pack_into("<HH", data, desc + 5, w, h)
    else:  # the logical screen declares the huge canvas
        struct.pack_into("<HH", data, 6, w, h)
    return bytes(data)


def _webp_vp8x_declaring(w: int, h: int) -> bytes:
    """An extended WebP whose VP8X canvas is w x h around a 16x16 lossless bitstream."""
    small = _enc(Image.new("RGB", (16, 16), (90, 90, 90)), "WEBP", lossless=True)
    vp8l = small[12:]  # the VP8L chunk as it is
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0, 0, 0, 0])
    vp8x += (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + vp8l
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _webp_anim_declaring(w: int, h: int) -> bytes:
    """A valid animated WebP: a w x h canvas (VP8X, 24-bit sides) holding one 16x16 frame."""
    small = _enc(Image.new("RGB", (16, 16), (90, 90, 90)), "WEBP", lossless=True)
    vp8l = small[12:]
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0x02, 0, 0, 0])  # animation flag
    vp8x += (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    anim = b"ANIM" + struct.pack("<I", 6) + bytes(4) + struct.pack("<H", 0)
    frame = bytes(6) + (15).to_bytes(3, "little") * 2 + (100).to_bytes(3, "little") + b"\x00"
    frame += vp8l
    anmf = b"ANMF" + struct.pack("<I", len(frame)) + frame + (b"\x00" if len(frame) % 2 else b"")
    body = b"WEBP" + vp8x + anim + anmf
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _webp_vp8l_declaring(w: int, h: int) -> bytes:
    """A simple lossless WebP whose VP8L header says w x h (14-bit fields: at most 16384)."""
    data = bytearray(_enc(Image.new("RGB", (16, 16), (90, 90, 90)), "WEBP", lossless=True))
    assert data[12:16] == b"VP8L" and data[20] == 0x2F
    bits = int.from_bytes(data[21:25], "little")
    bits = (bits & ~((1 << 28) - 1)) | (w - 1) | ((h - 1) << 14)
    data[21:25] = bits.to_bytes(4, "little")
    return bytes(data)


def _tiff_declaring(w: int, h: int) -> bytes:
    data = bytearray(_enc(Image.new("L", (8, 8)), "TIFF"))
    ifd = struct.unpack_from("<I", data, 4)[0]
    n = struct.unpack_from("<H", data, ifd)[0]
    for i in range(n):
        at = ifd + 2 + 12 * i
        tag, typ = struct.unpack_from("<HH", data, at)
        if tag in (256, 257):  # ImageWidth, ImageLength
            value = w if tag == 256 else h
            if typ == 3:
                struct.pack_into("<HHIH", data, at, tag, 4, 1, 0)  # widen SHORT to LONG
            struct.pack_into("<I", data, at + 8, value)
    return bytes(data)


def _bmp_declaring(w: int, h: int) -> bytes:
    data = bytearray(_enc(Image.new("RGB", (4, 4)), "BMP"))
    struct.pack_into("<ii", data, 18, w, h)
    return bytes(data)


def _exif(orientation: int | None = None, comment_bytes: int = 0) -> bytes:
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    if comment_bytes:
        exif[0x010E] = "x" * comment_bytes  # ImageDescription
    return exif.tobytes()


def _jpeg_with_segments(jpeg: bytes, segments: list[tuple[int, bytes]]) -> bytes:
    """Insert APPn segments right after SOI (each body <= 65533 bytes)."""
    out = bytearray(jpeg[:2])
    for marker, body in segments:
        out += bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body
    return bytes(out + jpeg[2:])


def _corrupt_scan(jpeg: bytes, seed: int = 3) -> bytes:
    """Random bytes over the middle of the entropy-coded data (markers avoided)."""
    data = bytearray(jpeg)
    sos = data.find(b"\xff\xda")
    start = sos + 2 + struct.unpack_from(">H", data, sos + 2)[0]
    rng = np.random.default_rng(seed)
    for i in rng.integers(start, len(data) - 2, 200):
        data[i] = int(rng.integers(0, 0xFF))  # never 0xFF: no fake markers
    return bytes(data)


def _frames_gif(n: int, w: int, h: int) -> bytes:
    frames = [Image.new("P", (w, h), i % 256) for i in range(n)]
    for i, f in enumerate(frames):
        f.putpalette([(j * 7 + i) % 256 for j in range(768)])
    return _enc(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=20, loop=0)


def _multipage_tiff() -> bytes:
    pages = [_gradient(80, 60, seed=1), _gradient(300, 200, seed=2), _gradient(40, 30, seed=3)]
    return _enc(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def _tiff_mode(mode: str, w: int = 48, h: int = 32) -> bytes:
    if mode == "F":
        arr = np.linspace(0.0, 1.0, w * h, dtype=np.float32).reshape(h, w)
        return _enc(Image.fromarray(arr, "F"), "TIFF")
    if mode == "I":
        arr = (np.arange(w * h, dtype=np.int32) * 1000).reshape(h, w)
        return _enc(Image.fromarray(arr, "I"), "TIFF")
    return _enc(_gradient(w, h, mode), "TIFF")


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("photo.png", _enc(_gradient(8, 8), "PNG"))
    return buf.getvalue()


PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj 2 0 obj<</Type/Pages/Kids[]/Count 0>>"
    b"endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)
SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="20000" height="20000">'
    b'<rect width="100%" height="100%" fill="red"/></svg>'
)
HTML = b"<!DOCTYPE html><html><body><script>alert(1)</script><img src=x></body></html>"


# -- the corpus -------------------------------------------------------------------------------


def build_corpus(max_pixels: int = CORPUS_MAX_PIXELS) -> list[Case]:
    """Every hostile or unusual input, with what the service must answer for it."""
    cases: list[Case] = []

    def ok(name: str, data: bytes, size: tuple[int, int], note: str = "") -> None:
        cases.append(Case(name, data, "ok", size, note=note))

    def bad(name: str, data: bytes, status: int, note: str = "") -> None:
        cases.append(Case(name, data, status, note=note))

    def either(name: str, data: bytes, size: tuple[int, int], note: str = "") -> None:
        cases.append(Case(name, data, "either", size, note=note))  # the decoder's call

    photo = _gradient(96, 64)
    jpeg = _enc(photo, "JPEG", quality=90)
    png = _enc(photo, "PNG")

    # not images at all, under image names
    bad("empty.png", b"", 400, "zero bytes")
    bad("one_byte.jpg", b"\xff", 415)
    bad("text.png", b"hello, I am plain text pretending to be a PNG\n" * 4, 415)
    bad("page.jpg", HTML, 415, "HTML")
    bad("document.png", PDF, 415, "PDF")
    bad("archive.png", _zip(), 415, "zip holding a PNG")
    bad("vector.png", SVG, 415, "SVG declaring 20000x20000")
    bad("magic_only.png", b"\x89PNG\r\n\x1a\n", 415, "PNG signature, nothing else")
    bad("jpeg_soi_only.jpg", b"\xff\xd8\xff", 415)

    # broken files
    bad("truncated.jpg", jpeg[: len(jpeg) // 2], 415, "header fine, scan cut in half")
    bad("truncated.png", png[: len(png) // 2], 415, "IDAT cut in half")
    bad("truncated_header.png", png[:20], 415, "IHDR cut")
    ihdr_crc = bytearray(png)
    ihdr_crc[29] ^= 0xFF
    bad("bad_crc_ihdr.png", bytes(ihdr_crc), 415)
    idat_at = png.find(b"IDAT")
    idat_len = struct.unpack_from(">I", png, idat_at - 4)[0]
    idat_crc = bytearray(png)
    idat_crc[idat_at + 4 + idat_len] ^= 0xFF
    either("bad_crc_idat.png", bytes(idat_crc), (96, 64), "IDAT CRC wrong (Pillow skips it)")
    either("corrupt_scan.jpg", _corrupt_scan(jpeg), (96, 64), "garbage in the entropy data")
    either("no_eoi.jpg", jpeg[:-2], (96, 64), "EOI marker missing")

    # decompression bombs: declared sizes far over the limit, refused from the header (413)
    bad("bomb_20k.jpg", _jpeg_declaring(20_000, 20_000), 413)
    bad("bomb_65k.jpg", _jpeg_declaring(65_500, 65_500), 413)
    bad("bomb_20k.png", _png_zero_bomb(20_000, 20_000), 413, "complete zlib stream, ~50 KB")
    bad("bomb_1m.png", _png_raw(1_000_000, 1_000_000, 8, 0, b"\x00" * 16), 413)
    bad("bomb_20k_canvas.gif", _gif_declaring(20_000, 20_000, frame=False), 413)
    bad("bomb_20k_frame.gif", _gif_declaring(20_000, 20_000, frame=True), 413)
    bad("bomb_20k_vp8x.webp", _webp_vp8x_declaring(20_000, 20_000), 415, "still: invalid")
    bad("bomb_20k_anim.webp", _webp_anim_declaring(20_000, 20_000), 413, "animated canvas")
    bad("bomb_16k_vp8l.webp", _webp_vp8l_declaring(16_384, 16_384), 413)
    bad("bomb_20k.tiff", _tiff_declaring(20_000, 20_000), 413)
    bad("bomb_20k.bmp", _bmp_declaring(20_000, 20_000), 413)
    bad("bomb_negative.bmp", _bmp_declaring(-20_000, 20_000), 413, "negative width")
    side = int(max_pixels**0.5)
    ok("near_limit.png", _png_zero_bomb(side, max_pixels // side), (side, max_pixels // side),
       "a real bomb just under the pixel limit: decoded in the worker")  # fmt: skip
    bad("over_limit.png", _png_zero_bomb(side + 1, max_pixels // side + 1), 413)
    ztxt = _chunk(b"zTXt", b"bomb\x00\x00" + zlib.compress(b"\x00" * (64 << 20), 9))
    bad("ztxt_bomb.png", _png_raw(8, 8, 8, 0, b"\x00" * 72, extra=ztxt), 415,
        "64 MB of text behind 64 KB")  # fmt: skip
    iccp = _chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(b"\x00" * (64 << 20), 9))
    bad("iccp_bomb.png", _png_raw(8, 8, 8, 0, b"\x00" * 72, extra=iccp), 415)

    # animation, many frames and pages
    ok("frames_1000.gif", _frames_gif(1000, 64, 48), (64, 48), "frame 0 only")
    anim = [_gradient(40, 30, seed=i) for i in range(12)]
    ok("animated.webp", _enc(anim[0], "WEBP", save_all=True, append_images=anim[1:]), (40, 30))
    ok("animated.png", _enc(anim[0], "PNG", save_all=True, append_images=anim[1:]), (40, 30))
    ok("multipage.tiff", _multipage_tiff(), (80, 60), "page 0")

    # metadata
    huge_exif = _exif(comment_bytes=60_000)
    ok("huge_exif.jpg", _enc(photo, "JPEG", exif=huge_exif), (96, 64), "60 KB EXIF")
    icc = b"\x00" * 128 + bytes(range(256)) * (4 << 10)  # 1 MB junk "profile"
    ok("huge_icc.jpg", _enc(photo, "JPEG", icc_profile=icc), (96, 64), "1 MB ICC, 17 APP2s")
    ok("huge_icc.png", _enc(photo, "PNG", icc_profile=icc[: 900 << 10]), (96, 64))
    junk_exif = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08" + bytes(range(256)) * 200
    ok("junk_exif.jpg", _jpeg_with_segments(jpeg, [(0xE1, junk_exif[:65000])]), (96, 64))
    loop_exif = b"Exif\x00\x00II\x2a\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\x01\x00\x00\x00"
    loop_exif += b"\x06\x00\x00\x00\x08\x00\x00\x00"  # IFD0 whose next-IFD points at itself
    ok("exif_ifd_loop.jpg", _jpeg_with_segments(jpeg, [(0xE1, loop_exif)]), (64, 96),
       "orientation 6 in an IFD that loops")  # fmt: skip
    many_app = [(0xEF, bytes(60_000))] * 40
    ok("many_segments.jpg", _jpeg_with_segments(jpeg, many_app), (96, 64), "2.4 MB of APP15")
    texts = b"".join(_chunk(b"tEXt", b"k%d\x00" % i + b"v" * 900) for i in range(1500))
    ok("many_text.png", _png_raw(32, 8, 8, 0, b"\x00" * (33 * 8), extra=texts), (32, 8))

    # orientation
    for o, size in ((3, (96, 64)), (5, (64, 96)), (6, (64, 96)), (8, (64, 96))):
        ok(f"exif_orientation_{o}.jpg", _enc(photo, "JPEG", exif=_exif(o)), size)
    ok("exif_orientation_99.jpg", _enc(photo, "JPEG", exif=_exif(99)), (96, 64), "invalid")

    # colour modes and bit depths
    cmyk = _gradient(96, 64, "CMYK")
    ok("cmyk.jpg", _enc(cmyk, "JPEG"), (96, 64))
    ok("cmyk.tiff", _enc(cmyk, "TIFF"), (96, 64))
    ok("gray16.png", _png16(96, 64, 1, 0), (96, 64), "I;16")
    ok("gray16_alpha.png", _png16(96, 64, 2, 4), (96, 64))
    ok("rgb16.png", _png16(96, 64, 3, 2), (96, 64), "Pillow reads 16-bit RGB as 8-bit RGB")
    ok("rgba16.png", _png16(96, 64, 4, 6), (96, 64))
    ok("gray.jpg", _enc(photo.convert("L"), "JPEG"), (96, 64))
    ok("bilevel.png", _enc(photo.convert("1"), "PNG"), (96, 64))
    ok("palette.png", _enc(photo.convert("P"), "PNG"), (96, 64))
    pal = photo.convert("P")
    ok("palette_transparency.png", _enc(pal, "PNG", transparency=0), (96, 64))
    rgba = photo.copy()
    rgba.putalpha(Image.linear_gradient("L").resize((96, 64)))
    ok("alpha.png", _enc(rgba, "PNG"), (96, 64))
    ok("gray_alpha.png", _enc(rgba.convert("LA"), "PNG"), (96, 64))
    ok("progressive.jpg", _enc(photo, "JPEG", progressive=True, quality=85), (96, 64))
    ok("subsampled_420.jpg", _enc(_gradient(97, 63), "JPEG", subsampling=2), (97, 63))
    ok("lossy.webp", _enc(photo, "WEBP", quality=70), (96, 64))
    ok("lossless_alpha.webp", _enc(rgba, "WEBP", lossless=True), (96, 64))
    ok("rgb24.bmp", _enc(photo, "BMP"), (96, 64))
    ok("palette8.bmp", _enc(photo.convert("P"), "BMP"), (96, 64))
    ok("float.tiff", _tiff_mode("F"), (48, 32), "32-bit float samples")
    ok("int32.tiff", _tiff_mode("I"), (48, 32))
    ok("ycbcr.tiff", _enc(photo, "TIFF", compression="jpeg"), (96, 64))
    ok("lzw.tiff", _enc(photo, "TIFF", compression="tiff_lzw"), (96, 64))
    ok("mpo.jpg", _enc(photo, "MPO", save_all=True, append_images=[photo]), (96, 64))

    # extreme geometry
    ok("one_pixel.png", _enc(Image.new("L", (1, 1), 77), "PNG"), (1, 1))
    ok("one_pixel.jpg", _enc(Image.new("RGB", (1, 1), (200, 10, 10)), "JPEG"), (1, 1))
    ok("strip_10000x8.png", _enc(_gradient(10_000, 8), "PNG"), (10_000, 8))
    ok("strip_8x10000.png", _enc(_gradient(8, 10_000), "PNG"), (8, 10_000))
    ok("line_4000x1.png", _enc(_gradient(4000, 1), "PNG"), (4000, 1))
    ok("column_1x3000.gif", _enc(_gradient(1, 3000).convert("P"), "GIF"), (1, 3000))
    ok("odd_255x257.webp", _enc(_gradient(255, 257), "WEBP"), (255, 257))

    # real formats the service does not take (Pillow could read them: less attack surface)
    bad("targa.png", _enc(photo, "TGA"), 415, "TGA under a PNG name")
    bad("icon.jpg", _enc(photo, "ICO"), 415)
    bad("pcx.png", _enc(photo, "PCX"), 415)
    bad("jpeg2000.jpg", _enc(photo, "JPEG2000"), 415)
    bad("eps.png", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", 415)

    # content the name lies about
    ok("png_named.jpg", png, (96, 64))
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    return cases


def write_corpus(out: Path, max_pixels: int = CORPUS_MAX_PIXELS) -> list[Case]:
    out.mkdir(parents=True, exist_ok=True)
    cases = build_corpus(max_pixels)
    index = []
    for case in cases:
        (out / case.name).write_bytes(case.data)
        index.append({"name": case.name, "bytes": len(case.data), "expect": case.expect,
                      "size": case.size, "note": case.note})  # fmt: skip
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return cases


def _main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    cases = write_corpus(Path(argv[1]))
    print(f"{len(cases)} cases written to {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))

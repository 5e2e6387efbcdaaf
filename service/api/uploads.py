"""Reading the uploaded image: multipart field `image` or a raw `image/*` body.

Limits are enforced before the bytes are decoded: the declared Content-Length, the bytes
actually read, then the dimensions from the image header (a decompression bomb is refused
before any pixel is decoded). Full decoding happens in the worker.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

from fastapi import Request
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.types import Message, Receive

from service.imageio import UPLOAD_FORMATS
from service.settings import Settings

from .errors import ApiError

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and small form fields around the file


async def read_upload(request: Request, settings: Settings) -> tuple[bytes, dict[str, Any]]:
    """The image bytes and any other form fields (options may come as form fields)."""
    data, fields = await read_body(request, settings.max_upload_bytes, "image", "image")
    check_header(data, settings.max_pixels)
    return data, fields


async def read_body(
    request: Request, limit: int, field: str, media: str
) -> tuple[bytes, dict[str, Any]]:
    """The uploaded file (multipart field `field`, or a raw `media/*` body) and the other form
    fields, refused with 413 as soon as more than `limit` bytes are declared or arrive."""
    declared = request.headers.get("content-length")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if declared and declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD:
        raise _too_large(int(declared), limit)
    fields: dict[str, Any] = {}
    if ctype == "multipart/form-data":
        # Count the bytes as they arrive: a chunked upload declares no Content-Length, and the
        # form parser would otherwise spool a body of any size to disk before we see the file.
        limited = Request(request.scope, _limited_receive(request, limit + MULTIPART_OVERHEAD))
        form = await limited.form(max_files=1, max_fields=32)
        upload = form.get(field)
        if not isinstance(upload, UploadFile):
            raise ApiError(
                400, f"missing_{field}", f"multipart body needs a file field named {field!r}"
            )
        data = await upload.read(limit + 1)
        fields = {k: v for k, v in form.items() if k != field and isinstance(v, str)}
    elif ctype.startswith(f"{media}/") or ctype == "application/octet-stream":
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                break
        data = bytes(data)
    elif not ctype:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the {field} as multipart field {field!r} or as a raw {media}/* body",
        )
    else:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"content type {ctype!r}: use multipart/form-data or {media}/*",
        )
    if len(data) > limit:
        raise _too_large(len(data), limit)
    if not data:
        raise ApiError(400, f"empty_{field}", f"the {field} is empty")
    return data, fields


def _limited_receive(request: Request, limit: int) -> Receive:
    receive, seen = request.receive, 0

    async def limited() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _too_large(seen, limit)
        return message

    return limited


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(
        413, "payload_too_large", f"upload of {size} bytes exceeds the limit of {limit} bytes"
    )


def check_header(data: bytes, max_pixels: int) -> None:
    """Identify the format and the declared size from the header alone."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS)
            w, h = img.size
            fmt = img.format
    except Image.DecompressionBombError as e:
        raise ApiError(413, "image_too_large", str(e)) from e
    except MemoryError:
        raise
    except Exception as e:  # Pillow's parsers raise OSError, SyntaxError, ValueError, KeyError...
        reason = str(e) or type(e).__name__
        raise ApiError(
            415,
            "unsupported_image",
            f"not a supported image (PNG, JPEG, WebP, BMP, GIF, TIFF): {reason}",
        ) from e
    if w <= 0 or h <= 0:
        raise ApiError(400, "bad_image", f"{fmt} image declares an empty size {w}x{h}")
    if w * h > max_pixels:
        raise ApiError(
            413,
            "image_too_large",
            f"{fmt} image of {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}",
        )

"""Small image helpers shared by the API tests."""

from __future__ import annotations

import io

from PIL import Image


def png_bytes(img: Image.Image) -> bytes:
    """The PNG file of `img`, as an upload body."""
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()
